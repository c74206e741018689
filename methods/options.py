"""A method's config keys checked before any model loads: a bad value is one line naming it and what is valid,
not a run whose every sample fails on it (each method's own checks stay, for callers of its generate())."""
from __future__ import annotations

import math

from methods.drafting import MODES
from methods.eagle3 import HEADS
from methods.hf_assisted import SCHEDULES
from methods.registry import Method
from methods.weights import POLICIES


def _int(low: int):
    return lambda v: (isinstance(v, int) and not isinstance(v, bool) and v >= low, f"an integer >= {low}")


def _choice(valid):
    return lambda v: (v in valid, "one of " + ", ".join(valid))


def _modes(v):
    ok = isinstance(v, (str, list, tuple)) and len(v) >= 2 and all(m in MODES for m in v) and len(set(v)) == len(v)
    return ok, f"two or more distinct drafting modes out of {''.join(MODES)} (e.g. MT, MTCP)"


def _fraction(v):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v < 1
    return ok, "a number with 0 <= value < 1"


RULES = {
    "gamma": _int(1), "tree_width": _int(1), "window": _int(0), "top_k": _int(0), "total_tokens": _int(2),
    "head_size": _int(0), "k": _int(1), "confidence": _fraction, "drafting": _choice(MODES), "drafts": _modes,
    "policy": _choice(POLICIES), "schedule": _choice(SCHEDULES), "head": _choice(("checkpoint", *HEADS)),
    "batched": lambda v: (isinstance(v, bool), "true or false"),
}


def check_options(method: Method, options: dict) -> None:
    """Raise ValueError naming the first unknown key or bad value of `options` for `method`."""
    known = list(method.options())
    for key, value in options.items():
        if key not in known:
            raise ValueError(f"method.{key}: {method.name} has no such option; valid: {', '.join(known) or 'none'}")
        ok, valid = RULES[key](value) if key in RULES else (True, "")
        if not ok:
            raise ValueError(f"method.{key}={value!r} for {method.name}: need {valid}")
