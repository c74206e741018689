"""Suffix drafting: a draft-free speculative method, as a spec-harness plugin.

The draft for the next tokens is what followed the most recent earlier occurrence of the longest suffix of the
context (prompt and answer so far, `min_ngram` to `max_ngram` tokens). transformers' prompt lookup (`hf_pld`) matches
one fixed n-gram size; this looks for the longest match first, so a repeated passage keeps being copied past the
point where a short n-gram becomes ambiguous. Where nothing matches, the block ends (`confidence`), and the target
verifies what was drafted; the output is the target's own (greedy: token for token `ar`'s).

It uses only the harness's public surface (`methods`): `method` registers it, `speculate` runs the loop, and
`SuffixDrafter` implements `Drafter`.
"""
from __future__ import annotations

import torch

from methods import DecodeSettings, Drafter, Models, Prompt, Result, method, speculate


class SuffixDrafter(Drafter):
    """Drafts from the context itself: one mode, logits that put all the mass on the continuation of the longest
    earlier match, or none (a flat row: the draft is unsure, and the block ends). No model runs: drafting is a
    search, so it makes no draft calls."""

    calls_per_step = 0

    def __init__(self, prompt_ids: list[int], vocab: int, max_ngram: int, min_ngram: int, device: torch.device):
        self.context, self.prompt = list(prompt_ids), len(prompt_ids)
        self.vocab, self.max_ngram, self.min_ngram, self.device = vocab, max_ngram, min_ngram, device

    def start(self, features: torch.Tensor | None) -> SuffixDrafter:
        return self

    def generated(self) -> int:
        return len(self.context) - self.prompt

    def step(self, tokens: list[int]) -> torch.Tensor:
        self.context += tokens
        logits = torch.zeros(1, self.vocab, device=self.device)
        following = self.continuation()
        if following is not None:
            logits.fill_(float("-inf"))
            logits[0, following] = 0.0
        return logits

    def continuation(self) -> int | None:
        """The token after the most recent earlier occurrence of the longest suffix that has one."""
        ctx = self.context
        for n in range(min(self.max_ngram, len(ctx) - 1), self.min_ngram - 1, -1):
            suffix = ctx[-n:]
            for end in range(len(ctx) - 1, n - 1, -1):  # an occurrence ending before the last token
                if ctx[end - n:end] == suffix:
                    return ctx[end]
        return None

    def crop(self, generated: int) -> None:
        del self.context[self.prompt + generated:]


@method("suffix")
def generate(models: Models, prompt: Prompt, settings: DecodeSettings, generator: torch.Generator | None = None,
             gamma: int = 8, max_ngram: int = 8, min_ngram: int = 2) -> Result:
    """Speculative decoding with `SuffixDrafter`: up to `gamma` drafted tokens a block."""
    if not 1 <= min_ngram <= max_ngram:
        raise ValueError(f"suffix: need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
    ids = prompt.target["input_ids"]
    vocab = models.target.config.get_text_config().vocab_size
    drafter = SuffixDrafter(ids[0].tolist(), vocab, max_ngram, min_ngram, ids.device)
    return speculate(models, prompt, settings, generator, drafter, gamma=gamma, confidence=0.5)
