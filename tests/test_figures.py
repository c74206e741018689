"""Figures and the notebook on hand-built records: every figure is drawn, skips say why, colours are stable."""
import json

import numpy as np
import pytest
from matplotlib.colors import same_color

from harness.figures import cell_costs, colours, figures, main, method_names
from harness.report import load
from tests.conftest import ROOT
from tests.test_report import write_cell

FIGURES = ["speedup", "tau", "acceptance", "cost_model", "tabed_weights_tabed_MT_wgrid_g5_w1_batchedTrue",
           "tabed_weight_trend_tabed_MT_wgrid_g5_w1_batchedTrue"]
SD, TABED = "sd_M_g5_w1", "tabed_MT_wgrid_g5_w1_batchedTrue"
NAMES = {SD: "sd", TABED: "tabed"}  # the report's display names: one cell of each method


def with_step_costs(cell, **step):
    """The cell's summary.json with the `step_costs` the run records (harness.latency.step_costs)."""
    summary = json.loads((cell / "summary.json").read_text())
    (cell / "summary.json").write_text(json.dumps({**summary, "step_costs": step}))
    return cell


@pytest.fixture
def results(tmp_path):
    """Two datasets (one of them bundled), ar, sd and TABED with per-block weights."""
    root = tmp_path / "results"
    for dataset, group, source in (("pope", "benchmark", "bundled"), ("nq", "nlp", "hub")):
        ar = [(s, 10, 10, 1.0, list(range(10)), [], []) for s in ("a", "b", "c")]
        write_cell(root, "ar", "ar", ar, dataset=dataset, group=group, source=source)
        sd = [(s, 10, 4, 0.6, list(range(10)), [3, 2, 2], [3, 3, 3]) for s in ("a", "b", "c")]
        with_step_costs(write_cell(root, "sd", SD, sd, dataset=dataset, group=group, source=source,
                                   method_keys={"drafting": "M"}), c=0.3, v=1.2)
        weights = {"weights": [[0.5, 0.5], [0.7, 0.3], [0.9, 0.1]], "mode_agree": [[2, 1], [3, 1], [2, 2]]}
        tabed = [(s, 10, 3, 0.5, list(range(10)), [3, 3, 1], [3, 3, 1]) for s in ("a", "b", "c")]
        with_step_costs(write_cell(root, "tabed", TABED, tabed, dataset=dataset, group=group, source=source,
                                   method_keys={"drafts": "MT"}, extra=weights), c=0.25, v=1.5)
    return root


def curve_and_points(fig, method: str):
    """The method's cost-model curve (x, y) and its points' x, from the drawn figure."""
    ax = fig.axes[0]
    points = next(c for c in ax.collections if c.get_label().startswith(NAMES[method] + " "))
    curve = next(line for line in ax.lines if same_color(line.get_color(), points.get_edgecolor()[0]))
    return curve.get_xdata(), curve.get_ydata(), sorted(points.get_offsets()[:, 0])


def test_every_figure_is_written_as_png_and_pdf(results, tmp_path, capsys):
    out = tmp_path / "figs"
    assert main([str(results), "--out", str(out)]) == 0
    assert "skipped" not in capsys.readouterr().out
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (out / f"{name}.{ext}").stat().st_size > 5000, name


def test_weight_trend_is_the_mean_weight_per_block_beside_the_single_modes_tau(results):
    fig = figures(load(results))[f"tabed_weight_trend_{TABED}"]
    assert len(fig.axes) == 2  # one panel per dataset
    ax = fig.axes[0]
    m_line, t_line = ax.lines
    assert list(m_line.get_xdata()) == [1, 2, 3]
    assert m_line.get_ydata() == pytest.approx([0.5, 0.7, 0.9]) and t_line.get_ydata() == pytest.approx([0.5, 0.3, 0.1])
    assert "sd tau M 2.50" in ax.get_title(loc="left")  # 10 new tokens / 4 target calls in the sd cell


