"""`make gpu-check` (harness.gpu_check) in its CPU mode, end to end as the GPU box runs it: bench_gpu, the replicas,
every pair x method x dtype cell through Hydra, `python -m harness.lossless`, the summary; and without the `datasets`
package, which the box's image lacks (a stand-in that fails to import shadows it)."""
import json
import os
import re
import subprocess
import sys

import pytest

from harness.gpu_check import DTYPES, MARKER, PAIRS, main, prepare_work
from tests.conftest import ROOT


def cells_table(md: str) -> list[list[str]]:
    """Body rows of the summary's cells table."""
    section = md.split("## Cells", 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| pair")]


def test_cpu_mode_runs_every_cell_and_writes_one_summary(tmp_path):
    blocked = tmp_path / "blocked" / "datasets"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('the GPU box has no datasets package')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "blocked"), "OMP_NUM_THREADS": "1"}
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "harness.gpu_check", str(out), "--device", "cpu", "--scale", "tiny",
                           "--work", str(work)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["bench_gpu.md", "cells.json", "summary.md"]  # at most 8
    assert not (work / "models").exists()  # the built models are deleted; the records stay
    md = (out / "summary.md").read_text()
    assert md.splitlines()[2] == "**PASS**", md[:2000]
    assert "torch " in md and "transformers " in md and "hydra-core " in md and "**4 of 32 layers**" in md
    assert "**ar vs generate: " in md and "| predicted speedup, Llama-3.1-8B + EAGLE-3, head=full |" in md

    rows = cells_table(md)
    expected = {(pair, method, dtype) for pair, (_, _, methods) in PAIRS.items() for method in methods for dtype in DTYPES}
    assert len(rows) == len(expected) and {tuple(r[:3]) for r in rows} == expected
    for pair, method, dtype, tau, ms, ok, verdict in rows:
        n_ok, n = ok.split("/")
        assert n_ok == n and float(tau) >= 1 and float(ms) > 0
        assert verdict == "reference" if method == "ar" else re.fullmatch(r"exact|ties \d+/\d+", verdict), verdict

    calibrations = [line for line in md.splitlines() if line.startswith("- ") and "our ar " in line]
    assert len(calibrations) == len(PAIRS) * len(DTYPES)
    assert all(re.search(r"; outputs (exact|ties \d+/\d+); speedups divide by ar", line) for line in calibrations)
    assert "## Lossless check (python -m harness.lossless, exit 0)" in md
    cells = json.loads((out / "cells.json").read_text())
    assert cells["pass"] and cells["failures"] == [] and len(cells["cells"]) == len(expected)


def test_it_empties_only_a_work_folder_it_made(tmp_path, capsys):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "out"), "--device", "cpu", "--scale", "tiny", "--work", str(mine)])
    assert stop.value.code == 2 and "not empty and was not made by gpu-check" in capsys.readouterr().err
    assert (mine / "keep.txt").exists()
    with pytest.raises(ValueError, match="overlap"):
        prepare_work(tmp_path / "w", tmp_path / "w" / "out")
    ours = tmp_path / "ours"
    prepare_work(ours, tmp_path / "out")
    (ours / "old-cell").mkdir()
    prepare_work(ours, tmp_path / "out")  # a rerun starts from nothing
    assert [p.name for p in ours.iterdir()] == [MARKER]
