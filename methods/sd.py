"""Speculative decoding with one draft model (Leviathan et al. 2023), in any drafting mode (M, T, C, P), with
chain (`tree_width=1`) or token-tree verification. The loop lives in `methods.speculative`."""
from __future__ import annotations

import torch

from methods.core import DecodeSettings, Models, Prompt, Result
from methods.drafting import ModelDrafter
from methods.registry import method
from methods.speculative import speculate


@method("sd", needs=("draft",))
def generate(models: Models, prompt: Prompt, settings: DecodeSettings, generator: torch.Generator | None = None,
             gamma: int = 5, drafting: str = "M", tree_width: int = 1, confidence: float = 0.0) -> Result:
    """`confidence` > 0: blocks of up to `gamma` tokens that end where the draft's top probability drops below it."""
    return speculate(models, prompt, settings, generator, ModelDrafter(models, prompt, [drafting]), gamma=gamma,
                     tree_width=tree_width, confidence=confidence)
