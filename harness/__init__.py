"""Benchmark harness for speculative decoding: Hydra app, model pairs, datasets, records, reports."""
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class HarnessError(Exception):
    """A problem the user can fix (bad name, missing weights, bad input): printed without a traceback, and the
    process exits with `exit_code` (README, Records: 2 bad input or setup; subclasses name their own)."""

    exit_code = 2
