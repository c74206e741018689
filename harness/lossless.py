"""`python -m harness.lossless DIR`: is every greedy output of every method under DIR the target's own?

An output equal to its `ar` twin's (same run, pair, dataset, settings, sample and turn) is exact. One that differs is
checked by teacher forcing: prompt + output through the target in one forward, in the cell's dtype (and in float32,
shown beside it). At every position the method's token must be the target's argmax or within the tie tolerance of
it, and the output must stop where ar's rule stops (at its first EOS, else at max_new_tokens). Every position is
checked, not only the first divergence, so a tie cannot hide a later wrong token.

The tolerance is measured, per target, dtype and device, on the ar outputs of the cell: the largest change, between
two batch shapes of the same prefix (one token at a time as ar decodes, blocks of 6 as a verify does, one forward
over everything as this check does), of the logit gap between the target's top token and each of its next four. A
flip by rounding moves a gap by at most that much; a wrong token accepted by a buggy method sits far beyond it. In
float32 the tolerance is about 1e-5 and `exact` is the expectation.

A cell's verdict: `exact` (every output identical), `ties k/N` (k outputs differ, every token within tolerance),
`LOSSY k/N` (k outputs hold a token beyond it, or stop wrongly): a bug. Each checked cell gets lossless.json: the
verdict, the tolerance and its measurement, and per differing output its first divergence (position, both tokens,
margin, rank) and every position beyond tolerance. The report reads it (per record, keyed by the outputs it
checked) and never recomputes; a sweep runs this check at its end. Exit 0 when no cell is LOSSY, 1 when one is,
2 on bad input.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from harness import HarnessError
from harness.records import CONFIG, ENV, LOSSLESS, lossless_verdict, write_atomic

log = logging.getLogger("harness")

TOP = 5  # the gaps of the top token to the next TOP - 1 are what two shapes must agree on
BLOCKS = (1, 6)  # incremental feeds compared with one forward: ar's 1-token steps, a gamma-5 verify's 6 tokens
TOLERANCE_SAMPLES = 4  # ar outputs the tolerance is measured on (the first turn-0 ones of the cell)


def fingerprint(out: list[int], ar_out: list[int]) -> str:
    """What a check judged: a record's entry in lossless.json holds only while both outputs are the same."""
    return hashlib.sha1(json.dumps([list(out), list(ar_out)]).encode()).hexdigest()[:16]


@torch.inference_mode()
def teacher_forced(target, prompt, out: list[int]) -> torch.Tensor:
    """Logits [n, V] (float32) predicting each token of `out` after the prompt and the tokens before it: one forward."""
    from methods.core import forward, new_cache

    inputs = dict(prompt.target)
    ids = inputs.pop("input_ids")
    ids = torch.cat([ids, torch.tensor([out[:-1]], dtype=ids.dtype, device=ids.device)], dim=1)
    return forward(target, new_cache(target), ids, logits_to_keep=len(out), **inputs)[0]


@torch.inference_mode()
def fed_in_blocks(target, prompt, out: list[int], block: int) -> torch.Tensor:
    """The same logits as `teacher_forced`, from the prompt's forward, then `out` fed `block` tokens at a time
    through the KV cache (block 1: exactly ar's computation)."""
    from methods.core import forward, new_cache

    cache = new_cache(target)
    rows = [forward(target, cache, logits_to_keep=1, **prompt.target)[0]]
    device = prompt.target["input_ids"].device
    for start in range(0, len(out) - 1, block):
        rows.append(forward(target, cache, torch.tensor([out[start:start + block]], device=device))[0])
    return torch.cat(rows)[:len(out)]


@torch.inference_mode()
def measure_tolerance(target, runs: list[tuple[object, list[int]]]) -> dict:
    """The tie tolerance (module docstring) from (prompt, ar output) `runs`, with what it was measured on: positions,
    argmax flips seen between shapes and the largest gap at which one flipped."""
    worst, flips, flip_gap, positions = 0.0, 0, 0.0, 0
    for prompt, out in runs:
        shapes = [teacher_forced(target, prompt, out)] + [fed_in_blocks(target, prompt, out, b) for b in BLOCKS]
        for a, b in itertools.combinations(shapes, 2):
            top = a.topk(min(TOP, a.shape[-1]), dim=-1).indices
            gap_a, gap_b = a.gather(-1, top), b.gather(-1, top)
            change = ((gap_a[:, :1] - gap_a[:, 1:]) - (gap_b[:, :1] - gap_b[:, 1:])).abs()
            worst = max(worst, float(change.max()) if change.numel() else 0.0)
            flipped = (a.argmax(-1) != b.argmax(-1)).nonzero().flatten()
            flips += len(flipped)
            for i in flipped.tolist():
                flip_gap = max(flip_gap, float(a[i].max() - a[i, b[i].argmax()]))
        positions += len(out)
    return {"tolerance": worst, "positions": positions, "outputs": len(runs),
            "shapes": ["one forward"] + [f"blocks of {b}" for b in BLOCKS], "flips": flips,
            "largest_flip_gap": flip_gap}


