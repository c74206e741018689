"""`python -m harness.figures RESULTS_DIR [--out DIR]`: paper-style figures from the records below RESULTS_DIR,
as PNG and PDF, by default into RESULTS_DIR/figures/:

  speedup          walltime speedup over the fastest plain decoding (the report's `vs`: ar unless a faster
                   generate() was measured) per dataset, bars per method, 95% bootstrap interval, mean group
  tau              mean acceptance length tau per dataset, bars per method
  acceptance       per-position acceptance: the fraction of blocks whose first i drafts were all accepted
  tabed_weights_*  TABED's weight on each drafting mode, block by block, for a few samples (one file per
                   TABED method; --samples ID,... picks them, else the longest answers of distinct datasets)
  tabed_weight_trend_*  the same weights averaged over each dataset's samples at block 1, 2, ..., with the
                   single modes' tau where the run has them: do the weights move toward the better mode?
  cost_model       measured speedup against the draft step cost c, with the cost model S = tau / (v + gamma c)
  claims           with --claims NAME: measured next to each published claim of conf/claims/NAME.yaml (the
                   claimed value with its tolerance band; not comparable claims greyed, with why: harness.claims)

Numbers come from `harness.report` (same pairing with ar, same pooling: all turns of a dataset together; every
number from `harness.records.metrics`), and methods carry the report's display names. A method has one colour
in every figure. Datasets whose samples were not the benchmark's own data carry the report's marks (dagger:
offline bundle) with a footnote.

The cost model. A block drafts gamma tokens (gamma draft steps of t_draft each) and verifies them in one target
forward of gamma + 1 tokens (t_verify); ar spends t_target per token. With c = t_draft / t_target and
v = t_verify / t_target, the speedup is S = tau / (v + gamma c). By default (`--cost measured`) each cell sits
at the c that `harness.latency.step_costs` timed for it apart from its decode (hooked forwards of short decodes,
recorded by the run in summary.json `step_costs`; shards: the median), and each method's curve uses the
measured v: a point off its curve is a finding (overheads outside the forwards, or the model is wrong).
Cells without a measured c are left out and named. `--cost effective` instead computes c from the cell's own
decode time, c = (decode time - verify calls * t_target) / (drafted tokens * t_target) with t_target = ar's
decode time per decode call, which folds verification into c (v = 1): such a point lies on its curve by
construction, and the axis says so. `--cost FILE` (JSON {"PAIR": c}) gives c per pair, e.g. a micro-benchmark's,
with v = 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness import HarnessError
from harness.claims import METRIC_LABELS, evaluate, load_claims
from harness.records import SUMMARY, metrics
from harness.report import dataset_order, labels, load, method_order, summarize

COLUMN, PAGE = 3.4, 7.0  # figure widths (inches) for one and two text columns
# Okabe-Ito: distinguishable with colour-blindness and in greyscale print; ar is grey.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
MARKERS = "osD^vPX*"  # with the colour, so that curves that coincide stay distinguishable
MODE_COLOURS = {"M": "#0072B2", "T": "#E69F00", "C": "#009E73", "P": "#CC79A7"}
MODE_NAMES = {"M": "M (multimodal)", "T": "T (text-only)", "C": "C (caption)", "P": "P (pooled image)"}
MARK_NOTES = {"†": "† offline bundle (stand-in data, not the benchmark's)",
              "‡": "‡ prompts written by this project", "?": "? unfinished cell or mixed data sources"}
STYLE = {"font.size": 8, "axes.labelsize": 8, "axes.titlesize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
         "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False, "axes.axisbelow": True,
         "axes.grid": True, "axes.grid.axis": "y", "grid.linewidth": 0.4, "grid.color": "#dddddd",
         "legend.frameon": False, "savefig.dpi": 300, "savefig.bbox": "tight", "pdf.fonttype": 42,
         "ps.fonttype": 42}


def method_names(df: pd.DataFrame) -> dict[str, str]:
    """Legend label of each method tag: its display name in the report (harness.report.load adds them)."""
    return dict(zip(df.method, df["name"])) if "name" in df else {t: t for t in df.method}


def colours(tags) -> dict[str, str]:
    """One colour per method tag, in method_order: compute it once from all records, use it everywhere."""
    others = [t for t in method_order(tags) if t != "ar"]
    palette = PALETTE if len(others) <= len(PALETTE) else [matplotlib.colormaps["tab20"](i % 20) for i in
                                                           range(len(others))]
    return {"ar": "#999999", **{t: palette[i] for i, t in enumerate(others)}}


def markers(tags) -> dict[str, str]:
    others = [t for t in method_order(tags) if t != "ar"]
    return {"ar": "x", **{t: MARKERS[i % len(MARKERS)] for i, t in enumerate(others)}}


def _footnote(ax, names) -> None:
    """Explain the data-source marks that appear in `names`, under the axis (in place of an x label)."""
    notes = [note for m, note in MARK_NOTES.items() if any(n.endswith(m) for n in names)]
    if notes:
        ax.set_xlabel("    ".join(notes), fontsize=6, color="#555555", labelpad=6)


def bars(df: pd.DataFrame, value: str, ylabel: str, cmap: dict, interval: bool = False):
    """Grouped bars: one group per dataset (plus the mean over datasets), one bar per method; ar at 1 is the
    dashed line rather than a bar."""
    s = summarize(df, ["dataset", "method"])
    names = labels(s, "dataset")
    s = s[(s.method != "ar") & s[value].notna()]
    if s.empty:
        return None
    datasets = [d for _, d in dataset_order(df) if d in set(s.dataset)]
    methods = [m for m in method_order(s.method) if m != "ar"]
    table = s.pivot(index="dataset", columns="method", values=value).reindex(index=datasets, columns=methods)
    groups = [names[d] for d in datasets] + (["mean"] if len(datasets) > 1 else [])
    fig = Figure(figsize=(COLUMN if len(groups) <= 4 else PAGE, 2.3))
    ax = fig.subplots()
    width, label = min(0.8 / len(methods), 0.3), method_names(df)
    for i, m in enumerate(methods):
        y = table[m].to_numpy()
        if len(datasets) > 1:
            y = np.append(y, np.nanmean(y))
        x = np.arange(len(groups)) + (i - (len(methods) - 1) / 2) * width
        err = None
        if interval:
            rows = s[s.method == m].set_index("dataset").reindex(datasets)
            lo, hi = rows[f"{value}_lo"].to_numpy(), rows[f"{value}_hi"].to_numpy()
            err = np.vstack([y[:len(datasets)] - lo, hi - y[:len(datasets)]])
            err = np.hstack([err, np.full((2, len(groups) - len(datasets)), np.nan)])  # no interval on the mean
        ax.bar(x, y, width * 0.92, color=cmap[m], label=label[m], yerr=err,
               error_kw={"lw": 0.6, "capsize": 1.2, "ecolor": "#333333"})
    ax.axhline(1.0, color="#555555", lw=0.7, ls="--", zorder=0)
    if len(datasets) > 1:
        ax.axvline(len(datasets) - 0.5, color="#bbbbbb", lw=0.5)
    ax.set_xticks(np.arange(len(groups)), groups, rotation=30 if len(groups) > 5 else 0,
                  ha="right" if len(groups) > 5 else "center")
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_ylabel(ylabel)
    ax.legend(ncol=min(len(methods), 4), loc="lower left", bbox_to_anchor=(0, 1.0), borderaxespad=0.2)
    _footnote(ax, groups)
    return fig


def speedup_figure(df, cmap):
    return bars(df, "speedup", "walltime speedup over plain decoding (×)", cmap, interval=True)


def tau_figure(df, cmap):
    return bars(df, "tau", "τ (new tokens per target call)", cmap)


def acceptance_figure(df, cmap):
    s = summarize(df[df.method_name != "ar"], ["method"]) if (df.method_name != "ar").any() else pd.DataFrame()
    s = s[[len(p) > 0 for p in s.position_acceptance]] if len(s) else s
    if s.empty:
        return None
    fig = Figure(figsize=(COLUMN, 2.3))
    ax = fig.subplots()
    marks, label = markers(df.method), method_names(df)
    for _, row in s.iterrows():
        pos = row.position_acceptance
        ax.plot(range(1, len(pos) + 1), pos, marker=marks[row.method], ms=4, mfc="none", lw=1.1,
                color=cmap[row.method], label=label[row.method])
    ax.set_xlabel("draft position i")
    ax.set_ylabel("blocks accepting ≥ i drafts (fraction)")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(range(1, max(len(p) for p in s.position_acceptance) + 1))
    ax.grid(axis="x")
    ax.legend(loc="upper right")
    return fig


def pick_samples(recs: pd.DataFrame, samples: list[str] | None, n: int = 4) -> pd.DataFrame:
    """The named samples, else the records with the most blocks, one per dataset first."""
    if samples:
        return recs[recs.id.isin(samples)].head(n)
    recs = recs.assign(blocks=recs.weights.map(len)).sort_values(["blocks", "id"], ascending=[False, True])
    first = recs.drop_duplicates("dataset")
    return pd.concat([first, recs.drop(first.index)]).head(n)


def weights_figure(df, method: str, samples: list[str] | None = None):
    """TABED's weight on each drafting mode per block (stacked: the weights sum to 1) for up to 4 samples."""
    recs = df[(df.method == method) & (df.status == "ok") & (df.weights.map(len) > 0)]
    chosen = pick_samples(recs, samples)
    if chosen.empty:
        return None
    fig = Figure(figsize=(COLUMN if len(chosen) == 1 else PAGE, 1.9))
    axes = fig.subplots(1, len(chosen), sharey=True, squeeze=False)
    for ax, (_, r) in zip(axes[0], chosen.iterrows()):
        w = np.asarray(r.weights).T  # [modes, blocks]
        modes = list(r.modes) if len(r.modes) == len(w) else [f"mode {i + 1}" for i in range(len(w))]
        blocks, bottom = np.arange(1, w.shape[1] + 1), np.zeros(w.shape[1])
        for mode, share in zip(modes, w):  # stacked: the weights of a block sum to 1
            ax.bar(blocks, share, 1.0, bottom=bottom, color=MODE_COLOURS.get(mode, "#999999"), lw=0,
                   label=MODE_NAMES.get(mode, mode))
            bottom += share
        ax.set_xlim(0.5, w.shape[1] + 0.5)
        ax.set_ylim(0, 1)
        ax.set_title(f"{r.dataset}: {r.id}" + (f" (turn {r.turn + 1})" if r.turn else ""), loc="left")
        ax.set_xlabel("block")
        ax.grid(False)
    axes[0][0].set_ylabel(f"{method_names(df)[method]} weight")
    axes[0][0].legend(ncol=len(modes), loc="lower left", bbox_to_anchor=(0, 1.12), borderaxespad=0)
    return fig


