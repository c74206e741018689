"""The records contract between run and report (docs/records.md): one directory per cell with
`config.yaml`, `env.json`, `samples.jsonl` (complete lines only, appended and flushed per sample)
and `summary.json` (written last, atomically). A cell with a summary is finished; a cell without one
resumes after its last complete sample. One process at a time writes a cell (`cell_lock`), and one reader
(`read_records`) serves both the run's resume and the report, so they never disagree on what was recorded, and one
function (`metrics`) computes every number of summary.json and of the report, under the names docs/metrics.md defines.
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import logging
import os
import platform
import socket
import subprocess
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from harness import PROJECT_ROOT, HarnessError
from harness.jsonl import BadLine, parse, split_lines

log = logging.getLogger("harness")

SAMPLES, SUMMARY, CONFIG, ENV = "samples.jsonl", "summary.json", "config.yaml", "env.json"
LOCK = ".lock"  # held by the one process decoding the cell (cell_lock)
CORRUPT = "samples.corrupt.jsonl"  # lines of samples.jsonl that were not records, set aside on resume
RETRIED = "samples.retried.jsonl"  # failed attempts taken out to be decoded again (retry_failed), kept for the record
STEP_COSTS = "step_costs.json"  # a method cell's draft and verify step latencies (harness.latency)
BASELINE = "baseline.json"  # an ar cell's calibration against transformers' generate() (harness.baseline)
LOSSLESS = "lossless.json"  # a method cell's check against its ar twins, by teacher forcing (harness.lossless)
# Settings that define a cell's numbers: a rerun into the same directory must agree on all of them.
IDENTITY_KEYS = ("backend", "method", "pair", "dataset", "max_new_tokens", "temperature", "top_p", "seed", "warmup",
                 "dtype", "pack_weights", "reuse_first_turn")


def backend_tag(backend) -> str:
    """How a cell's directory and report rows name its backend: "" for our own loops (hf), else the engine, its
    concurrency when above 1, its request rate when set, and drafts sampled from the draft's distribution when asked
    (`vllm`, `vllm-c8`, `vllm-c8-r2`, `vllm-c8-probabilistic`)."""
    if backend is None or backend.get("name", "hf") == "hf":
        return ""
    c, rate = backend.get("concurrency") or 1, backend.get("request_rate")
    sampling = backend.get("draft_sample_method") or "greedy"
    return (backend["name"] + (f"-c{c}" if c > 1 else "") + (f"-r{rate:g}" if rate else "")
            + (f"-{sampling}" if sampling != "greedy" else ""))


def cell_dir(cfg) -> Path:
    root = Path(cfg.output_root)
    if not root.is_absolute():
        root = Path.cwd() / root
    tag = cfg.method.tag
    if backend_tag(cfg.get("backend")):  # one cell per backend: `sd_M_g5_w1@vllm` beside `sd_M_g5_w1`
        tag += "@" + backend_tag(cfg.backend)
    if (cfg.dataset.get("num_shards") or 1) > 1:  # shards of one cell never share a directory; the report merges them
        tag += f"_shard{cfg.dataset.get('shard') or 0}of{cfg.dataset.num_shards}"
    return root / cfg.run_name / cfg.pair.name / cfg.dataset.name / tag


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # as open() would make it (mkstemp's 0600 hides results from a shared group)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def check_identity(cell: Path, resolved: dict) -> None:
    """Refuse to mix samples decoded under different settings in one cell."""
    stored_file = cell / CONFIG
    if not stored_file.exists():
        return
    from omegaconf import OmegaConf

    stored = OmegaConf.to_container(OmegaConf.load(stored_file), resolve=True)
    stored.setdefault("backend", {"name": "hf"})  # cells from before backends were a choice
    diff = [k for k in IDENTITY_KEYS if identity(stored, k) != identity(resolved, k)]
    if diff:
        raise HarnessError(f"{cell} holds results made with different settings ({', '.join(diff)} differ). "
                           f"Use another run_name=..., or delete that directory to start over.")


OPERATIONAL = ("env", "startup_timeout_s", "request_timeout_s")  # backend keys that do not change the numbers


def identity(cfg: dict, key: str):
    value = cfg.get(key)
    if key == "backend" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in OPERATIONAL}
    return value


def _version(pkg: str) -> str | None:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    try:
        rev = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=5)
        sha = rev.stdout.strip() if rev.returncode == 0 else None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                                    capture_output=True, text=True, timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        sha, dirty = None, None
    return {
        "git_sha": sha,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in ("torch", "transformers", "datasets", "hydra-core", "accelerate")},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
    }


def read_records(cell: Path, repair: bool = False) -> list[dict]:
    """The records of every finished sample in a cell's samples.jsonl: the one reader of run (resume) and report.

    Lines end at b"\\n" only (harness.jsonl). A torn last line (a crash mid-write) and the lines of a sample
    whose final turn is missing are left out; a corrupt line elsewhere (not UTF-8, not JSON) is skipped with a
    warning naming its line and byte offset, and every good record around it is kept. A (sample, turn) seen
    twice keeps its first copy, loudly. With `repair` (a run about to append), corrupt lines go to
    `samples.corrupt.jsonl` beside it and the file is rewritten with exactly the records returned."""
    path = cell / SAMPLES
    if not path.exists():
        return []
    lines, tail = split_lines(path.read_bytes())
    records, corrupt = [], []
    for line in lines:
        try:
            rec = parse(path, line)
            if not isinstance(rec, dict) or "id" not in rec or "turn" not in rec:
                raise BadLine(path, line, "not a sample record (a JSON object with id and turn)")
            records.append(rec)
        except BadLine as err:
            corrupt.append(err)
    for err in corrupt:
        log.warning("%s; %s", err, "set aside in " + CORRUPT if repair else "skipped")
    finished = {r["id"] for r in records if r.get("final_turn")}
    kept, seen, doubled = [], set(), []
    for r in records:
        if r["id"] not in finished:
            continue
        if (r["id"], r["turn"]) in seen:
            doubled.append(f"{r['id']} turn {r['turn']}")
            continue
        seen.add((r["id"], r["turn"]))
        kept.append(r)
    if doubled:
        log.warning("%s: %d records appear more than once (first copy kept): %s", path, len(doubled),
                    ", ".join(doubled[:10]) + (" ..." if len(doubled) > 10 else ""))
    unfinished = len(records) - len(kept) - len(doubled)
    if unfinished and corrupt:  # a sample with a corrupt line is decoded again; say so, it is not silent loss
        log.warning("%s: %d record(s) of samples with a corrupt or missing line are left out; those samples are "
                    "%s", path, unfinished, "decoded again" if repair else "not counted")
    if repair and (corrupt or tail or len(kept) != len(lines)):
        if corrupt:
            with open(cell / CORRUPT, "ab") as f:
                f.write(b"".join(e.line.raw + b"\n" for e in corrupt))
        write_atomic(path, jsonl(kept))
    return kept


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def take_out(cell: Path, records: list[dict], ids: set[str]) -> list[dict]:
    """Move the records of samples `ids` from samples.jsonl to RETRIED, so that they are decoded again; the rest."""
    kept = [r for r in records if r["id"] not in ids]
    with open(cell / RETRIED, "a", encoding="utf-8") as f:
        f.write(jsonl([r for r in records if r["id"] in ids]))
    write_atomic(cell / SAMPLES, jsonl(kept))
    return kept


def append_sample(f, records: list[dict]) -> None:
    """All turn lines of one sample in one write, flushed to disk, so a crash never leaves half a sample."""
    f.write(jsonl(records))
    f.flush()
    os.fsync(f.fileno())


# --- metrics: the one definition of every number (docs/metrics.md has one line per name) ---------------

BOOTSTRAP, SEED = 1000, 0  # the speedup intervals: percentile bootstrap over the paired (sample, turn) records
SPEEDUP_KEYS = ("speedup", "speedup_lo", "speedup_hi", "speedup_mean", "speedup_mean_lo", "speedup_mean_hi")
# summary.json files written before metrics() existed use these same names (n_records, n_ok, n_failed, tau,
# acceptance_rate, prefill_s, decode_s, tokens_per_s): nothing to map when reading old ones.


def walltime(rec: dict) -> float:
    """A record's walltime, the time every speedup divides: prefill + decode."""
    return rec["prefill_s"] + rec["decode_s"]


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _given(x) -> bool:
    return x is not None and x == x  # not None, not NaN (a record the report could not pair with ar)