def test_missing_inputs_are_skipped_with_a_reason(tmp_path, capsys):
    write_cell(tmp_path, "ar", "ar", [("a", 4, 4, 1.0, [1, 2, 3, 4], [], [])])
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skipped cost_model: cannot measure the draft step cost" in out and "run ar" in out
    assert "skipped tabed_weights: no records with TABED weights" in out
    assert main([str(tmp_path / "nowhere")]) == 2


def test_cells_sit_at_the_independently_measured_cost(results):
    """Not at the effective c of their own decode time (which would put them on the curve by construction)."""
    cells = cell_costs(load(results)).set_index(["dataset", "method"])
    sd = cells.loc[("pope", SD)]
    effective = (0.5 - 0.3) / (9 * 0.1)  # see test_effective_cost_is_an_option_and_says_what_it_is
    assert sd.c == pytest.approx(0.3) and sd.c != pytest.approx(effective) and sd.v == pytest.approx(1.2)
    assert sd.gamma == 3 and sd.tau == pytest.approx(2.5) and sd.speedup == pytest.approx(1.0 / 0.6)
    fig = figures(load(results))["cost_model"]
    x, y, points = curve_and_points(fig, SD)
    assert points == pytest.approx([0.3, 0.3])  # both datasets
    assert np.interp(0.3, x, y) == pytest.approx(2.5 / (1.2 + 3 * 0.3), rel=1e-3)  # S = tau / (v + gamma c)
    assert "timed apart from the decode" in fig.axes[0].get_xlabel()
    assert "v measured" in " ".join(t.get_text() for t in fig.axes[0].get_legend().get_texts())


def test_shards_take_the_median_measured_cost(tmp_path):
    ar = [(s, 10, 10, 1.0, list(range(10)), [], []) for s in "abc"]
    write_cell(tmp_path, "ar", "ar", ar)
    for i, c in enumerate((0.2, 0.9, 0.4)):
        with_step_costs(write_cell(tmp_path, "sd", "sd_g3", [("abc"[i], 10, 4, 0.6, list(range(10)), [3], [3])],
                                   shard=(i, 3)), c=c, v=1.0 + i)
    cells = cell_costs(load(tmp_path))
    assert len(cells) == 1 and cells.c[0] == pytest.approx(0.4) and cells.v[0] == pytest.approx(2.0)


def test_cells_without_a_measured_cost_are_left_out_by_name(results):
    (results / "r1/p1/nq" / TABED / "summary.json").write_text(json.dumps({"dataset_source": "hub"}))
    fig = figures(load(results))["cost_model"]
    note = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert f"{NAMES[TABED]} on p1/nq: no step_costs in its summary.json" in note and "pope" not in note
    assert curve_and_points(fig, TABED)[2] == pytest.approx([0.25])  # pope only
    for dataset in ("pope", "nq"):
        for tag in (SD, TABED):
            with_step_costs(results / "r1/p1" / dataset / tag, skipped="no draft model to time")
    reason = figures(load(results))["cost_model"]
    assert isinstance(reason, str) and f"{NAMES[SD]} on p1/pope: no draft model to time" in reason
    assert "--cost effective" in reason


def test_effective_cost_is_an_option_and_says_what_it_is(results, tmp_path):
    cells = cell_costs(load(results), "effective").set_index(["dataset", "method"])
    # ar: 0.9 s of decode over 9 decode calls -> 0.1 s a target step; sd: 3 verify calls (0.3 s) + 9 drafts in 0.5 s
    assert cells.loc[("pope", SD)].c == pytest.approx((0.5 - 0.3) / (9 * 0.1)) and (cells.v == 1).all()
    label = " ".join(figures(load(results), "effective")["cost_model"].axes[0].get_xlabel().split())
    assert label == "effective c (from the cell's own decode time; lies on the curve by construction)"
    assert main([str(results), "--out", str(tmp_path / "eff"), "--cost", "effective"]) == 0
    assert (tmp_path / "eff" / "cost_model.png").exists()


