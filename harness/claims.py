"""Published numbers as data (conf/claims/NAME.yaml) next to what the records here measured.

A claim is a paper's number (τ, walltime speedup over ar, or throughput gain over another method) with its source
and its setting. For each claim this module
1. resolves the cells it is about: its pair config (or an embedded stand-in), its method and options as each
   cell's config.yaml states them, its datasets (a group name stands for every conf/dataset/*.yaml of that `group`),
   its turn and second-turn tasks; matching cells of one method tag (per pair) form a candidate, and the candidate
   with the fewest failing checks is the claim's;
2. decides comparability apart from that, check by check, each failing check a reason: the ids are not the
   published ones, the data is not the benchmark's own (summary.json dataset_source), a setting differs, a dataset
   of the average is missing, several runs hold one dataset, and for walltime claims the hardware or backend
   differs, there are no ar twins or the ar baseline was accepted as weak;
3. measures through harness.records.metrics only (per dataset, or per second-turn task pooled over its datasets,
   then the mean over them, as the report's Table 1, robust and second-turn layouts do), and gives the difference
   and the verdict within / above / below the band where the claim is comparable.
Every number and reason comes from the records; nothing about a result is written here.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from harness import CONF, HarnessError
from harness.data import BENCHMARK_SOURCES
from harness.records import CONFIG, ENV, SUMMARY, metrics

CLAIMS = CONF / "claims"
PAIRS = CONF / "pair"
DATASETS = CONF / "dataset"
WALLTIME = {"speedup", "gain"}  # metrics that depend on the machine and the backend; τ does not
METRIC_LABELS = {"tau": "τ", "speedup": "speedup (×)", "gain": "throughput gain (%)"}
EDGE = 1e-9  # a difference on the band's edge is within it (decimal values are not exact in binary)
TURNS = {"first": "first turn", "second": "second turn", "all": "all turns"}


@dataclass(frozen=True)
class Claim:
    id: str  # NAME:id, unique over all claims files
    paper: str
    source: str  # arXiv id and venue
    where: str  # table, figure or result
    label: str  # the paper's name for the row
    pair: str | None  # the conf/pair/ config that reproduces it; None: there is none
    stand_ins: tuple[str, ...]  # embedded pairs whose cells resolve too (never comparable: other ids)
    target: str | None  # published hub ids; None: not in our reference notes
    draft: str | None
    method: dict  # name + options a cell's config.yaml must state
    baseline: dict | None  # gain: the method the gain is over
    datasets: tuple[str, ...]
    datasets_as_written: str
    tasks: tuple[str, ...]  # second turn: the second-turn tasks
    turn: str  # first | second | all
    settings: dict  # config keys (dtype: the dtype the target ran in, env.json) -> value or list of values
    data_source: str
    hardware: str | None  # walltime claims: "gpu" or a GPU model
    backend: str | None  # walltime claims
    metric: str  # tau | speedup | gain
    value: float
    band: float  # half width, in the metric's unit
    band_rule: str  # as the file states it: "±0.05" or "±10%"
    band_why: str
    note: str


def names() -> list[str]:
    return sorted(p.stem for p in CLAIMS.glob("*.yaml"))


def load_claims(name: str) -> list[Claim]:
    """The claims of conf/claims/NAME.yaml, or of every file for "all"."""
    if name != "all" and name not in names():
        raise HarnessError(f"unknown claims {name!r}: choose one of {', '.join(['all', *names()])} (conf/claims/)")
    return [c for n in (names() if name == "all" else [name]) for c in parse(CLAIMS / f"{n}.yaml")]


def groups() -> dict[str, list[str]]:
    """Dataset names by their config's `group`."""
    out: dict[str, list[str]] = {}
    for path in sorted(DATASETS.glob("*.yaml")):
        group = (yaml.safe_load(path.read_text()) or {}).get("group")
        if group:
            out.setdefault(group, []).append(path.stem)
    return out


