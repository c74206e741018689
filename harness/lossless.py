"""`python -m harness.lossless DIR`: is every greedy output of every method under DIR the target's own?

An output equal to its `ar` twin's (same run, pair, dataset, settings, sample and turn) is exact. One that differs is
rebuilt from the records (its prompt, from the dataset and the cell's own earlier answers) and judged by teacher
forcing through the target in the cell's dtype, with float32 margins beside (harness.ties: every position, the tie
tolerance measured per target, dtype and device on the cell's ar outputs, the stop rule). A cell's verdict:
`exact` (every output identical), `ties k/N` (k outputs differ, every token within tolerance), `LOSSY k/N` (k outputs
hold a token beyond it, or stop wrongly): a bug. In float32 the tolerance is about 1e-5 and `exact` is the
expectation.

Each checked cell gets lossless.json: the verdict, the tolerance and its measurement, and per differing output its
first divergence (position, both tokens, margin, rank) and every position beyond tolerance. The report reads it (per
record, keyed by the outputs it judged) and never recomputes; a sweep runs this check at its end. Exit 0 when no cell
is LOSSY, 1 when one is, 2 on bad input.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from harness import HarnessError
from harness.records import CONFIG, ENV, LOSSLESS, lossless_verdict, write_atomic
from harness.ties import check_output, fingerprint, lossy_line, measure_tolerance, record_check, stored_checks

log = logging.getLogger("harness")

TOLERANCE_SAMPLES = 4  # ar outputs the tolerance is measured on (the first turn-0 ones of the cell)


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
    from harness.conversation import stored_first_turns, turn_prompt

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
            twins = [r for r in records if isinstance(r["ar_output_ids"], list) and r["ar_output_ids"]]
            first = min(r["turn"] for r in twins)  # prompts ar and the method share (earlier turns reused)
            runs = [(prompt(target.pair, r), list(r["ar_output_ids"])) for r in twins
                    if r["turn"] == first][:tolerance_samples]
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
