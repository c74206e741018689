"""How strong is our `ar`? Every ratio the harness prints divides by plain decoding, so every `ar` cell first times
it against transformers' own `generate()` (greedy, dense weights: what a user runs today) on the same target, machine
and prompts, interleaved. On CUDA `generate()` has a second plain setting a user would reach for, a static cache
(which transformers compiles with torch.compile there, for models that allow it): both are timed and ours is held
against the faster. `decide` is the one rule for what follows:
- outputs that differ are judged like any method's (harness.lossless, by teacher forcing): only LOSSY stops the run
  (in half precision a static cache's padded attention rounds differently from ours: ties, not bugs);
- on a CPU, where both loops run the same forward, ours slower beyond the noise is refused unless
  `accept_weak_baseline=true` (reports then mark every table);
- on CUDA a compiled static cache is expected to beat any eager loop at batch 1, so it is not refused: the `ar` cell
  decodes a twin cell with that `generate()` setting (harness.run), and the report divides by the fastest plain
  decoding measured on the same samples, naming it, with the speedup over our eager `ar` (the papers' setting)
  beside it.
The check is a timing, so the test suite accepts weak baselines (tests/conftest.py): speed is asserted by
`make bench`, never by a unit test. The result is stored in the cell (baseline.json, summary.json) and printed in the
report's header.
"""
from __future__ import annotations

import functools
import random
import statistics
import time

from harness import HarnessError
from methods import DecodeSettings, Models, get_method
from methods.core import devices, now

PROMPTS, TOKENS, REPEATS = 2, 24, 3  # about 10 s on the embedded pair
DYNAMIC = "generate(): greedy, dynamic cache, dense weights"
STATIC = "generate(): greedy, static cache (compiled by transformers on CUDA), dense weights"


def generate_settings(target) -> dict[str, dict]:
    """The plain generate() settings a user of this device would pick from (description -> hf_generate
    options): the dynamic cache everywhere; on CUDA also the static cache, which transformers compiles there for
    models that declare they can be compiled whole (`_can_compile_fullgraph`)."""
    settings = {DYNAMIC: {}}
    if target.device.type == "cuda" and getattr(target, "_can_compile_fullgraph", False):
        settings[STATIC] = {"cache": "static"}
    return settings


def calibrate(pair, dense_target, prompts: list, settings: DecodeSettings, repeats: int = REPEATS,
              generate: dict[str, dict] | None = None) -> dict:
    """Our `ar` (as the cell runs it) against `generate()` on `dense_target` (the same weights, unpacked) in each
    setting of `generate` (default: generate_settings), each prompt `repeats` times in alternating order after an
    untimed call each (a compiled static cache recompiles per prompt length: a one-off a user amortises). The
    ratio (> 1: ours is faster) is against the faster generate() setting: the median over (prompt, repeat) of its
    time over ours for the same prompt back to back, so drift on a shared machine cancels; the per-token times
    are totals. Also says whether every output was identical."""
    ours, theirs = get_method("ar"), get_method("hf_generate")
    generate = generate or generate_settings(dense_target)
    runs = {"ar": (ours, pair.models)}
    runs.update({name: (functools.partial(theirs, **knobs), Models(dense_target))
                 for name, knobs in generate.items()})
    seconds, tokens, differing = {k: 0.0 for k in runs}, {k: 0 for k in runs}, {}
    spent_all = []
    for name, (fn, models) in runs.items():  # untimed: allocation, kernel selection, compilation
        for prompt in prompts if generate.get(name) else prompts[:1]:
            fn(models, prompt, settings)
    clock = devices(pair.models.target)
    for r in range(repeats):
        for i, prompt in enumerate(prompts):
            outs, spent = {}, {}
            for name in (list(runs) if (r + i) % 2 == 0 else list(runs)[::-1]):
                fn, models = runs[name]
                start = now(*clock)
                outs[name] = fn(models, prompt, settings).tokens[0]
                spent[name] = now(*clock) - start
                seconds[name] += spent[name]
                tokens[name] += len(outs[name])
            differing.update({(i, name): (out, outs["ar"]) for name, out in outs.items() if out != outs["ar"]})
            spent_all.append(spent)
    per_token = {k: seconds[k] / max(1, tokens[k]) for k in runs}
    best = min(generate, key=per_token.get)
    ratios = [spent[best] / spent["ar"] for spent in spent_all]
    lo, hi = median_interval(ratios)
    return {"ar_ms_per_token": round(per_token["ar"] * 1e3, 3), "generate_ms_per_token": round(per_token[best] * 1e3, 3),
            "ratio": round(statistics.median(ratios), 4), "ratio_lo": round(lo, 4), "ratio_hi": round(hi, 4),
            "prompts": len(prompts), "repeats": repeats,
            "max_new_tokens": settings.max_new_tokens, "identical": not differing,
            **(judge(pair, prompts, differing, settings, len(prompts) * len(generate)) if differing else
               {"lossless": "exact"}),
            "generate": f"transformers {best}", "generate_cache": generate[best].get("cache", "dynamic"),
            "generate_settings_ms_per_token": {name: round(per_token[name] * 1e3, 3) for name in generate},
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}


