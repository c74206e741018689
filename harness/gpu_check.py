"""`make gpu-check`: the first minutes on a GPU box, which may have no network.

The CPU suite cannot say whether the harness works on a given GPU node: CUDA kernels, half-precision dtypes, device
placement, transformers' compiled static cache, the baseline rule and the lossless verdict all meet there first. So
this runs, in one go (budgeted at 8 minutes on one H100 at scale full):

1. `harness.bench_gpu` at the 7B/8B shapes, with fewer repeats than `make bench-gpu`;
2. replicas of the real pairs (harness.replica: LLaVA-1.5-7B + TABED's LVLM-68M, Llama-3.1-8B-Instruct + its
   EAGLE-3 drafter), built offline at the real widths and vocabularies with random weights; the targets keep only
   `--layers` of their 32 layers, so that building, saving and decoding fit the budget;
3. ar, hf_generate (dynamic and static cache), sd and tabed on the LLaVA pair and ar, hf_generate and eagle on the
   Llama pair, each in bfloat16 and float16, as cells of the ordinary Hydra app (its config, a few samples of a
   bundled dataset). With random weights the drafts are rejected and tau means nothing; kernels, dtypes, devices,
   every ar cell's baseline calibration (shown, with the plain decoding its speedups divide by) and the verdict do;
4. `python -m harness.lossless` on those cells.

OUT gets three files: summary.md (device, versions, bench_gpu's headline, every cell with tau, ms/token and
verdict, the baseline calibrations, the lossless table, PASS or FAIL with the reasons), bench_gpu.md (its full table)
and cells.json (the same, machine-readable). The cells' records stay in --work (emptied first); the built models
are deleted at the end. `--device cpu --scale tiny` runs every step with small stand-in sizes: a code check (CI),
its numbers mean nothing. Exit 0 on PASS, 1 on FAIL, 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

from harness import CONF, PROJECT_ROOT, baseline, bench_gpu, replica
from harness.records import LOSSLESS, cell_dir, environment

DTYPES = ("bfloat16", "float16")
# How much of everything each scale runs: target layers kept, the weights' init (None: the config's), the EAGLE-3
# drafter's weight scale, samples and new tokens per cell, bench_gpu's arguments.
SCALES = {
    "full": dict(layers=8, std=None, eagle_std=0.02, n_samples=2, max_new_tokens=32,
                 bench=["--repeats", "5", "--warmup", "1", "--decode", "32"]),
    "tiny": dict(layers=4, std=0.3, eagle_std=0.3, n_samples=2, max_new_tokens=12,
                 bench=["--repeats", "1", "--warmup", "0", "--decode", "6"]),
}
METHODS = {"ar": ["method=ar"], "hf_generate dynamic": ["method=hf_generate"],
           "hf_generate static": ["method=hf_generate", "method.cache=static"], "sd": ["method=sd"],
           "tabed": ["method=tabed"], "eagle": ["method=eagle"]}
# pair config -> (its roles -> replica folder names, its dataset, the methods run on it; ar first: the others' twin)
PAIRS = {
    "llava-1.5-7b__lvlm68m": ({"target": "llava-1.5-7b-hf", "draft": "lvlm68m"},
                              ["dataset=llava_w", "dataset.source=bundled"],
                              ["ar", "hf_generate dynamic", "hf_generate static", "sd", "tabed"]),
    "llama-3.1-8b__eagle3": ({"target": "Llama-3.1-8B-Instruct", "eagle": "EAGLE3-LLaMA3.1-Instruct-8B"},
                             ["dataset=mt_bench", "dataset.source=bundled"],
                             ["ar", "hf_generate dynamic", "hf_generate static", "eagle"]),
}
SIZE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
BUDGET_S = 8 * 60  # on one H100 at scale full (issue 40)
MARKER = ".gpu-check"  # in --work: the folder is ours to empty
REAL = bench_gpu.SHAPES["full"]


@contextlib.contextmanager
def stage(times: dict, name: str):
    """Progress on stderr around a long step, and its seconds in `times`."""
    print(f"[gpu-check] {name} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        yield
    finally:
        times[name] = round(time.perf_counter() - started, 1)
        print(f"[gpu-check] {name}: {times[name]} s", file=sys.stderr, flush=True)


def free(device: torch.device) -> None:
    """Drop the models a stage left loaded (harness.models caches them across cells) and their compiled graphs, so the
    next stage, or the lossless check's own process, has the GPU's memory."""
    from harness.models import load_model

    load_model.cache_clear()
    torch.compiler.reset()
    bench_gpu.release(device)


def sizes(shape: dict, layers: int | None = None) -> dict:
    """A bench_gpu shape's layer sizes (the replica sets vocabulary and positions as its checkpoint does), the layer
    count cut to `layers`."""
    out = {k: shape[k] for k in SIZE_KEYS}
    if layers:
        out["num_hidden_layers"] = layers
    return out


def build_replicas(shape: dict, scale: dict, layers: int, device: torch.device, root: Path, times: dict) -> dict:
    """The four checkpoints' replicas at `shape`'s widths, each built on `device` in the dtype it ships in (an 8B
    never exists in float32 on the host) and saved under `root`; folder name -> path."""
    folders = {}
    tok = replica.llava_tokenizer(replica.sentencepiece_model(root / "sp"), root / "sp-tokenizer")
    llava = [("llava-1.5-7b-hf", 0, sizes(shape["llava_text"], layers)), ("lvlm68m", 1, sizes(shape["draft_text"]))]
    for name, seed, text in llava:
        with stage(times, f"build {name}"):
            with bench_gpu.building(device, torch.float16):
                model = replica.llava_model(tok, seed, text, shape["vision"], shape["llava_text"]["vocab_size"],
                                            scale["std"])
            folders[name] = replica.save_llava(model, tok, root / name, "hub")
            del model
            bench_gpu.release(device)
    name = "Llama-3.1-8B-Instruct"
    with stage(times, f"build {name}"):
        tok = replica.llama3_tokenizer(shape["llama"]["vocab_size"])
        with bench_gpu.building(device, torch.bfloat16):
            model = replica.llama31_model(tok, 11, sizes(shape["llama"], layers), scale["std"])
        folders[name] = replica.save_target(model, tok, root / name)
        del model
        bench_gpu.release(device)
    name = "EAGLE3-LLaMA3.1-Instruct-8B"
    with stage(times, f"build {name}"):
        folders[name] = replica.eagle3_checkpoint(root / name, folders["Llama-3.1-8B-Instruct"],
                                                  draft_vocab=shape["eagle"]["draft_vocab_size"], std=scale["eagle_std"])
    return folders


def describe(shape: dict, layers: int) -> list[str]:
    """What was built, against the real checkpoints' layer counts."""
    text, draft, vision, llama = shape["llava_text"], shape["draft_text"], shape["vision"], shape["llama"]
    return [f"- LLaVA-1.5-7B target: Llama-2 text model {text['hidden_size']} wide, **{layers} of "
            f"{REAL['llava_text']['num_hidden_layers']} layers**, vocabulary {text['vocab_size']}; CLIP "
            f"{vision['hidden_size']} wide x {vision['num_hidden_layers']} layers, {vision['image_size']} px",
            f"- LVLM-68M draft: {draft['hidden_size']} wide x {draft['num_hidden_layers']} layers, the same CLIP shape",
            f"- Llama-3.1-8B-Instruct: {llama['hidden_size']} wide, **{layers} of {REAL['llama']['num_hidden_layers']} "
            f"layers**, {llama['num_key_value_heads']} KV heads, vocabulary {llama['vocab_size']}",
            f"- EAGLE-3 drafter: 1 layer, draft vocabulary {shape['eagle']['draft_vocab_size']}"]


