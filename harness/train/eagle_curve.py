"""Block efficiency of smol-eagle3 against its number of training answers: EAGLE-3's data-scaling question
asked of the embedded pair (its drafter saw 1,789 answers, ~0.5% of EAGLE's data).

    python -m harness.train.eagle_curve                       # the default points (make zoo-eagle-curve)
    python -m harness.train.eagle_curve --points 900 3545     # only these

Every point is `harness.train.eagle` with `--answers N` over one generation (the target's answers to the
first `--train-prompts` prompts of the bundled generator), everything else the committed drafter's recipe
(steps, batch, seed), built into `<cache_root>/smol-eagle3/curve/aN/`. Its tau is measured on the held-out
zoo-eval prompts (full head, chain gamma 5, greedy, lossless checked against ar) and kept in `curve.json`
beside the drafter; a point whose `curve.json` exists is not rebuilt (the trainer's own stages resume too).
The table goes to section `eagle-curve` of results/bench/latest.md, the figure to `results/eagle-curve/`.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

import torch

from harness import PROJECT_ROOT
from harness.bench import SECTION_MARK, read_sections, write_sections
from harness.records import environment
from harness.train import eagle
from harness.train.common import digest
from harness.zoo import eagle_cache

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402  (after choosing the headless backend)

OUT = PROJECT_ROOT / "results" / "eagle-curve"  # the figure
RESULTS = PROJECT_ROOT / "results" / "bench" / "latest.md"  # the table: its section eagle-curve
POINTS = (900, 1789, 3545)  # 1789: all answers to the bundled 1600 prompts (as the committed drafter); 3545: to 3200
TRAIN_PROMPTS = 3200


def point(n: int, train_prompts: int, n_eval: int, tokens: int, extra: list[str]) -> dict:
    """Build (or reuse) the drafter trained on the first n answers and measure its tau."""
    recipe = f"-{digest(train_prompts, *extra)}" if extra or train_prompts != TRAIN_PROMPTS else ""  # the default: bare aN
    folder = eagle_cache("smol") / "curve" / f"a{n}{recipe}"
    done = folder / "curve.json"
    if done.exists():
        return json.loads(done.read_text())
    t = time.time()
    eagle.main(["--train-prompts", str(train_prompts), "--answers", str(n), "--out", str(folder), "--no-eval", *extra])
    build = json.loads((folder / "build.json").read_text())
    result = eagle.stage_eval(folder, n_eval, tokens, [("full", 0)])["full"]
    row = dict(answers=build["data"]["answers"], tokens=build["data"]["tokens"], steps=build["train"]["steps"],
               val_agree=build["train"]["val_agree_per_step"][0], tau=result["tau"], speedup=result["speedup"],
               identical=result["identical"], n_eval=n_eval, wall_s=round(time.time() - t))
    done.write_text(json.dumps(row, indent=1) + "\n")
    return row


def table(rows: list[dict], train_prompts: int) -> str:
    lines = ["## smol-eagle3: tau against training answers\n",
             f"Target SmolLM2-135M-Instruct; answers: the target's own greedy answers to the first {train_prompts} "
             "prompts of harness.train.prompts (the first 1600 are datasets/zoo-prompts/train.jsonl); every point "
             "the same recipe (harness.train.eagle defaults). tau on zoo-eval (held-out prompts), full head, chain "
             "gamma 5, greedy, 128 new tokens; val agree = step-0 top-1 agreement on the held-out 5% of answers.\n",
             "| answers | tokens (prompt + answer) | steps | val agree (step 0) | tau | speedup vs ar | identical to ar |",
             "|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in rows:
        lines.append(f"| {r['answers']} | {r['tokens']} | {r['steps']} | {r['val_agree']:.3f} | {r['tau']:.2f} "
                     f"| {r['speedup']:.2f}x | {r['identical']} |")
    return "\n".join(lines) + "\n"


def figure(rows: list[dict]) -> Figure:
    fig = Figure(figsize=(3.3, 2.2))
    ax = fig.subplots()
    ax.plot([r["answers"] for r in rows], [r["tau"] for r in rows], "o-", color="#0072B2")
    ax.set_xscale("log")
    ax.set_xlabel("training answers (target-generated)")
    ax.set_ylabel("tau (zoo-eval, gamma 5)")
    ax.set_title("smol-eagle3: block efficiency vs data")
    return fig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, nargs="+", default=list(POINTS), help="training answers per point")
    ap.add_argument("--train-prompts", type=int, default=TRAIN_PROMPTS, help="prompts answered once for every point")
    ap.add_argument("--n-eval", type=int, default=20)
    ap.add_argument("--eval-tokens", type=int, default=128)
    ap.add_argument("--out", type=Path, default=OUT, help="where the figure goes")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the results file whose section `eagle-curve` "
                    "gets the table (its other sections are kept)")
    args, extra = ap.parse_known_args(argv)  # anything else goes to harness.train.eagle (e.g. --steps)
    rows = sorted((point(n, args.train_prompts, args.n_eval, args.eval_tokens, extra) for n in args.points),
                  key=lambda r: r["answers"])
    args.out.mkdir(parents=True, exist_ok=True)
    sections = read_sections(args.results)
    sections["eagle-curve"] = "\n".join([SECTION_MARK.format("eagle-curve"), table(rows, args.train_prompts),
                                         f"_Measured {time.strftime('%Y-%m-%d %H:%M')}, "
                                         f"{environment(torch.device('cpu'))['device_name']}; regenerate: "
                                         "`make zoo-eagle-curve` (each point's drafter is cached)._", ""])
    args.results.parent.mkdir(parents=True, exist_ok=True)
    write_sections(args.results, sections)
    fig = figure(rows)
    for ext in ("png", "pdf"):
        fig.savefig(args.out / f"tau_vs_answers.{ext}", bbox_inches="tight", dpi=300)
    print(table(rows, args.train_prompts))


if __name__ == "__main__":
    main()
