"""Verification of a drafted block in one target forward: a chain, a chain with siblings, or any token tree.

A block is a `Tree` of drafted nodes under the last committed token (the root, block row 0); node j sits in
row 1 + j. A chain is a tree whose every node has one child; a chain with siblings (`width` > 1) gives each
path node `width` children, the first of which continues the path; EAGLE-2's dynamic trees are any shape.

Greedy: from the root, follow the child whose token is the target's argmax, and stop where none is. Sampling
(SpecInfer-style multi-candidate speculative sampling, lossless for children drawn i.i.d. from the draft
distribution q of their parent): try the children in turn, accepting x with probability min(1, p'(x) / q(x));
after a rejection p' <- norm(max(p' - q, 0)); if all are rejected, or there are none, draw from p'.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from methods.core import DecodeSettings, probs_from_logits, sample


@dataclass
class Tree:
    """A drafted block. `parents[j]` is node j's parent (-1 = the root; parents come first), `depths[j]` its depth
    (1 = a child of the root). `q[parent]` is the draft distribution that parent's children were drawn from
    (sampling only). `spine` lists the nodes the drafter read while drafting, in order (a chain drafter reads its
    path; a dynamic tree is drafted beside the drafter's context and leaves it empty): the drafter keeps the
    accepted prefix of it. `chain`: no siblings, so plain causal attention verifies it. `drafted` counts the
    tokens drafted for the acceptance statistics (the path's depth for chains, the nodes for dynamic trees);
    `calls` the draft forwards spent."""

    tokens: list[int]
    parents: list[int]
    depths: list[int]
    q: dict[int, torch.Tensor] = field(default_factory=dict)
    spine: list[int] = field(default_factory=list)
    chain: bool = True
    drafted: int = 0
    calls: int = 0


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


def per_layer_type(model, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor | dict:
    """`mask` as the target's forward takes it. A custom 4D mask reaches every layer as it is, so a sliding-window
    target (Gemma 3) gets one mask per layer type: its sliding layers' mask also drops the keys `sliding_window` or
    more positions behind each row (prefix key j sits at position j: the committed context is contiguous), as the
    model's own masks do; otherwise those layers would see the whole prefix and verification would disagree
    with `ar`."""
    text = model.config.get_text_config(decoder=True)
    types = getattr(text, "layer_types", None) or ()
    if "sliding_attention" not in types:
        return mask
    start = mask.shape[-1] - positions.shape[1]
    keys = torch.cat([torch.arange(start, device=mask.device), positions[0]])
    near = keys[None, :] > positions[0][:, None] - text.sliding_window
    return {kind: mask & near if kind == "sliding_attention" else mask for kind in set(types)}


def verify_tree(tree: Tree, logits: torch.Tensor, settings: DecodeSettings,
                generator: torch.Generator | None) -> tuple[list[int], int]:
    """The accepted nodes, root to leaf, and the target's next token after them. `logits` [1 + n, V]: one row per
    block row."""
    children: dict[int, list[int]] = {}
    for j, p in enumerate(tree.parents):
        children.setdefault(p, []).append(j)
    node, path = -1, []
    while True:
        kids, row = children.get(node, ()), node + 1
        if settings.greedy:
            choice = int(logits[row].argmax())
            node = next((j for j in kids if tree.tokens[j] == choice), None)
            if node is None:
                return path, choice
        else:
            p = probs_from_logits(logits[row], settings)
            q = tree.q[node] if kids else None
            for j in kids:
                x = tree.tokens[j]
                u = torch.rand((), generator=generator, device=p.device)
                if u * q[x] < p[x]:  # accept with probability min(1, p(x) / q(x))
                    node = j
                    break
                residual = (p - q).clamp_min(0.0)
                total = residual.sum()
                p = residual / total if total > 0 else p  # p == q leaves no residual; rejection then had probability 0
            else:
                return path, int(sample(p, generator))
        path.append(node)