def run_cells(folders: dict, scale: dict, device: str, results: Path) -> list[dict]:
    """Every pair x dtype x method cell through Hydra's composition of conf/ and harness.run.run_cell, as
    `python -m harness` runs it; a failing cell is recorded with its error and the others still run."""
    from hydra import compose, initialize_config_dir

    from harness.run import run_cell

    plan = [(pair, dtype, method) for pair in PAIRS for dtype in DTYPES for method in PAIRS[pair][2]]
    rows = []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for i, (pair, dtype, method) in enumerate(plan, start=1):
            roles, dataset, _ = PAIRS[pair]
            overrides = [f"pair={pair}", *[f"pair.{role}.id={folders[name]}" for role, name in roles.items()],
                         *METHODS[method], *dataset, f"n_samples={scale['n_samples']}",
                         f"max_new_tokens={scale['max_new_tokens']}", "warmup=1", "temperature=0.0",
                         f"device={device}", f"dtype={dtype}", f"run_name={dtype}", f"output_root={results}",
                         "accept_weak_baseline=true"]  # on a CPU a weak ar stops its cell; here the summary shows it
            cfg = compose("config", overrides=overrides)
            row = {"pair": pair, "method": method, "dtype": dtype, "cell": str(cell_dir(cfg))}
            print(f"[gpu-check] cell {i}/{len(plan)}: {pair} {method} {dtype}", file=sys.stderr, flush=True)
            started = time.perf_counter()
            try:
                summary = run_cell(cfg)
            except Exception as err:  # noqa: BLE001 - one cell's failure is a finding; the other cells still run
                traceback.print_exc()
                row["error"] = f"{type(err).__name__}: {err}"
            else:
                new = summary["new_tokens"]
                row.update(n_ok=summary["n_ok"], n_records=summary["n_records"], tau=summary["tau"],
                           ms_per_token=1e3 * summary["wall_s"] / new if new else None,
                           top_error=summary["top_error"], baseline=summary.get("baseline"))
            row["seconds"] = round(time.perf_counter() - started, 1)
            rows.append(row)
    return rows