def single_mode_tau(df, dataset: str) -> dict[str, float]:
    """tau of each one-mode `sd` cell on `dataset` (new tokens / target calls over its ok records), by mode."""
    cells = df[(df.dataset == dataset) & (df.method_name == "sd") & (df.modes.str.len() == 1) & (df.status == "ok")]
    return {m: g.new_tokens.sum() / g.target_calls.sum() for m, g in cells.groupby("modes") if g.target_calls.sum()}


def weights_trend_figure(df, method: str, min_samples: int = 3):
    """TABED's mean weight on each mode at block 1, 2, ... over a dataset's samples (blocks that a quarter of
    them, and at least `min_samples`, reach: the tail of a few long answers is noise), one panel per dataset; the title names the better single mode where the run
    has one-mode sd cells beside it, so the figure shows whether the weights move toward it."""
    recs = df[(df.method == method) & (df.status == "ok") & (df.weights.map(len) > 0)]
    if recs.empty:
        return None
    sets = [d for _, d in dataset_order(recs)]
    fig = Figure(figsize=(COLUMN if len(sets) == 1 else PAGE, 1.9))
    axes = fig.subplots(1, len(sets), sharey=True, squeeze=False)
    for ax, dataset in zip(axes[0], sets):
        rows = [np.asarray(w) for w in recs[recs.dataset == dataset].weights]
        modes = recs[recs.dataset == dataset].modes.iloc[0]
        enough = max(min_samples, len(rows) / 4)
        n_blocks = max((b for b in range(1, max(map(len, rows)) + 1) if sum(len(w) >= b for w in rows) >= enough),
                       default=1)
        blocks = np.arange(1, n_blocks + 1)
        mean = np.stack([np.mean([w[b - 1] for w in rows if len(w) >= b], axis=0) for b in blocks])  # [blocks, modes]
        for i, mode in enumerate(modes):
            ax.plot(blocks, mean[:, i], color=MODE_COLOURS.get(mode, "#999999"), lw=1.2, label=MODE_NAMES.get(mode, mode))
        taus = single_mode_tau(df, dataset)
        best = max(taus, key=taus.get) if taus else None
        ax.set_title(f"{dataset} ({len(rows)})" + (f"; sd tau {', '.join(f'{m} {t:.2f}' for m, t in taus.items())}"
                                                    if best else ""), loc="left")
        ax.set_xlabel("block")
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel(f"mean {method_names(df)[method]} weight")
    axes[0][0].legend(ncol=len(modes), loc="lower left", bbox_to_anchor=(0, 1.12), borderaxespad=0)
    return fig


