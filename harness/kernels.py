"""Kernel levers chosen by measurement on the machine at hand, never by rule.

`pack_weights=auto` (harness.packing): oneDNN-prepacked linear weights make a multi-token verify cheap, but whether
they make the 1-token step faster or slower depends on the CPU (results/bench/latest.md, sections `design`,
`kernels`, `baseline-intel`). So `auto` times, for each model of a pair, the forward that model
runs most in the cell's method (a 1-token step for `ar`'s target and for every draft; a block of gamma + 1 tokens,
or the tree's nodes, for a speculative method's target) with dense and with packed weights, interleaved, at a
fixed context, and packs only the models that run faster packed. `ar` therefore always decodes with whichever
setting makes it fastest. Timings are cached per machine (CPU name, library versions, threads), model, dtype and
shape in $SPEC_HARNESS_CACHE/kernels.json (default ~/.cache/spec-harness), and every cell records them in env.json.
A timing taken while other processes kept the CPUs busy (`busy_share` above BUSY_LIMIT just before it) is used
once but marked provisional: the next run measures again, and caches for good only a timing taken on a quiet machine.

The build scripts' mixed-precision dtype (`training_dtype`, bfloat16 or float32) is chosen and remembered the same way.
"""
from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from harness.packing import pack_linears
from methods.core import crop_cache, forward, new_cache, now

CONTEXT = 64  # tokens of context the timed forwards attend to
REPEATS = 9  # timed rounds (the median is kept), after WARMUP rounds
WARMUP = 2
BUSY_LIMIT = 0.25  # share of all CPU time spent by other work just before a timing, above which it is provisional


def cache_file() -> Path:
    return Path(os.environ.get("SPEC_HARNESS_CACHE", "~/.cache/spec-harness")).expanduser() / "kernels.json"


def machine() -> str:
    """What a timing depends on besides the model: the CPU, the libraries and the thread count."""
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu} | torch {torch.__version__} | transformers {transformers.__version__} | {torch.get_num_threads()} threads"


def busy_share(window_s: float = 0.3) -> float | None:
    """Share of all CPUs' time spent busy over `window_s` (from /proc/stat; None where there is none). Called while
    this process is idle, it says how much other work would compete with a timing."""
    def totals():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait
    try:
        all0, idle0 = totals()
        time.sleep(window_s)
        all1, idle1 = totals()
    except (OSError, ValueError, IndexError):
        return None
    return round(1 - (idle1 - idle0) / max(1, all1 - all0), 3)


@torch.inference_mode()
def time_forwards(models: dict, tokens: int, device: torch.device) -> dict[str, float]:
    """Median milliseconds of a `tokens`-token forward after CONTEXT tokens, per model in `models` (name -> model),
    the models taking turns (interleaved, alternating order) so that drift on a shared machine hits all alike."""
    # ordinary text ids: a vision model's image placeholder id among them would ask for image features
    vocab = min(1000, *(m.config.get_text_config().vocab_size for m in models.values()))
    ids = torch.randint(3, vocab, (1, CONTEXT + tokens), generator=torch.Generator().manual_seed(0)).to(device)
    caches = {}
    for name, model in models.items():
        caches[name] = new_cache(model)
        forward(model, caches[name], ids[:, :CONTEXT], logits_to_keep=1)
    times = {name: [] for name in models}
    order = list(models)
    for rnd in range(WARMUP + REPEATS):
        for name in order if rnd % 2 == 0 else order[::-1]:
            start = now(device)
            forward(models[name], caches[name], ids[:, CONTEXT:], logits_to_keep=tokens)
            elapsed = now(device) - start
            crop_cache(caches[name], CONTEXT)
            if rnd >= WARMUP:
                times[name].append(elapsed)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def measure(model, tokens: int, device: torch.device) -> dict[str, float]:
    """{"dense_ms", "packed_ms"}: a `tokens`-token forward of `model` as it is and of a packed copy of it."""
    packed = copy.deepcopy(model)
    pack_linears(packed)
    ms = time_forwards({"dense": model, "packed": packed}, tokens, device)
    return {"dense_ms": round(ms["dense"], 3), "packed_ms": round(ms["packed"], 3)}