def position_acceptance(accepted: list[int], drafted: list[int]) -> list[float]:
    """Entry i-1: fraction of blocks with >= i drafts whose first i drafts were all accepted."""
    acc, dr = np.asarray(accepted), np.asarray(drafted)
    return [round(float((acc[dr >= i] >= i).mean()), 4) for i in range(1, int(dr.max(initial=0)) + 1)]


def speedups(ar_wall: np.ndarray, wall: np.ndarray) -> dict:
    """Ratio of totals and mean of per-pair ratios, each with a 95% percentile bootstrap interval."""
    if not len(wall):
        return dict.fromkeys(SPEEDUP_KEYS, float("nan"))
    idx = np.random.default_rng(SEED).integers(0, len(wall), (BOOTSTRAP, len(wall)))
    total = ar_wall[idx].sum(1) / wall[idx].sum(1)
    mean = (ar_wall / wall)[idx].mean(1)
    return dict(zip(SPEEDUP_KEYS, map(float, (
        ar_wall.sum() / wall.sum(), np.percentile(total, 2.5), np.percentile(total, 97.5), (ar_wall / wall).mean(),
        np.percentile(mean, 2.5), np.percentile(mean, 97.5)))))


def metrics(records, paired: bool = False) -> dict:
    """Every number of a group of records (a cell, or cells pooled over shards, datasets, turns or runs), under
    the names summary.json, report.csv and every table use; NaN where a ratio has nothing to divide by.

    Counts and sums are over the group's ok records. With `paired` (the report, after pairing each record with
    ar's record of the same sample and turn, and with the fastest plain decoding's: report.with_fastest_plain)
    each record may carry `ar_wall_s` and `ar_output_ids` (NaN/None: no ar twin), `base` and `base_wall_s` (the
    denominator's tag and walltime; ar's where absent) and `temperature`, which add n_paired (records with an ar
    twin), speedup (ratio of total walltimes, the denominator's over the method's), speedup_mean (mean of
    per-record ratios), their 95% bootstrap intervals (_lo, _hi), vs (the denominator's tag), speedup_vs_ar
    (over our eager ar: the papers' setting), lossless (lossless_verdict of the paired greedy records'
    `lossless_check`; "n/a" under sampling or without twins) and, for a serving engine's records, agrees_with_hf
    (engine_agreement). summary.json, written by the run before any pairing, has the others only."""
    records = list(records)
    ok = [r for r in records if r["status"] == "ok"]
    accepted = [a for r in ok for a in (r.get("accepted") or [])]
    drafted = [d for r in ok for d in (r.get("drafted") or [])]
    new, calls = int(sum(r["new_tokens"] for r in ok)), int(sum(r["target_calls"] for r in ok))
    prefill, decode = float(sum(r["prefill_s"] for r in ok)), float(sum(r["decode_s"] for r in ok))
    wall = prefill + decode
    errors = collections.Counter(r.get("error") for r in records if r["status"] != "ok").most_common(1)
    out = {
        "n_records": len(records), "n_ok": len(ok), "n_failed": len(records) - len(ok),
        "top_error": f"{errors[0][0]} (×{errors[0][1]})" if errors else "",
        "new_tokens": new, "target_calls": calls, "tau": _div(new, calls),
        "acceptance_rate": _div(sum(accepted), sum(drafted)),
        "position_acceptance": position_acceptance(accepted, drafted),
        "prefill_s": prefill, "decode_s": decode, "wall_s": wall, "prefill_share": _div(prefill, wall),
        "tokens_per_s": _div(new, wall), "throughput_tokens_per_s": throughput(ok), **latency_percentiles(ok),
    }
    if paired:
        twins = [r for r in ok if _given(r.get("ar_wall_s"))]
        lossless = "n/a"
        if twins and all(r.get("temperature") == 0 for r in records):
            lossless = lossless_verdict([r.get("lossless_check") or (
                "same" if list(r["output_ids"]) == list(r["ar_output_ids"]) else "unchecked") for r in twins])
        base = [(r, r.get("base_wall_s", r.get("ar_wall_s"))) for r in ok]  # the denominator: ar's where unnamed
        based = [(r, b) for r, b in base if _given(b)]
        out.update(n_paired=len(twins), **speedups(np.array([b for _, b in based], float),
                                                   np.array([walltime(r) for r, _ in based], float)),
                   vs="/".join(sorted({r.get("base") or "ar" for r, _ in based})),
                   speedup_vs_ar=_div(sum(r["ar_wall_s"] for r in twins), sum(walltime(r) for r in twins)),
                   lossless=lossless, agrees_with_hf=engine_agreement(ok))
    return out