XLABELS = {"measured": "draft step cost c = t_draft / t_target\n(timed apart from the decode: harness.latency)",
           "effective": "effective c (from the cell's own decode time;\nlies on the curve by construction)",
           "file": "draft step cost c (given: --cost FILE)"}


def measured_cost(cells) -> tuple[float, float] | str:
    """Median c and v over a cell's shards, from the `step_costs` in their summary.json; else why there are none."""
    costs = []
    for cell in sorted(set(cells)):
        path = Path(cell) / SUMMARY
        step = json.loads(path.read_text()).get("step_costs") if path.exists() else None
        if not step:
            return "no step_costs in its summary.json (recorded before they were measured: rerun the cell)"
        if "skipped" in step:
            return step["skipped"]
        costs.append(step)
    return float(np.median([s["c"] for s in costs])), float(np.median([s["v"] for s in costs]))


def cell_costs(df, cost: str | dict = "measured") -> pd.DataFrame:
    """Per method cell with ar twins: tau, mean drafts per block gamma, measured speedup, step cost c and verify
    cost v (both relative to one target step) as `cost` says: "measured", "effective" or {PAIR: c}. A cell
    with no c has c NaN and `missing` saying why."""
    rows, label = [], method_names(df)
    ok = df[(df.status == "ok") & (df.method_name != "ar") & df.ar_decode_s.notna()]
    for (run, pair, dataset, task, method), g in ok.groupby(["run", "pair", "dataset", "task", "method"]):
        blocks = (g.target_calls - 1).sum()
        drafted = sum(sum(d) for d in g.drafted)
        t_target = g.ar_decode_s.sum() / (g.ar_target_calls - 1).sum()
        if not blocks or not drafted or not t_target > 0:
            continue
        c, v, missing = float("nan"), 1.0, ""
        if cost == "effective":
            c = (g.decode_s.sum() - blocks * t_target) / (drafted * t_target)
        elif isinstance(cost, dict):
            c = cost.get(pair, c)
            missing = "" if pair in cost else f"pair {pair} is not in the --cost file"
        else:
            measured = measured_cost(g.cell)
            if isinstance(measured, str):
                missing = measured
            else:
                c, v = measured
        m = metrics(g.to_dict("records"), paired=True)  # the report's tau and speedup, over these paired records
        rows.append({"pair": pair, "dataset": dataset, "method": method, "name": label[method], "c": c, "v": v,
                     "gamma": drafted / blocks, "tau": m["tau"], "speedup": m["speedup_vs_ar"],  # c, v: ar's step
                     "missing": missing})
    return pd.DataFrame(rows)