def parse(path: Path) -> list[Claim]:
    """Each entry of `claims`, on top of the file's `setting` (its `settings` merged key by key)."""
    doc = yaml.safe_load(path.read_text())
    by_group = groups()
    out = []
    for entry in doc["claims"]:
        c = {**doc.get("setting", {}), **entry}
        c["settings"] = {**doc.get("setting", {}).get("settings", {}), **entry.get("settings", {})}
        band = doc["bands"][c["band"]]
        datasets = [d for spec in c["datasets"] for d in by_group.get(spec, [spec])]
        out.append(Claim(
            id=f"{path.stem}:{c['id']}", paper=doc["paper"], source=", ".join(
                x for x in (f"arXiv {doc['arxiv']}", doc.get("venue")) if x), where=c["where"], label=c["label"],
            pair=c.get("pair"), stand_ins=tuple(c.get("stand_ins") or ()), target=c.get("target"),
            draft=c.get("draft"), method=c["method"], baseline=c.get("baseline"), datasets=tuple(datasets),
            datasets_as_written=", ".join(c["datasets"]), tasks=tuple(c.get("tasks") or ()),
            turn=c.get("turn", "first"),
            settings=c["settings"], data_source=c.get("data_source", "hub"), hardware=c.get("hardware"),
            backend=c.get("backend"), metric=c["metric"], value=float(c["value"]),
            band=band["abs"] if "abs" in band else band["rel"] * float(c["value"]),
            band_rule=f"±{band['abs']}" if "abs" in band else f"±{band['rel']:.0%}",
            band_why=band["why"], note=c.get("note", "")))
    return out


# --- resolving cells -----------------------------------------------------------------------------------


def cell_files(df: pd.DataFrame) -> dict[str, dict]:
    """Per cell directory in the records: its config.yaml, env.json and summary.json (None where absent)."""
    out = {}
    for cell in df.cell.unique():
        d = Path(cell)
        read = lambda name, load: load((d / name).read_text()) if (d / name).exists() else None  # noqa: E731
        out[cell] = {"config": read(CONFIG, yaml.safe_load), "env": read(ENV, json.loads),
                     "summary": read(SUMMARY, json.loads)}
    return out


def accepts(wanted, value) -> bool:
    return value in wanted if isinstance(wanted, list) else value == wanted


def setting(files: dict, key: str):
    """A cell's value of a claim's setting: a dotted config.yaml key; dtype: what the target ran in (env.json)."""
    if key == "dtype" and (files["env"] or {}).get("dtypes"):
        return files["env"]["dtypes"].get("target")
    value = files["config"]
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def runs_method(files: dict, spec: dict) -> bool:
    method = files["config"]["method"]
    return method["name"] == spec["name"] and all(accepts(v, method.get(k)) for k, v in spec.items() if k != "name")


def resolve(claim: Claim, df: pd.DataFrame, files: dict, spec: dict) -> pd.DataFrame:
    """The records of `spec`'s cells that the claim is about: its pairs, datasets, turn and tasks."""
    rows = df[df.pair.isin([p for p in (claim.pair, *claim.stand_ins) if p]) & df.dataset.isin(claim.datasets)]
    if claim.turn == "second":
        rows = rows[(rows.turn == 1) & rows.task.isin(claim.tasks)]
    else:
        rows = rows[(rows.task == "") & ((rows.turn == 0) if claim.turn == "first" else True)]
    return rows.loc[[runs_method(files[c], spec) for c in rows.cell]]


# --- comparability: every failing check a reason (kind, text) ---------------------------------------------


def show(value) -> str:
    return "null" if value is None else str(value)


def listed(items, n: int = 6) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def by_value(rows: pd.DataFrame, value) -> dict:
    """{value: [dataset, ...]} over the cells of `rows`, value(cell) computed once per cell."""
    out: dict = {}
    for cell, dataset in rows[["cell", "dataset"]].drop_duplicates().itertuples(index=False):
        out.setdefault(value(cell), []).append(dataset)
    return out


def spread(groups_: dict) -> str:
    return "; ".join(f"{show(v)} ({listed(sorted(set(ds)))})" for v, ds in groups_.items())


def check_ids(claim: Claim, rows, files) -> list[tuple[str, str]]:
    """The target and draft (or EAGLE drafter) ids the cells ran are the published ones: not an embedded model, not
    a local replica."""
    reasons = []
    pair = lambda c: files[c]["config"]["pair"]  # noqa: E731
    roles = (("target", claim.target, lambda c: (pair(c).get("target") or {}).get("id")),
             ("draft", claim.draft, lambda c: (pair(c).get("draft") or pair(c).get("eagle") or {}).get("id")))
    for role, published, ran in roles:
        got = by_value(rows, ran)
        if published is None:
            reasons.append(("ids", f"the paper's {role} has no hub id in our reference notes (ran: {spread(got)})"))
        elif set(got) != {published}:
            reasons.append(("ids", f"{role} {spread({k: v for k, v in got.items() if k != published})}, "
                                   f"not {published}"))
    return reasons


