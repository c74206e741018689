"""`python -m harness.reproduce PAPER [--pair NAME] [--sweeps A,B] [--plan] [--no-fetch] [OVERRIDES ...]`: a paper's
tables from a fresh clone in one command (`make reproduce-tabed`, `-eagle3`, `-specvocab`).

In order: the plan (every sweep preset of the paper composed into its cells: how many cells and sample decodes),
the models and datasets fetched into the HF cache (`harness.fetch`), a short timed probe (one `ar` decode per
pair) that turns the plan into a time estimate, the sweeps (`python -m harness -m +sweep=NAME`, each resumable: a
rerun skips finished cells), then the report with the paper's claims (`harness.report --claims`) and the figures,
all in one folder, results/reproduce-PAPER unless `output_root=` says otherwise. OVERRIDES go to every sweep
(`n_samples=4`, `dataset=pope,nq`, `hydra/launcher=slurm`); `--pair` replaces the papers' pairs (e.g. the
embedded `tiny-llava`, whose rows the claims table then calls not comparable, saying why).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from omegaconf import OmegaConf

from harness import PROJECT_ROOT, HarnessError
from harness.hub import hub_offline, hub_reachable
from harness.records import cell_dir, load_summary
from harness.sweeps import job_configs

PROBE_TOKENS = 16


@dataclass(frozen=True)
class Paper:
    sweeps: tuple[str, ...]  # conf/sweep presets, run in this order (later ones reuse the first one's ar cells)
    claims: str  # conf/claims/NAME.yaml


PAPERS = {
    "tabed": Paper(("tabed_table1", "tabed_mtcp", "tabed_tree", "tabed_second_turn"), "tabed"),
    "eagle3": Paper(("eagle3_table1",), "eagle3"),
    "specvocab": Paper(("eagle_vocab",), "specvocab"),
}


def plan(paper: Paper, overrides: list[str]) -> dict:
    """Every cell of the paper's sweeps (deduplicated: presets share ar cells) -> its config."""
    cells = {}
    for sweep in paper.sweeps:
        for cfg in job_configs(sweep, overrides):
            cells.setdefault(cell_dir(cfg), cfg)
    return cells


def decodes(cfg) -> int | None:
    """Decodes a cell asks for: its samples (n_samples, else the dataset's limit) times their turns (two with a
    second turn; a multi-turn dataset such as MT-bench counts one, as its turns are known only once loaded);
    None: the whole dataset, size unknown."""
    asked = [n for n in (cfg.n_samples, cfg.dataset.get("limit")) if n is not None]
    return min(asked) * (2 if cfg.dataset.get("second_turn") else 1) if asked else None


def probe(cells: dict) -> dict[str, dict]:
    """Per pair: one `ar` decode of its first cell's first sample (PROBE_TOKENS new tokens, after one warm-up) in a
    scratch folder: seconds per prompt and per new token, and proof that the models load before hours are spent."""
    from harness.run import run_cell

    timed = {}
    scratch = tempfile.mkdtemp(prefix="probe-")
    try:
        for cfg in cells.values():
            if cfg.pair.name in timed:
                continue
            cfg = OmegaConf.create({**OmegaConf.to_container(cfg, resolve=True), "method": {"name": "ar", "tag": "probe"},
                                    "n_samples": 1, "warmup": 1, "max_new_tokens": PROBE_TOKENS, "output_root": scratch,
                                    "baseline_check": False, "progress": False})
            run_cell(cfg)
            s = load_summary(cell_dir(cfg))
            timed[cfg.pair.name] = {"prefill_s": s["prefill_s"] / max(1, s["n_ok"]),
                                    "token_s": s["decode_s"] / max(1, s["new_tokens"] - s["n_ok"])}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return timed