def cost_figure(df, cmap, cost: str | dict = "measured"):
    """Each cell at (c, measured speedup); per method the curve S = tau / (v + gamma c) at its mean tau, gamma,
    v. None without method cells; the reason, naming them, when none has a c."""
    cells = cell_costs(df, cost)
    if cells.empty:
        return None
    left_out = [f"{r.name} on {r.pair}/{r.dataset}: {r.missing}" for r in cells.itertuples() if r.missing]
    cells = cells[cells.missing == ""]
    if cells.empty:
        return ("no cell has a draft step cost c (" + "; ".join(left_out) + "); --cost effective plots the "
                "effective c, --cost FILE a given one")
    kind = cost if isinstance(cost, str) else "file"
    fig = Figure(figsize=(COLUMN, 2.4))
    ax = fig.subplots()
    c_max = max(0.1, cells.c.max()) * 1.15
    grid = np.linspace(min(0.0, cells.c.min()), c_max, 200)
    marks = markers(df.method)
    for method, g in cells.groupby("method"):
        tau, gamma, v = g.tau.mean(), g.gamma.mean(), g.v.mean()
        ax.plot(grid, tau / (v + gamma * grid), color=cmap[method], lw=0.9, ls="--", alpha=0.8)
        label = f"{g['name'].iloc[0]} (τ={tau:.2f}" + (f", v={v:.2f})" if kind == "measured" else ")")
        ax.scatter(g.c, g.speedup, s=16, marker=marks[method], facecolor="none", edgecolor=cmap[method],
                   linewidth=0.9, label=label, zorder=3)
    ax.axhline(1.0, color="#555555", lw=0.7, ls=":", zorder=0)
    model = "S = τ / (v + γc), v measured" if kind == "measured" else "S = τ / (1 + γc)"
    ax.plot([], [], color="#555555", lw=0.9, ls="--", label=model)
    ax.set_xlabel(XLABELS[kind])
    ax.set_ylabel("walltime speedup over ar (×)")
    ax.set_xlim(grid[0], c_max)
    ax.set_ylim(bottom=0)
    ax.grid(axis="x")
    ax.legend(loc="best")  # clear of the points
    if left_out:
        ax.annotate("left out (no c): " + "; ".join(left_out), xy=(0, 0), xycoords=("axes fraction", ax.xaxis.label),
                    xytext=(0, -3), textcoords="offset points", va="top", fontsize=5, color="#555555", wrap=True)
    return fig