def judge(pair, prompts: list, differing: dict, settings: DecodeSettings, compared: int) -> dict:
    """generate()'s outputs that differ from our ar's ({(prompt index, setting): (theirs, ours)}, out of `compared`
    pairs of outputs), judged as any method's are (harness.lossless): teacher forced through the target, with the
    tie tolerance measured on our ar's outputs of these prompts."""
    from harness import ties

    target = pair.models.target
    ar_outs = {i: ar_out for (i, _), (_, ar_out) in differing.items()}
    tolerance = ties.measure_tolerance(target, [(prompts[i], out) for i, out in ar_outs.items()])
    checks = {key: ties.check_output(pair, None, prompts[key[0]], None, out, ar_out, tolerance["tolerance"],
                                         settings.max_new_tokens) for key, (out, ar_out) in differing.items()}
    verdicts = [c["verdict"] for c in checks.values()]
    lossy = verdicts.count("lossy")
    return {"lossless": f"LOSSY {lossy}/{compared}" if lossy else f"ties {len(verdicts)}/{compared}",
            "tolerance": tolerance["tolerance"],
            "differing": [{"prompt": i, "generate": name, **{k: c[k] for k in ("verdict", "first_position", "token",
                                                                                "ar_token", "margin", "rank", "stop")}}
                          for (i, name), c in checks.items()]}


def median_interval(ratios: list[float], resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the median of the paired ratios."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def weak(result: dict) -> bool:
    """Ours is slower, beyond the calibration's own noise: the whole 95% interval of the ratio lies below 1. Both
    loops run the same model forward, which bounds a decoding step on a CPU, so parity is the expected outcome
    there and must not be refused at random."""
    return result["ratio_hi"] < 1.0


def decide(result: dict, device_type: str, accept_weak: bool) -> str:
    """The baseline rule (module docstring), one function for every device: raises on LOSSY outputs, and on a CPU on
    a weak ar not accepted; returns the plain decoding the cell's speedups divide by: "ar", or on CUDA the faster
    generate() setting's twin tag (`hf_generate_static`, `hf_generate_dynamic`) when ours is slower."""
    if result.get("lossless", "exact").startswith("LOSSY"):
        bad = [d for d in result.get("differing", []) if d["verdict"] == "lossy"]
        raise HarnessError("baseline calibration: our ar and transformers' generate() decode different tokens beyond "
                           f"the tie tolerance ({result.get('tolerance', 0):.3g} logits): {bad}; one of the two loops is "
                           "wrong, and every ratio would compare different outputs (a bug to report)")
    if not weak(result):
        return "ar"
    if device_type == "cuda":
        return f"hf_generate_{result.get('generate_cache', 'dynamic')}"
    if not accept_weak:
        raise HarnessError(f"baseline calibration: our ar is slower than transformers' generate() on this machine "
                           f"({result['ar_ms_per_token']:.2f} vs {result['generate_ms_per_token']:.2f} ms/token, "
                           f"{result['ratio']:.2f}x, 95% interval {result['ratio_lo']:.2f}-{result['ratio_hi']:.2f}), so "
                           "every speedup over it would be inflated. Try pack_weights=false or true, or run with "
                           "accept_weak_baseline=true (every table then says so)")
    return "ar"
