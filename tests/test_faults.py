"""Fault injection over a short sweep (issue 20): kill -9 at random points, a corrupt line, a second launcher
racing the first, a disk that fills up mid-run. After reruns, every (sample, turn) of every cell is recorded
exactly once and the report's numbers equal those of an uninterrupted sweep, timings aside."""
from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time

import pandas as pd

from tests.conftest import ACCEPT_WEAK, ROOT, harness_cli, pair_overrides

CELLS = ("ar", "sd_M_g5_w1")
SWEEP = ["-m", "method=ar,sd", "run_name=faults", "max_new_tokens=24", "warmup=0", "progress=false",
         "baseline_check=false", "pack_weights=false", "hydra.output_subdir=null",  # no files but the cells' ...
         "hydra.job_logging.root.handlers=[console]"]  # ... so that the full disk hits the records first
SAME = ["n_ok", "n_failed", "new_tokens", "tau", "acceptance_rate", "lossless", "n_paired"]  # everything but timings


def launch(root, pair_dir, limit_bytes: int | None = None) -> subprocess.Popen:
    """The sweep as a user starts it; with `limit_bytes`, no file it writes may grow past that (a full disk:
    the write raises, as ENOSPC would)."""
    def full_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "harness", *SWEEP, f"output_root={root}",
                             *pair_overrides(pair_dir), *ACCEPT_WEAK], cwd=root.parent, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=full_disk if limit_bytes else None)


def cell(root, tag):
    return root / "faults" / "tiny-random" / "tiny" / tag


def records(root, tag):
    path = cell(root, tag) / "samples.jsonl"
    return [json.loads(x) for x in path.read_bytes().split(b"\n") if x] if path.exists() else []


def test_kills_corruption_races_and_a_full_disk_lose_nothing_and_double_nothing(tmp_path, random_pair_dir):
    ref, faulty = tmp_path / "ref", tmp_path / "faulty"
    start = time.perf_counter()
    clean = launch(ref, random_pair_dir)
    assert clean.wait(600) == 0, clean.stderr.read()
    duration = time.perf_counter() - start

    # first: the disk fills up amid the ar cell (~7.8 kB in all; Hydra's multirun.yaml, ~4.8 kB, still fits)
    disk = launch(faulty, random_pair_dir, limit_bytes=6000)
    code, err = disk.wait(600), disk.stderr.read()
    assert code == 1 and "cannot write the results" in err and "Traceback" not in err, err

    for seed in range(3):  # kill -9 anywhere: loading, decoding, between cells, while writing
        proc = launch(faulty, random_pair_dir)
        time.sleep(random.Random(seed).uniform(0.5, duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    proc = launch(faulty, random_pair_dir)  # and once more amid sd's samples, unless it finished already
    while len(records(faulty, CELLS[1])) < 3 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for tag in CELLS:  # a corrupt line amid good ones, in a finished cell or not
        path = cell(faulty, tag) / "samples.jsonl"
        lines = path.read_bytes().split(b"\n")
        lines[1] = lines[1][: len(lines[1]) // 2] + b"\xff garbage"
        path.write_bytes(b"\n".join(lines))

    racers = [launch(faulty, random_pair_dir) for _ in range(2)]  # two launchers at once on the same cells
    codes = [p.wait(600) for p in racers]  # each decodes the cells it gets; 3: another held one of them
    errors = [p.stderr.read() for p in racers]
    assert set(codes) <= {0, 3}, errors
    for code, err in zip(codes, errors):
        assert code == 0 or "being decoded by another process" in err, err

    final = harness_cli(*SWEEP, f"output_root={faulty}", *pair_overrides(random_pair_dir), cwd=tmp_path)
    assert final.returncode == 0 and final.stderr.count("skip") == len(CELLS), final.stderr
    for tag in CELLS:
        got, want = records(faulty, tag), records(ref, tag)
        keys = [(r["id"], r["turn"]) for r in got]
        assert len(keys) == len(set(keys)) and sorted(keys) == sorted((r["id"], r["turn"]) for r in want)
        by_key = {(r["id"], r["turn"]): r["output_ids"] for r in want}
        assert all(r["output_ids"] == by_key[r["id"], r["turn"]] for r in got)
        assert (cell(faulty, tag) / "summary.json").exists()
    for tag in CELLS:
        assert (cell(faulty, tag) / "samples.corrupt.jsonl").read_bytes().endswith(b"\xff garbage\n")

    for root in (ref, faulty):
        assert harness_cli(str(root), cwd=tmp_path, module="harness.report").returncode == 0
    a, b = (pd.read_csv(root / "report.csv").set_index("method")[SAME] for root in (ref, faulty))
    pd.testing.assert_frame_equal(a.sort_index(), b.sort_index())
