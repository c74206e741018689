"""Run one cell (method x pair x dataset): load, warm up, decode every sample, write records."""
from __future__ import annotations

import dataclasses
import json
import logging
import time
import traceback
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from harness import HarnessError, baseline, kernels, packing
from harness.data import Sample, load_samples, open_images
from harness.models import Pair, load_model, load_pair, resolve_device, resolve_dtype
from harness.records import (
    BASELINE, CONFIG, ENV, SAMPLES, SUMMARY, append_sample, cell_dir, check_identity, environment, load_summary,
    read_complete, summarize, write_atomic,
)
from methods import DecodeSettings, get_method

log = logging.getLogger("harness")
RESERVED_METHOD_KEYS = ("name", "tag", "needs_draft", "needs_eagle")


def method_options(cfg) -> dict:
    return {k: v for k, v in OmegaConf.to_container(cfg.method, resolve=True).items() if k not in RESERVED_METHOD_KEYS}


def decode_sample(pair: Pair, generate, options: dict, sample: Sample, settings: DecodeSettings, seed: int,
                  given: str | None = None) -> list[dict]:
    """All turns of one sample; turn k sees the target's own answers to turns < k (and every image so far).
    `given` is a stored first answer to reuse instead of decoding turn 0 (then turn 0 gets no record).
    A failure is recorded in that turn's line and ends the sample; it never ends the run."""
    generator = torch.Generator(device=pair.device).manual_seed(seed)
    messages, records, n_images = [], [], 0
    for turn, (text, added) in enumerate(zip(sample.turns, sample.images_per_turn())):
        rec = {"id": sample.id, "turn": turn, "status": "ok", "error": None}
        try:
            if sample.error:
                raise HarnessError(sample.error)
            if not text.strip():
                raise HarnessError(f"sample {sample.id!r} turn {turn}: empty prompt")
            messages.append({"role": "user", "content": text, "n_images": added})
            n_images += added
            if turn == 0 and given is not None:
                messages.append({"role": "assistant", "content": given})
                continue
            prompt = pair.encode(messages, open_images(sample.images[:n_images]))
            result = generate(pair.models, prompt, settings, generator, **options)
        except Exception as err:  # noqa: BLE001 - a failed sample is data, not a crash
            rec.update(status="error", error=f"{type(err).__name__}: {err}", final_turn=True)
            if not isinstance(err, HarnessError):
                log.debug("sample %s failed:\n%s", sample.id, traceback.format_exc())
            records.append(rec)
            return records
        out = result.tokens[0]
        answer = pair.tokenizer.decode(out, skip_special_tokens=True)
        messages.append({"role": "assistant", "content": answer})
        rec.update(n_prompt_tokens=int(prompt.target["input_ids"].shape[1]), new_tokens=len(out),
                   output_ids=out, output_text=answer, wall_s=result.stats["prefill_s"] + result.stats["decode_s"],
                   **result.stats)
        records.append(rec)
    records[-1]["final_turn"] = True
    return records


def stored_first_turns(cfg) -> dict[str, str]:
    """Turn-0 answers of another finished cell (`reuse_first_turn=DIR`), to decode only later turns."""
    src = cfg.get("reuse_first_turn")
    if not src:
        return {}
    cell = Path(src)
    if not (cell / SAMPLES).exists() or not (cell / CONFIG).exists():
        raise HarnessError(f"reuse_first_turn={src}: not a results cell (needs {SAMPLES} and {CONFIG})")
    other = OmegaConf.load(cell / CONFIG)
    if other.pair.target.id != cfg.pair.target.id or other.dataset.name != cfg.dataset.name:
        raise HarnessError(f"reuse_first_turn={src} was decoded by target {other.pair.target.id} on "
                           f"{other.dataset.name}, not {cfg.pair.target.id} on {cfg.dataset.name}")
    return {r["id"]: r["output_text"] for r in read_complete(cell) if r["turn"] == 0 and r["status"] == "ok"}


def baseline_strength(cfg, pair: Pair, samples: list[Sample], settings_base: dict, dtype, device) -> dict:
    """harness.baseline's calibration of this `ar` against transformers' generate() on the cell's first prompts;
    raises (before any decoding) when ours is slower and the user has not accepted that."""
    settings = DecodeSettings(**{**settings_base, "max_new_tokens": min(cfg.max_new_tokens, baseline.TOKENS)},
                              eos_token_ids=pair.eos_token_ids)
    prompts = []
    for s in samples:  # the first prompts that build: a bad sample is the run's to record, not the calibration's
        if len(prompts) == baseline.PROMPTS:
            break
        try:
            n = s.images_per_turn()[0]
            if not s.error and s.turns[0].strip():
                prompts.append(pair.encode([{"role": "user", "content": s.turns[0], "n_images": n}],
                                           open_images(s.images[:n])))
        except Exception:  # noqa: BLE001 - e.g. an unreadable image: that sample fails later, in its own record
            continue
    if not prompts or not settings.greedy:
        return {"skipped": "no usable prompt" if not prompts else "sampling: greedy outputs are what it compares"}
    dense = load_model(cfg.pair.target.id, dtype, device, False)[0]  # what a user's generate() runs
    result = baseline.calibrate(pair, dense, prompts, settings)
    result["accepted_weak"] = baseline.weak(result) and bool(cfg.get("accept_weak_baseline", False))
    log.info("baseline: our ar %.2f ms/token, transformers generate() %.2f ms/token: ar vs generate %.2fx (%.2f-%.2f)",
             result["ar_ms_per_token"], result["generate_ms_per_token"], result["ratio"], result["ratio_lo"],
             result["ratio_hi"])
    baseline.check(result, bool(cfg.get("accept_weak_baseline", False)))
    return result


