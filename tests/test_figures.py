"""Figures and the notebook on hand-built records: every figure is drawn, skips say why, colours are stable."""
import pytest

from harness.figures import cell_costs, colours, main, short
from harness.report import load
from tests.conftest import ROOT
from tests.test_report import write_cell

FIGURES = ["speedup", "tau", "acceptance", "cost_model", "tabed_weights_tabed_MT_wgrid_g5_w1_batchedTrue"]


@pytest.fixture
def results(tmp_path):
    """Two datasets (one of them bundled), ar, sd and TABED with per-block weights."""
    root = tmp_path / "results"
    for dataset, group, source in (("pope", "benchmark", "bundled"), ("nq", "nlp", "hub")):
        ar = [(s, 10, 10, 1.0, list(range(10)), [], []) for s in ("a", "b", "c")]
        write_cell(root, "ar", "ar", ar, dataset=dataset, group=group, source=source)
        sd = [(s, 10, 4, 0.6, list(range(10)), [3, 2, 2], [3, 3, 3]) for s in ("a", "b", "c")]
        write_cell(root, "sd", "sd_M_g5_w1", sd, dataset=dataset, group=group, source=source,
                   method_keys={"drafting": "M"})
        weights = {"weights": [[0.5, 0.5], [0.7, 0.3], [0.9, 0.1]], "mode_agree": [[2, 1], [3, 1], [2, 2]]}
        tabed = [(s, 10, 3, 0.5, list(range(10)), [3, 3, 1], [3, 3, 1]) for s in ("a", "b", "c")]
        write_cell(root, "tabed", "tabed_MT_wgrid_g5_w1_batchedTrue", tabed, dataset=dataset, group=group,
                   source=source, method_keys={"drafts": "MT"}, extra=weights)
    return root


def test_every_figure_is_written_as_png_and_pdf(results, tmp_path, capsys):
    out = tmp_path / "figs"
    assert main([str(results), "--out", str(out)]) == 0
    assert "skipped" not in capsys.readouterr().out
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (out / f"{name}.{ext}").stat().st_size > 5000, name


def test_missing_inputs_are_skipped_with_a_reason(tmp_path, capsys):
    write_cell(tmp_path, "ar", "ar", [("a", 4, 4, 1.0, [1, 2, 3, 4], [], [])])
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skipped cost_model: cannot measure the draft step cost" in out and "--cost" in out
    assert "skipped tabed_weights: no records with TABED weights" in out
    assert main([str(tmp_path / "nowhere")]) == 2


def test_draft_step_cost_is_measured_from_the_records(results, tmp_path):
    cells = cell_costs(load(results)).set_index(["dataset", "method"])
    sd = cells.loc[("pope", "sd_M_g5_w1")]
    # ar: 0.9 s of decode over 9 decode calls -> 0.1 s a target step; sd: 3 verify calls (0.3 s) + 9 drafts in 0.5 s
    assert sd.c == pytest.approx((0.5 - 0.3) / (9 * 0.1)) and sd.gamma == 3 and sd.tau == pytest.approx(2.5)
    assert sd.speedup == pytest.approx(1.0 / 0.6)
    given = cell_costs(load(results), {"p1": 0.05})
    assert (given.c == 0.05).all()


def test_colours_are_one_per_method_whatever_the_order():
    tags = ["tabed_MT", "sd_T", "ar", "sd_M"]
    assert colours(tags) == colours(list(reversed(tags)))
    assert colours(tags)["ar"] == "#999999" and len(set(colours(tags).values())) == 4
    assert short("tabed_MT_wgrid_g5_w1_batchedTrue") == "tabed_MT_wgrid" and short("sd_T_g3_w2") == "sd_T_g3_w2"


def test_notebook_rebuilds_the_figures(results, tmp_path):
    """Executes notebooks/figures.ipynb (a few seconds) with its parameter cell pointed at the fixture."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "notebooks" / "figures.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    out = tmp_path / "nb-figs"
    params.source = f"RESULTS = {str(results)!r}\nOUT = {str(out)!r}\nCOST = None\nSAMPLES = None"
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == len(FIGURES)
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(FIGURES)