def estimate(cells: dict, timed: dict) -> tuple[float, int]:
    """(seconds, cells of unknown size): the decodes every cell runs, each at ar's speed and to its token limit:
    its samples (to max_new_tokens), its warm-ups (`warmup` decodes of at most 16 tokens, run_cell's warm_up) and,
    in an ar cell with baseline_check, the calibration against generate() (harness.baseline: one untimed and
    REPEATS timed decodes of each of up to PROMPTS prompts, by both loops, to at most TOKENS). On a GPU the samples
    dominate and speculative cells are faster than ar; on a CPU the warm-ups and calibrations of one-sample cells
    are most of it, speculative cells can be slower than ar, and per-cell setup (config, data, models, step costs)
    comes on top. The cells of finished runs count nothing."""
    from harness import baseline

    seconds, unknown = 0.0, 0
    for cell, cfg in cells.items():
        if (cell / "summary.json").exists():
            continue
        n = decodes(cfg)
        if n is None:
            unknown += 1
            continue
        t = timed[cfg.pair.name]
        one = lambda tokens: t["prefill_s"] + tokens * t["token_s"]  # noqa: E731
        seconds += n * one(cfg.max_new_tokens) + (cfg.get("warmup") or 0) * one(min(cfg.max_new_tokens, 16))
        if cfg.method.name == "ar" and cfg.get("baseline_check", True):
            prompts = min(baseline.PROMPTS, n)
            seconds += 2 * (1 + baseline.REPEATS * prompts) * one(min(cfg.max_new_tokens, baseline.TOKENS))
    return seconds, unknown


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def harness_module(module: str, *args: str) -> int:
    print(f"$ python -m {module} {' '.join(args)}", flush=True)
    return subprocess.call([sys.executable, "-m", module, *args], cwd=PROJECT_ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.reproduce", description=__doc__.split("\n")[0])
    parser.add_argument("paper", help=f"one of {', '.join(PAPERS)}")
    parser.add_argument("--pair", help="decode every cell with this pair (conf/pair/NAME) instead of the paper's")
    parser.add_argument("--sweeps", help="comma-separated subset of the paper's sweep presets (default: all)")
    parser.add_argument("--plan", action="store_true", help="print the plan (cells, decodes) and stop")
    parser.add_argument("--no-fetch", action="store_true", help="do not download: use what is cached")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every sweep (n_samples=4, dataset=pope,nq)")
    args = parser.parse_intermixed_args(argv)
    if args.paper not in PAPERS:
        print(f"error: paper {args.paper!r}; valid choices: {', '.join(PAPERS)}", file=sys.stderr)
        return 2
    paper = PAPERS[args.paper]
    if args.sweeps:
        chosen = args.sweeps.split(",")
        if not set(chosen) <= set(paper.sweeps):
            print(f"error: --sweeps {args.sweeps}; {args.paper}'s are {', '.join(paper.sweeps)}", file=sys.stderr)
            return 2
        paper = Paper(tuple(s for s in paper.sweeps if s in chosen), paper.claims)
    overrides = [*([f"pair={args.pair}"] if args.pair else []), *args.overrides]
    if not any(o.startswith("output_root=") for o in overrides):
        overrides.append(f"output_root={PROJECT_ROOT / 'results' / ('reproduce-' + args.paper)}")
    out = next(o.split("=", 1)[1] for o in overrides if o.startswith("output_root="))
    try:
        cells = plan(paper, overrides)
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    pairs = sorted({c.pair.name for c in cells.values()})
    counts = [decodes(c) for c in cells.values()]
    print(f"{args.paper}: {len(paper.sweeps)} sweeps ({', '.join(paper.sweeps)}), {len(cells)} cells, "
          f"{sum(d for d in counts if d)} decodes{' (+ whole datasets of unknown size)' if None in counts else ''}"
          f", pairs {', '.join(pairs)}; results in {out}")
    if args.plan:
        return 0
    if not args.no_fetch:
        offline = hub_offline() or not hub_reachable()
        for sweep in paper.sweeps:
            if harness_module("harness.fetch", "--sweep", sweep, *overrides) == 0:
                continue
            if not offline:
                print(f"error: fetching what {sweep} needs did not finish (above: what is missing and how to get it); "
                      "rerun to resume, or pass --no-fetch to run on what is cached", file=sys.stderr)
                return 2
            print("warning: the hub is not reachable: going on with what is here (datasets with source auto use their "
                  "offline bundles, and the claims table calls those rows not comparable; a missing model stops the "
                  "probe)", file=sys.stderr, flush=True)
            break
    try:
        timed = probe(cells)
    except HarnessError as err:
        print(f"error: the probe decode failed, so the sweeps would: {err}", file=sys.stderr)
        return 2
    seconds, unknown = estimate(cells, timed)
    per_pair = "; ".join(f"{p}: {t['token_s'] * 1e3:.1f} ms/token" for p, t in timed.items())
    print(f"probe ({per_pair}): about {hours(seconds)} of decoding on this machine"
          + (f", plus {unknown} cells of unknown size" if unknown else "")
          + " (every decode, warm-up and ar calibration at ar's speed; per-cell setup comes on top)", flush=True)
    failed = [s for s in paper.sweeps if harness_module("harness", "-m", f"+sweep={s}", *overrides) != 0]
    report = harness_module("harness.report", out, "--claims", paper.claims)
    figures = harness_module("harness.figures", out, "--claims", paper.claims)
    if failed:
        print(f"error: sweeps with cells that did not finish: {', '.join(failed)} (rerun to resume; "
              f"python -m harness.report --status {out} lists them)", file=sys.stderr)
    return 1 if failed or report or figures else 0


if __name__ == "__main__":
    sys.exit(main())