def test_cost_file_gives_c_per_pair(results, tmp_path):
    given = cell_costs(load(results), {"p1": 0.05})
    assert (given.c == 0.05).all() and (given.v == 1).all()
    assert cell_costs(load(results), {"other": 0.05}).missing.str.contains("pair p1 is not in the --cost file").all()
    (tmp_path / "cost.json").write_text(json.dumps({"p1": 0.05}))
    assert main([str(results), "--out", str(tmp_path / "file"), "--cost", str(tmp_path / "cost.json")]) == 0
    assert (tmp_path / "file" / "cost_model.png").exists()
    assert main([str(results), "--cost", str(tmp_path / "nope.json")]) == 2


def test_colours_are_one_per_method_whatever_the_order():
    tags = ["tabed_MT", "sd_T", "ar", "sd_M"]
    assert colours(tags) == colours(list(reversed(tags)))
    assert colours(tags)["ar"] == "#999999" and len(set(colours(tags).values())) == 4


def test_legends_carry_the_reports_display_names(results):
    assert method_names(load(results)) == {"ar": "ar", **NAMES}
    labels = [t.get_text() for t in figures(load(results))["speedup"].axes[0].get_legend().get_texts()]
    assert labels == ["sd", "tabed"]


def test_notebook_rebuilds_the_figures(results, tmp_path):
    """Executes notebooks/figures.ipynb (a few seconds) with its parameter cell pointed at the fixture."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "notebooks" / "figures.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    out = tmp_path / "nb-figs"
    params.source = f"RESULTS = {str(results)!r}\nOUT = {str(out)!r}\nCOST = 'measured'\nSAMPLES = None"
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == len(FIGURES)
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(FIGURES)


def test_concurrency_figure_shows_engine_throughput_and_its_ratio_to_ar(tmp_path):
    import yaml

    from harness.figures import concurrency_figure

    root = tmp_path / "results"
    for c in (1, 4):  # ar doubles its throughput with concurrent requests; sd's lead of 1.5x turns into 0.75x
        for method, tag, wall, acc in (("ar", "ar", 1.0, []), ("sd", "sd_g4", 2 / 3 if c == 1 else 1.0, [3])):
            suffix = "@vllm" + (f"-c{c}" if c > 1 else "")
            rows = [(s, 10, 10 if method == "ar" else 4, wall, list(range(10)), acc, [4] * len(acc)) for s in "ab"]
            cell = write_cell(root, method, tag + suffix, rows, extra=None)
            starts = {"a": 0.0, "b": wall if c == 1 else (0.0 if method == "ar" else 1 / 3)}  # one after the other
            # at c = 1; at c = 4 ar's two requests overlap fully (20 tokens/s), sd's for 2/3 s of 4/3 (15 tokens/s)
            lines = [json.loads(x) for x in (cell / "samples.jsonl").read_text().splitlines()]
            (cell / "samples.jsonl").write_text("".join(json.dumps({**r, "started_at": starts[r["id"]]}) + "\n"
                                                        for r in lines))
            cfg = yaml.safe_load((cell / "config.yaml").read_text())
            cfg["method"]["tag"] = tag
            cfg["backend"] = {"name": "vllm", "concurrency": c}
            (cell / "config.yaml").write_text(yaml.safe_dump(cfg))
    fig = concurrency_figure(load(root))
    throughput, ratio = fig.axes
    lines = {line.get_label(): line for line in ratio.lines if not line.get_label().startswith("_")}
    assert set(lines) == {"ar@vllm", "sd@vllm"}
    assert list(lines["sd@vllm"].get_xdata()) == [1, 4]
    assert list(lines["sd@vllm"].get_ydata()) == pytest.approx([1.5, 0.75])
    assert list(lines["ar@vllm"].get_ydata()) == pytest.approx([1.0, 1.0])