def remembered(key: str, measure_fn, busy_fn=None) -> dict:
    """The measurement cached under `key` (which names this machine) when it was taken on a quiet machine, else a
    fresh `measure_fn()`, cached for good when the machine was quiet and marked `provisional` when it was not."""
    file = cache_file()

    def read() -> dict:
        try:
            return json.loads(file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
    if key in (cached := read()) and not cached[key].get("provisional"):
        return {**cached[key], "cached": True}
    busy = (busy_fn or busy_share)()
    timing = {**measure_fn(), "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "busy_share_before": busy,
              "provisional": busy is not None and busy > BUSY_LIMIT}
    cached = {**read(), key: timing}  # read again: another job may have added its own while this one measured
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cached, indent=1))
    tmp.replace(file)  # atomic: parallel jobs never read half a file
    return {**timing, "cached": False}


def choose_packing(model_id: str, model, tokens: int, device: torch.device, measure_fn=None, busy_fn=None) -> dict:
    """Whether `model` (dense, as loaded) decodes faster packed at `tokens` tokens a forward: the cached timing when
    this machine has one for this model, dtype and shape taken on a quiet machine, else a fresh measurement (a few
    seconds)."""
    def timed() -> dict:
        ms = (measure_fn or measure)(model, tokens, device)
        return {**ms, "tokens": tokens, "packed": ms["packed_ms"] < ms["dense_ms"]}
    return remembered(f"{machine()} | {model_id} | {str(model.dtype).removeprefix('torch.')} | {tokens} tokens", timed,
                      busy_fn)


def matmul_ms(shape: tuple[int, int, int] = (256, 576, 1536)) -> dict[str, float]:
    """Median milliseconds of an [m, k] @ [k, n] product in bfloat16 and in float32, the two taking turns after a
    warm-up (a first bfloat16 product pays oneDNN's kernel generation, many times a warm one's cost)."""
    m, k, n = shape
    gen = torch.Generator().manual_seed(0)
    pairs = {d: (torch.randn(m, k, generator=gen).to(d), torch.randn(k, n, generator=gen).to(d))
             for d in (torch.bfloat16, torch.float32)}
    times = {d: [] for d in pairs}
    for rnd in range(WARMUP + REPEATS):
        for d, (a, w) in pairs.items() if rnd % 2 == 0 else reversed(pairs.items()):
            start = time.perf_counter()
            a @ w
            if rnd >= WARMUP:
                times[d].append(time.perf_counter() - start)
    return {f"{str(d).removeprefix('torch.')}_ms": round(statistics.median(t) * 1e3, 4) for d, t in times.items()}


def training_dtype(measure_fn=None, busy_fn=None) -> torch.dtype:
    """The mixed-precision dtype of the build scripts: bfloat16 where this CPU multiplies it faster than float32
    (native bf16: AVX512-BF16, AMX), else float32 (emulated bf16 is far slower on a CPU without it).
    Remembered per machine like every lever here, so that each process of a build, a resume included, trains in
    and names its cached stages by the same dtype: measured afresh in every process, a busy moment can pick float32
    where the quiet machine picks bfloat16, and a resumed build would redo a finished stage (the measurements:
    results/bench/latest.md, section `design`)."""
    def timed() -> dict:
        ms = (measure_fn or matmul_ms)()
        return {**ms, "bfloat16": ms["bfloat16_ms"] < ms["float32_ms"]}
    choice = remembered(f"{machine()} | training dtype | matmul 256x576 @ 576x1536", timed, busy_fn)
    return torch.bfloat16 if choice["bfloat16"] else torch.float32


def block_tokens(method_name: str, options: dict) -> int:
    """Tokens per target forward the method runs most: 1 for `ar` and plain generation, the verified block for a
    speculative method (gamma + 1 for a chain, 1 + gamma * tree_width with siblings, total_tokens for a dynamic tree,
    3 for blocks that end at a confidence threshold, which measured at ~2 drafted tokens here)."""
    gamma = options.get("gamma")
    if not gamma:
        return 1
    if options.get("confidence"):  # blocks end where the draft is unsure: 1-3 drafted tokens on the embedded pair
        return 1 + min(int(gamma), 2)
    if options.get("top_k"):
        return int(options.get("total_tokens", 60))
    return 1 + int(gamma) * int(options.get("tree_width", 1) or 1)
