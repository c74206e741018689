"""The report on hand-built records, where every number can be computed by hand."""
import json

import numpy as np
import pytest
import yaml

from harness.records import metrics, position_acceptance, read_records, speedups
from harness.records import summarize as summary_json
from harness.report import (
    CELL_KEYS, display_names, eagle, load, main, report, robust, second_turn, status, summarize, table1,
)
from harness.sweeps import sweep_jobs


def write_cell(root, method, tag, rows, temperature=0.0, dataset="d1", group="benchmark", source="bundled",
               task=None, run="r1", shard=None, summary=True, method_keys=None, extra=None):
    """A cell directory as harness.run writes it; rows: (id, new, calls, wall, ids, accepted, drafted[, turn]);
    `method_keys` join the method's config, `extra` every record."""
    cell = root / run / "p1" / dataset / (tag + (f"_shard{shard[0]}of{shard[1]}" if shard else ""))
    cell.mkdir(parents=True)
    cfg = {"run_name": run, "pair": {"name": "p1"}, "method": {"name": method, "tag": tag, **(method_keys or {})},
           "dataset": {"name": dataset, "group": group, "second_turn": task}, "temperature": temperature}
    (cell / "config.yaml").write_text(yaml.safe_dump(cfg))
    lines = []
    for sid, new, calls, wall, ids, acc, dr, *turn in rows:
        turn = turn[0] if turn else 0
        last = task is None or turn == 1
        lines.append(json.dumps({"id": sid, "turn": turn, "status": "ok", "error": None, "new_tokens": new,
                                 "target_calls": calls, "wall_s": wall, "prefill_s": 0.1, "decode_s": wall - 0.1,
                                 "output_ids": ids, "accepted": acc, "drafted": dr, "final_turn": last,
                                 **(extra or {})}))
    (cell / "samples.jsonl").write_text("\n".join(lines) + "\n")
    if summary:
        (cell / "summary.json").write_text(json.dumps({"dataset_source": source, "n_failed": 0,
                                                       "n_records": len(rows)}))
    return cell


@pytest.fixture
def results(tmp_path):
    write_cell(tmp_path, "ar", "ar", [("a", 4, 4, 2.0, [1, 2, 3, 4], [], []), ("b", 2, 2, 1.0, [5, 6], [], [])])
    # sd: sample a in 2 calls (3 of 4 drafts accepted), b in 1 call plus a failed sample c.
    write_cell(tmp_path, "sd", "sd_g4", [("a", 4, 2, 1.0, [1, 2, 3, 4], [2], [4]), ("b", 2, 2, 0.5, [5, 7], [0], [1])])
    with open(tmp_path / "r1/p1/d1/sd_g4/samples.jsonl", "a") as f:
        f.write(json.dumps({"id": "c", "turn": 0, "status": "error", "error": "boom", "final_turn": True}) + "\n")
    return tmp_path


def cell_row(root, method):
    return summarize(load(root), CELL_KEYS).set_index("method").loc[method]


def test_numbers_by_hand(results):
    ar, sd = cell_row(results, "ar"), cell_row(results, "sd_g4")
    assert ar.tau == 1.0 and ar.speedup == 1.0 and ar.lossless == "exact"
    assert ar.speedup_lo == ar.speedup_hi == 1.0
    assert sd.n_ok == 2 and sd.n_failed == 1 and sd.new_tokens == 6
    assert sd.tau == pytest.approx(6 / 4)
    assert sd.acceptance_rate == pytest.approx(2 / 5)
    assert sd.speedup == pytest.approx(3.0 / 1.5)
    assert sd.speedup_mean == pytest.approx((2.0 / 1.0 + 1.0 / 0.5) / 2)
    assert sd.lossless == "unchecked 1/2"  # sample b differs in its second token; no teacher forcing judged it
    assert sd.position_acceptance == [0.5, 1.0, 0.0, 0.0]  # a: 2 of 4 accepted; b: 0 of 1 (only a drafted a 2nd)
    assert sd.tokens_per_s == pytest.approx(6 / 1.5) and sd.prefill_s == pytest.approx(0.2)