def run_cell(cfg) -> dict:
    cell = cell_dir(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    check_identity(cell, resolved)
    loaded = load_samples(cfg.dataset, cfg.n_samples)
    samples = loaded.samples
    summary = load_summary(cell)
    if summary and summary.get("sample_ids") == [s.id for s in samples]:
        log.info("skip %s: finished (summary.json exists)", cell)
        return summary

    generate = get_method(cfg.method.name)
    options = method_options(cfg)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    settings_base = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    if cfg.max_new_tokens < 1 or cfg.temperature < 0 or not 0 < cfg.top_p <= 1:
        raise HarnessError(f"bad decoding settings {settings_base}: need max_new_tokens >= 1, temperature >= 0, "
                           "0 < top_p <= 1")
    pack = packing.wanted(cfg.pack_weights, device, dtype)
    pair = load_pair(cfg.pair, device, dtype, need_draft=cfg.method.get("needs_draft", False),
                     need_eagle=cfg.method.get("needs_eagle", False), pack=pack,
                     block=kernels.block_tokens(cfg.method.name, options))
    settings = DecodeSettings(**settings_base, eos_token_ids=pair.eos_token_ids)

    cell.mkdir(parents=True, exist_ok=True)
    (cell / SUMMARY).unlink(missing_ok=True)  # the sample set changed: the old summary no longer holds
    write_atomic(cell / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    dtypes = {role: str(next(m.parameters()).dtype).removeprefix("torch.") for role, m in
              (("target", pair.models.target), ("draft", pair.models.draft), ("eagle", pair.models.eagle)) if m is not None}
    packed = {role: k["packed"] for role, k in pair.kernels.items()}
    write_atomic(cell / ENV, json.dumps({**environment(device), "packed_linear_weights": packed, "dtypes": dtypes,
                                         "kernels": pair.kernels, "kernel_machine": kernels.machine()}, indent=2))
    done = read_complete(cell)
    done_ids = {r["id"] for r in done}
    todo = [(i, s) for i, s in enumerate(samples) if s.id not in done_ids]
    log.info("%s: %d samples, %d done, %d to go", cell, len(samples), len(samples) - len(todo), len(todo))

    if todo and cfg.warmup:
        warm = DecodeSettings(**{**settings_base, "max_new_tokens": min(cfg.max_new_tokens, 16)},
                              eos_token_ids=pair.eos_token_ids)
        for _ in range(cfg.warmup):  # not recorded: first calls pay for allocation and kernel selection
            decode_sample(pair, generate, options, dataclasses.replace(samples[0], turns=samples[0].turns[:1]), warm, cfg.seed)

    strength = None
    if todo and cfg.method.name == "ar" and cfg.get("baseline_check", True):
        strength = baseline_strength(cfg, pair, samples, settings_base, dtype, device)
        write_atomic(cell / BASELINE, json.dumps(strength, indent=2))

    wanted = {s.id for s in samples}
    records = [r for r in done if r["id"] in wanted]
    first = stored_first_turns(cfg)
    started = time.perf_counter()
    with open(cell / SAMPLES, "a", encoding="utf-8") as f:
        bar = tqdm(todo, desc=f"{cfg.method.tag} {cfg.dataset.name}", unit="sample", disable=not cfg.progress)
        for index, sample in bar:
            recs = decode_sample(pair, generate, options, sample, settings, cfg.seed + index, first.get(sample.id))
            append_sample(f, recs)
            records.extend(recs)
            for r in recs:
                if r["status"] != "ok":
                    log.warning("sample %s turn %d failed: %s", r["id"], r["turn"], r["error"])
            ok = [r for r in records if r["status"] == "ok"]
            bar.set_postfix(tau=f"{sum(r['new_tokens'] for r in ok) / max(1, sum(r['target_calls'] for r in ok)):.2f}")

    summary = summarize(records, {
        "cell": str(cell), "method": cfg.method.name, "method_tag": cfg.method.tag, "pair": cfg.pair.name,
        "dataset": cfg.dataset.name, "dataset_source": loaded.info["source"], "dataset_selection": loaded.info,
        "sample_ids": [s.id for s in samples], "n_samples": len(samples), "warmup": cfg.warmup,
        "settings": settings_base, "run_seconds_this_session": time.perf_counter() - started,
        **({"baseline": strength} if strength else {}),
    })
    write_atomic(cell / SUMMARY, json.dumps(summary, indent=2))
    log.info("%s: tau %.2f over %d ok records, %d failed", cell, summary["tau"] or 0, summary["n_ok"], summary["n_failed"])
    return summary
