"""Forward latencies of a loaded pair, clocked by forward hooks: `forward_timer` (also `make bench`'s clock) and
`step_costs`, the cost model's inputs for one cell timed apart from the cell's recorded decode times, so that the
figure of speedup against draft cost (harness.figures) tests the cost model instead of restating it."""
from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from contextlib import contextmanager

import torch

from methods import get_method
from methods.core import devices, now
from methods.hf_assisted import n_tokens

STEP_TOKENS = 16  # new tokens per timing decode: enough 1-token steps and full blocks, cheap on a CPU
DECODES = 1  # timing decodes per method (ar, then the cell's): medians over all their forwards


@contextmanager
def forward_timer(models):
    """Every target and draft forward of the block as (model, tokens fed, start, seconds), clocked by forward
    hooks with the synchronised `now`, so on a GPU the time is the forward's own, kernels included."""
    calls = []

    def hooks(model, who):
        opened, clock = {}, devices(model)

        def before(module, args, kwargs):
            opened.update(n=n_tokens(kwargs), t=now(*clock))

        def after(module, args, kwargs, output):
            calls.append((who, opened["n"], opened["t"], now(*clock) - opened["t"]))

        return [model.register_forward_pre_hook(before, with_kwargs=True),
                model.register_forward_hook(after, with_kwargs=True)]

    handles = hooks(models.target, "target") + (hooks(models.draft, "draft") if models.draft is not None else [])
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def decode_forwards(models, generate, options: dict, prompt, settings) -> tuple[list[tuple], dict]:
    """(model, tokens fed, seconds) of each forward of one decode's decode phase (the prefill left out), and
    the decode's stats."""
    device = models.target.device
    with forward_timer(models) as calls:
        start = now(*devices(models.target))
        result = generate(models, prompt, settings, torch.Generator(device=device).manual_seed(0), **options)
    return [(who, n, dt) for who, n, t, dt in calls if t >= start + result.stats["prefill_s"]], result.stats


def step_costs(models, generate, options: dict, prompt, settings) -> dict:
    """The cost model's latencies for one loaded pair and method, as medians of hooked forwards over DECODES
    short decodes (STEP_TOKENS new tokens, EOS ignored) of `prompt` by `ar` and by `generate`, interleaved:
    t_target (1-token target steps of ar), t_draft (1-token draft forwards) and t_verify (target forwards of
    the method's most common block size, verify_tokens). c = t_draft * draft forwards per draft step / t_target
    (TABED run sequentially takes K forwards a step), v = t_verify / t_target. Where nothing can be timed, a
    dict with `skipped`: why."""
    if models.draft is None:
        return {"skipped": "no draft model to time" + (": the EAGLE drafter's step (Eagle3.extend and its head) is "
                                                       "no module forward that hooks can time"
                                                       if models.eagle is not None else "")}
    short = dataclasses.replace(settings, max_new_tokens=min(settings.max_new_tokens, STEP_TOKENS), eos_token_ids=())
    ar, own, stats = [], [], []
    for _ in range(DECODES):
        calls, s = decode_forwards(models, generate, options, prompt, short)
        own += calls
        stats.append(s)
        ar += decode_forwards(models, get_method("ar"), {}, prompt, short)[0]
    target = [dt for who, n, dt in ar if who == "target" and n == 1]
    draft = [dt for who, n, dt in own if who == "draft" and n == 1]
    sizes = Counter(n for who, n, _ in own if who == "target")
    steps = sum(sum(s.get("drafted") or []) for s in stats)
    if not draft or not steps:
        return {"skipped": "the method ran no draft step with the draft model"}
    if not target or not sizes:
        return {"skipped": f"no decode step to time in {short.max_new_tokens} new tokens"}
    verify_tokens = max(sizes, key=lambda n: (sizes[n], n))
    t_target, t_draft = statistics.median(target), statistics.median(draft)
    t_verify = statistics.median(dt for who, n, dt in own if who == "target" and n == verify_tokens)
    per_step = max(1, round(sum(s["draft_calls"] for s in stats) / steps))
    return {"t_target_ms": t_target * 1e3, "t_draft_ms": t_draft * 1e3, "t_verify_ms": t_verify * 1e3,
            "verify_tokens": verify_tokens, "draft_forwards_per_step": per_step, "c": t_draft * per_step / t_target,
            "v": t_verify / t_target, "decodes": DECODES, "new_tokens": short.max_new_tokens,
            "prompt_tokens": int(prompt.target["input_ids"].shape[1])}