def stop_error(out: list[int], eos: tuple[int, ...], max_new_tokens: int) -> str | None:
    """Why `out` does not end where ar's rule ends it (methods.core.extend), or None."""
    early = [i for i, t in enumerate(out) if t in eos]
    if early and early[0] < len(out) - 1:
        return f"goes on past the EOS at position {early[0]}"
    if not early and len(out) != max_new_tokens:
        return f"stops after {len(out)} tokens without an EOS (max_new_tokens {max_new_tokens})"
    return None


@torch.inference_mode()
def check_output(pair, reference, prompt, ref_prompt, out: list[int], ar_out: list[int], tolerance: float,
                 max_new_tokens: int) -> dict:
    """One differing output, teacher forced through `pair`'s target (the cell's dtype) and `reference`'s (float32,
    or None when the cell is float32): its verdict (tie or lossy) and where it differs."""
    logits = teacher_forced(pair.models.target, prompt, out)
    ids = torch.tensor(out, device=logits.device)
    chosen = logits.gather(-1, ids[:, None])[:, 0]
    margins = logits.max(-1).values - chosen
    ranks = (logits > chosen[:, None]).sum(-1)
    margins32 = margins
    if reference is not None:
        logits32 = teacher_forced(reference.models.target, ref_prompt, out)
        margins32 = logits32.max(-1).values - logits32.gather(-1, ids[:, None].to(logits32.device))[:, 0]
    first = next((i for i, (a, b) in enumerate(zip(out, ar_out)) if a != b), min(len(out), len(ar_out)))
    beyond = (margins > tolerance).nonzero().flatten().tolist()
    stop = stop_error(out, getattr(pair, "eos_token_ids", ()), max_new_tokens)
    tokenizer = getattr(pair, "tokenizer", None)  # a bare pair (bench_gpu's random weights) has ids only
    text = tokenizer.decode if tokenizer is not None else str
    at = min(first, len(out) - 1)
    return {"verdict": "lossy" if beyond or stop else "tie", "n_tokens": len(out), "first_position": first,
            "token": out[first] if first < len(out) else None, "ar_token": ar_out[first] if first < len(ar_out) else None,
            "token_text": text(out[first:first + 1]), "ar_token_text": text(ar_out[first:first + 1]),
            "margin": float(margins[at]), "margin_float32": float(margins32[at]), "rank": int(ranks[at]),
            "max_margin": float(margins.max()), "n_beyond": len(beyond), "stop": stop,
            "beyond": [{"position": i, "token": out[i], "token_text": text(out[i:i + 1]),
                        "argmax": int(logits[i].argmax()), "argmax_text": text([int(logits[i].argmax())]),
                        "margin": float(margins[i]), "margin_float32": float(margins32[i]), "rank": int(ranks[i])}
                       for i in beyond[:10]]}


def stored_checks(cell: Path) -> dict[tuple[str, int], dict]:
    """A cell's lossless.json entries by (sample id, turn); each holds for the outputs of its `fingerprint` only."""
    path = Path(cell) / LOSSLESS
    if not path.exists():
        return {}
    return {(s["id"], s["turn"]): s for s in json.loads(path.read_text()).get("samples", [])}


def record_check(rec: dict, stored: dict) -> str | None:
    """How a paired greedy record fares: "same" as ar's, else its stored check ("tie" or "lossy") when that check
    judged these very outputs, else "unchecked"; None without an ar twin."""
    ar_out = rec.get("ar_output_ids")
    if not isinstance(ar_out, list):
        return None
    out = list(rec.get("output_ids") or [])
    if out == list(ar_out):
        return "same"
    entry = stored.get((rec["id"], rec["turn"]))
    return entry["verdict"] if entry and entry.get("fingerprint") == fingerprint(out, ar_out) else "unchecked"


