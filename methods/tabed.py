"""TABED: test-time adaptive batched ensemble drafting (Lee et al.). Several drafting modes of one draft
model run as one batch; their next-token distributions are mixed with weights learned from the target's
past verdicts (`methods.weights`); the mixture drafts, and verification keeps the output lossless."""
from __future__ import annotations

import torch

from methods.core import DecodeSettings, Models, Prompt, Result
from methods.drafting import ModelDrafter, Verdict, ensemble
from methods.registry import method
from methods.speculative import speculate
from methods.weights import Weights


class EnsembleDrafter(ModelDrafter):
    """The draft model in K modes whose mixture q = sum_d w_d q_d drafts; after each block the weights learn from
    the positions where every mode's context was right: the accepted path and the first rejected depth."""

    def __init__(self, models: Models, prompt: Prompt, drafts: str, batched: bool, policy: str, window: int):
        super().__init__(models, prompt, drafts, batched)
        self.weights = Weights(policy, self.k, window)
        self.block: list[torch.Tensor] = []  # each mode's logits [K, V] at every draft step of this block
        self.history = dict(weights=[], mode_agree=[])

    def step(self, tokens: list[int]) -> torch.Tensor:
        logits = super().step(tokens)
        self.block.append(logits)
        return logits

    def mix(self, logits: torch.Tensor, settings: DecodeSettings) -> torch.Tensor:
        return ensemble(logits, self.weights.current, settings)

    def observe(self, verdict: Verdict) -> None:
        valid = min(verdict.kept + 1, len(self.block))  # rows[:valid]: the root and the accepted path nodes
        if valid:
            p = torch.softmax(verdict.logits[verdict.rows[:valid]], dim=-1)
            q = torch.softmax(torch.stack(self.block[:valid]), dim=-1)
            self.history["weights"].append([round(w, 4) for w in self.weights.current.tolist()])
            self.history["mode_agree"].append(self.weights.observe(p, q)["mode_agree"])
        self.block = []

    def stats(self) -> dict:
        return self.history


@method("tabed", needs=("draft",))
def generate(models: Models, prompt: Prompt, settings: DecodeSettings, generator: torch.Generator | None = None,
             gamma: int = 5, drafts: str = "MT", policy: str = "wgrid", window: int = 0,
             batched: bool = True, tree_width: int = 1) -> Result:
    if len(drafts) < 2:
        raise ValueError(f"tabed needs at least two drafting modes, got {list(drafts)}; use method=sd for one")
    drafter = EnsembleDrafter(models, prompt, drafts, batched, policy, window)
    return speculate(models, prompt, settings, generator, drafter, gamma=gamma, tree_width=tree_width)
