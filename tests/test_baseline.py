"""The baseline every ratio divides by: kernel levers chosen by measurement, and each ar cell timed against
transformers' own generate() before it decodes (refused when ours is slower, unless accepted, then marked)."""
from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from harness import HarnessError, baseline, kernels
from harness.report import report
from harness.run import run_cell
from tests.conftest import ACCEPT_WEAK, ROOT, pair_overrides, tiny_llama


def fake(dense_ms: float, packed_ms: float):
    calls = []

    def measure(model, tokens, device):
        calls.append(tokens)
        return {"dense_ms": dense_ms, "packed_ms": packed_ms}

    return measure, calls


def test_the_kernel_choice_follows_the_timings_and_is_cached_per_machine_model_and_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEC_HARNESS_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "busy_share", lambda: 0.0)  # a quiet machine
    model, cpu = tiny_llama(0), torch.device("cpu")
    slower_packed, calls = fake(50.0, 70.0)  # an Intel Xeon's 1-token step
    assert kernels.choose_packing("m", model, 1, cpu, slower_packed)["packed"] is False
    faster_packed, calls6 = fake(85.0, 39.0)  # a 6-token verify, on the same machine
    choice = kernels.choose_packing("m", model, 6, cpu, faster_packed)
    assert choice["packed"] is True and choice["cached"] is False
    again = kernels.choose_packing("m", model, 6, cpu, slower_packed)  # cached: not measured again
    assert again["packed"] is True and again["cached"] is True and calls == [1] and calls6 == [6]
    stored = json.loads((tmp_path / "kernels.json").read_text())
    assert len(stored) == 2 and all(kernels.machine() in key for key in stored)
    monkeypatch.setattr(kernels, "machine", lambda: "another CPU")  # another machine measures for itself
    assert kernels.choose_packing("m", model, 6, cpu, slower_packed)["packed"] is False


def test_a_timing_taken_under_load_is_used_once_and_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEC_HARNESS_CACHE", str(tmp_path))
    model, cpu = tiny_llama(0), torch.device("cpu")
    noisy, calls = fake(85.0, 39.0)  # another job competing for the cores
    first = kernels.choose_packing("m", model, 6, cpu, noisy, busy_fn=lambda: 0.9)
    assert first["packed"] is True and first["provisional"] is True and first["busy_share_before"] == 0.9
    quiet, quiet_calls = fake(50.0, 60.0)
    second = kernels.choose_packing("m", model, 6, cpu, quiet, busy_fn=lambda: 0.05)  # measured again, quiet now
    assert second["cached"] is False and second["packed"] is False and second["provisional"] is False
    third = kernels.choose_packing("m", model, 6, cpu, noisy, busy_fn=lambda: 0.9)  # the quiet timing stays
    assert third["cached"] is True and third["packed"] is False and calls == [6] and quiet_calls == [6]
    assert 0.0 <= kernels.busy_share(0.05) <= 1.0  # /proc/stat is there on Linux


def test_the_training_dtype_is_measured_once_per_machine_so_a_resumed_build_keeps_it(tmp_path, monkeypatch):
    """Build scripts key their cached stages by this dtype: a later process (a resume) must get the same one even
    when a new measurement would say otherwise, while a machine without fast bfloat16 trains in float32."""
    monkeypatch.setenv("SPEC_HARNESS_CACHE", str(tmp_path))
    native = lambda: {"bfloat16_ms": 2.0, "float32_ms": 6.5}  # noqa: E731  AVX512-BF16: bf16 ~3x faster
    emulated = lambda: {"bfloat16_ms": 362.0, "float32_ms": 5.0}  # noqa: E731
    assert kernels.training_dtype(native, busy_fn=lambda: 0.0) == torch.bfloat16
    assert kernels.training_dtype(emulated, busy_fn=lambda: 0.0) == torch.bfloat16  # remembered, not remeasured
    monkeypatch.setattr(kernels, "machine", lambda: "a CPU without native bf16")
    assert kernels.training_dtype(emulated, busy_fn=lambda: 0.0) == torch.float32
    ms = kernels.matmul_ms((8, 16, 8))  # the real measurement: both dtypes timed, warm
    assert set(ms) == {"bfloat16_ms", "float32_ms"} and all(v > 0 for v in ms.values())


def test_block_tokens_are_what_the_target_verifies():
    assert kernels.block_tokens("ar", {}) == 1 and kernels.block_tokens("hf_generate", {}) == 1
    assert kernels.block_tokens("sd", {"gamma": 5, "tree_width": 1}) == 6
    assert kernels.block_tokens("sd", {"gamma": 3, "tree_width": 2}) == 7
    assert kernels.block_tokens("eagle", {"gamma": 5, "top_k": 4, "total_tokens": 16}) == 16
    assert kernels.block_tokens("sd", {"gamma": 20, "confidence": 0.4}) == 3  # short blocks


