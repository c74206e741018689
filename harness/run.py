"""Run one cell (method x pair x dataset): load, warm up, decode every sample, write records."""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import math
import random
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait
from pathlib import Path

import torch
from omegaconf import OmegaConf, open_dict
from tqdm import tqdm

from harness import HarnessError, baseline, kernels, packing
from harness.conversation import first_prompt, stored_first_turns, turn_prompt
from harness.data import Sample, load_samples
from harness.latency import step_costs
from harness.models import (
    Pair, load_model, load_pair, placement, prompt_pair, resolve_device, resolve_dtype, settle_pair,
)
from harness.records import (
    BASELINE, CONFIG, ENV, RETRIED, SAMPLES, STEP_COSTS, SUMMARY, append_sample, cell_dir, cell_lock, check_identity,
    environment, load_summary, read_records, summarize, take_out, write_atomic,
)
from methods import DecodeSettings, find, get_method
from methods.options import check_options

log = logging.getLogger("harness")
RESERVED_METHOD_KEYS = ("name", "tag")  # the rest are the method's options (methods.registry)


def method_options(cfg) -> dict:
    return {k: v for k, v in OmegaConf.to_container(cfg.method, resolve=True).items() if k not in RESERVED_METHOD_KEYS}


def decode_sample(pair: Pair, generate, options: dict, sample: Sample, settings: DecodeSettings, seed: int,
                  given: str | None = None) -> list[dict]:
    """All turns of one sample; turn k sees the target's own answers to turns < k (and every image so far).
    `given` is a stored first answer to reuse instead of decoding turn 0 (then turn 0 gets no record).
    A failure is recorded in that turn's line and ends the sample; it never ends the run."""
    generator = torch.Generator(device=pair.device).manual_seed(seed)
    answers, records = [], []
    for turn, text in enumerate(sample.turns):
        rec = {"id": sample.id, "turn": turn, "status": "ok", "error": None}
        try:
            if sample.error:
                raise HarnessError(sample.error)
            if not text.strip():
                raise HarnessError("empty prompt")  # the record names the sample and turn
            if turn == 0 and given is not None:
                answers.append(given)
                continue
            prompt = turn_prompt(pair, sample, turn, answers)
            pair.check_fits(prompt, settings.max_new_tokens)
            result = generate(pair.models, prompt, settings, generator, **options)
        except Exception as err:  # noqa: BLE001 - a failed sample is data, not a crash
            rec.update(status="error", error=f"{type(err).__name__}: {err}", final_turn=True)
            if not isinstance(err, HarnessError):
                log.debug("sample %s failed:\n%s", sample.id, traceback.format_exc())
            records.append(rec)
            return records
        out = result.tokens[0]
        answer = pair.tokenizer.decode(out, skip_special_tokens=True)
        answers.append(answer)
        rec.update(n_prompt_tokens=int(prompt.target["input_ids"].shape[1]), new_tokens=len(out),
                   output_ids=out, output_text=answer, wall_s=result.stats["prefill_s"] + result.stats["decode_s"],
                   **result.stats)
        records.append(rec)
    records[-1]["final_turn"] = True
    return records


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
            if not s.error and s.turns[0].strip():
                prompt = first_prompt(pair, s)
                pair.check_fits(prompt, settings.max_new_tokens)
                prompts.append(prompt)
        except Exception:  # noqa: BLE001 - e.g. an unreadable image: that sample fails later, in its own record
            continue
    if not prompts or not settings.greedy:
        return {"skipped": "no usable prompt" if not prompts else "sampling: greedy outputs are what it compares"}
    dense = load_model(cfg.pair.target.id, dtype, device, False, placement(cfg.pair.target))[0]  # what generate() runs
    result = baseline.calibrate(pair, dense, prompts, settings)
    log.info("baseline: our ar %.2f ms/token, transformers generate() %.2f ms/token: ar vs generate %.2fx (%.2f-%.2f); "
             "outputs: %s", result["ar_ms_per_token"], result["generate_ms_per_token"], result["ratio"],
             result["ratio_lo"], result["ratio_hi"], result["lossless"])
    result["denominator"] = baseline.decide(result, pair.device.type, bool(cfg.get("accept_weak_baseline", False)))
    result["accepted_weak"] = baseline.weak(result) and result["denominator"] == "ar"
    return result


class CellFailed(HarnessError):
    """Every sample failed, or the first ones all failed alike: the setup's fault, so the cell is not finished."""

    exit_code = 4


SETUP_SUSPECT = 3  # this many first samples failing with one identical error stop the cell


