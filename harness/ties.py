"""Telling a rounding tie from a bug, one output at a time: teacher forcing through the target, the tie tolerance
measured from the target's own shape-to-shape rounding, and the stored per-output checks (lossless.json).

The tolerance, per target, dtype and device: the largest change, between two batch shapes of the same prefix (one
token at a time as ar decodes, blocks of 6 as a verify does, one forward over everything as the check does), of the
logit gap between the target's top token and each of its next four, over ar's outputs. A flip by rounding moves a gap
by at most that much; a wrong token accepted by a buggy method sits far beyond it. An output is a tie when every token
is the teacher-forced argmax or within the tolerance of it and it stops where ar's rule stops (its first EOS, else
max_new_tokens); else it is lossy. harness.lossless applies this to every cell of a results tree; harness.baseline to
the calibration's outputs.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import torch

from harness.records import LOSSLESS
from methods.core import forward, new_cache

TOP = 5  # the gaps of the top token to the next TOP - 1 are what two shapes must agree on
BLOCKS = (1, 6)  # incremental feeds compared with one forward: ar's 1-token steps, a gamma-5 verify's 6 tokens


def fingerprint(out: list[int], ar_out: list[int]) -> str:
    """What a check judged: a record's entry in lossless.json holds only while both outputs are the same."""
    return hashlib.sha1(json.dumps([list(out), list(ar_out)]).encode()).hexdigest()[:16]


@torch.inference_mode()
def teacher_forced(target, prompt, out: list[int]) -> torch.Tensor:
    """Logits [n, V] (float32) predicting each token of `out` after the prompt and the tokens before it: one forward."""
    inputs = dict(prompt.target)
    ids = inputs.pop("input_ids")
    ids = torch.cat([ids, torch.tensor([out[:-1]], dtype=ids.dtype, device=ids.device)], dim=1)
    return forward(target, new_cache(target), ids, logits_to_keep=len(out), **inputs)[0]


@torch.inference_mode()
def fed_in_blocks(target, prompt, out: list[int], block: int) -> torch.Tensor:
    """The same logits as `teacher_forced`, from the prompt's forward, then `out` fed `block` tokens at a time
    through the KV cache (block 1: exactly ar's computation)."""
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


def lossy_line(cell: str, s: dict) -> str:
    """One LOSSY output in a line: where its first token beyond tolerance is (or why it stops wrongly)."""
    where = s["beyond"][0] if s["beyond"] else None
    what = (f"position {where['position']}: {where['token_text']!r} ({where['token']}) where the target's argmax is "
            f"{where['argmax_text']!r} ({where['argmax']}), margin {where['margin']:.3g} (float32 "
            f"{where['margin_float32']:.3g}, rank {where['rank']}); {s['n_beyond']} position(s) beyond tolerance"
            if where else "")
    return f"- {cell} sample {s['id']} turn {s['turn']}: " + "; ".join(x for x in (what, s["stop"]) if x)
