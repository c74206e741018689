"""Verification of a drafted block in one target forward: a chain, or a token tree of width d.

The tree is a chain with siblings: at depth i the draft proposes `width` candidates; the first (the
draft's top choice, or its first sample) continues the path, the others are leaves. Width 1 is the plain
chain. Node j (0-based, depth j // width) sits in row 1 + j of the block; row 0 is the last committed token.

Greedy: walk down the path while the target's argmax is the path token; if it is a sibling instead, take
that leaf and stop. Sampling (SpecInfer-style multi-candidate speculative sampling, lossless for candidates
drawn i.i.d. from q): try the candidates in turn, accepting x with probability min(1, p'(x) / q(x)); after a
rejection p' <- norm(max(p' - q, 0)); if all are rejected, draw from p'.
"""
from __future__ import annotations

import torch

from methods.core import DecodeSettings, probs_from_logits, sample


def parent_row(depth: int, width: int) -> int:
    """Block row whose logits predict the candidates at `depth`: the path node one level up (row 0 at depth 0)."""
    return 0 if depth == 0 else 1 + (depth - 1) * width


def tree_mask(parents: list[int], depths: list[int], start: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention mask [1, 1, 1 + n, start + 1 + n] (True = attend) and position ids [1, 1 + n] for a block of the
    last committed token at position `start` (row 0) followed by n tree nodes: node i (row 1 + i) sits at depth
    `depths[i]` under node `parents[i]` (-1 = row 0; parents come first) and sees the prefix, row 0, its
    ancestors and itself."""
    n = len(parents)
    sees = torch.eye(1 + n, dtype=torch.bool, device=device)
    sees[:, 0] = True
    for i, p in enumerate(parents):
        if p >= 0:
            sees[1 + i] |= sees[1 + p]
    mask = torch.cat([torch.ones(1 + n, start, dtype=torch.bool, device=device), sees], dim=1)
    positions = start + torch.tensor([0] + list(depths), device=device)
    return mask[None, None], positions[None]


def tree_layout(depth: int, width: int, start: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """`tree_mask` of the chain with siblings: node j sits at depth j // width + 1 under the path node (the first
    of its level) one level up."""
    nodes = range(depth * width)
    return tree_mask([j // width * width - width if j >= width else -1 for j in nodes],
                     [j // width + 1 for j in nodes], start, device)


def verify_block(
    candidates: list[list[int]],
    draft_probs: list[torch.Tensor] | None,
    target_logits: torch.Tensor,
    settings: DecodeSettings,
    generator: torch.Generator | None,
) -> tuple[int, int | None, int]:
    """Returns (path tokens accepted, accepted sibling or None, next token).

    `candidates[i]` are the width candidates at depth i (path token first); `draft_probs[i]` the draft
    distribution they were drawn from (sampling only); `target_logits` [1 + n, V] one row per block row."""
    width = len(candidates[0]) if candidates else 1
    logits = target_logits
    for i, cands in enumerate(candidates):
        row = parent_row(i, width)
        if settings.greedy:
            choice = int(logits[row].argmax())
            if choice == cands[0]:
                continue
            if choice in cands[1:]:
                leaf = 1 + i * width + cands.index(choice)
                return i, choice, int(logits[leaf].argmax())
            return i, None, choice
        p, q = probs_from_logits(logits[row], settings), draft_probs[i]
        for rank, x in enumerate(cands):
            u = torch.rand((), generator=generator, device=p.device)
            if u * q[x] < p[x]:  # accept with probability min(1, p(x) / q(x))
                if rank == 0:
                    break
                leaf = 1 + i * width + rank
                return i, x, int(sample(probs_from_logits(logits[leaf], settings), generator))
            residual = (p - q).clamp_min(0.0)
            total = residual.sum()
            p = residual / total if total > 0 else p  # p == q leaves no residual; rejection then had probability 0
        else:
            return i, None, int(sample(p, generator))
    last = parent_row(len(candidates), width)
    bonus = logits[last].argmax() if settings.greedy else sample(probs_from_logits(logits[last], settings), generator)
    return len(candidates), None, int(bonus)
