"""`make bench-gpu` (harness.bench_gpu): the tiny scale end to end on CPU, the full shapes built on the meta
device (their sizes, without the memory), the timing loop's order, and the error without a GPU."""
import json
import re

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from harness.bench_gpu import SHAPES, building, eagle3, llava, main, measure, n_params

SECTIONS = ("## Models", "## 0. Plain decoding", "## 1. Verify latency", "## 2. Draft-step latency", "## 3. Batched-mode draft cost",
            "## 4. Head latency", "## 5. Cost model at gamma 5")


def tables(md: str) -> dict[str, list[list[str]]]:
    """Body rows (cells) of every table, by the section heading above it."""
    out, section = {}, None
    for line in md.splitlines():
        if line.startswith("## "):
            section = line
            out[section] = []
        elif line.startswith("| ") and section and not line.startswith("| figure") and not line.startswith("| model"):
            out[section].append([c.strip() for c in line.strip("|").split("|")])
    return out


def number(cell: str) -> float:
    return float(re.fullmatch(r"([0-9.]+)\s*(x| B| M| K)?", cell).group(1))


def test_tiny_scale_runs_end_to_end_on_cpu(tmp_path):
    assert main(["--device", "cpu", "--scale", "tiny", "--repeats", "1", "--decode", "6", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "gpu-tiny-cpu.md").read_text()
    assert not (tmp_path / "gpu.md").exists()  # a CPU check never takes the GPU table's name
    assert "torch " + torch.__version__ in md and "perf_counter" in md and "Scale **tiny**" in md
    found = tables(md)
    for heading in SECTIONS:
        section = next((rows for h, rows in found.items() if h.startswith(heading)), None)
        assert section, f"missing section {heading}"
        for row in section:  # every figure is a positive number (a dead case would time as 0 or fail to parse)
            figures = row[-1:] if heading == "## Models" else row[1:]  # the models table: shape text, then size
            assert row[0] and figures and all(number(c) > 0 for c in figures), row
    rows = {row[0] for rs in found.values() for row in rs}
    assert "outputs exact (harness.lossless" in md and "**ar vs generate: " in md
    expected = {"our ar", "transformers generate(): greedy, dynamic cache, dense weights",
                "transformers generate(): greedy, static cache (compiled by transformers on CUDA), dense weights",
                "verify ms, LLaVA-1.5-7B (text)", "verify ms, Llama-3.1-8B (with EAGLE-3 features)",
                "draft step, LVLM-68M (Llama-68M text model, logits of the last position)",
                "draft step, EAGLE-3 own state, head=full", "draft step, EAGLE-3 own state, head=reduced 256",
                "draft step, EAGLE-3 own state, head=specvocab k=128",
                "draft step, EAGLE-3 from target features (fc), head=reduced 256",
                "draft step K=1 (M)", "head full", "head reduced 256", "head frspec 256",
                "predicted speedup, LLaVA-1.5-7B + LVLM-68M (1 mode)",
                "predicted speedup, Llama-3.1-8B + EAGLE-3, head=specvocab k=32"}
    expected |= {f"draft step K={k} ({'MTCP'[:k]}) {how}" for k in (2, 3, 4) for how in ("batched", "sequential")}
    expected |= {f"head specvocab k={k}" for k in SHAPES["tiny"]["specvocab_k"]}
    assert expected <= rows, expected - rows
    verify_header = next(line for line in md.splitlines() if line.startswith("| figure | n=1"))
    assert verify_header == "| figure | " + " | ".join(f"n={n}" for n in (1, 2, 4, 6, 8, 16, 32, 64)) + " |"

    raw = json.loads((tmp_path / "gpu-tiny-cpu.json").read_text())
    assert set(raw["llava"]["verify"]) == {"1", "2", "4", "6", "8", "16", "32", "64"}
    samples = [raw["llava"]["draft_step"], *raw["llava"]["tabed"].values(), *raw["llama"]["eagle_steps"].values(),
               *raw["llama"]["heads"].values(), *raw["llama"]["verify"].values()]
    assert all(len(s) == 1 and s[0] > 0 for s in samples)  # --repeats 1: one raw sample per case, warm-ups dropped
    # the tabed prompt is BOS + the image's 16 placeholder tokens (56 px / 14 px patches, squared) + 8 text tokens
    assert raw["llava"]["tabed_prompt"] == 1 + 16 + 8


def test_measure_interleaves_resets_and_drops_warmups():
    log = []
    cases = {name: ((lambda n=name: log.append(n)), (lambda n=name: log.append(f"reset {n}"))) for name in "AB"}
    times = measure(cases, torch.device("cpu"), repeats=3, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"A": 3, "B": 3}
    calls = [c for c in log if not c.startswith("reset")]
    assert calls == ["A", "B"] + ["A", "B", "B", "A", "A", "B"]  # warm-ups, then A B / B A / A B
    assert all(log[i] == f"reset {log[i + 1]}" for i in range(0, len(log), 2))  # a reset before every call


def test_full_shapes_have_the_real_sizes_and_build_on_the_target_device():
    """The meta device stands in for the GPU: parameters are created there in fp16, never on the CPU first."""
    shape, meta = SHAPES["full"], torch.device("meta")
    with building(meta, torch.float16):
        target = llava(shape["llava_text"], shape, torch.float16)
        draft = llava(shape["draft_text"], shape, torch.float16)
        llama = AutoModelForCausalLM.from_config(LlamaConfig(**shape["llama"]), dtype=torch.float16)
        eagle = eagle3(shape, llama, torch.Generator().manual_seed(0))
    assert torch.get_default_dtype() == torch.float32  # restored
    for model in (target, draft, llama, eagle):
        assert {(p.device.type, p.dtype) for p in model.parameters()} == {("meta", torch.float16)}
    assert n_params(target) == pytest.approx(7.06e9, rel=2e-3)  # llava-hf/llava-1.5-7b-hf
    assert n_params(llama) == pytest.approx(8.03e9, rel=2e-3)  # meta-llama/Llama-3.1-8B
    assert n_params(draft.model.language_model) + n_params(draft.lm_head) == pytest.approx(68e6, rel=0.01)
    assert draft.config.image_seq_length == target.config.image_seq_length == 576
    assert tuple(eagle.fc.weight.shape) == (4096, 3 * 4096) and tuple(eagle.lm_head.weight.shape) == (32000, 4096)
    assert tuple(eagle.speculator.vocab.weight.shape) == (128256, 512)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_says_so(tmp_path):
    with pytest.raises(SystemExit) as err:
        main(["--device", "cuda", "--out", str(tmp_path)])
    message = str(err.value.code)
    assert "no CUDA GPU is available" in message and "--device cpu --scale tiny" in message
    assert not list(tmp_path.iterdir())  # nothing built, nothing written