def check_data(claim: Claim, rows) -> list[tuple[str, str]]:
    """The samples are the benchmark's own (summary.json dataset_source), from finished cells."""
    sources = rows.groupby("source").dataset.agg(lambda d: sorted(set(d)))
    reasons = [("unfinished", f"unfinished cells (no summary.json): {listed(sources['unfinished'])}")] \
        if "unfinished" in sources else []
    own = BENCHMARK_SOURCES if claim.data_source == "hub" else (claim.data_source,)  # a package's copy is the hub's
    wrong = {s: d for s, d in sources.items() if s not in (*own, "unfinished")}
    if wrong:
        reasons.append(("data", f"data {spread(wrong)}, not {claim.data_source}"))
    return reasons


def check_settings(claim: Claim, rows, files) -> list[tuple[str, str]]:
    """Every setting the claim states (greedy, tokens, dtype, samples, gamma, tree) is the cells'."""
    out = []
    for key, wanted in claim.settings.items():
        got = by_value(rows, lambda c: setting(files[c], key))
        if not all(accepts(wanted, v) for v in got):
            out.append(f"{key} {spread({v: d for v, d in got.items() if not accepts(wanted, v)})} "
                       f"(claim {'/'.join(map(show, wanted)) if isinstance(wanted, list) else show(wanted)})")
    return [("settings", "; ".join(out))] if out else []


def machine(files: dict) -> str:
    env = files["env"]
    if env is None:
        return "unknown hardware (no env.json)"
    if str(env.get("device")).startswith("cuda"):
        return env.get("device_name") or "a GPU of unknown model"
    return f"cpu ({env.get('cpu_model') or env.get('device_name')})"


def timed_on(hardware: str, machine_: str) -> bool:
    """Whether a cell's machine is the claim's: any GPU for "gpu", else a GPU whose name has that word (H100)."""
    gpu = not machine_.startswith(("cpu", "unknown"))
    return gpu and (hardware == "gpu" or hardware in machine_.split())


def check_machine(claim: Claim, rows, files) -> list[tuple[str, str]]:
    """Walltime claims: the GPU (model) and backend the claim was timed on, for every cell the number divides."""
    reasons = []
    if claim.hardware:
        got = by_value(rows, lambda c: machine(files[c]))
        bad = {m: d for m, d in got.items() if not timed_on(claim.hardware, m)}
        if bad:
            reasons.append(("hardware", f"ran on {spread(bad)}, the claim on "
                                        f"{'a GPU' if claim.hardware == 'gpu' else 'an ' + claim.hardware}"))
    if claim.backend:
        got = by_value(rows, lambda c: files[c]["config"].get("backend") or "transformers")
        if set(got) != {claim.backend}:
            reasons.append(("backend", f"backend {spread(got)}, the claim's {claim.backend}"))
    return reasons


def check_cover(claim: Claim, rows) -> list[tuple[str, str]]:
    """Every dataset (and second-turn task) of the average has ok records, from one run."""
    ok = rows[rows.status == "ok"]
    have = set(zip(ok.dataset, ok.task))
    wanted = [(d, t) for d in claim.datasets for t in (claim.tasks if claim.turn == "second" else ("",))]
    missing = [f"{d}/{t}" if t else d for d, t in wanted if (d, t) not in have]
    reasons = [("datasets", f"missing from the average: {listed(missing)} ({len(missing)} of {len(wanted)})")] \
        if missing else []
    runs = rows.groupby(["dataset", "task"]).run.agg(lambda r: sorted(set(r)))
    doubled = [f"{d}{'/' + t if t else ''} ({', '.join(r)})" for (d, t), r in runs.items() if len(r) > 1]
    if doubled:
        reasons.append(("runs", f"several runs hold {listed(doubled)}: report one run's directory"))
    return reasons


def check_ar(rows, ar_rows, files) -> list[tuple[str, str]]:
    """Speedups: every dataset has ar twins, and no ar it divides by was accepted as weaker than generate()."""
    reasons = []
    ok = rows[rows.status == "ok"]
    lonely = sorted(set(ok.dataset) - set(ok[ok.ar_wall_s.notna()].dataset))
    if lonely:
        reasons.append(("ar", f"no ar records on the same samples: {listed(lonely)}"))
    weak = sorted({d for c, d in zip(ar_rows.cell, ar_rows.dataset)
                   if ((files[c]["summary"] or {}).get("baseline") or {}).get("accepted_weak")})
    if weak:
        reasons.append(("weak ar", f"a weak ar baseline was accepted in {listed(weak)}: its speedups are inflated"))
    return reasons


