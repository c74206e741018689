"""Plain autoregressive decoding: the baseline every speedup is measured against."""
from __future__ import annotations

import torch

from methods.core import (
    DecodeSettings, Models, Prompt, Result, check_prompt, devices, extend, forward, new_cache, next_token, now,
)
from methods.registry import method


@method("ar")
@torch.inference_mode()
def generate(models: Models, prompt: Prompt, settings: DecodeSettings, generator: torch.Generator | None = None) -> Result:
    check_prompt(prompt)
    target = models.target
    clock = devices(target)
    t0 = now(*clock)
    cache = new_cache(target)
    logits = forward(target, cache, logits_to_keep=1, **prompt.target)
    token = next_token(logits[:, -1], settings, generator)
    out: list[int] = []
    done = extend(out, [int(token)], settings)
    t1 = now(*clock)
    calls = 1
    while not done:
        logits = forward(target, cache, token.view(1, 1), logits_to_keep=1)
        token = next_token(logits[:, -1], settings, generator)
        calls += 1
        done = extend(out, [int(token)], settings)
    t2 = now(*clock)
    return Result([out], dict(prefill_s=t1 - t0, decode_s=t2 - t1, target_calls=calls, draft_calls=0, accepted=[], drafted=[]))