def lossless_verdict(checks: list[str]) -> str:
    """The `lossless` verdict of a group from its paired greedy records' checks (harness.ties.record_check:
    "same" as ar's, "tie", "lossy", or "unchecked" when an output differs and no check judged it yet): `exact`,
    `ties k/N`, `LOSSY k/N` (a bug), or `unchecked k/N` (run `python -m harness.lossless`); "n/a" for none."""
    if not checks:
        return "n/a"
    n, count = len(checks), {c: checks.count(c) for c in ("tie", "lossy", "unchecked")}
    if count["lossy"]:
        return f"LOSSY {count['lossy']}/{n}" + (f", unchecked {count['unchecked']}/{n}" if count["unchecked"] else "")
    if count["unchecked"]:
        return f"unchecked {count['unchecked'] + count['tie']}/{n}"
    return f"ties {count['tie']}/{n}" if count["tie"] else "exact"


def throughput(ok: list[dict]) -> float:
    """New tokens per second of wall clock from the first request's start to the last one's end: a serving engine's
    output throughput, which concurrent requests raise while each request's tokens_per_s falls; NaN for records
    without start times (our own loops decode one request at a time, where it is tokens_per_s)."""
    timed = [r for r in ok if r.get("started_at") is not None]
    if not timed:
        return float("nan")
    span = max(r["started_at"] + walltime(r) for r in timed) - min(r["started_at"] for r in timed)
    return _div(sum(r["new_tokens"] for r in timed), span)