def test_position_acceptance_counts_blocks_that_reached_each_position():
    # blocks: (accepted, drafted) = (3, 5), (0, 5), (5, 5), (1, 2)
    assert position_acceptance([3, 0, 5, 1], [5, 5, 5, 2]) == [0.75, 0.5, 0.6667, 0.3333, 0.3333]
    assert position_acceptance([], []) == []


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    ar, m = rng.uniform(1, 2, 40), rng.uniform(0.5, 1, 40)
    first, again = speedups(ar, m), speedups(ar, m)
    assert first == again
    assert first["speedup_lo"] < first["speedup"] < first["speedup_hi"]
    assert first["speedup_mean_lo"] < first["speedup_mean"] < first["speedup_mean_hi"]


def test_sampling_runs_have_no_lossless_verdict(tmp_path):
    write_cell(tmp_path, "ar", "ar", [("a", 2, 2, 1.0, [1, 2], [], [])], temperature=0.7)
    write_cell(tmp_path, "sd", "sd_g4", [("a", 2, 1, 0.5, [1, 3], [1], [1])], temperature=0.7)
    assert cell_row(tmp_path, "sd_g4").lossless == "n/a"


def test_shards_of_a_cell_merge_and_partial_samples_are_left_out(tmp_path):
    write_cell(tmp_path, "ar", "ar", [("a", 2, 2, 1.0, [1, 2], [], []), ("c", 2, 2, 1.0, [3, 4], [], [])],
               shard=(0, 2))
    shard1 = write_cell(tmp_path, "ar", "ar", [("b", 2, 2, 3.0, [9, 9], [], [])], shard=(1, 2), summary=False)
    with open(shard1 / "samples.jsonl", "a") as f:  # an interrupted run: a sample without its final turn, torn line
        f.write(json.dumps({"id": "d", "turn": 0, "status": "ok", "new_tokens": 1}) + "\n{\"id\": \"e\", \"tu")
    df = load(tmp_path)
    assert sorted(df.id) == ["a", "b", "c"]
    (row,) = summarize(df, CELL_KEYS).itertuples()
    assert row.n_ok == 3 and row.new_tokens == 6 and row.source == "mixed"  # one shard has no summary yet


@pytest.fixture
def paper(tmp_path):
    """Two datasets (one bundled) with a second-turn task, ar + two methods."""
    for dataset, group, source, k in (("pope", "benchmark", "bundled", 1.0), ("nq", "nlp", "hub", 2.0)):
        rows = [(s, 4, 4, 2.0 * k, [1, 2, 3, 4], [], [], t) for s in ("a", "b") for t in (0, 1)]
        write_cell(tmp_path, "ar", "ar", rows, dataset=dataset, group=group, source=source, task="summary")
        for tag, wall in (("sd_M", 1.0), ("tabed_MT", 0.5)):
            rows = [(s, 4, 2, wall * k * (1 + t), [1, 2, 3, 4], [2], [4], t) for s in ("a", "b") for t in (0, 1)]
            write_cell(tmp_path, "sd", tag, rows, dataset=dataset, group=group, source=source, task="summary")
    return tmp_path


def test_table1_layout_groups_datasets_and_marks_bundled_data(paper):
    tables, numbers = table1(load(paper))
    first = tables["Table 1 layout: pair p1, first turn"]
    assert list(first.columns) == [("Benchmark", "pope†"), ("NLP", "nq"), ("Summary", "mean"), ("Summary", "worst")]
    assert list(first.index) == [("τ", "sd_M"), ("τ", "tabed_MT"), ("speedup", "sd_M"), ("speedup", "tabed_MT")]
    assert first.loc[("speedup", "tabed_MT"), ("Benchmark", "pope†")] == pytest.approx(4.0)
    assert first.loc[("τ", "sd_M"), ("Summary", "mean")] == pytest.approx(2.0)
    second = tables["Table 1 layout: pair p1, second turn"]
    assert second.loc[("speedup", "sd_M"), ("NLP", "nq")] == pytest.approx(1.0)  # turn 2 took twice as long
    assert {"pair", "turn", "group", "dataset", "method", "tau", "speedup", "source"} <= set(numbers.columns)


def test_eagle_robust_and_second_turn_tables(paper):
    df = load(paper)
    (t,) = eagle(df)[0].values()
    assert list(t.columns) == [("pope†", "speedup"), ("pope†", "τ"), ("nq", "speedup"), ("nq", "τ"),
                               ("mean", "speedup"), ("mean", "τ")]
    assert t.loc["tabed_MT", ("mean", "speedup")] == pytest.approx(8 / 3)  # both turns: ar 4 x 2 s, tabed 2 x 1.5 s
    rob = robust(df).set_index(["turn", "method"])
    assert rob.loc[(0, "sd_M"), "robust_speedup"] == pytest.approx(2.0)
    assert rob.loc[(0, "sd_M"), "worst_dataset"] in ("pope†", "nq")
    (turn2,) = second_turn(df)[0].values()
    assert ("second-turn task", "summary?") in turn2.columns  # pooled over a bundled and a hub dataset: mixed
    assert turn2.loc[("speedup", "sd_M"), ("second-turn task", "summary?")] == pytest.approx(1.0)


