"""Benchmark harness for speculative decoding: Hydra app, model pairs, datasets, records, reports."""
from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# conf/ and datasets/ (the bundled data): a checkout's own, else the copies an installed wheel carries in the package
RESOURCES = PROJECT_ROOT if (PROJECT_ROOT / "conf" / "config.yaml").exists() else Path(__file__).resolve().parent
CONF = RESOURCES / "conf"


class HarnessError(Exception):
    """A problem the user can fix (bad name, missing weights, bad input): printed without a traceback, and the
    process exits with `exit_code` (docs/records.md, exit codes: 2 bad input or setup; subclasses name their own)."""

    exit_code = 2


def pair_name(*, _parent_) -> str:
    """`pair=custom`'s name (`${pair_name:}`, conf/pair/custom.yaml): the last part of each model id it names (a
    folder's name, a hub repo's, an embedded model's), target first, joined by "__" as the shipped pairs are named.
    Registered here, where every config user's import starts, so any composed config resolves."""
    ids = [str((_parent_.get(role) or {}).get("id") or "") for role in ("target", "draft", "eagle")]
    return "__".join(i.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1] for i in ids if i)


OmegaConf.register_new_resolver("pair_name", pair_name, replace=True)