def latency_percentiles(ok: list[dict]) -> dict:
    """Median and 99th percentile over records of TTFT (time to the first new token: the prefill) and TPOT (time
    per output token after the first), in ms, as `vllm bench serve` reports them; NaN without such records."""
    ttft = [r["prefill_s"] * 1e3 for r in ok]
    tpot = [r["decode_s"] * 1e3 / (r["new_tokens"] - 1) for r in ok if r["new_tokens"] > 1]
    out = {}
    for name, values in (("ttft", ttft), ("tpot", tpot)):
        for q in (50, 99):
            out[f"{name}_p{q}_ms"] = float(np.percentile(values, q)) if values else float("nan")
    return out


def engine_agreement(ok: list[dict]) -> float:
    """Share of a serving engine's greedy records whose output equals our own (hf) ar's for the same sample and
    turn (`hf_ar_output_ids`, set by the report); NaN without such twins or under sampling."""
    twins = [r for r in ok if isinstance(r.get("hf_ar_output_ids"), list) and r.get("temperature") == 0]
    return _div(sum(list(r["output_ids"]) == r["hf_ar_output_ids"] for r in twins), len(twins))


def summarize(records: list[dict], extra: dict) -> dict:
    """summary.json: `extra` and metrics() of the cell's records (unpaired), NaN written as null."""
    return {**extra, **{k: None if isinstance(v, float) and v != v else v for k, v in metrics(records).items()}}


def load_summary(cell: Path) -> dict | None:
    path = cell / SUMMARY
    return json.loads(path.read_text()) if path.exists() else None


class CellBusy(HarnessError):
    """Another live process holds the cell's lock."""

    exit_code = 3


@contextlib.contextmanager
def cell_lock(cell: Path):
    """One writer per cell: an exclusive flock on `cell/.lock`, which the kernel releases when its holder dies
    (kill -9 included), so a lock is never stale; the file names its last holder (pid, host, start) for the
    message a second process gets. The file stays: deleting it while held would let a third process lock a new one."""
    cell.mkdir(parents=True, exist_ok=True)
    fd = os.open(cell / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
        os.close(fd)
        raise CellBusy(f"{cell} is being decoded by another process ({holder}); two writers would double every "
                       "record and time each other's decoding. Wait for it, or stop it first.") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def lock_holder(cell: Path) -> str | None:
    """Who holds the cell's lock now (its file's text), or None when nobody does (read only; for --status)."""
    if not (cell / LOCK).exists():
        return None
    fd = os.open(cell / LOCK, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
    finally:
        os.close(fd)