def test_cli_writes_markdown_csv_and_latex(paper, capsys):
    assert main([str(paper)]) == 0
    out = capsys.readouterr().out
    assert "run=r1 pair=p1 dataset=pope second_turn=summary" in out and "OFFLINE BUNDLE" in out
    assert (paper / "report.md").exists() and "tabed_MT" in (paper / "report.csv").read_text()
    tex = (paper / "tables" / "table1.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\multicolumn{2}{c}{Summary}" in tex
    assert r"pope\textsuperscript{\dag}" in tex and "offline bundle" in tex and r"tabed\_MT" in tex
    for name in ("table1", "eagle", "second_turn", "robust"):
        assert "offline bundle" in (paper / "tables" / f"{name}.md").read_text()


def test_cli_on_empty_dir_fails_clearly(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no cells" in capsys.readouterr().err


def test_status_lists_done_partial_failed_and_missing_cells(results):
    write_cell(results, "sd", "sd_g2", [("a", 4, 2, 1.0, [1], [2], [2])], summary=False)
    bad = write_cell(results, "sd", "sd_g3", [("a", 4, 2, 1.0, [1], [2], [2])])
    (bad / "summary.json").write_text(json.dumps({"n_failed": 1, "n_records": 2}))
    # A multirun over the bundled tiny set asks for ar and sd cells of run r1, pair p1.
    multirun = results / ".hydra" / "2026-01-01_00-00-00" / "multirun.yaml"
    multirun.parent.mkdir(parents=True)
    multirun.write_text(yaml.safe_dump({"hydra": {"sweeper": {"params": {"method": "ar,sd"}},
                                                  "overrides": {"task": ["run_name=r1", "pair.name=p1", "dataset=tiny",
                                                                         "hydra/launcher=basic"]}}}))
    table = status(results).set_index("cell")
    assert table.state.to_dict() == {"r1/p1/d1/ar": "done", "r1/p1/d1/sd_g2": "partial", "r1/p1/d1/sd_g3": "failed",
                                     "r1/p1/d1/sd_g4": "done", "r1/p1/tiny/ar": "missing",
                                     "r1/p1/tiny/sd_M_g5_w1": "missing"}
    assert main(["--status", str(results)]) == 0


def test_summary_json_and_the_report_compute_every_number_alike(results):
    """One definition (harness.records.metrics): each number summary.json holds is the report's, by name."""
    cell = results / "r1/p1/d1/sd_g4"
    summary = summary_json(read_records(cell), {"cell": str(cell)})
    row = cell_row(results, "sd_g4")
    own = set(metrics([]))
    assert own <= set(summary) and {"tau", "acceptance_rate", "tokens_per_s", "wall_s", "prefill_share"} <= own
    for key in own:
        assert (summary[key] is None and row[key] != row[key]) or summary[key] == pytest.approx(row[key]), key
    assert summary["n_records"] == 3 and summary["top_error"] == "boom (×1)"
    assert "speedup" not in summary and "lossless" not in summary  # they need ar's twins: the report's


def test_display_names_keep_only_the_options_that_differ():
    names = display_names({"ar": "ar", "sd_M_g5_w1": "sd", "sd_M_g3_w2": "sd", "sd_M_dyn_g20_c0.4": "sd",
                           "tabed_MT_kld_g5_w1_batchedTrue": "tabed", "mine": "sd", "hf_assisted_g5¶": "hf_assisted"})
    assert names == {"ar": "ar", "sd_M_g5_w1": "sd g5 w1", "sd_M_g3_w2": "sd g3 w2",
                     "sd_M_dyn_g20_c0.4": "sd dyn g20 c0.4", "tabed_MT_kld_g5_w1_batchedTrue": "tabed",
                     "mine": "mine", "hf_assisted_g5¶": "hf_assisted¶"}
    assert display_names({"sd_M_T": "sd", "sd_T_M": "sd"}) == {"sd_M_T": "sd_M_T", "sd_T_M": "sd_T_M"}  # would clash


def test_rows_carry_short_names_and_the_csv_keeps_the_tag(results, capsys):
    assert main([str(results)]) == 0
    out = capsys.readouterr().out
    assert "| sd " in out and "| sd_g4" not in out and "sd = sd_g4" in out  # the one legend line
    table = __import__("pandas").read_csv(results / "report.csv").set_index("method")
    assert table.loc["sd_g4", "name"] == "sd" and table.loc["ar", "name"] == "ar"


def test_one_dataset_prints_each_number_once_and_tables_get_every_layout(results, capsys):
    assert main([str(results)]) == 0
    out = capsys.readouterr().out
    for layout in ("Table 1 layout", "EAGLE layout", "Robust speedup", "Second turn by task"):
        assert layout not in out
    assert out.count("| sd ") == 1
    for name in ("table1", "eagle", "second_turn", "robust"):
        assert (results / "tables" / f"{name}.csv").exists()
    assert (results / "tables" / "robust.md").exists() and (results / "report.md").read_text() in out


def test_layouts_over_several_datasets_are_printed_where_they_fit(paper, tmp_path, capsys):
    text = report(paper)  # two datasets, sd-named methods, a second-turn task
    assert "Robust speedup" in text and "Second turn by task" in text
    assert "Table 1 layout" not in text and "EAGLE layout" not in text
    tabed = tmp_path / "tabed"
    for dataset, group in (("pope", "benchmark"), ("nq", "nlp")):
        write_cell(tabed, "ar", "ar", [("a", 4, 4, 2.0, [1, 2, 3, 4], [], [])], dataset=dataset, group=group)
        write_cell(tabed, "tabed", "tabed_MT", [("a", 4, 2, 1.0, [1, 2, 3, 4], [2], [4])], dataset=dataset,
                   group=group)
    text = report(tabed)
    assert "Table 1 layout" in text and "Robust speedup" not in text  # Table 1's Summary columns are those numbers
    assert (tabed / "tables" / "robust.md").exists()


def test_sweep_overrides_expand_as_hydras_basic_sweeper_does():
    jobs = sweep_jobs(["method=ar,sd", "dataset=tiny", "method.gamma=range(2,4)", "+sweep=smoke", "method=ar,tabed"])
    assert jobs == [[f"method={m}", "dataset=tiny", f"method.gamma={g}", "+sweep=smoke"]
                    for m in ("ar", "tabed") for g in (2, 3)]
    assert sweep_jobs(["n_samples=null"]) == [["n_samples=null"]]


def test_speedups_divide_by_the_fastest_plain_decoding_and_name_it(tmp_path):
    """With a static-cache generate() twin faster than ar (as on CUDA), sd's speedup is over it and says so, the
    speedup over our eager ar stands beside it, and assisted generation (no static cache) is held against eager."""
    rows = lambda wall: [("a", 4, 4, wall, [1, 2, 3, 4], [], []), ("b", 2, 2, wall / 2, [5, 6], [], [])]  # noqa: E731
    write_cell(tmp_path, "ar", "ar", rows(4.0))
    write_cell(tmp_path, "hf_generate", "hf_generate_static", rows(1.0), method_keys={"cache": "static"})
    write_cell(tmp_path, "hf_generate", "hf_generate_dynamic", rows(3.0), method_keys={"cache": "dynamic"})
    write_cell(tmp_path, "sd", "sd_g4", [("a", 4, 2, 2.0, [1, 2, 3, 4], [2], [4]), ("b", 2, 1, 1.0, [5, 6], [1], [1])])
    write_cell(tmp_path, "hf_assisted", "hf_assisted", rows(2.0))
    sd, assisted, ar = (cell_row(tmp_path, m) for m in ("sd_g4", "hf_assisted", "ar"))
    assert sd.vs == "hf_generate_static" and sd.speedup == pytest.approx(1.5 / 3.0)
    assert sd.speedup_vs_ar == pytest.approx(6.0 / 3.0)
    assert ar.speedup == pytest.approx(1.5 / 6.0)  # ar itself against the fastest plain decoding
    assert assisted.vs == "hf_generate_dynamic" and assisted.speedup == pytest.approx(4.5 / 3.0)
    text = report(tmp_path)
    assert "generate() static cache (compiled on CUDA)" in text and "speedup_vs_ar" in text
