"""The record contract between run and report (DESIGN.md): one directory per cell with
`config.yaml`, `env.json`, `samples.jsonl` (complete lines only, appended and flushed per sample)
and `summary.json` (written last, atomically). A cell with a summary is finished; a cell without one
resumes after its last complete sample.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from harness import PROJECT_ROOT, HarnessError

SAMPLES, SUMMARY, CONFIG, ENV = "samples.jsonl", "summary.json", "config.yaml", "env.json"
BASELINE = "baseline.json"  # an ar cell's calibration against transformers' generate() (harness.baseline)
# Settings that define a cell's numbers: a rerun into the same directory must agree on all of them.
IDENTITY_KEYS = ("method", "pair", "dataset", "max_new_tokens", "temperature", "top_p", "seed", "warmup", "dtype",
                 "pack_weights", "reuse_first_turn")


def cell_dir(cfg) -> Path:
    root = Path(cfg.output_root)
    if not root.is_absolute():
        root = Path.cwd() / root
    tag = cfg.method.tag
    if (cfg.dataset.get("num_shards") or 1) > 1:  # shards of one cell never share a directory; the report merges them
        tag += f"_shard{cfg.dataset.get('shard') or 0}of{cfg.dataset.num_shards}"
    return root / cfg.run_name / cfg.pair.name / cfg.dataset.name / tag


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
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
    diff = [k for k in IDENTITY_KEYS if stored.get(k) != resolved.get(k)]
    if diff:
        raise HarnessError(f"{cell} holds results made with different settings ({', '.join(diff)} differ). "
                           f"Use another run_name=..., or delete that directory to start over.")


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


def read_complete(cell: Path) -> list[dict]:
    """Records of finished samples; drops a torn last line and any sample whose group of turn lines is
    incomplete, rewriting the file so appends continue from a clean end."""
    path = cell / SAMPLES
    if not path.exists():
        return []
    raw = path.read_text(encoding="utf-8")
    lines = raw.split("\n")
    records = []
    for line in lines[:-1]:  # the text after the last newline is never a complete line
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn line can only be the last one written; stop there
    finished = {r["id"] for r in records if r.get("final_turn")}
    kept = [r for r in records if r["id"] in finished]
    if len(kept) != len(records) or lines[-1] or len(records) != len(lines) - 1:
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def append_sample(f, records: list[dict]) -> None:
    """All turn lines of one sample in one write, flushed to disk, so a crash never leaves half a sample."""
    f.write("".join(json.dumps(r) + "\n" for r in records))
    f.flush()
    os.fsync(f.fileno())


def summarize(records: list[dict], extra: dict) -> dict:
    ok = [r for r in records if r["status"] == "ok"]
    new = sum(r["new_tokens"] for r in ok)
    calls = sum(r["target_calls"] for r in ok)
    drafted = sum(sum(r["drafted"]) for r in ok)
    accepted = sum(sum(r["accepted"]) for r in ok)
    wall = sum(r["prefill_s"] + r["decode_s"] for r in ok)
    return {
        **extra,
        "n_records": len(records),
        "n_ok": len(ok),
        "n_failed": sum(r["status"] != "ok" for r in records),
        "new_tokens": new,
        "target_calls": calls,
        "tau": new / calls if calls else None,
        "acceptance_rate": accepted / drafted if drafted else None,
        "prefill_s": sum(r["prefill_s"] for r in ok),
        "decode_s": sum(r["decode_s"] for r in ok),
        "tokens_per_s": new / wall if wall else None,
    }


def load_summary(cell: Path) -> dict | None:
    path = cell / SUMMARY
    return json.loads(path.read_text()) if path.exists() else None
