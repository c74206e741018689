"""`make bench-gpu`: the cost model's components at real model sizes, measured on a GPU.

The embedded pairs are too small to say anything about a 7B target on a GPU, and the real checkpoints are
gated downloads; but latency depends on shapes, not on weight values. So this builds random-weight models
from configs, straight on the device in the benchmark dtype (no fp32 copy on the CPU first, so the 8B target
fits), and times the pieces of S = tau * t_ar / (gamma * t_draft + t_verify(gamma + 1)):

  1. verify latency of the targets (LLaVA-1.5-7B's Llama-2-7B text model, Llama-3.1-8B) for n = 1..64 new
     tokens appended to a KV cache of `context` tokens (n = 1 is the autoregressive step t_ar);
  2. draft-step latency: one token through the LVLM-68M draft (a LLaVA around Llama-68M) and through the
     EAGLE-3 drafter (`methods.eagle.EagleDrafter`) with each head;
  3. TABED's batched-mode draft cost: K = 1..4 drafting modes in one batched forward vs one after another
     (`methods.drafting.ModelDrafter` on a multimodal prompt);
  4. head latency on the EAGLE-3 hidden state: full vs reduced vs FR-Spec vs SpecVocab(k) (`methods.eagle3.Head`);
  5. the predicted speedup at tau = 2, 3, 4 from those latencies;
  0. first, the baseline those speedups are over: our `ar` against transformers' generate() on the Llama-3.1-8B
     target with a dynamic cache and with a static cache (which transformers compiles with torch.compile on
     CUDA), greedy, outputs judged exact, ties or LOSSY (harness.baseline.calibrate); the table names the faster generate().

Timing: CUDA events on a GPU (perf_counter elsewhere), warm-ups first, cases interleaved (A B .., .. B A),
medians. `--scale tiny` runs the same code with small stand-in sizes so it is tested on CPU; its numbers
mean nothing. Writes results/bench/gpu.md (+ gpu.json, raw samples) for a full-scale CUDA run, otherwise
gpu-<scale>-<device>.md (+ .json), so a CPU check never overwrites the GPU table.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, CLIPVisionConfig, LlamaConfig, LlavaConfig

from harness import PROJECT_ROOT
from harness.models import resolve_dtype
from harness.records import environment
from methods import DecodeSettings
from methods.core import Models, Prompt, crop_cache, forward, new_cache, now
from methods.drafting import MODES, ModelDrafter, Verdict
from methods.eagle import EagleDrafter
from methods.eagle3 import Eagle3, VocabSpeculator, feature_layers, head_for

# --- shapes -------------------------------------------------------------------------------------------------

CLIP_L_336 = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                  image_size=336, patch_size=14, projection_dim=768)
LLAMA_3_1_8B = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                    intermediate_size=14336, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=131072)

SHAPES = {
    "full": dict(
        # LLaVA-1.5-7B: Llama-2-7B text model (vocabulary 32064 as in llava-hf) + CLIP ViT-L/14-336
        llava_text=dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                        intermediate_size=11008, vocab_size=32064, max_position_embeddings=4096),
        # TABED's LVLM-68M draft: the same LLaVA wrapper around Llama-68M, with the CLIP shape of the target
        draft_text=dict(hidden_size=768, num_hidden_layers=2, num_attention_heads=12, num_key_value_heads=12,
                        intermediate_size=3072, vocab_size=32064, max_position_embeddings=2048),
        vision=CLIP_L_336, image_token=32000,
        llama=LLAMA_3_1_8B,
        # EAGLE-3's Llama-3.1-8B drafter: one decoder layer of the target's width, a 32000-token draft vocabulary
        eagle=dict(LLAMA_3_1_8B, num_hidden_layers=1, draft_vocab_size=32000),
        speculator_rank=512, specvocab_k=(1024, 2048, 4096),
        context=512, prompt_text=64,
    ),
    "tiny": dict(
        llava_text=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                        intermediate_size=128, vocab_size=512, max_position_embeddings=512),
        draft_text=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                        intermediate_size=64, vocab_size=512, max_position_embeddings=512),
        vision=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=56,
                    patch_size=14, projection_dim=32),
        image_token=500,
        llama=dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=128, vocab_size=1024, max_position_embeddings=512),
        eagle=dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=128, vocab_size=1024, max_position_embeddings=512, draft_vocab_size=256),
        speculator_rank=16, specvocab_k=(32, 64, 128),
        context=32, prompt_text=8,
    ),
}
VERIFY_TOKENS = (1, 2, 4, 8, 16, 32, 64)
CAPTION = "a photograph of a small dog running across a green field"  # what the C mode's captioner returns


# --- building random models on the device ----------------------------------------------------------------------


@contextmanager
def building(device: torch.device, dtype: torch.dtype):
    """New parameters and buffers are created on `device` in `dtype` directly: an 8B model in fp16 never
    exists as fp32 tensors on the CPU (32 GB), so it builds in seconds on an 80 GB GPU."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def llava(text: dict, shape: dict, dtype: torch.dtype):
    """A LLaVA-1.5-style model (CLIP tower, 2-layer GELU projector, Llama text model) with random weights."""
    vision = CLIPVisionConfig(**shape["vision"])
    patches = (vision.image_size // vision.patch_size) ** 2
    cfg = LlavaConfig(text_config=LlamaConfig(**text), vision_config=vision, image_token_index=shape["image_token"],
                      image_seq_length=patches, vision_feature_layer=-2, vision_feature_select_strategy="default",
                      projector_hidden_act="gelu")
    return AutoModelForImageTextToText.from_config(cfg, dtype=dtype).eval()


def eagle3(shape: dict, target, generator: torch.Generator) -> Eagle3:
    """An EAGLE-3 drafter attached to `target` as `methods.eagle3.load_eagle3` attaches a checkpoint (the
    target's input embedding, its output embedding as the full head), with a SpecVocab speculator, a random
    draft vocabulary (d2t) and random token frequencies for FR-Spec. Call inside `building`."""
    cfg = LlamaConfig(**{k: v for k, v in shape["eagle"].items() if k != "draft_vocab_size"})
    cfg.draft_vocab_size = shape["eagle"]["draft_vocab_size"]
    drafter = Eagle3(cfg, target.config.hidden_size)
    draft_ids = torch.randperm(cfg.vocab_size, generator=generator, device="cpu")[:cfg.draft_vocab_size].sort().values
    drafter.d2t.copy_(draft_ids - torch.arange(cfg.draft_vocab_size, device="cpu"))  # offsets to target ids
    drafter.speculator = VocabSpeculator(cfg.hidden_size, shape["speculator_rank"], cfg.vocab_size)
    drafter.frequent = torch.randperm(cfg.vocab_size, generator=generator, device="cpu")
    drafter.embed_tokens = target.get_input_embeddings()
    return drafter.eval()


def n_params(module, skip: tuple[str, ...] = ()) -> int:
    """Parameters of `module`, leaving out the submodules named in `skip` (shared or counted elsewhere)."""
    return sum(p.numel() for name, p in module.named_parameters() if not name.startswith(skip))


def release(device: torch.device) -> None:
    """Give the freed models' memory back before the next pair is built."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- timing ------------------------------------------------------------------------------------------------------


def clock(run, device: torch.device) -> float:
    """Seconds of one call. On a GPU, CUDA events bracket the call on the stream, so the time is the device's
    (kernel launch gaps included: a small model is launch-bound, and that is part of its latency)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start = now(device)
    run()
    return now(device) - start


def measure(cases: dict, device: torch.device, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Times of every case (name -> (run, reset)): `warmup` untimed calls each, then `repeats` timed ones, the
    order of the cases alternating (A B .., .. B A) so drift hits all alike. `reset` (e.g. cropping the cache
    back to the context) runs outside the clock before every call, so each call sees the same state."""
    for run, reset in cases.values():
        for _ in range(warmup):
            reset()
            run()
    times = {name: [] for name in cases}
    for rep in range(repeats):
        for name in list(cases) if rep % 2 == 0 else list(reversed(cases)):
            run, reset = cases[name]
            reset()
            times[name].append(clock(run, device))
    return times


# --- the measurements ------------------------------------------------------------------------------------------


def verify_latency(model, context: int, ns: list[int], low: int, high: int, layers, args, device) -> dict:
    """One target forward of n tokens onto a KV cache of `context` tokens, all n positions' logits returned
    (and EAGLE-3's features with `layers`), as `methods.speculative` verifies a block; cropped back after."""
    g = torch.Generator().manual_seed(0)
    cache = new_cache(model)
    forward(model, cache, torch.randint(low, high, (1, context), generator=g).to(device), logits_to_keep=1)
    blocks = {n: torch.randint(low, high, (1, n), generator=g).to(device) for n in ns}
    reset = lambda: crop_cache(cache, context)  # noqa: E731
    cases = {str(n): ((lambda b=blocks[n]: forward(model, cache, b, layers=layers)), reset) for n in ns}
    return measure(cases, device, args.repeats, args.warmup)


def draft_step(model, context: int, high: int, args, device) -> list[float]:
    """One token through a draft model with a KV cache of `context` tokens (next-token logits only)."""
    g = torch.Generator().manual_seed(1)
    cache = new_cache(model)
    forward(model, cache, torch.randint(0, high, (1, context), generator=g).to(device), logits_to_keep=1)
    token = torch.randint(0, high, (1, 1), generator=g).to(device)
    cases = {"step": (lambda: forward(model, cache, token, logits_to_keep=1), lambda: crop_cache(cache, context))}
    return measure(cases, device, args.repeats, args.warmup)["step"]


def char_tokenizer(text: str, add_special_tokens: bool = False) -> dict:
    """Stand-in for the random models' tokenizer (one id per character): the T and C drafting modes only need
    the newline id and the caption's ids."""
    return {"input_ids": [ord(c) for c in text]}


def batched_modes(target, draft, shape: dict, args, device, dtype) -> tuple[dict, int]:
    """TABED's draft step with K = 1..4 drafting modes (M, MT, MTC, MTCP; the C and P rows are shorter, so
    the batch is left-padded) in one batched forward vs one forward per mode, run by the harness's `ModelDrafter`
    on a LLaVA-1.5 prompt: BOS, the image's placeholder tokens, `prompt_text` text tokens."""
    g = torch.Generator().manual_seed(2)
    vision = draft.config.vision_config
    text = torch.randint(32, shape["image_token"], (shape["prompt_text"],), generator=g)
    ids = torch.cat([torch.tensor([1]), torch.full((draft.config.image_seq_length,), shape["image_token"]), text])
    pixels = torch.randn(1, 3, vision.image_size, vision.image_size, generator=g).to(device, dtype)
    prompt = Prompt(target={"input_ids": ids[None].to(device), "pixel_values": pixels}, images=[None])
    models = Models(target=target, draft=draft, tokenizer=char_tokenizer,
                    captioner=lambda images: [CAPTION] * len(images))
    configs = {"K=1 (M)": ("M", True)}
    for k in (2, 3, 4):
        modes = "".join(MODES[:k])
        configs[f"K={k} ({modes}) batched"] = (modes, True)
        configs[f"K={k} ({modes}) sequential"] = (modes, False)
    drafters = {name: ModelDrafter(models, prompt, list(modes), b).start() for name, (modes, b) in configs.items()}
    token = [int(text[-1])]
    cases = {name: ((lambda d=d: d.step(token)), (lambda d=d: d.crop(0))) for name, d in drafters.items()}
    return measure(cases, device, args.repeats, args.warmup), len(ids)


def bench_llava(shape: dict, ns: list[int], args, device, dtype) -> dict:
    """The TABED pair: LLaVA-1.5-7B target, LVLM-68M draft."""
    with building(device, dtype):
        target = llava(shape["llava_text"], shape, dtype)
        draft = llava(shape["draft_text"], shape, dtype)
    with torch.inference_mode():
        verify = verify_latency(target, shape["context"], ns, 0, shape["image_token"], None, args, device)
        step = draft_step(draft, shape["context"], shape["image_token"], args, device)
        tabed, prompt_len = batched_modes(target, draft, shape, args, device, dtype)
    return dict(verify=verify, draft_step=step, tabed=tabed, tabed_prompt=prompt_len,
                params={"target": n_params(target), "draft": n_params(draft)})


def bench_llama(shape: dict, ns: list[int], args, device, dtype) -> dict:
    """The EAGLE-3 pair: Llama-3.1-8B target, its EAGLE-3 drafter; draft steps with every head, and the heads
    alone on the drafter's normed hidden state."""
    g = torch.Generator().manual_seed(3)
    with building(device, dtype):
        target = AutoModelForCausalLM.from_config(LlamaConfig(**shape["llama"]), dtype=dtype).eval()
        eagle = eagle3(shape, target, g)
    cfg, context = eagle.config, shape["context"]
    layers = feature_layers(target.config.num_hidden_layers)
    width = len(layers) * target.config.hidden_size
    with torch.inference_mode():
        verify = verify_latency(target, context, ns, 0, cfg.vocab_size, layers, args, device)
    plain = plain_decoding(target, context, cfg.vocab_size, args, device, g)
    with torch.inference_mode():
        heads = {"full": head_for(eagle, target, "full", 0),
                 f"reduced {cfg.draft_vocab_size}": head_for(eagle, target, "reduced", 0),
                 f"frspec {cfg.draft_vocab_size}": head_for(eagle, target, "frspec", cfg.draft_vocab_size)}
        heads.update({f"specvocab k={k}": head_for(eagle, target, "specvocab", k) for k in shape["specvocab_k"]})
        reduced = heads[f"reduced {cfg.draft_vocab_size}"]
        # the drafter's cache holds `context` entries built from target features; every timed step appends
        # one token and is cropped back after (`crop(1)` keeps exactly the context's entries)
        ids = torch.randint(0, cfg.vocab_size, (context,), generator=g).to(device)
        drafter = EagleDrafter(eagle, reduced, ids, layers, context + 8)
        drafter.start(torch.randn(context, width, generator=g).to(device, dtype))
        drafter.step([int(ids[-1])])
        token, feature = [int(ids[0])], torch.randn(1, width, generator=g).to(device, dtype)

        def own_state(head):
            """A deeper draft step: the drafter's own last state in, logits over the target vocabulary out."""
            def reset():
                drafter.crop(1)
                drafter.head = head
            return lambda: drafter.step(token), reset

        def from_target():
            """The first draft step of a block instead: a target feature through fc."""
            drafter.crop(1)
            drafter.head = reduced
            drafter.observe(Verdict(None, [0], 0, feature))

        cases = {f"own state, head={name}": own_state(h) for name, h in heads.items()}
        cases[f"from target features (fc), head=reduced {cfg.draft_vocab_size}"] = (lambda: drafter.step(token),
                                                                                   from_target)
        steps = measure(cases, device, args.repeats, args.warmup)
        hidden = eagle.norm(drafter.hidden)  # [1, d]: what EagleDrafter hands its head
        head_times = measure({name: ((lambda h=h: h(hidden)), lambda: None) for name, h in heads.items()},
                             device, args.repeats, args.warmup)
    return dict(plain=plain, verify=verify, eagle_steps=steps, heads=head_times, feature_layers=layers,
                params={"target": n_params(target), "eagle": n_params(eagle, ("embed_tokens.", "speculator.")),
                        "speculator": n_params(eagle.speculator)})


def plain_decoding(target, context: int, vocab: int, args, device, g: torch.Generator) -> dict:
    """Our `ar` against transformers' generate() with a dynamic and with a static cache on `target`: `args.decode`
    greedy tokens after a random prompt of `context` tokens, interleaved (harness.baseline.calibrate, which also
    judges outputs that differ: exact, ties or LOSSY). On CUDA the static cache is compiled by transformers; elsewhere it is not."""
    from harness import baseline

    class Pair:  # what calibrate reads: our ar decodes the same (dense) target
        models = Models(target)

    prompt = Prompt({"input_ids": torch.randint(0, vocab, (1, context), generator=g).to(device)})
    settings = DecodeSettings(max_new_tokens=args.decode)
    return baseline.calibrate(Pair, target, [prompt], settings, repeats=max(1, args.repeats // 4),
                              generate={baseline.DYNAMIC: {}, baseline.STATIC: {"cache": "static"}})


# --- the report ------------------------------------------------------------------------------------------------------


def ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.1f} K"


def report(shape: dict, ns: list[int], lv: dict, ll: dict, args) -> list[str]:
    """The Markdown tables; every row names its figure."""
    text, dr, lm, eg, vis = shape["llava_text"], shape["draft_text"], shape["llama"], shape["eagle"], shape["vision"]
    context, g = shape["context"], args.gamma
    lines = ["## Models (random weights: the shapes are real at scale full, the values are not)", "",
             "| model | shape | parameters |", "|---|---|---|",
             f"| LLaVA-1.5-7B target | Llama-2-7B text ({text['hidden_size']} x {text['num_hidden_layers']} layers, "
             f"vocab {text['vocab_size']}) + CLIP ViT-L/14-336 ({vis['hidden_size']} x {vis['num_hidden_layers']} "
             f"layers, image {vis['image_size']}) | {count(lv['params']['target'])} |",
             f"| LVLM-68M draft | Llama-68M text ({dr['hidden_size']} x {dr['num_hidden_layers']} layers) + the same "
             f"CLIP | {count(lv['params']['draft'])} |",
             f"| Llama-3.1-8B target | {lm['hidden_size']} x {lm['num_hidden_layers']} layers, "
             f"{lm['num_key_value_heads']} KV heads, vocab {lm['vocab_size']} | {count(ll['params']['target'])} |",
             f"| EAGLE-3 drafter | 1 layer of {eg['hidden_size']}, fc from 3 x {lm['hidden_size']}, draft vocab "
             f"{eg['draft_vocab_size']} (full head: the target's, tied) | {count(ll['params']['eagle'])} |",
             f"| SpecVocab speculator | {eg['hidden_size']} -> {shape['speculator_rank']} -> {eg['vocab_size']} | "
             f"{count(ll['params']['speculator'])} |", ""]

    plain = ll["plain"]
    lines += [f"## 0. Plain decoding, the baseline: Llama-3.1-8B target, {plain['max_new_tokens']} greedy tokens after "
              f"{context} prompt tokens, {plain['repeats']} interleaved repeats, outputs "
              f"{plain['lossless']} (harness.lossless: ties are rounding, LOSSY a bug)", "",
              "| figure | ms / token |", "|---|---|", f"| our ar | {plain['ar_ms_per_token']:.2f} |"]
    lines += [f"| transformers {name} | {t:.2f} |" for name, t in plain["generate_settings_ms_per_token"].items()]
    lines += ["", f"**ar vs generate: {plain['ratio']:.2f}x** against the faster setting, {plain['generate']} "
              f"(95% interval {plain['ratio_lo']:.2f}-{plain['ratio_hi']:.2f}); the speedups below divide by t_ar, "
              "the target's 1-token step, which both decode with", ""]
    lines += [f"## 1. Verify latency vs new tokens n (one target forward onto a KV cache of {context} tokens, "
              "logits of all n positions)", "",
              "| figure | " + " | ".join(f"n={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
    for name, v in (("LLaVA-1.5-7B (text)", lv["verify"]), ("Llama-3.1-8B (with EAGLE-3 features)", ll["verify"])):
        one = ms(v["1"])
        lines.append(f"| verify ms, {name} | " + " | ".join(f"{ms(v[str(n)]):.2f}" for n in ns) + " |")
        lines.append(f"| verify / 1-token step, {name} | " + " | ".join(f"{ms(v[str(n)]) / one:.2f}x" for n in ns)
                     + " |")

    lines += ["", f"## 2. Draft-step latency (one token, cache of {context} tokens)", "",
              "| figure | ms |", "|---|---|",
              f"| draft step, LVLM-68M (Llama-68M text model, logits of the last position) | "
              f"{ms(lv['draft_step']):.3f} |"]
    lines += [f"| draft step, EAGLE-3 {name} | {ms(v):.3f} |" for name, v in ll["eagle_steps"].items()]

    one = ms(lv["tabed"]["K=1 (M)"])
    lines += ["", f"## 3. Batched-mode draft cost: LVLM-68M, TABED drafting modes on a multimodal prompt of "
              f"{lv['tabed_prompt']} tokens (one token appended to every mode's context)", "",
              "| figure | ms / draft step | vs K=1 |", "|---|---|---|"]
    lines += [f"| draft step {name} | {ms(v):.3f} | {ms(v) / one:.2f}x |" for name, v in lv["tabed"].items()]

    full = ms(ll["heads"]["full"])
    lines += ["", f"## 4. Head latency on the EAGLE-3 hidden state (one position, logits over the target "
              f"vocabulary of {eg['vocab_size']}; SpecVocab d'={shape['speculator_rank']})", "",
              "| figure | ms | vs full |", "|---|---|---|"]
    lines += [f"| head {name} | {ms(v):.3f} | {ms(v) / full:.2f}x |" for name, v in ll["heads"].items()]

    pairs = [("LLaVA-1.5-7B + LVLM-68M (1 mode)", lv["verify"], ms(lv["draft_step"])),
             ("LLaVA-1.5-7B + LVLM-68M, TABED K=4 batched", lv["verify"],
              ms(next(v for k, v in lv["tabed"].items() if k.startswith("K=4") and k.endswith("batched"))))]
    pairs += [(f"Llama-3.1-8B + EAGLE-3, head={name.removeprefix('own state, head=')}", ll["verify"], ms(v))
              for name, v in ll["eagle_steps"].items() if name.startswith("own state")]
    lines += ["", f"## 5. Cost model at gamma {g}: predicted S = tau * t_ar / (gamma * t_draft + t_verify(gamma+1))",
              "", f"| figure | t_ar ms | t_draft ms | t_verify({g + 1}) ms | S at tau=2 | S at tau=3 | S at tau=4 | "
              "break-even tau |", "|---|---|---|---|---|---|---|---|"]
    for name, verify, t_draft in pairs:
        t_ar, t_verify = ms(verify["1"]), ms(verify[str(g + 1)])
        cost = g * t_draft + t_verify
        lines.append(f"| predicted speedup, {name} | {t_ar:.2f} | {t_draft:.3f} | {t_verify:.2f} | "
                     + " | ".join(f"{tau * t_ar / cost:.2f}x" for tau in (2, 3, 4)) + f" | {cost / t_ar:.2f} |")
    return lines


def pick_device(name: str) -> torch.device:
    """The device, or one clear error: this benchmark exists for a GPU, and a missing one must not pass
    silently as a CPU run."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"--device {name!r}: not a device; use cuda, cuda:N or cpu") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA GPU is available here (torch {torch.__version__}, CUDA build: "
                         f"{torch.version.cuda or 'none'}). The real numbers need a GPU; to check the code on this "
                         "machine run: python -m harness.bench_gpu --device cpu --scale tiny")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SystemExit(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.bench_gpu", description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--scale", choices=list(SHAPES), default="full",
                    help="full: the real shapes; tiny: small stand-ins that run on a CPU in seconds (a code check)")
    ap.add_argument("--dtype", choices=["auto", "float16", "bfloat16", "float32"], default="auto",
                    help="auto: float16 on cuda, float32 on cpu")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per case (the median is reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls per case first")
    ap.add_argument("--gamma", type=int, default=5, help="draft length of the cost-model rows")
    ap.add_argument("--decode", type=int, default=64, help="greedy tokens per decode of the baseline section")
    ap.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "bench")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.gamma < 1:
        ap.error("--repeats and --gamma must be >= 1, --warmup >= 0")
    device = pick_device(args.device)
    dtype = resolve_dtype(args.dtype, device) or torch.float16  # auto on CUDA: random weights ship no dtype
    shape = SHAPES[args.scale]
    ns = sorted(set(VERIFY_TOKENS) | {args.gamma + 1})

    env = environment(device)
    started = time.time()
    llava_results = bench_llava(shape, ns, args, device, dtype)
    release(device)
    llama_results = bench_llama(shape, ns, args, device, dtype)
    gpu = device.type == "cuda"
    peak = f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if gpu else ""
    cuda = f" (CUDA {torch.version.cuda})" if gpu else ""
    stand_in = "" if args.scale == "full" else " (small stand-in sizes: a code check, not a measurement)"
    lines = [f"# GPU benchmark: cost-model components ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"Device: **{env['device_name']}** ({device}), torch {env['versions']['torch']}{cuda}, transformers "
             f"{env['versions']['transformers']}, {str(dtype).removeprefix('torch.')}, git {env['git_sha']}"
             f"{' (dirty)' if env['git_dirty'] else ''}.",
             f"Scale **{args.scale}**{stand_in}; clock: {'CUDA events' if gpu else 'perf_counter'}; median of "
             f"{args.repeats} timed calls after {args.warmup} warm-ups, cases interleaved; "
             f"{time.time() - started:.1f} s in all{peak}.", ""]
    lines += report(shape, ns, llava_results, llama_results, args)
    print("\n".join(lines), flush=True)

    stem = "gpu" if gpu and args.scale == "full" else f"gpu-{args.scale}-{device.type}"
    args.out.mkdir(parents=True, exist_ok=True)
    raw = {"args": {k: str(v) for k, v in vars(args).items()}, "env": env, "dtype": str(dtype), "shape": shape,
           "llava": llava_results, "llama": llama_results}
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (args.out / f"{stem}.json").write_text(json.dumps(raw, indent=2))
    print(f"wrote {args.out / f'{stem}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