def test_a_measured_choice_decodes_and_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEC_HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(kernels, "measure", fake(50.0, 40.0)[0])  # packing wins here
    from omegaconf import OmegaConf

    from harness.models import load_pair
    from harness.packing import PackedLinear

    cfg = OmegaConf.load(ROOT / "conf/pair/smollm2-135m__smol-draft.yaml")
    pair = load_pair(cfg, torch.device("cpu"), torch.float32, pack=None, block=6)
    assert pair.kernels["target"]["packed"] and pair.kernels["draft"]["packed"]
    assert isinstance(pair.models.target.get_output_embeddings(), PackedLinear)


def cell(tmp_path, pair_dir, *extra):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["method=ar", "n_samples=2", "max_new_tokens=8", "warmup=0", "progress=false",
                                            f"output_root={tmp_path / 'results'}", *pair_overrides(pair_dir), *extra])


def test_every_ar_cell_is_timed_against_transformers_generate(tmp_path, random_pair_dir):
    summary = run_cell(cell(tmp_path, random_pair_dir, "run_name=strong", *ACCEPT_WEAK))  # the ratio is a timing
    b = summary["baseline"]
    assert b["identical"] and b["ratio"] > 0 and b["prompts"] == 2 and b["ar_ms_per_token"] > 0
    assert json.loads((tmp_path / "results/strong/tiny-random/tiny/ar/baseline.json").read_text())["ratio"] == b["ratio"]
    text = report(tmp_path / "results")
    assert f"ar vs transformers generate: {b['ratio']:.2f}×" in text
    assert "ar vs transformers generate" in (tmp_path / "results/tables/table1.md").read_text()


def test_a_weak_baseline_is_refused_unless_accepted_and_then_marked(tmp_path, random_pair_dir, monkeypatch):
    real = baseline.calibrate
    monkeypatch.setattr(baseline, "calibrate", lambda *a, **k: {**real(*a, **k), "ratio": 0.8, "ratio_hi": 0.9})
    with pytest.raises(HarnessError, match="slower than transformers' generate.*accept_weak_baseline=true"):
        run_cell(cell(tmp_path, random_pair_dir, "run_name=weak"))
    assert not (tmp_path / "results/weak/tiny-random/tiny/ar/samples.jsonl").exists() or \
        not (tmp_path / "results/weak/tiny-random/tiny/ar/samples.jsonl").read_text()  # nothing was decoded
    summary = run_cell(cell(tmp_path, random_pair_dir, "run_name=weak", "accept_weak_baseline=true"))
    assert summary["baseline"]["accepted_weak"] is True and summary["n_ok"] == 2
    assert "WEAK BASELINE" in report(tmp_path / "results")
    assert "WEAK BASELINE" in (tmp_path / "results/tables/table1.md").read_text()


def test_the_calibration_itself_compares_identical_outputs():
    """Our ar against generate() on the same model: the same tokens, both timed."""
    from methods import DecodeSettings, Models, Prompt

    model = tiny_llama(3, vocab=64)

    class Pair:  # the two fields calibrate reads
        models, device = Models(model), torch.device("cpu")

    prompts = [Prompt({"input_ids": torch.tensor([[1, 5, 9]])}), Prompt({"input_ids": torch.tensor([[2, 7]])})]
    result = baseline.calibrate(Pair, model, prompts, DecodeSettings(max_new_tokens=6))
    assert result["identical"] and result["ar_ms_per_token"] > 0 and result["generate_ms_per_token"] > 0
    assert list(result["generate_settings_ms_per_token"]) == [baseline.DYNAMIC]  # a CPU: no compiled static cache
    both = baseline.calibrate(Pair, model, prompts, DecodeSettings(max_new_tokens=6), repeats=1,
                              generate={baseline.DYNAMIC: {}, baseline.STATIC: {"cache": "static"}})
    times = both["generate_settings_ms_per_token"]  # CUDA's pair of settings, run here without compilation
    assert both["identical"] and set(times) == {baseline.DYNAMIC, baseline.STATIC}
    assert both["generate_ms_per_token"] == min(times.values()) and both["generate"].endswith(min(times, key=times.get))
    assert result["lossless"] == "exact" and both["lossless"] == "exact"