def check_settings(cfg) -> dict:
    """The run's own settings, checked before anything loads; the decoding settings for DecodeSettings."""
    def bad(key, need):
        raise HarnessError(f"{key}={cfg.get(key)!r}: need {need}")

    def integer(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not integer(cfg.max_new_tokens) or cfg.max_new_tokens < 1:
        bad("max_new_tokens", "an integer >= 1")
    if not number(cfg.temperature) or cfg.temperature < 0:
        bad("temperature", "a finite number >= 0 (0 = greedy)")
    if not number(cfg.top_p) or not 0 < cfg.top_p <= 1:
        bad("top_p", "a number with 0 < top_p <= 1")
    if not integer(cfg.seed):
        bad("seed", "an integer")
    if cfg.n_samples is not None and (not integer(cfg.n_samples) or cfg.n_samples < 1):
        bad("n_samples", "an integer >= 1, or null for all")
    if not integer(cfg.warmup) or cfg.warmup < 0:
        bad("warmup", "an integer >= 0")
    try:
        check_options(find(cfg.method.name), method_options(cfg))
    except ValueError as err:
        raise HarnessError(str(err)) from None
    settle_pair(cfg.pair)
    placement(cfg.pair.target)  # a bad device_map fails here, not at load
    if cfg.backend.name != "hf":
        from harness import engine

        engine.speculative_config(cfg.method, cfg.pair, cfg.backend)  # a method or option the engine cannot run fails here
        if not integer(cfg.backend.concurrency) or cfg.backend.concurrency < 1:
            raise HarnessError(f"backend.concurrency={cfg.backend.concurrency!r}: need an integer >= 1")
        rate = cfg.backend.get("request_rate")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0):
            raise HarnessError(f"backend.request_rate={rate!r}: need requests per second > 0, or null (all at once)")
    return dict(max_new_tokens=cfg.max_new_tokens, temperature=float(cfg.temperature), top_p=float(cfg.top_p))


def warm_up(cfg, pair: Pair, generate, options: dict, samples: list[Sample], settings_base: dict) -> Sample | None:
    """Unrecorded decodes (first calls pay for allocation and kernel selection) of the first sample that works
    (its first turn, returned): a failing first sample must not leave the timed ones cold."""
    warm = DecodeSettings(**{**settings_base, "max_new_tokens": min(cfg.max_new_tokens, 16)},
                          eos_token_ids=pair.eos_token_ids)
    for sample in samples[:10]:
        first = dataclasses.replace(sample, turns=sample.turns[:1])
        if decode_sample(pair, generate, options, first, warm, cfg.seed)[0]["status"] == "ok":
            for _ in range(cfg.warmup - 1):
                decode_sample(pair, generate, options, first, warm, cfg.seed)
            return first
    log.warning("warm-up: none of the first %d samples decodes; the first timed samples are cold", min(10, len(samples)))
    return None


def measure_step_costs(pair: Pair, generate, options: dict, sample: Sample | None, settings: DecodeSettings) -> dict:
    """The draft step cost c and verification cost v of this pair and method (harness.latency), timed apart from
    the recorded decodes, so the cost-model figure cannot place a cell on its curve by construction."""
    if sample is None:
        return {"skipped": "no sample decodes to time the steps on"}
    try:
        return step_costs(pair.models, generate, options, first_prompt(pair, sample), settings)
    except Exception as err:  # noqa: BLE001 - the samples' own records say what fails; this is one measurement
        return {"skipped": f"{type(err).__name__}: {err}"}


def as_finished(todo: list[tuple[int, Sample]], decode, concurrency: int, request_rate: float | None = None,
                seed: int = 0):
    """The records of each (index, sample) to decode: one sample after another, or with a serving engine up to
    `concurrency` samples in flight at once (the engine batches them), each yielded as it finishes. With a
    `request_rate` (requests per second) the samples arrive as a Poisson process (exponential gaps, seeded by
    `seed`), as `vllm bench serve --request-rate` sends them, and wait for a free slot when `concurrency` are in
    flight; without one they are all sent at once."""
    if concurrency == 1 and not request_rate:
        for index, sample in todo:
            yield decode(index, sample)
        return
    arrivals = random.Random(seed)
    with ThreadPoolExecutor(concurrency) as pool:
        pending = set()
        try:
            for index, sample in todo:
                if request_rate and pending:  # the first request goes at once, the others after exponential gaps
                    deadline = time.perf_counter() + arrivals.expovariate(request_rate)
                    while pending and deadline > time.perf_counter():
                        done, pending = wait(pending, timeout=deadline - time.perf_counter(), return_when=FIRST_COMPLETED)
                        yield from (future.result() for future in done)
                    time.sleep(max(0.0, deadline - time.perf_counter()))
                pending.add(pool.submit(decode, index, sample))
            for future in as_completed(pending):
                yield future.result()
        finally:
            for future in pending:  # stopped early (a setup fault, Ctrl-C): start no more
                future.cancel()