class Target:
    """The target of one (pair, dtype, device) loaded once for every cell that needs it, in the cell's dtype and,
    when that is not float32, in float32 too; its tie tolerance measured once, on the first cell that differs."""

    def __init__(self, pair_cfg, dtype: torch.dtype, device: torch.device):
        from harness.models import load_pair

        self.pair = load_pair(pair_cfg, device, dtype, need_draft=False, pack=False)
        self.reference = None if dtype == torch.float32 else load_pair(pair_cfg, device, torch.float32,
                                                                       need_draft=False, pack=False)
        self.tolerance: dict | None = None


def cell_dtype(cell: Path, cfg, device: torch.device) -> torch.dtype:
    """The dtype the cell's target decoded in: env.json's record of it, else the config's."""
    from harness.models import resolve_dtype

    env = json.loads((cell / ENV).read_text()) if (cell / ENV).exists() else {}
    recorded = (env.get("dtypes") or {}).get("target")
    return getattr(torch, recorded) if recorded else resolve_dtype(cfg.dtype, device) or torch.float32


def prompts_of(cfg, records: list[dict]):
    """A function (pair, record) -> the prompt the record's turn was decoded from, rebuilt from the cell's dataset
    and the cell's own earlier answers (or the reused first turns)."""
    from harness.data import load_samples
    from harness.run import stored_first_turns, turn_prompt

    samples = {s.id: s for s in load_samples(cfg.dataset, cfg.n_samples).samples}
    answers = {(r["id"], r["turn"]): r.get("output_text") for r in records}
    answers.update({(i, 0): text for i, text in stored_first_turns(cfg).items()})

    def prompt(pair, rec: dict):
        if rec["id"] not in samples:
            raise HarnessError(f"sample {rec['id']!r} is not in dataset {cfg.dataset.name} any more")
        return turn_prompt(pair, samples[rec["id"]], rec["turn"], [answers[(rec["id"], k)] for k in range(rec["turn"])])

    return prompt