def test_parity_is_not_refused_but_a_real_deficit_is():
    """Both loops run the same forward, so on a CPU they often tie: a tie (interval around 1) passes, a deficit
    beyond the noise (like prepacked weights on an Intel Xeon's 1-token steps, 0.8x) is refused."""
    tie = [0.97, 1.02, 0.99, 1.03, 0.98, 1.01]
    lo, hi = baseline.median_interval(tie)
    assert lo < 1.0 < hi and not baseline.weak({"ratio_hi": hi})
    lo, hi = baseline.median_interval([0.80, 0.83, 0.78, 0.81, 0.84, 0.79])
    assert hi < 1.0 and baseline.weak({"ratio_hi": hi})


def test_the_report_header_summarises_many_calibrated_cells_per_pair_and_names_each_weak_one(tmp_path):
    from harness.report import baseline_strength

    def cell(name, dataset, ratio, weak=False):
        d = tmp_path / name
        d.mkdir(parents=True)
        b = {"ratio": ratio, "ratio_lo": ratio - 0.1, "ratio_hi": ratio + 0.1, "ar_ms_per_token": 1.0,
             "generate_ms_per_token": ratio, "prompts": 2, "repeats": 3, "max_new_tokens": 24, "accepted_weak": weak}
        (d / "summary.json").write_text(json.dumps({"pair": "p", "dataset": dataset, "baseline": b}))
        (d / "env.json").write_text(json.dumps({"device_name": "Some CPU"}))

    cell("a/ar", "x", 1.1)
    cell("b/ar", "y", 1.3)
    cell("c/ar", "y", 0.5, weak=True)
    text = baseline_strength(tmp_path)
    assert "median 1.10× over 3 ar cells (range 0.50–1.30; p, Some CPU; 2 datasets" in text
    assert text.count("WEAK BASELINE") == 1 and "(c/ar), 0.50×" in text


def test_the_baseline_rule_is_one_function_for_every_device():
    """A faster static-cache generate() (stubbed timing) is refused on a CPU unless accepted, and on CUDA becomes the
    denominator; differing outputs stop the run only when LOSSY."""
    fast = {"ratio": 1.1, "ratio_lo": 1.02, "ratio_hi": 1.2, "lossless": "exact"}
    slow = {"ratio": 0.25, "ratio_lo": 0.22, "ratio_hi": 0.27, "ar_ms_per_token": 40.0, "generate_ms_per_token": 10.0,
            "lossless": "ties 1/2", "generate_cache": "static"}
    assert baseline.decide(fast, "cpu", False) == baseline.decide(fast, "cuda", False) == "ar"
    with pytest.raises(HarnessError, match="slower than transformers' generate"):
        baseline.decide(slow, "cpu", False)
    assert baseline.decide(slow, "cpu", True) == "ar"  # accepted: tables say WEAK BASELINE
    assert baseline.decide(slow, "cuda", False) == "hf_generate_static"  # no refusal: the report divides by it
    lossy = {**fast, "lossless": "LOSSY 1/2", "tolerance": 0.5, "differing": [{"verdict": "lossy", "prompt": 0}]}
    for device in ("cpu", "cuda"):
        with pytest.raises(HarnessError, match="beyond the tie tolerance"):
            baseline.decide(lossy, device, True)


def test_an_ar_cell_on_cuda_gets_a_static_cache_twin_and_on_a_cpu_none(tmp_path, random_pair_dir):
    from harness.run import static_twin

    cfg = cell(tmp_path, random_pair_dir)
    cuda = {"baseline": {"generate_settings_ms_per_token": {baseline.DYNAMIC: 30.0, baseline.STATIC: 8.0}}}
    twin = static_twin(cfg, cuda)
    assert twin.method.name == "hf_generate" and twin.method.cache == "static" and twin.baseline_check is False
    assert twin.dataset == cfg.dataset and twin.pair == cfg.pair and cfg.method.name == "ar"  # the same samples
    assert static_twin(cfg, {"baseline": {"generate_settings_ms_per_token": {baseline.DYNAMIC: 30.0}}}) is None
    assert static_twin(twin, cuda) is None  # only ar has a twin


def test_the_calibration_in_bfloat16_judges_differing_outputs_instead_of_aborting():
    from methods import DecodeSettings, Models, Prompt

    model = tiny_llama(3, vocab=64).to(torch.bfloat16)

    class Pair:  # the fields calibrate and the verdict read
        models, device, eos_token_ids, tokenizer = Models(model), torch.device("cpu"), (), None

    prompts = [Prompt({"input_ids": torch.tensor([[1, 5, 9]])}), Prompt({"input_ids": torch.tensor([[2, 7]])})]
    result = baseline.calibrate(Pair, model, prompts, DecodeSettings(max_new_tokens=24), repeats=1,
                                generate={baseline.DYNAMIC: {}, baseline.STATIC: {"cache": "static"}})
    assert result["lossless"] == "exact" or result["lossless"].startswith("ties"), result
    assert baseline.decide(result, "cuda", False) in ("ar", "hf_generate_static")
