"""`make bench`: speed figures a skeptic can rerun. Every section interleaves its variants in one process
(A B A B ...) so machine drift hits all alike, warms up first, reports medians and ratios, and aborts if a
decoder's greedy output differs from `ar` (a benchmark of a wrong decoder is worthless).

Sections (the text ones on --pair):
  baseline  our `ar` (dense, packed, auto) vs transformers' generate(), and the best `sd` vs plain generate() and
            vs the best transformers assisted-generation setting: what every speedup should be read against;
  sd        `ar` vs `sd`: time per new token, tau, speedup;
  hf        our `sd` vs transformers' assisted generation (`hf_assisted`, and `hf_pld`), same pair and gamma;
  overhead  fraction of decode walltime outside target and draft forwards (`ar`, `sd`, `hf_assisted`);
  cost      the cost model's predicted speedup from measured tau and forward latencies vs the measured one;
  kernels   target and draft forward latency with dense vs prepacked linear weights (CPU; pack_weights);
  tabed     TABED's draft-step cost on a vision-language pair: K = 1, 2, 4 drafting modes batched into one
            forward vs run one after another;
  vocab     the EAGLE/SpecVocab vocabulary grid on --eagle-pair: full, reduced, FR-Spec and SpecVocab heads;
  vllm      our `sd` against vLLM's `draft_model` speculation on --vllm-pair at batch 1 (needs make setup-vllm);
  ties      the lossless check's tie tolerance of the --pair's target in float32, bfloat16 and float16.
Writes results/bench/latest.md (the tables) and results/bench/raw.json (every timing), replacing the sections
that ran and keeping the others, each with the date, machine and commit it was measured on.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from omegaconf import OmegaConf

from harness import CONF, PROJECT_ROOT, packing
from harness.data import load_samples, open_images
from harness.latency import forward_timer
from harness.models import load_pair, pair_config, resolve_device, resolve_dtype
from harness.records import environment
from methods import DecodeSettings, get_method
from methods.core import crop_cache, forward, new_cache, now
from methods.drafting import ModelDrafter


def load(pair: str, device, eagle: bool = False, pack="auto", block: int = 1):
    """The pair `pair` (a config name or yaml path); with `eagle`, its EAGLE-3 drafter instead of a draft model;
    `pack` as the run setting `pack_weights` (harness.packing), `auto` deciding for a target that verifies
    `block` tokens a forward (harness.kernels)."""
    dtype = resolve_dtype("auto", device)
    return load_pair(pair_config(pair), device, dtype, need_draft=not eagle, need_eagle=eagle,
                     pack=packing.wanted(pack, device, dtype), block=block)


def prompts_of(pair, dataset: str, n: int):
    samples = load_samples(OmegaConf.load(CONF / f"dataset/{dataset}.yaml"), n).samples
    return [pair.encode([{"role": "user", "content": s.turns[0], "n_images": len(s.images)}], open_images(s.images))
            for s in samples], samples


def interleaved(args, device, variants: dict, timed: bool = False, pair=None, dataset: str | None = None,
                models: dict | None = None, references: dict | None = None, settle=None) -> dict[str, list[dict]]:
    """Decode every prompt with every variant (name -> (method, options); `ar` among them), `args.repeats` times,
    the order alternating (A B .., .. B A) per prompt and repeat, after one warm-up decode per variant. Aborts
    when an output differs from its reference's (ar's unless `references` says otherwise). Per variant, one dict per decode; with `timed`, also the forwards of
    its decode phase (those starting after prefill) from `forward_timer`, whose hooks cost ~µs per call.
    `pair` and `dataset` default to --pair and --dataset; `models` gives some variants models of their own
    (e.g. another drafter for the same target); `references` names, for some variants, another variant their
    output must equal instead of ar's (None: none; each run then records whether it agreed with ar); `settle`, if
    given, runs before every decode (e.g. waiting for another process's threads to go idle)."""
    pair = pair or load(args.pair, device, pack=args.pack_weights)
    references = references or {}
    prompts, samples = prompts_of(pair, dataset or args.dataset, args.prompts)
    settings = DecodeSettings(max_new_tokens=args.max_new_tokens, eos_token_ids=pair.eos_token_ids)

    def once(name, prompt):
        generate, options = variants[name]
        chosen = (models or {}).get(name, pair.models)
        if settle:
            settle()
        with forward_timer(chosen) if timed else nullcontext([]) as calls:
            start = now(device)
            result = generate(chosen, prompt, settings, None, **options)
        s = result.stats
        run = dict(new=len(result.tokens[0]), prefill_s=s["prefill_s"], decode_s=s["decode_s"],
                   wall_s=s["prefill_s"] + s["decode_s"], target_calls=s["target_calls"])
        if timed:
            run["forwards"] = [(who, n, dt) for who, n, t, dt in calls if t >= start + s["prefill_s"]]
        return result.tokens, run

    for name in variants:  # warm-up
        once(name, prompts[0])
    runs = {name: [] for name in variants}
    for rep in range(args.repeats):
        for i, prompt in enumerate(prompts):
            outputs = {}
            for name in list(variants) if (rep + i) % 2 == 0 else list(reversed(variants)):
                outputs[name], run = once(name, prompt)
                runs[name].append(dict(prompt=samples[i].id, **run))
            for name, out in outputs.items():
                runs[name][-1]["agrees_with_ar"] = out == outputs["ar"]
            wrong = [name for name, out in outputs.items() if references.get(name, "ar") is not None
                     and out != outputs[references.get(name, "ar")]]
            if wrong:
                raise SystemExit(f"ABORT: prompt {samples[i].id}: outputs of {', '.join(wrong)} differ from "
                                 f"{', '.join(sorted({references.get(n, 'ar') for n in wrong}))}")
    return runs


def tau_of(runs: list[dict]) -> float:
    """Block efficiency over the decodes: new tokens per target forward."""
    return sum(r["new"] for r in runs) / sum(r["target_calls"] for r in runs)


def per_token(runs: list[dict]) -> float:
    """Median walltime per new token over the decodes."""
    return statistics.median(r["wall_s"] / r["new"] for r in runs)


def speed_rows(runs: dict[str, list[dict]]) -> list[str]:
    med = {name: per_token(v) for name, v in runs.items()}
    rows = ["| variant | median ms / new token | tau | speedup vs ar |", "|---|---|---|---|"]
    return rows + [f"| {name} | {med[name] * 1e3:.1f} | {statistics.mean(r['new'] / r['target_calls'] for r in v):.2f} "
                   f"| {med['ar'] / med[name]:.2f}x |" for name, v in runs.items()]


def setting(args) -> str:
    n = args.prompts * args.repeats
    return (f"{args.pair} on {args.dataset}, gamma {args.gamma}, greedy, {args.max_new_tokens} new tokens, "
            f"{args.prompts} prompts x {args.repeats} repeats ({n} decodes per variant, interleaved), "
            "all outputs identical to ar")


def lineup(args, *methods: str) -> dict:
    """`ar` and each method at --gamma, named like their tags (sd_g5, hf_assisted_g5, ...)."""
    return {"ar": (get_method("ar"), {}),
            **{f"{m}_g{args.gamma}": (get_method(m), {"gamma": args.gamma}) for m in methods}}


def bench_sd(args, device) -> tuple[list[str], dict]:
    """ar vs sd at --gamma, and sd at the --shape (gamma x tree width) that pays on a CPU."""
    variants = lineup(args, "sd")
    if args.shape:
        gamma, width = (int(x) for x in args.shape.split("x"))
        variants[f"sd_g{gamma}_w{width}"] = (get_method("sd"), {"gamma": gamma, "tree_width": width})
    runs = interleaved(args, device, variants)
    return [f"## sd vs ar: {setting(args)}", ""] + speed_rows(runs), runs


def bench_hf(args, device) -> tuple[list[str], dict]:
    """Our sd against transformers' assisted generation (and prompt lookup) on the same pair and gamma."""
    runs = interleaved(args, device, lineup(args, "sd", "hf_assisted", "hf_pld"))
    ratio = per_token(runs[f"hf_assisted_g{args.gamma}"]) / per_token(runs[f"sd_g{args.gamma}"])
    return [f"## sd vs transformers' assisted generation: {setting(args)}", ""] + speed_rows(runs) + [
        "", f"**sd vs hf_assisted: {ratio:.2f}x** (time per new token of hf_assisted / sd; goal >= 1.3x: "
        f"{'met' if ratio >= 1.3 else 'not met'})"], runs


def bench_overhead(args, device) -> tuple[list[str], dict]:
    """Fraction of decode walltime spent outside target and draft forwards: token choice, verification, cache
    bookkeeping, Python; the prefill (one big forward) is left out."""
    runs = interleaved(args, device, lineup(args, "sd", "hf_assisted"), timed=True)
    rows = [f"## Harness overhead: {setting(args)}; forwards timed by hooks", "",
            "| variant | median decode ms | of it in forwards ms | overhead |", "|---|---|---|---|"]
    overhead = {}
    for name, v in runs.items():
        v = [r for r in v if r["decode_s"] > 0]
        inside = [sum(dt for _, _, dt in r["forwards"]) for r in v]
        overhead[name] = statistics.median(1 - f / r["decode_s"] for f, r in zip(inside, v))
        rows.append(f"| {name} | {statistics.median(r['decode_s'] for r in v) * 1e3:.1f} | "
                    f"{statistics.median(inside) * 1e3:.1f} | {overhead[name]:.1%} |")
    sd = overhead[f"sd_g{args.gamma}"]
    rows += ["", f"**overhead: {sd:.1%}** (sd, median over decodes; goal < 5%: {'met' if sd < 0.05 else 'not met'})"]
    return rows, runs


def median_call(runs: list[dict], who: str, n: int) -> float:
    times = [dt for r in runs for w, k, dt in r["forwards"] if w == who and k == n]
    if not times:
        raise SystemExit(f"ABORT: no {who} forward of {n} tokens was timed; use more --max-new-tokens")
    return statistics.median(times)


def bench_cost(args, device) -> tuple[list[str], dict]:
    """The cost model S = tau * t_ar / (gamma * t_draft + t_verify(gamma + 1)) from component latencies measured
    inside real decodes (medians of hooked forwards: 1-token target steps of ar, (gamma+1)-token target
    verifications and 1-token draft steps of sd), against the measured speedup (total ar / total sd walltime)."""
    g = args.gamma
    runs = interleaved(args, device, lineup(args, "sd"), timed=True)
    sd = runs[f"sd_g{g}"]
    t_ar = median_call(runs["ar"], "target", 1)
    t_verify = median_call(sd, "target", g + 1)
    t_draft = median_call(sd, "draft", 1)
    tau = tau_of(sd)
    predicted = tau * t_ar / (g * t_draft + t_verify)
    measured = sum(r["wall_s"] for r in runs["ar"]) / sum(r["wall_s"] for r in sd)
    rows = [f"## Cost model: {setting(args)}", "",
            "| tau | t_ar ms | t_draft ms | t_verify(gamma+1) ms | predicted S | measured S | measured / predicted |",
            "|---|---|---|---|---|---|---|",
            f"| {tau:.2f} | {t_ar * 1e3:.2f} | {t_draft * 1e3:.2f} | {t_verify * 1e3:.2f} | {predicted:.2f}x | "
            f"{measured:.2f}x | {measured / predicted:.2f} |", "",
            f"**cost model: measured {measured:.2f}x vs predicted {predicted:.2f}x = {measured / predicted:.2f}** "
            f"(goal >= 0.9: {'met' if measured >= 0.9 * predicted else 'not met'})"]
    return rows, dict(runs=runs, tau=tau, t_ar=t_ar, t_draft=t_draft, t_verify=t_verify, predicted=predicted,
                      measured=measured)


def bench_kernels(args, device) -> tuple[list[str], dict]:
    """Forward latency of the --pair's target for 1, 2, gamma + 1 and 16 new tokens after the first prompt, and
    of one draft step, with dense and with prepacked linear weights (harness.packing), interleaved: why a CPU
    verification of gamma + 1 tokens costs about two 1-token steps when dense and about one when packed."""
    if device.type != "cpu":
        return [f"## Linear-weight kernels: skipped on {device} (prepacking is for CPUs)"], {}
    pairs = {kind: load(args.pair, device, pack=kind) for kind in ("false", "true")}
    ids = prompts_of(pairs["false"], args.dataset, 1)[0][0].target["input_ids"]
    length, sizes = ids.shape[1], sorted({1, 2, args.gamma + 1, 16})
    probes = [(kind, "target", n) for kind in pairs for n in sizes] + [(kind, "draft", 1) for kind in pairs]
    times = {probe: [] for probe in probes}
    with torch.inference_mode():
        caches = {}
        for kind, who, _ in probes:
            model = getattr(pairs[kind].models, who)
            if (kind, who) not in caches:
                caches[kind, who] = new_cache(model)
                forward(model, caches[kind, who], ids)
        for rep in range(args.steps + 3):
            for kind, who, n in (probes if rep % 2 == 0 else list(reversed(probes))):
                start = now(device)
                forward(getattr(pairs[kind].models, who), caches[kind, who], ids[:, -n:], logits_to_keep=n)
                elapsed = now(device) - start
                crop_cache(caches[kind, who], length)  # back to the prompt: the same context every time
                if rep >= 3:  # the first rounds warm up
                    times[kind, who, n].append(elapsed)
    med = {probe: statistics.median(v) for probe, v in times.items()}
    rows = [f"## Linear-weight kernels: {args.pair}, forwards after a {length}-token prompt, median of {args.steps} "
            "(interleaved); dense = PyTorch's F.linear (MKL), packed = oneDNN prepacked weights (pack_weights)", "",
            "| forward | dense ms | packed ms | packed / dense |", "|---|---|---|---|"]
    rows += [f"| {who} {n} token{'s' if n > 1 else ''} | {med['false', who, n] * 1e3:.2f} | "
             f"{med['true', who, n] * 1e3:.2f} | {med['true', who, n] / med['false', who, n]:.2f}x |"
             for who, n in [("target", n) for n in sizes] + [("draft", 1)]]
    v = args.gamma + 1
    rows += ["", f"**verify of {v} tokens / 1-token step: dense {med['false', 'target', v] / med['false', 'target', 1]:.2f}"
             f", packed {med['true', 'target', v] / med['true', 'target', 1]:.2f}**",
             f"**draft step / target step: dense {med['false', 'draft', 1] / med['false', 'target', 1]:.1%}, packed "
             f"{med['true', 'draft', 1] / med['true', 'target', 1]:.1%}** (goal for smol-draft <= 5%)"]
    return rows, {"forward_s": {f"{kind} {who} {n}": t for (kind, who, n), t in times.items()}}


def bench_tabed(args, device) -> tuple[list[str], dict]:
    """Median time of one draft step (one token appended to every mode's context) per configuration."""
    pair = load(args.vlm_pair, device, pack=args.pack_weights)
    prompts, _ = prompts_of(pair, args.vlm_dataset, 1)
    prompt = prompts[0]
    if prompt.target.get("pixel_values") is None:
        raise SystemExit(f"ABORT: dataset {args.vlm_dataset} gave a prompt without images")
    configs = {f"K={len(m)} {m} {'batched' if b else 'sequential'}": (list(m), b)
               for m, b in (("M", True), ("MT", True), ("MT", False), ("MTCP", True), ("MTCP", False))}
    drafters = {name: ModelDrafter(pair.models, prompt, modes, batched).start() for name, (modes, batched) in configs.items()}
    token = [int(prompt.target["input_ids"][0, -1])]
    times = {name: [] for name in configs}
    with torch.inference_mode():
        for rep in range(args.steps + 3):
            for name in (list(configs) if rep % 2 == 0 else list(reversed(configs))):
                d = drafters[name]
                start = now(device)
                d.step(token)
                elapsed = now(device) - start
                d.crop(0)  # same context length every step
                if rep >= 3:  # the first steps warm up
                    times[name].append(elapsed)
    med = {name: statistics.median(v) for name, v in times.items()}
    one = med[next(iter(configs))]
    rows = [f"## TABED draft-step cost: {args.vlm_pair}, prompt of {prompt.target['input_ids'].shape[1]} tokens, "
            f"median of {args.steps} steps (interleaved)", "",
            "| drafting | ms / draft step | vs one mode |", "|---|---|---|"]
    rows += [f"| {name} | {med[name] * 1e3:.2f} | {med[name] / one:.2f}x |" for name in configs]
    return rows, {"draft_step_s": times}


def bench_vocab(args, device) -> tuple[list[str], dict]:
    """The EAGLE/SpecVocab vocabulary grid on the embedded EAGLE pair (chain, --gamma): full tied head, trained
    reduced heads (their own drafters), an FR-Spec slice and SpecVocab at three k. Per variant: tau and speedup
    from interleaved decodes, and the median time of one draft step (drafter layer + head, one token appended
    at a fixed context, interleaved), the cost SpecVocab attacks."""
    from harness.models import load_eagle
    from methods import Models
    from methods.eagle3 import feature_layers, head_for

    pair = load(args.eagle_pair, device, eagle=True, pack=args.pack_weights)
    target = pair.models.target
    drafters = {"full": pair.models.eagle}
    for model_id in args.reduced.split(",") if args.reduced else []:
        drafters[Path(model_id.removeprefix("embedded:")).name] = load_eagle(
            model_id, target, target.dtype, pair.kernels["eagle"]["packed"])  # packed as the pair's own drafter
    g, eagle = args.gamma, get_method("eagle")
    grid = {f"eagle full_g{g}": ("full", "full", 0)}  # variant -> (drafter, head, head size)
    grid.update({f"eagle {name}_g{g}": (name, "reduced", 0) for name in drafters if name != "full"})
    grid[f"frspec {args.frspec}_g{g}"] = ("full", "frspec", args.frspec)
    grid.update({f"specvocab k{k}_g{g}": ("full", "specvocab", int(k)) for k in args.specvocab_k.split(",")})
    variants = {"ar": (get_method("ar"), {}),
                **{name: (eagle, {"gamma": g, "head": h, "head_size": n}) for name, (_, h, n) in grid.items()}}
    own = {name: Models(target, eagle=drafters[d]) for name, (d, _, _) in grid.items() if d != "full"}
    runs = interleaved(args, device, variants, pair=pair, dataset=args.eagle_dataset, models=own)

    prompt = prompts_of(pair, args.eagle_dataset, 1)[0][0]
    ids = prompt.target["input_ids"]
    P, token = ids.shape[1], torch.tensor([[int(ids[0, -1])]], device=device)
    with torch.inference_mode():
        hs = target(input_ids=ids, output_hidden_states=True).hidden_states
        feats = torch.cat([hs[i] for i in feature_layers(target.config.num_hidden_layers)], -1)
        state = {}
        for name, d in drafters.items():  # the prompt's entries once per drafter; heads do not touch the cache
            d.midlayer.self_attn.reset(P + 8, device, d.fc.weight.dtype)
            state[name] = d.extend(feats, torch.cat([ids[:, 1:], token], 1), torch.arange(P, device=device)[None])[:, -1:]
        heads = {name: head_for(drafters[d], target, h, n) for name, (d, h, n) in grid.items()}
        times = {name: [] for name in grid}
        for rep in range(args.steps + 3):
            for name in (list(grid) if rep % 2 == 0 else list(reversed(grid))):
                which = grid[name][0]
                d = drafters[which]
                start = now(device)
                heads[name](d.norm(d.extend(state[which], token, torch.tensor([[P]], device=device))[0]))
                elapsed = now(device) - start
                d.crop(P)  # back to the prompt: the same context every step
                if rep >= 3:
                    times[name].append(elapsed)
    step = {name: statistics.median(v) for name, v in times.items()}
    med = {name: per_token(v) for name, v in runs.items()}
    tau = {name: tau_of(v) for name, v in runs.items()}
    full = f"eagle full_g{g}"
    rows = [f"## Vocabulary grid: {args.eagle_pair} (+ {args.reduced or 'no reduced heads'}) on {args.eagle_dataset}, "
            f"chain gamma {args.gamma}, greedy, {args.max_new_tokens} new tokens, {args.prompts} prompts x "
            f"{args.repeats} repeats (interleaved), all outputs identical to ar; draft step: median of {args.steps}", "",
            "| variant | tau | draft step ms | draft step vs full | ms / new token | speedup vs ar |",
            "|---|---|---|---|---|---|"]
    rows += [f"| {name} | {tau[name]:.2f} | {step[name] * 1e3:.2f} | {step[name] / step[full]:.2f}x | "
             f"{med[name] * 1e3:.1f} | {med['ar'] / med[name]:.2f}x |" for name in grid]
    spec = [n for n, (_, h, _) in grid.items() if h == "specvocab"]
    reduced = [n for n, (_, h, _) in grid.items() if h in ("reduced", "frspec")]
    if spec:
        best = max(spec, key=lambda n: med["ar"] / med[n])
        rows += ["", f"**specvocab tau / full tau: {tau[best] / tau[full]:.3f}** ({best}; goal >= 0.98: "
                 f"{'met' if tau[best] >= 0.98 * tau[full] else 'not met'})",
                 f"**specvocab draft step / full: {step[best] / step[full]:.2f}x** (goal <= 0.5: "
                 f"{'met' if step[best] <= 0.5 * step[full] else 'not met'})"]
        if reduced:
            other = max(reduced, key=lambda n: med["ar"] / med[n])
            ratio = med[other] / med[best]
            rows.append(f"**specvocab vs best reduced-vocabulary variant: {ratio:.2f}x** throughput ({best} vs "
                        f"{other}; goal >= 1.10: {'met' if ratio >= 1.10 else 'not met'})")
    return rows, {"runs": runs, "draft_step_s": times}


def bench_baseline(args, device) -> tuple[list[str], dict]:
    """How strong is the baseline every ratio divides by? Our `ar` dense, packed and as `pack_weights=auto` picks
    for it, against transformers' own generate() dense and packed; then the best of our `sd` shapes (each model
    packed as auto picks for the shape it runs) against plain generate() and against the best transformers
    assisted-generation setting: its defaults (20 tokens, confidence threshold 0.4) and a constant-gamma grid."""
    from harness import kernels

    pairs = {"dense": load(args.pair, device, pack="false"), "packed": load(args.pair, device, pack="true")
             if device.type == "cpu" else None}
    pairs["packed"] = pairs["packed"] or pairs["dense"]
    chosen = load(args.pair, device)  # as pack_weights=auto decodes ar (the models are the cached copies above)
    ar_kind = "packed" if chosen.kernels["target"]["packed"] else "dense"
    ar, gen, sd, hf = (get_method(m) for m in ("ar", "hf_generate", "sd", "hf_assisted"))
    variants = {"ar": (ar, {}), "ar dense": (ar, {}), "ar packed": (ar, {}), "generate dense": (gen, {}),
                "generate packed": (gen, {})}
    own = {"ar": chosen.models, "ar dense": pairs["dense"].models, "ar packed": pairs["packed"].models,
           "generate dense": pairs["dense"].models, "generate packed": pairs["packed"].models}
    shapes = {"sd_g5": dict(gamma=5), "sd_g3_w2": dict(gamma=3, tree_width=2)}
    for name, shape in shapes.items():  # each model as auto picks it for this shape
        variants[name], own[name] = (sd, shape), load(args.pair, device, block=kernels.block_tokens("sd", shape)).models
    for kind in ("dense", "packed"):  # transformers' default block shape (grid/sd_dynamic): short blocks, either kernel
        name = f"sd dynamic {kind}"
        shapes[name] = dict(gamma=20, confidence=0.4)
        variants[name], own[name] = (sd, shapes[name]), pairs[kind].models
    assisted = {"hf_assisted defaults": dict(gamma=20, confidence=0.4), "hf_assisted_g3": dict(gamma=3),
                "hf_assisted_g5": dict(gamma=5), "hf_assisted_g5 packed": dict(gamma=5)}
    for name, opts in assisted.items():
        variants[name] = (hf, opts)
        own[name] = pairs["packed" if name.endswith("packed") else "dense"].models
    runs = interleaved(args, device, variants, pair=pairs["dense"], models=own)
    med = {name: per_token(v) for name, v in runs.items()}
    best_sd = min(shapes, key=med.get)
    best_hf = min(assisted, key=med.get)
    rows = [f"## Baseline strength: {setting(args)}; our ar decodes {ar_kind} (pack_weights=auto, measured), "
            f"each sd model as auto picks for its shape", "",
            "| variant | median ms / new token | tau | vs our ar |", "|---|---|---|---|"]
    rows += [f"| {name} | {med[name] * 1e3:.1f} | {tau_of(runs[name]):.2f} | {med['ar'] / med[name]:.2f}x |" for name in runs]
    # The goal is judged against the faster generate() setting: plain generate() as transformers loads the weights
    # (dense), or generate() on our prepacked weights, whichever a user of this machine would be better off with.
    best_generate = min(("generate dense", "generate packed"), key=med.get)
    vs_generate, best_vs_generate = med[best_generate] / med["ar"], med["generate dense"] / med[best_sd]
    vs_hf = med[best_hf] / med[best_sd]
    rows += ["", f"**ar vs generate: {vs_generate:.2f}x** (against the faster generate() setting, {best_generate}; "
             f"goal >= 1.00: {'met' if vs_generate >= 1 else 'NOT MET'}; against plain generate(), dense: "
             f"{med['generate dense'] / med['ar']:.2f}x)",
             f"**best sd vs generate: {best_vs_generate:.2f}x** ({best_sd} against plain generate(), dense)",
             f"**best sd vs best hf_assisted: {vs_hf:.2f}x** ({best_sd} against {best_hf}; goal >= 1.3: "
             f"{'met' if vs_hf >= 1.3 else 'not met'})"]
    return rows, dict(runs=runs, ar_kind=ar_kind, best_sd=best_sd, best_hf=best_hf)


def quiet_cpus(limit: float = 0.1, timeout_s: float = 5.0) -> None:
    """Wait (up to `timeout_s`) until the CPUs are idle: a vLLM CPU server keeps a core spinning for about a second
    after each request, which would slow whichever decode came next."""
    from harness.kernels import busy_share

    deadline = time.time() + timeout_s
    while time.time() < deadline and (busy_share(0.1) or 0.0) > limit:
        pass


def bench_vllm(args, device) -> tuple[list[str], dict]:
    """Our `sd` (transformers) against vLLM's `draft_model` speculation on the same pair, prompts and gamma at batch
    1, with each side's `ar`: two vLLM servers (with and without speculation, conf/backend/vllm.yaml) stay up while
    the four variants take turns per prompt, so drift hits all alike, each after the CPUs went quiet. vLLM's sd must match vLLM's ar token for token;
    vLLM's ar against ours is engine agreement (reported, not required: other kernels may round differently)."""
    from hydra import compose, initialize_config_dir

    from harness import engine

    with initialize_config_dir(str(CONF), version_base=None):
        cfgs = {m: compose("config", overrides=["backend=vllm", f"pair={args.vllm_pair}", f"method={m}",
                                                f"method.gamma={args.gamma}"] if m == "sd" else
                           ["backend=vllm", f"pair={args.vllm_pair}", f"method={m}"]) for m in ("ar", "sd")}
    pair = load(args.vllm_pair, device)
    logs = args.out / "vllm-logs"
    for name in cfgs:
        (logs / name).mkdir(parents=True, exist_ok=True)
    with engine.serving(cfgs["ar"], logs / "ar", pair.context) as (vllm_ar, info), \
            engine.serving(cfgs["sd"], logs / "sd", pair.context) as (vllm_sd, sd_info):
        variants = {"ar": (get_method("ar"), {}), f"sd_g{args.gamma}": (get_method("sd"), {"gamma": args.gamma}),
                    "vllm ar": (vllm_ar, {}), f"vllm sd_g{args.gamma}": (vllm_sd, {})}
        runs = interleaved(args, device, variants, pair=pair, settle=quiet_cpus,
                           references={"vllm ar": None, f"vllm sd_g{args.gamma}": "vllm ar"})
    med = {name: per_token(v) for name, v in runs.items()}
    ours, theirs = med[f"sd_g{args.gamma}"], med[f"vllm sd_g{args.gamma}"]
    agree = sum(r["agrees_with_ar"] for r in runs["vllm ar"])
    rows = [f"## Our sd vs vLLM's draft_model speculation at batch 1: {setting(args).replace(args.pair, args.vllm_pair)}"
            .replace("all outputs identical to ar", "vLLM's sd identical to vLLM's ar") +
            f"; vLLM {info['version']}, one OpenAI-compatible server per variant, token-id prompts, streamed", "",
            "| variant | median ms / new token | tau | vs our ar | vs its own ar |", "|---|---|---|---|---|"]
    for name, v in runs.items():
        own = "vllm ar" if name.startswith("vllm") else "ar"
        rows.append(f"| {name} | {med[name] * 1e3:.1f} | {tau_of(v):.2f} | {med['ar'] / med[name]:.2f}x | "
                    f"{med[own] / med[name]:.2f}x |")
    rows += ["", f"**our sd vs vLLM sd: {theirs / ours:.2f}x** (time per new token of vLLM's draft_model / ours; "
             f"> 1: ours is faster); vLLM's ar agreed with ours on {agree} of {len(runs['vllm ar'])} decodes"]
    return rows, dict(runs=runs, engine=info, speculative_config=sd_info["speculative_config"])


def bench_ties(args, device) -> tuple[list[str], dict]:
    """The lossless check's tie tolerance (harness.ties) of the --pair's target in float32, bfloat16 and float16:
    ar's greedy outputs of --prompts prompts, fed one token at a time, in blocks of 6 and in one forward; the largest
    change of a top-5 logit gap between two of those shapes, with the argmax flips seen and the largest gap that
    flipped. Then `sd` (--gamma) on the same prompts in the same dtype, each output that differs from ar's judged by
    that tolerance: what `ties k/N` means, per dtype, on this machine."""
    from harness.records import lossless_verdict
    from harness.ties import check_output, measure_tolerance, teacher_forced

    rows = [f"## Tie tolerance of the lossless check: {args.pair}, ar outputs of {args.prompts} {args.dataset} "
            f"prompts x {args.max_new_tokens} tokens, shapes: 1-token steps, blocks of 6, one forward; sd at gamma "
            f"{args.gamma} judged by it", "",
            "| dtype | tolerance (logits) | positions | argmax flips between shapes | largest gap that flipped | "
            "median top logit | sd verdict | largest margin of an sd token |", "|---|---|---|---|---|---|---|---|"]
    data = {}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        pair = load_pair(pair_config(args.pair), device, dtype, pack=False)
        prompts, _ = prompts_of(pair, args.dataset, args.prompts)
        settings = DecodeSettings(max_new_tokens=args.max_new_tokens, eos_token_ids=pair.eos_token_ids)
        runs = [(p, get_method("ar")(pair.models, p, settings).tokens[0]) for p in prompts]
        t = measure_tolerance(pair.models.target, runs)
        top = statistics.median(float(teacher_forced(pair.models.target, p, out).max(-1).values.median())
                                for p, out in runs)
        checks, worst = [], 0.0
        for p, ar_out in runs:
            out = get_method("sd")(pair.models, p, settings, gamma=args.gamma).tokens[0]
            if out == ar_out:
                checks.append("same")
                continue
            check = check_output(pair, None, p, None, out, ar_out, t["tolerance"], args.max_new_tokens)
            checks.append(check["verdict"])
            worst = max(worst, check["max_margin"])
        name = str(dtype).removeprefix("torch.")
        rows.append(f"| {name} | {t['tolerance']:.3g} | {t['positions']} | {t['flips']} | {t['largest_flip_gap']:.3g} | "
                    f"{top:.1f} | {lossless_verdict(checks)} | {worst:.3g} |")
        data[name] = {**t, "median_top_logit": top, "sd_checks": checks, "sd_largest_margin": worst}
    return rows, data


SECTIONS = {"baseline": bench_baseline, "sd": bench_sd, "hf": bench_hf, "overhead": bench_overhead, "cost": bench_cost, "kernels": bench_kernels,
            "tabed": bench_tabed, "vocab": bench_vocab, "vllm": bench_vllm, "ties": bench_ties}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    ap.add_argument("--pair", default="smollm2-135m__smol-draft", help="text pair for sd, hf, overhead, cost")
    ap.add_argument("--dataset", default="zoo-eval")
    ap.add_argument("--gamma", type=int, default=5)
    ap.add_argument("--shape", default="3x2", help="GAMMAxWIDTH of an extra sd variant in the sd section (a token "
                    "tree when WIDTH > 1; empty: none)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vlm-pair", default="tiny-llava")
    ap.add_argument("--vlm-dataset", default="mmvet")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per variant (kernels, tabed, vocab)")
    ap.add_argument("--eagle-pair", default="smollm2-135m__smol-eagle3", help="EAGLE pair of the vocab section")
    ap.add_argument("--eagle-dataset", default="zoo-eval")
    ap.add_argument("--reduced", default="embedded:smol-eagle3-r8192,embedded:smol-eagle3-r16384",
                    help="reduced-head EAGLE drafters of the same target, as pair.eagle ids (comma-separated; "
                         "empty: none)")
    ap.add_argument("--frspec", type=int, default=8192, help="FR-Spec slice size")
    ap.add_argument("--specvocab-k", default="384,768,1536", help="SpecVocab candidates per step (comma-separated)")
    ap.add_argument("--vllm-pair", default="smollm2-135m__smol-llama-draft",
                    help="pair of the vllm section (its draft must be one vLLM loads: a plain Llama)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--pack-weights", default="auto", choices=packing.CHOICES,
                    help="prepacked CPU linear weights, as the run setting pack_weights (the kernels section "
                         "compares both)")
    ap.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "bench")
    ap.add_argument("--tag", default="", help="a suffix for the section names written (vocab-TAG): the same section "
                    "on another pair beside the default one, in the same file")
    args = ap.parse_args(argv)
    sections = args.sections.split(",")
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {unknown}; valid choices: {', '.join(SECTIONS)}")

    device = resolve_device(args.device)
    env = environment(device)
    where = (f"{time.strftime('%Y-%m-%d %H:%M')}, {env['device_name']} ({env['cpu_count']} CPUs, {env['torch_threads']} "
             f"torch threads), torch {env['versions']['torch']}, transformers {env['versions']['transformers']}, "
             f"git {env['git_sha'][:10]}")
    args.out.mkdir(parents=True, exist_ok=True)
    blocks = read_sections(args.out / "latest.md")
    try:
        raw = json.loads((args.out / "raw.json").read_text())
    except (OSError, json.JSONDecodeError):
        raw = {}
    for name in sections:
        rows, data = SECTIONS[name](args, device)
        key = f"{name}-{args.tag}" if args.tag else name
        blocks[key] = "\n".join([SECTION_MARK.format(key), *rows, "", f"_Measured {where}._", ""])
        raw[key] = {"args": {k: str(v) for k, v in vars(args).items()}, "env": env, "data": data}
        print("\n".join(rows) + "\n", flush=True)
        write_sections(args.out / "latest.md", blocks)  # after each section: a crash keeps what was measured
        (args.out / "raw.json").write_text(json.dumps(raw, indent=2))
    print(f"wrote {args.out / 'latest.md'} (sections {', '.join(sections)}; the others kept as they were)")
    return 0


SECTION_MARK = "<!-- bench section: {} -->"


def read_sections(path: Path) -> dict[str, str]:
    """The sections of an earlier latest.md (name -> its text, from its marker to the next), so that running
    some sections replaces those and keeps the others."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    head, *parts = text.split(SECTION_MARK.split("{}")[0])
    return {part.split(" -->", 1)[0]: SECTION_MARK.split("{}")[0] + part.rstrip() + "\n" for part in parts}


def write_sections(path: Path, blocks: dict[str, str]) -> None:
    order = [name for name in SECTIONS if name in blocks] + [name for name in blocks if name not in SECTIONS]
    head = ["# Benchmarks (`make bench`)", "",
            "Every dated measurement the docs quote. Each section says when, where and at which commit it was measured "
            "and how to measure it again: `python -m harness.bench --sections NAME` reruns a bench section and keeps "
            "the others; the sections after them were measured by the command each names.", ""]
    path.write_text("\n".join(head + [blocks[name] for name in order]))


if __name__ == "__main__":
    sys.exit(main())