def check_cell(cell: Path, records: list[dict], targets: dict, device: torch.device, force: bool,
               tolerance_samples: int) -> dict:
    """Check one method cell's paired greedy `records` (report.load rows); write its lossless.json when anything
    differs or the verdict changed; return its row."""
    stored = {} if force else stored_checks(cell)
    checks = {(r["id"], r["turn"]): record_check(r, stored) for r in records}
    checks = {k: v for k, v in checks.items() if v is not None}
    todo = [r for r in records if checks.get((r["id"], r["turn"])) == "unchecked"]
    previous = json.loads((cell / LOSSLESS).read_text()) if (cell / LOSSLESS).exists() else {}
    entries = {k: v for k, v in stored.items() if checks.get(k) in ("tie", "lossy")}
    info = {key: previous[key] for key in ("dtype", "device", "tolerance") if key in previous and not force}
    if todo:
        cfg = OmegaConf.load(cell / CONFIG)
        dtype = cell_dtype(cell, cfg, device)
        key = (json.dumps(OmegaConf.to_container(cfg.pair, resolve=True), sort_keys=True), str(dtype))
        if key not in targets:
            targets[key] = Target(cfg.pair, dtype, device)
        target = targets[key]
        prompt = prompts_of(cfg, records)
        if target.tolerance is None:
            first = min(r["turn"] for r in records)  # prompts ar and the method share (earlier turns reused)
            runs = [(prompt(target.pair, r), list(r["ar_output_ids"])) for r in records
                    if r["turn"] == first and r["ar_output_ids"]][:tolerance_samples]
            target.tolerance = measure_tolerance(target.pair.models.target, runs)
            log.info("lossless: tie tolerance of %s in %s on %s: %.3g (%d positions of %d ar outputs, %d flips)",
                     cfg.pair.target.id, dtype, device, target.tolerance["tolerance"], target.tolerance["positions"],
                     target.tolerance["outputs"], target.tolerance["flips"])
        info = {"dtype": str(dtype).removeprefix("torch."), "device": str(device), "tolerance": target.tolerance}
        for rec in todo:
            out, ar_out = list(rec["output_ids"]), list(rec["ar_output_ids"])
            ref = target.reference
            entry = check_output(target.pair, ref, prompt(target.pair, rec), prompt(ref, rec) if ref else None, out,
                                 ar_out, target.tolerance["tolerance"], cfg.max_new_tokens)
            entries[(rec["id"], rec["turn"])] = {"id": rec["id"], "turn": rec["turn"],
                                                 "fingerprint": fingerprint(out, ar_out), **entry}
            checks[(rec["id"], rec["turn"])] = entry["verdict"]
    row = {"cell": str(cell), "verdict": lossless_verdict(list(checks.values())), "n": len(checks),
           "n_differ": sum(c != "same" for c in checks.values()),
           "n_lossy": sum(c == "lossy" for c in checks.values()), **info}
    samples = sorted(entries.values(), key=lambda e: (e["id"], e["turn"]))
    if todo or force or previous.get("verdict") != row["verdict"]:
        write_atomic(cell / LOSSLESS, json.dumps({**row, "samples": samples,
                                                  "checked_at": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2))
    return {**row, "samples": samples}


def check_tree(root: Path, device: str = "auto", force: bool = False,
               tolerance_samples: int = TOLERANCE_SAMPLES) -> list[dict]:
    """Check every greedy method cell under `root` against its ar twins (module docstring); one row per cell with
    `cell`, `verdict`, `n`, `n_differ`, `n_lossy` (and `tolerance`, `samples` where outputs differ). Targets load
    only when some output differs and has no valid stored check; `force` checks every differing output again."""
    from harness.models import resolve_device
    from harness.report import load

    df = load(Path(root))
    if df.empty:
        return []
    dev = resolve_device(device)
    targets, rows = {}, []
    for cell, g in df[(df.method_name != "ar") & (df.status == "ok")].groupby("cell", sort=True):
        if (g.temperature > 0).any():
            rows.append({"cell": cell, "verdict": "n/a (sampling: tests/test_sampling.py checks the distribution)",
                         "n": len(g), "n_differ": 0, "n_lossy": 0})
            continue
        rows.append(check_cell(Path(cell), g.to_dict("records"), targets, dev, force, tolerance_samples))
    return rows


def render(rows: list[dict], root: Path) -> str:
    """The verdict table, then every LOSSY output: sample, turn, position, both tokens, margin."""
    import pandas as pd

    def rel(cell: str) -> str:
        return str(Path(cell).relative_to(root)) if Path(cell).is_relative_to(root) else cell

    table = pd.DataFrame([{"cell": rel(r["cell"]), "verdict": r["verdict"], "differ": r["n_differ"],
                           "dtype": r.get("dtype", ""),
                           "tolerance": (r.get("tolerance") or {}).get("tolerance"),
                           "worst margin": max((s["max_margin"] for s in r.get("samples", [])), default=None)}
                          for r in rows])
    lines = [table.to_markdown(index=False, floatfmt=".3g", missingval="-")]
    lossy = [(r, s) for r in rows for s in r.get("samples", []) if s["verdict"] == "lossy"]
    if lossy:
        lines += ["", "LOSSY outputs (teacher-forced margin = target's top logit minus the method's token's):"]
        lines += [lossy_line(rel(r["cell"]), s) for r, s in lossy]
    return "\n".join(lines)


def lossy_line(cell: str, s: dict) -> str:
    """One LOSSY output in a line: where its first token beyond tolerance is (or why it stops wrongly)."""
    where = s["beyond"][0] if s["beyond"] else None
    what = (f"position {where['position']}: {where['token_text']!r} ({where['token']}) where the target's argmax is "
            f"{where['argmax_text']!r} ({where['argmax']}), margin {where['margin']:.3g} (float32 "
            f"{where['margin_float32']:.3g}, rank {where['rank']}); {s['n_beyond']} position(s) beyond tolerance"
            if where else "")
    return f"- {cell} sample {s['id']} turn {s['turn']}: " + "; ".join(x for x in (what, s["stop"]) if x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.lossless", description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="a results directory (any level: root, run, pair, ...)")
    parser.add_argument("--device", default="auto", help="where the target runs the teacher forcing (default auto)")
    parser.add_argument("--force", action="store_true", help="check every differing output again, stored checks too")
    parser.add_argument("--tolerance-samples", type=int, default=TOLERANCE_SAMPLES,
                        help=f"ar outputs the tie tolerance is measured on (default {TOLERANCE_SAMPLES})")
    args = parser.parse_args(argv)
    root = args.results.resolve()
    if not root.is_dir():
        print(f"error: {args.results} is not a directory", file=sys.stderr)
        return 2
    if args.tolerance_samples < 1:
        print(f"error: --tolerance-samples {args.tolerance_samples}: need an integer >= 1", file=sys.stderr)
        return 2
    try:
        rows = check_tree(root, args.device, args.force, args.tolerance_samples)
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not rows:
        print(f"no method cell with ar twins under {args.results}")
        return 0
    print(render(rows, root))
    return 1 if any(r["n_lossy"] for r in rows) else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