def checks(claim: Claim, rows, files, ar) -> list[tuple[str, str]]:
    """Every failing check of one candidate: its records `rows` and, for a speedup, the `ar` records it divides by."""
    reasons = check_ids(claim, rows, files) + check_data(claim, rows) + check_settings(claim, rows, files)
    if claim.metric in WALLTIME:
        reasons += check_machine(claim, pd.concat([rows, ar]), files)
    if claim.metric == "speedup":
        reasons += check_ar(rows, ar, files)
    return reasons + check_cover(claim, rows)


# --- measuring: harness.records.metrics per dataset (or second-turn task), then the mean ---------------------


def unit(claim: Claim) -> str:
    return "task" if claim.turn == "second" else "dataset"


def per_unit(claim: Claim, rows: pd.DataFrame) -> dict[str, dict]:
    return {u: metrics(g.to_dict("records"), paired=True) for u, g in rows.groupby(unit(claim))}


def measure(claim: Claim, rows: pd.DataFrame, divisor: pd.DataFrame) -> float:
    """The claim's number over `rows`: τ or speedup per unit, or the throughput gain (%) over `divisor`'s
    tokens_per_s, averaged over the units that have one (NaN if none has)."""
    m = per_unit(claim, rows)
    if claim.metric == "gain":
        base = per_unit(claim, divisor)
        values = [100 * (m[u]["tokens_per_s"] / base[u]["tokens_per_s"] - 1) for u in m if u in base]
    else:
        values = [m[u][claim.metric] for u in m]
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else float("nan")


# --- one row per claim ---------------------------------------------------------------------------------


def candidates(claim: Claim, df, files, spec, pair: str | None = None, baseline: bool = True) -> list[dict]:
    """The cells `spec` resolves to, one candidate per (pair, method tag), fewest failing checks first, each with
    its `divisor`: ar's records for a speedup, the best candidate of the claim's baseline (on the same pair) for
    a gain, whose failing checks become the candidate's too."""
    rows = resolve(claim, df, files, spec)
    if pair:
        rows = rows[rows.pair == pair]
    out = []
    for (pair_, tag), g in rows.groupby(["pair", "method"], sort=True):
        ar, divisor, extra = g.iloc[:0], g.iloc[:0], []
        if claim.metric == "speedup":
            keys = g[["run", "pair", "dataset", "task"]].drop_duplicates()
            ar = divisor = df[df.method_name == "ar"].merge(keys, on=list(keys.columns))
        if claim.metric == "gain" and baseline:
            base = candidates(claim, df, files, claim.baseline, pair_, baseline=False)
            if base:
                divisor = base[0]["rows"]
                extra = [(k, f"baseline {base[0]['tag']}: {t}") for k, t in base[0]["reasons"]]
            else:
                extra = [("no cell", f"no cell of the baseline {describe(claim.baseline)} on {pair_}")]
        out.append({"pair": pair_, "tag": tag, "rows": g, "divisor": divisor,
                    "reasons": checks(claim, g, files, ar) + extra})
    return sorted(out, key=lambda c: (len(c["reasons"]), c["pair"] != claim.pair))


def describe(spec: dict) -> str:
    options = ", ".join(f"{k} {'/'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in spec.items()
                        if k != "name")
    return spec["name"] + (f" ({options})" if options else "")


