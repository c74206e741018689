"""`python -m harness.reproduce PAPER`: the plan it prints is the sweeps' cells, its estimate is the probe's arithmetic,
and on the embedded pair it runs a paper's sweep, the report with the paper's claims and the figures end to end."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness import reproduce
from harness.records import cell_dir
from tests.conftest import harness_cli

SMALL = ["pair=tiny-llava", "dataset=pope,nq", "n_samples=1"]


def test_the_plan_is_every_cell_of_the_papers_sweeps_once(tmp_path):
    paper = reproduce.Paper(("tabed_table1", "tabed_tree"), "tabed")
    cells = reproduce.plan(paper, [*SMALL, f"output_root={tmp_path}"])
    # table1: ar, sd M, sd T, tabed; tree: ar (the same cell as table1's) and six trees; per dataset
    assert len(cells) == 2 * (4 + 6)
    assert {c.pair.name for c in cells.values()} == {"tiny-llava"}
    assert all(cell.parent.parent.parent == tmp_path / "tabed" for cell in cells)  # run/pair/dataset/tag
    assert all(reproduce.decodes(c) == 1 for c in cells.values())
    turn2 = reproduce.plan(reproduce.Paper(("tabed_second_turn",), "tabed"), ["pair=tiny-llava", "dataset=pope",
                                                                               "dataset.second_turn=qaorg"])
    assert [reproduce.decodes(c) for c in turn2.values()] == [2 * 100] * 4  # POPE's 100 samples, two turns each


def test_the_estimate_is_every_decode_at_ar_speed_and_skips_finished_cells(tmp_path):
    cfgs = [OmegaConf.create({"pair": {"name": "p"}, "dataset": {"limit": 10, "second_turn": None, "name": d},
                              "n_samples": None, "max_new_tokens": 100, "output_root": str(tmp_path), "run_name": "r",
                              "warmup": 0, "method": {"name": "sd", "tag": "sd"}}) for d in ("a", "b", "c")]
    cfgs[2].dataset.limit = None
    cells = {cell_dir(c): c for c in cfgs}
    cell_dir(cfgs[1]).mkdir(parents=True)
    (cell_dir(cfgs[1]) / "summary.json").write_text("{}")  # finished: costs nothing more
    seconds, unknown = reproduce.estimate(cells, {"p": {"prefill_s": 0.5, "token_s": 0.01}})
    assert seconds == 10 * (0.5 + 100 * 0.01) and unknown == 1


def test_the_estimate_counts_warm_ups_and_the_ar_calibration(tmp_path):
    """A one-sample CPU smoke run is mostly warm-ups and ar's calibration against generate(): the full tabed run
    (359 cells, n_samples=1, 16 tokens) printed "at most 7 min" and took 86 min when they were left out."""
    from harness import baseline

    def cell(tag, **extra):
        return OmegaConf.create({"pair": {"name": "p"}, "dataset": {"limit": 10, "second_turn": None, "name": "a"},
                                 "n_samples": 1, "max_new_tokens": 16, "output_root": str(tmp_path), "run_name": tag,
                                 "warmup": 2, "method": {"name": tag, "tag": tag}, **extra})
    t = {"p": {"prefill_s": 0.1, "token_s": 0.01}}
    one = lambda tokens: 0.1 + tokens * 0.01  # noqa: E731
    sd = cell("sd")
    assert reproduce.estimate({cell_dir(sd): sd}, t)[0] == pytest.approx(3 * one(16))  # a sample and two warm-ups
    ar = cell("ar")
    calibration = 2 * (1 + baseline.REPEATS * 1) * one(16)  # both loops: one untimed + REPEATS timed, one prompt
    assert reproduce.estimate({cell_dir(ar): ar}, t)[0] == pytest.approx(3 * one(16) + calibration)
    unchecked = cell("ar", baseline_check=False)
    assert reproduce.estimate({cell_dir(unchecked): unchecked}, t)[0] == pytest.approx(3 * one(16))


def test_bad_names_are_one_line_with_the_choices(tmp_path):
    assert reproduce.main(["tabd"]) == 2
    assert reproduce.main(["tabed", "--sweeps", "eagle_vocab", "--plan"]) == 2


def test_the_embedded_pair_reproduces_a_tabed_sweep_end_to_end(tmp_path):
    out = tmp_path / "rep"
    proc = harness_cli("tabed", "--pair", "tiny-llava", "--sweeps", "tabed_table1", "dataset=pope", "method=ar,tabed",
                       "n_samples=1", "max_new_tokens=6", "warmup=0", "accept_weak_baseline=true", f"output_root={out}",
                       cwd=tmp_path, timeout=900, module="harness.reproduce")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "tabed: 1 sweeps (tabed_table1), 2 cells, 2 decodes, pairs tiny-llava" in proc.stdout
    assert "the hub is not reachable: going on with what is here" in proc.stderr  # harness_cli runs offline
    assert "probe (tiny-llava:" in proc.stdout and "ms/token): about" in proc.stdout
    claims = (out / "tables" / "claims.md").read_text()
    assert "TABED-MT (Table 1)" in claims and "within" not in claims  # an embedded pair compares with no claim
    rows = [line for line in claims.splitlines() if line.startswith("| TABED-MT (Table 1)")]
    assert rows and all("not comparable" in r for r in rows)
    assert any("embedded:tiny-llava-target" in r for r in rows)  # the reason names the ids
    assert (out / "figures" / "claims.png").exists() and (out / "figures" / "speedup.png").exists()
    assert Path(out / "report.md").exists()