def setup_fault(records: list[dict]) -> str | None:
    """The error when the first SETUP_SUSPECT samples all failed with one identical message (a bad option, a
    mismatched model), else None: a sample's own fault names the sample (its id, its image, its length)."""
    first = [r for r in records if r.get("final_turn")][:SETUP_SUSPECT]
    errors = [r["error"] for r in first if r["status"] != "ok"]
    if len(errors) == SETUP_SUSPECT and len(set(errors)) == 1:
        return f"the first {SETUP_SUSPECT} samples all failed with: {errors[0]}"
    return None


def run_cell(cfg) -> dict:
    """Decode one cell (or skip it, finished); an ar cell whose calibration timed a static-cache generate() (on
    CUDA) then decodes its twin, so the report can divide by the fastest plain decoding per sample."""
    settings_base = check_settings(cfg)
    cell = cell_dir(cfg)
    with cell_lock(cell):
        summary = _run_cell(cfg, cell, settings_base)
    twin = static_twin(cfg, summary)
    if twin is not None:
        log.info("ar on CUDA: decoding the same samples with transformers' generate(), static cache, as the "
                 "denominator's twin cell")
        run_cell(twin)
    return summary


def static_twin(cfg, summary: dict):
    """The `hf_generate cache=static` cell beside an ar cell whose calibration timed that setting (only on CUDA,
    harness.baseline.generate_settings), else None."""
    timed = ((summary or {}).get("baseline") or {}).get("generate_settings_ms_per_token") or {}
    if cfg.method.name != "ar" or baseline.STATIC not in timed:
        return None
    twin = cfg.copy()
    with open_dict(twin):
        twin.method = OmegaConf.create({"name": "hf_generate", "tag": "hf_generate_static", "cache": "static"})
        twin.baseline_check = False
    return twin


def _run_cell(cfg, cell: Path, settings_base: dict) -> dict:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    check_identity(cell, resolved)
    loaded = load_samples(cfg.dataset, cfg.n_samples)
    samples = loaded.samples
    summary = load_summary(cell)
    retry = bool(cfg.get("retry_failed", False))
    if summary and summary.get("sample_ids") == [s.id for s in samples] and not (retry and summary["n_failed"]):
        found = len(read_records(cell))
        if found == summary["n_records"]:
            log.info("skip %s: finished (summary.json exists)%s", cell, f"; {summary['n_failed']} failed records: "
                     "retry_failed=true decodes them again" if summary["n_failed"] else "")
            return summary
        log.warning("%s: summary.json counts %d records but %s holds %d complete ones: resuming", cell,
                    summary["n_records"], SAMPLES, found)

    options = method_options(cfg)
    with open_backend(cfg, cell, options, loaded.samples) as (pair, generate, engine):
        return _decode_cell(cfg, cell, settings_base, loaded, pair, generate, options, engine, retry)


@contextlib.contextmanager
def open_backend(cfg, cell: Path, options: dict, samples: list[Sample]):
    """(pair, the method's generate(), what env.json records of a serving engine or None) for the cell's backend:
    our loops on the pair's transformers models (hf), or a vLLM server that holds the models while the cell decodes
    (the pair then has its prompt side only)."""
    if cfg.backend.name == "hf":
        device = resolve_device(cfg.device)
        dtype = resolve_dtype(cfg.dtype, device)
        needs = find(cfg.method.name).needs
        pair = load_pair(cfg.pair, device, dtype, need_draft="draft" in needs, need_eagle="eagle" in needs,
                         pack=packing.wanted(cfg.pack_weights, device, dtype),
                         block=kernels.block_tokens(cfg.method.name, options))
        check_modality(cfg, pair, samples)
        yield pair, get_method(cfg.method.name), None
        return
    from harness import engine

    pair = prompt_pair(cfg.pair, engine.serve_folder(cfg.pair.target.id))
    check_modality(cfg, pair, samples)  # before a server starts
    with engine.serving(cfg, cell, pair.context) as (generate, info):
        yield pair, generate, info


def check_modality(cfg, pair: Pair, samples: list[Sample]) -> None:
    with_images = sum(bool(s.images) for s in samples)
    if pair.processor is None and (cfg.dataset.get("images") or with_images == len(samples)):
        raise HarnessError(f"dataset {cfg.dataset.name!r} is an image dataset ({with_images} of {len(samples)} samples "
                           f"have images) but pair {cfg.pair.name!r} is text-only; use a vision-language pair")