def judge(claim: Claim, df: pd.DataFrame, files: dict) -> dict:
    reasons = []
    if claim.pair is None:
        reasons.append(("no pair config", f"no pair config in conf/pair/ for {claim.target or claim.label}"))
    elif not (PAIRS / f"{claim.pair}.yaml").exists():
        reasons.append(("no pair config", f"no pair config conf/pair/{claim.pair}.yaml"))
    found = candidates(claim, df, files, claim.method) if len(df) else []
    if not found and not reasons:
        turn = TURNS[claim.turn] + (f", tasks {', '.join(claim.tasks)}" if claim.tasks else "")
        reasons.append(("no cell", f"no cell of {describe(claim.method)} on "
                                   f"{' or '.join(p for p in (claim.pair, *claim.stand_ins) if p)} for "
                                   f"{claim.datasets_as_written} ({turn})"))
    best = found[0] if found else None
    reasons += best["reasons"] if best else []
    measured = measure(claim, best["rows"], best["divisor"]) if best else float("nan")
    comparable = not reasons and measured == measured
    diff = measured - claim.value if comparable else float("nan")
    verdict = "not comparable" if not comparable else "within" if abs(diff) <= claim.band + EDGE else \
        "above" if diff > 0 else "below"
    return {
        "claim": claim.id, "paper": claim.paper, "source": claim.source, "where": claim.where, "label": claim.label,
        "pair": claim.pair or "", "target": claim.target or "", "draft": claim.draft or "",
        "method": describe(claim.method), "baseline": describe(claim.baseline) if claim.baseline else "",
        "datasets": claim.datasets_as_written,
        "turn": claim.turn, "metric": claim.metric, "claimed": claim.value, "band": claim.band,
        "lo": claim.value - claim.band, "hi": claim.value + claim.band,
        "ran_pair": best["pair"] if best else "", "ran_method": best["tag"] if best else "",
        "cells": sorted(set(best["rows"].cell)) if best else [],
        "divisor_cells": sorted(set(best["divisor"].cell)) if best else [],
        "measured": measured, "difference": diff, "verdict": verdict, "comparable": comparable,
        "why_not": [k for k, _ in reasons], "reasons": "; ".join(t for _, t in reasons),
        "other_candidates": [f"{c['pair']}/{c['tag']}" for c in found[1:]], "band_rule": claim.band_rule,
        "band_why": claim.band_why, "note": claim.note,
    }


def evaluate(df: pd.DataFrame, claims: list[Claim]) -> pd.DataFrame:
    """One row per claim for the records `df` (harness.report.load: paired with ar): the cells it resolved to, the
    measured value, the difference, the verdict and, where it is not comparable, every reason."""
    files = cell_files(df) if len(df) else {}
    return pd.DataFrame([judge(c, df, files) for c in claims])


# --- rendering -----------------------------------------------------------------------------------------


def ran(row) -> str:
    """What a claims-table row resolved to: the method tag (and the pair, where it is a stand-in), with its cells."""
    if not row.cells:
        return ""
    pair = f"{row.ran_pair} " if row.ran_pair != row.pair else ""
    return f"{pair}{row.ran_method} ({len(row.cells)} cell{'s' * (len(row.cells) > 1)})"


def render(table: pd.DataFrame) -> str:
    """Markdown, one table per paper: measured next to claimed (a measured value that is not comparable in
    parentheses, with every reason), then why each band is as wide as it is, and the claims' notes."""
    parts = []
    for (paper, source), t in table.groupby(["paper", "source"], sort=False):
        rows = [{
            "claim": f"{r.label} ({r.where})",
            "setting": f"{r.pair or '—'}: {r.datasets}, {TURNS[r.turn]}"
            + (f", over {r.baseline}" if r.baseline else ""),
            "ran": ran(r), "metric": METRIC_LABELS[r.metric], "claimed": f"{r.claimed:.2f} ± {r.band:.2f}",
            "measured": "" if r.measured != r.measured else f"{r.measured:.2f}" if r.comparable
            else f"({r.measured:.2f})",
            "Δ": "" if r.difference != r.difference else f"{round(r.difference, 2) or 0.0:+.2f}",
            "verdict": r.verdict + (f": {r.reasons}" if r.reasons else ""),
        } for r in t.itertuples()]
        bands = dict.fromkeys(f"{r.band_rule} {METRIC_LABELS[r.metric]}: {r.band_why}" for r in t.itertuples())
        notes = dict.fromkeys(f"{r.label}: {r.note}" for r in t.itertuples() if r.note)
        table_md = pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)
        parts.append(f"#### Claims: {paper} ({source})\n\n{table_md}\n\n" + "".join(f"- band {b}\n" for b in bands)
                     + "".join(f"- note, {n}\n" for n in notes))
    return "\n".join(parts)


def write(table: pd.DataFrame, out: Path, root: Path) -> str:
    """claims.md (render) and claims.csv (every column; cells relative to `root`) into `out`; returns the Markdown."""
    md = render(table)
    (out / "claims.md").write_text(md)
    flat = table.assign(**{col: [";".join(os.path.relpath(c, root) for c in v) for v in table[col]]
                           for col in ("cells", "divisor_cells")},
                        why_not=[";".join(v) for v in table.why_not],
                        other_candidates=[";".join(v) for v in table.other_candidates])
    flat.to_csv(out / "claims.csv", index=False)
    return md