def run_lossless(results: Path, device: str) -> tuple[int, str]:
    """`python -m harness.lossless` on the cells, as a user runs it: its exit code and its table (its progress
    goes to stderr as it runs)."""
    proc = subprocess.run([sys.executable, "-m", "harness.lossless", str(results), "--device", device],
                          cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    return proc.returncode, proc.stdout.strip()


def add_verdicts(rows: list[dict]) -> None:
    """Each method cell's verdict as the lossless check wrote it into the cell; ar cells are the reference."""
    for row in rows:
        path = Path(row["cell"]) / LOSSLESS
        if row["method"] == "ar":
            row["verdict"] = "reference"
        elif "error" in row:
            row["verdict"] = "not run"
        else:
            row["verdict"] = json.loads(path.read_text())["verdict"] if path.exists() else "not checked"


def failures(bench_error: str | None, rows: list[dict], lossless_code: int) -> list[str]:
    """Why the check fails, one line each; empty on PASS. Ties pass (half precision, reference/half-precision.md)."""
    out = [f"bench_gpu: {bench_error}"] if bench_error else []
    for r in rows:
        name = f"{r['pair']} {r['method']} {r['dtype']}"
        if "error" in r:
            out.append(f"{name}: {r['error']}")
        elif r["n_ok"] < r["n_records"]:
            out.append(f"{name}: {r['n_records'] - r['n_ok']} of {r['n_records']} records failed ({r['top_error']})")
        elif r["method"] != "ar" and not r["verdict"].startswith(("exact", "ties")):
            out.append(f"{name}: verdict {r['verdict']}")
    if lossless_code != 0:
        out.append(f"python -m harness.lossless exited {lossless_code}")
    return out


def number(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def calibration(row: dict) -> str:
    """An ar cell's baseline calibration (harness.baseline) in one line: the timings, how generate()'s outputs
    compare with ours, and which plain decoding the cell's speedups divide by."""
    b = row.get("baseline") or {"skipped": row.get("error", "no calibration recorded")}
    head = f"- {row['pair']} {row['dtype']}: "
    if "skipped" in b:
        return head + f"skipped ({b['skipped']})"
    cache = {baseline.DYNAMIC: "dynamic cache", baseline.STATIC: "static cache"}
    settings = ", ".join(f"{cache.get(name, name)} {ms:.2f}" for name, ms in b["generate_settings_ms_per_token"].items())
    weak = "; ours is **weak**, accepted for this check" if b.get("accepted_weak") else ""
    return (head + f"our ar {b['ar_ms_per_token']:.2f} ms/token; transformers generate() {settings} ms/token; ar vs "
            f"the faster {b['ratio']:.2f}x (95% interval {b['ratio_lo']:.2f}-{b['ratio_hi']:.2f}); outputs "
            f"{b['lossless']}; speedups divide by {b['denominator']}{weak}")


def bench_headline(md: str) -> list[str]:
    """bench_gpu's device and scale lines, its ar-vs-generate line and its cost-model table (section 5)."""
    lines = md.splitlines()
    keep = [line for line in lines if line.startswith(("Device:", "Scale ", "**ar vs generate"))]
    five = next((i for i, line in enumerate(lines) if line.startswith("## 5.")), None)
    if five is not None:
        keep += [""] + [line for line in lines[five + 2:] if line.startswith("|")]
    return keep


def summary_md(args, env: dict, times: dict, built: list[str], bench: str, rows: list[dict], code: int, table: str,
               failed: list[str]) -> str:
    """summary.md: the verdict first, then what ran where, bench_gpu's headline, the cells, the calibrations and the
    lossless check's own table."""
    cuda = f" (CUDA {torch.version.cuda})" if torch.version.cuda else ""
    v = env["versions"]
    lines = [f"# GPU check: scale {args.scale} on {args.device} ({time.strftime('%Y-%m-%d %H:%M')})", "",
             "**PASS**" if not failed else "**FAIL**", *[f"- {f}" for f in failed], "",
             f"Device: **{env['device_name']}** ({args.device}); python {env['python']}, torch {v['torch']}{cuda}, "
             f"transformers {v['transformers']}, hydra-core {v['hydra-core']}, accelerate {v['accelerate']}; git "
             f"{env['git_sha'] or 'unknown (no repository)'}{' (dirty)' if env['git_dirty'] else ''}.",
             f"Time: {times['total']} s in all (" + ", ".join(f"{k} {s} s" for k, s in times.items() if k != "total")
             + ")" + ("; **over the 8-minute budget** (fewer --layers shortens every stage after bench_gpu)"
                      if args.scale == "full" and times["total"] > BUDGET_S else "") + ".", "",
             "## Replicas (random weights: drafts are rejected, so tau is about 1; the verify path, kernels, dtypes, "
             "the baseline rule and the verdicts are what this checks)", "",
             *built, "", "## bench_gpu (full table: bench_gpu.md)", "", *(bench_headline(bench) if bench else
                                                                         ["not run (see FAIL)"]),
             "", f"## Cells ({SCALES[args.scale]['n_samples']} samples, {SCALES[args.scale]['max_new_tokens']} new "
             "tokens, greedy)", "", "| pair | method | dtype | tau | ms/token | ok | verdict |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = f"{r['n_ok']}/{r['n_records']}" if "n_ok" in r else "error"
        lines.append(f"| {r['pair']} | {r['method']} | {r['dtype']} | {number(r.get('tau'), '.2f')} | "
                     f"{number(r.get('ms_per_token'), '.2f')} | {ok} | {r['verdict']} |")
    lines += ["", "## Baseline calibration (every ar cell: harness.baseline)", "",
              *[calibration(r) for r in rows if r["method"] == "ar"], "",
              f"## Lossless check (python -m harness.lossless, exit {code})", "", table or "(no output)", ""]
    return "\n".join(lines)


def prepare_work(work: Path, out: Path) -> None:
    """An empty --work, refusing to empty a folder gpu-check did not make, or one that holds OUT or lies in it."""
    w, o = work.resolve(), out.resolve()
    if o.is_relative_to(w) or w.is_relative_to(o):
        raise ValueError(f"--work {work} and OUT {out} overlap; OUT gets the summary only, --work the records")
    if w.exists() and any(w.iterdir()) and not (w / MARKER).exists():
        raise ValueError(f"--work {work} is not empty and was not made by gpu-check; give a new or empty folder")
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    (w / MARKER).write_text("made by python -m harness.gpu_check; emptied by its next run\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.gpu_check", description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="folder for summary.md, bench_gpu.md and cells.json")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--scale", choices=list(SCALES), default="full",
                    help="full: the real widths (a GPU); tiny: small stand-ins that run on a CPU (a code check)")
    ap.add_argument("--layers", type=int, help="target layers kept (default: 8 at full, 4 at tiny)")
    ap.add_argument("--work", type=Path, default=PROJECT_ROOT / "results" / "gpu-check-work",
                    help="scratch folder for the models and the cells' records (emptied first)")
    args = ap.parse_args(argv)
    if args.layers is not None and args.layers < 4:
        ap.error(f"--layers {args.layers}: need >= 4 (EAGLE-3 reads layers 2, L/2 and L-3)")
    try:
        device = bench_gpu.pick_device(args.device)
        prepare_work(args.work, args.out)
    except (SystemExit, ValueError) as err:  # pick_device's message, or a --work this must not empty
        ap.error(str(err))
    scale, shape = SCALES[args.scale], bench_gpu.SHAPES[args.scale]
    layers = args.layers or scale["layers"]
    args.out.mkdir(parents=True, exist_ok=True)
    times, started = {}, time.perf_counter()

    bench, bench_error = "", None
    with stage(times, "bench_gpu"):
        try:
            bench_gpu.main(["--device", args.device, "--scale", args.scale, *scale["bench"], "--out",
                            str(args.work / "bench")])
            bench = next((args.work / "bench").glob("*.md")).read_text()
        except Exception as err:  # noqa: BLE001 - the cells still run; the summary says what failed
            traceback.print_exc()
            bench_error = f"{type(err).__name__}: {err}"
        free(device)
    folders = build_replicas(shape, scale, layers, device, args.work / "models", times)
    with stage(times, "cells"):
        rows = run_cells(folders, scale, args.device, args.work / "results")
        free(device)
    with stage(times, "lossless"):
        code, table = run_lossless(args.work / "results", args.device)
    add_verdicts(rows)
    shutil.rmtree(args.work / "models")  # gigabytes at scale full; the records stay
    times["total"] = round(time.perf_counter() - started, 1)

    env = environment(device)
    failed = failures(bench_error, rows, code)
    built = describe(shape, layers)
    summary = summary_md(args, env, times, built, bench, rows, code, table, failed)
    (args.out / "summary.md").write_text(summary)
    if bench:
        (args.out / "bench_gpu.md").write_text(bench)
    (args.out / "cells.json").write_text(json.dumps(
        {"scale": args.scale, "device": args.device, "layers": layers, "env": env, "times": times, "replicas": built,
         "bench_error": bench_error, "cells": rows, "lossless": {"exit_code": code, "table": table},
         "pass": not failed, "failures": failed}, indent=2, default=str))
    print(summary, flush=True)  # the end of a batch job's log says it all
    print(f"[gpu-check] {'PASS' if not failed else 'FAIL'}: wrote {args.out / 'summary.md'} ({times['total']} s)",
          file=sys.stderr, flush=True)
    return 0 if not failed else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