def _decode_cell(cfg, cell: Path, settings_base: dict, loaded, pair: Pair, generate, options: dict, engine: dict | None,
                 retry: bool) -> dict:
    samples = loaded.samples
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    settings = DecodeSettings(**settings_base, eos_token_ids=pair.eos_token_ids)

    (cell / SUMMARY).unlink(missing_ok=True)  # the sample set changed: the old summary no longer holds
    write_atomic(cell / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    dtypes = {role: str(next(m.parameters()).dtype).removeprefix("torch.") for role, m in
              (("target", pair.models.target), ("draft", pair.models.draft), ("eagle", pair.models.eagle)) if m is not None}
    packed = {role: k["packed"] for role, k in pair.kernels.items()}
    write_atomic(cell / ENV, json.dumps({**environment(device), "packed_linear_weights": packed, "dtypes": dtypes,
                                         "kernels": pair.kernels, "kernel_machine": kernels.machine(),
                                         **({"engine": engine} if engine else {})}, indent=2))
    done = read_records(cell, repair=True)
    failed = {r["id"] for r in done if r["status"] != "ok"}
    if failed and (retry or all(r["status"] != "ok" for r in done)):  # a cell that never worked retries them anyway
        log.info("%s: decoding %d failed samples again (their records move to %s)", cell, len(failed), RETRIED)
        done = take_out(cell, done, failed)
    done_ids = {r["id"] for r in done}
    todo = [(i, s) for i, s in enumerate(samples) if s.id not in done_ids]
    log.info("%s: %d samples, %d done, %d to go", cell, len(samples), len(samples) - len(todo), len(todo))

    working = warm_up(cfg, pair, generate, options, [s for _, s in todo] or samples, settings_base) if todo and \
        cfg.warmup else None
    costs = json.loads((cell / STEP_COSTS).read_text()) if (cell / STEP_COSTS).exists() else None
    if todo and cfg.method.name != "ar" and engine is None:  # an engine's steps are its own (its records time them)
        costs = measure_step_costs(pair, generate, options, working or next((s for s in samples if not s.error), None),
                                   settings)
        write_atomic(cell / STEP_COSTS, json.dumps(costs, indent=2))

    strength = None
    if todo and cfg.method.name == "ar" and cfg.get("baseline_check", True) and engine is None:
        strength = baseline_strength(cfg, pair, samples, settings_base, dtype, device)
        write_atomic(cell / BASELINE, json.dumps(strength, indent=2))

    wanted = {s.id for s in samples}
    records = [r for r in done if r["id"] in wanted]
    first = stored_first_turns(cfg)
    started = time.perf_counter()
    fresh = []  # this session's records: a setup fault shows in the first of them
    with open(cell / SAMPLES, "a", encoding="utf-8") as f:
        bar = tqdm(total=len(todo), desc=f"{cfg.method.tag} {cfg.dataset.name}", unit="sample", disable=not cfg.progress)

        def decode(index: int, sample: Sample) -> list[dict]:
            return decode_sample(pair, generate, options, sample, settings, cfg.seed + index, first.get(sample.id))

        concurrency = cfg.backend.get("concurrency") or 1
        arriving = as_finished(todo, decode, concurrency, cfg.backend.get("request_rate"), cfg.seed)
        for decoded, recs in enumerate(arriving, start=1):
            bar.update()
            append_sample(f, recs)
            records.extend(recs)
            fresh.extend(recs)
            for r in recs:
                if r["status"] != "ok":
                    log.warning("sample %s turn %d failed: %s", r["id"], r["turn"], r["error"])
            fault = setup_fault(fresh) if decoded == SETUP_SUSPECT else None  # judged once, on the first three
            if fault:
                raise CellFailed(f"{cell}: {fault}. That is a fault of the setup (settings, models or data), not of "
                                 "single samples: stopped, the cell is not marked finished; fix it and rerun (these "
                                 "samples are decoded again)")
            ok = [r for r in records if r["status"] == "ok"]
            bar.set_postfix(tau=f"{sum(r['new_tokens'] for r in ok) / max(1, sum(r['target_calls'] for r in ok)):.2f}")

    if records and not any(r["status"] == "ok" for r in records):
        errors = collections.Counter(r["error"] for r in records)
        error, n = errors.most_common(1)[0]
        raise CellFailed(f"{cell}: every sample failed (most often, {n} of {len(records)}: {error}); the cell is "
                         "not marked finished: fix the cause and rerun")
    summary = summarize(records, {
        "cell": str(cell), "method": cfg.method.name, "method_tag": cfg.method.tag, "pair": cfg.pair.name,
        "dataset": cfg.dataset.name, "dataset_source": loaded.info["source"], "dataset_selection": loaded.info,
        "sample_ids": [s.id for s in samples], "n_samples": len(samples), "warmup": cfg.warmup,
        "settings": settings_base, "run_seconds_this_session": time.perf_counter() - started,
        **({"baseline": strength} if strength else {}), **({"step_costs": costs} if costs else {}),
    })
    write_atomic(cell / SUMMARY, json.dumps(summary, indent=2))
    log.info("%s: tau %.2f over %d ok records, %d failed", cell, summary["tau"] or 0, summary["n_ok"], summary["n_failed"])
    return summary