VERDICT_COLOURS = {"within": "#009E73", "above": "#0072B2", "below": "#D55E00"}
GREY = "#aaaaaa"


def claims_figure(table: pd.DataFrame):
    """One panel per metric, a row per claim: the claimed value (black diamond) with its tolerance band (grey bar),
    the measured one (a dot coloured by its verdict); a claim that is not comparable is greyed, its measured value
    (if any) hollow, and the checks it fails written beside it."""
    metrics_ = [m for m in METRIC_LABELS if m in set(table.metric)]
    heights = [int((table.metric == m).sum()) + 1.2 for m in metrics_]
    fig = Figure(figsize=(PAGE, 0.5 + 0.15 * sum(heights)))
    axes = fig.subplots(len(metrics_), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, metric in zip(axes, metrics_):
        t = table[table.metric == metric].reset_index(drop=True)
        y = -np.arange(len(t))
        ax.barh(y, t.hi - t.lo, left=t.lo, height=0.55, color="#e4e4e4", lw=0, zorder=1)
        ax.scatter(t.claimed, y, marker="D", s=14, color="#222222", zorder=3, label="claimed (± band)")
        for verdict, colour in VERDICT_COLOURS.items():  # legend entries only for what is drawn
            on = (t.verdict == verdict).to_numpy()
            if on.any():
                ax.scatter(t.measured[on], y[on], s=18, color=colour, zorder=4, label=f"measured: {verdict}")
        off = (~t.comparable & t.measured.notna()).to_numpy()
        if off.any():
            ax.scatter(t.measured[off], y[off], s=18, facecolor="none", edgecolor=GREY, zorder=4,
                       label="measured, not comparable")
        ax.set_yticks(y, [f"{r.paper} {r.label}: {r.datasets if len(r.datasets) <= 26 else r.datasets[:25] + '…'}"
                          + (", 2nd turn" if r.turn == "second" else "") for r in t.itertuples()])
        for tick, r in zip(ax.get_yticklabels(), t.itertuples()):
            tick.set_color("#222222" if r.comparable else GREY)
            if not r.comparable:
                ax.annotate("not comparable: " + ", ".join(dict.fromkeys(r.why_not)),
                            xy=(1.01, tick.get_position()[1]), xycoords=("axes fraction", "data"), va="center",
                            fontsize=5.5, color=GREY)
        ax.set_ylim(y[-1] - 0.7, 0.7)
        ax.set_xlabel(METRIC_LABELS[metric])
        ax.grid(axis="x")
        ax.grid(axis="y", visible=False)
    handles, names = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:  # one legend: every kind of marker that appears in any panel
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    axes[0].legend(handles, names, ncol=3, loc="lower left", bbox_to_anchor=(0, 1.0), borderaxespad=0.2)
    fig.subplots_adjust(hspace=0.6)
    return fig


def concurrency_figure(df):
    """A serving engine's cells at several concurrencies (backend.concurrency): output throughput per method, and
    its ratio to the engine's ar at the same concurrency (the speedup users see shrink as batches fill up)."""
    engine = df[(df.backend != "hf") & (df.get("request_rate", 0) == 0)]  # all at once: no arrival process
    engine = engine.assign(base=lambda d: d.method.str.partition("@")[0] + "@" +
                           d.backend.str.replace(r"-c\d+(?=-|$)", "", regex=True))
    if engine.concurrency.nunique() < 2:
        return None
    s = summarize(engine, ["pair", "dataset", "base", "concurrency"]).rename(columns={"base": "method"})
    s = s.merge(s[s.method.str.startswith("ar@")][["pair", "dataset", "concurrency", "throughput_tokens_per_s"]]
                .rename(columns={"throughput_tokens_per_s": "ar_throughput"}), on=["pair", "dataset", "concurrency"])
    s = s.assign(ratio=s.throughput_tokens_per_s / s.ar_throughput)
    fig = Figure(figsize=(PAGE, 2.3))
    left, right = fig.subplots(1, 2)
    cmap, marks, names = colours(s.method), markers(s.method), method_names(df)
    for (pair, dataset, method), g in s.groupby(["pair", "dataset", "method"]):
        g = g.sort_values("concurrency")
        label = names.get(method, method)  # the concurrency-1 cell's display name (sd@vllm)
        label += "" if s.pair.nunique() == 1 and s.dataset.nunique() == 1 else f" ({pair}, {dataset})"
        for ax, y in ((left, g.throughput_tokens_per_s), (right, g.ratio)):
            ax.plot(g.concurrency, y, marker=marks.get(method, "o"), color=cmap.get(method), lw=1, ms=3, label=label)
    for ax, ylabel in ((left, "output throughput (tokens/s)"), (right, "over ar's, same concurrency (×)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(s.concurrency.unique()), [str(c) for c in sorted(s.concurrency.unique())])
        ax.set_xlabel("concurrent requests")
        ax.set_ylabel(ylabel)
    right.axhline(1.0, color="#555555", lw=0.7, ls="--", zorder=0)
    left.legend(loc="upper left", fontsize=6)
    return fig


def figures(df: pd.DataFrame, cost: str | dict = "measured", samples: list[str] | None = None,
            claims: list | None = None) -> dict:
    """Every figure the records allow, by file stem; a skipped figure maps to the reason (a string). Figures
    are plain matplotlib Figures (no pyplot state): display them in a notebook, or save() them. `cost`:
    "measured", "effective" or {PAIR: c} (see the module docstring); `claims` (harness.claims.load_claims) adds
    the claims figure."""
    with matplotlib.rc_context(STYLE):
        out = _figures(df, colours(df.method), cost, samples)
        if claims is not None:
            out["claims"] = claims_figure(evaluate(df, claims))
        return out


def _figures(df, cmap, cost, samples) -> dict:
    out = {
        "speedup": speedup_figure(df, cmap) or "no method has ar records on the same samples",
        "tau": tau_figure(df, cmap) or "no method other than ar",
        "acceptance": acceptance_figure(df, cmap) or "no drafted blocks",
        "cost_model": cost_figure(df, cmap, cost) or ("cannot measure the draft step cost: no method cell has ar "
                                                      "twins with decode steps (run ar on the same samples too)"),
    }
    if (df.backend != "hf").any():  # runs of our own loops alone get no word about it
        out["concurrency"] = concurrency_figure(df) or "no serving-engine cells at two or more concurrencies"
    tabed = [m for m in method_order(df.method) if (df[df.method == m].weights.map(len) > 0).any()]
    for method in tabed:
        out[f"tabed_weights_{method}"] = weights_figure(df, method, samples)
        out[f"tabed_weight_trend_{method}"] = weights_trend_figure(df, method)
    if not tabed:
        out["tabed_weights"] = "no records with TABED weights (method=tabed)"
    return out


def save(figs: dict, out: Path) -> list[Path]:
    """PNG and PDF of every figure into `out`; print what was skipped and why."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figs.items():
        if isinstance(fig, str) or fig is None:
            print(f"skipped {name}: {fig or 'nothing to plot'}")
            continue
        for ext in ("png", "pdf"):
            with matplotlib.rc_context(STYLE):
                fig.savefig(out / f"{name}.{ext}")
            written.append(out / f"{name}.{ext}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.figures", description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="a results directory (any level: root, run, pair, ...)")
    parser.add_argument("--out", type=Path, help="where to write the figures (default RESULTS/figures)")
    parser.add_argument("--cost", default="measured", help='draft step cost c of the cost-model figure: "measured" '
                        '(timed apart from the decode; the default), "effective" (from the cells\' own decode '
                        'times: on the curve by construction) or a JSON file {"PAIR": c}')
    parser.add_argument("--samples", help="comma-separated sample ids for the TABED weight figure")
    parser.add_argument("--claims", metavar="NAME", help="add the claims figure: measured next to the published "
                        "claims of conf/claims/NAME.yaml (or all of them: all)")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        print(f"error: {args.results} is not a directory", file=sys.stderr)
        return 2
    df = load(args.results)
    if df.empty:
        print(f"error: no cells with records under {args.results}", file=sys.stderr)
        return 2
    if args.cost not in ("measured", "effective") and not Path(args.cost).is_file():
        print(f"error: --cost {args.cost}: neither measured, effective nor a JSON file", file=sys.stderr)
        return 2
    try:
        claims = load_claims(args.claims) if args.claims else None
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cost = args.cost if args.cost in ("measured", "effective") else json.loads(Path(args.cost).read_text())
    written = save(figures(df, cost, args.samples.split(",") if args.samples else None, claims),
                   args.out or args.results / "figures")
    print("\n".join(f"wrote {p}" for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
