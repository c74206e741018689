"""The speculative decoding loop every drafting method shares (Leviathan et al. 2023; TABED; EAGLE).

Each block: the drafter proposes a token tree (a chain of `gamma` tokens, a chain with `width - 1` siblings
per depth, or an EAGLE-2 dynamic tree); the target scores the whole block in one forward; verification
(`methods.verify`) keeps the accepted nodes and one target token; both contexts keep exactly the committed
tokens (crop for chains, compaction for trees) and nothing accepted is recomputed. What differs between
methods lives in their `Drafter` (`methods.drafting`): a draft model in one or several modes, or a feature-level
EAGLE drafter.
"""
from __future__ import annotations

import torch

from methods.core import (
    DecodeSettings, Models, Prompt, Result, cache_len, check_prompt, compact_cache, devices, extend, forward, new_cache,
    next_token, now, sample,
)
from methods.drafting import Drafter, Verdict
from methods.verify import Tree, per_layer_type, tree_mask, verify_tree


def candidates(q: torch.Tensor, width: int, settings: DecodeSettings, generator) -> list[int]:
    """Path token first: the top `width` tokens of q (greedy) or `width` i.i.d. samples from q."""
    if settings.greedy:
        return q.topk(width).indices.tolist() if width > 1 else [int(q.argmax())]
    return [int(sample(q, generator)) for _ in range(width)]


def draft_chain(drafter: Drafter, feed: list[int], gamma: int, width: int, settings: DecodeSettings,
                generator: torch.Generator | None, confidence: float = 0.0) -> Tree:
    """Up to `gamma` path tokens, each with `width - 1` siblings (leaves); the path token is fed back. Drafting
    stops early once the draft's top probability falls below `confidence` (transformers'
    assistant_confidence_threshold): a decision on the draft's own distribution, so the output stays lossless."""
    tokens, parents, depths, qs, spine = [], [], [], {}, []
    parent = -1
    for depth in range(1, gamma + 1):
        logits = drafter.step(feed)
        q = drafter.mix(logits, settings)
        cands = candidates(q, width, settings, generator)
        qs[parent] = q
        parents += [parent] * width
        depths += [depth] * width
        parent = len(tokens)
        tokens += cands
        feed = cands[:1]
        spine.append(parent)
        q_is_logits = settings.greedy and len(logits) == 1  # mix() skips the softmax then
        if confidence and float((torch.softmax(q, -1) if q_is_logits else q).max()) < confidence:
            break  # the draft is unsure of what follows: verify what it has
    g = len(spine)
    return Tree(tokens, parents, depths, qs, spine=spine[:-1], chain=width == 1 or g == 0, drafted=g,
                calls=g * drafter.calls_per_step)


def target_forward(target, cache, layers: list[int] | None, *args, **kwargs):
    """(logits, features or None): the target's forward, with the features a drafter reads."""
    out = forward(target, cache, *args, layers=layers, **kwargs)
    return out if layers else (out, None)


@torch.inference_mode()
def speculate(models: Models, prompt: Prompt, settings: DecodeSettings, generator: torch.Generator | None,
              drafter: Drafter, gamma: int = 5, tree_width: int = 1, top_k: int = 0, total_tokens: int = 60,
              confidence: float = 0.0) -> Result:
    """Decode with `drafter`: chains of `gamma` (`tree_width` 1), chains with siblings (`tree_width` > 1), or, with
    `top_k` > 0, dynamic trees `gamma` levels deep of `total_tokens` nodes counting the root (the drafter's
    `draft_tree`). Option names are the method configs' own."""
    if gamma < 1 or tree_width < 1:
        raise ValueError(f"need gamma >= 1 and tree width >= 1, got gamma={gamma}, width={tree_width}")
    if not 0.0 <= confidence < 1.0:
        raise ValueError(f"need 0 <= confidence < 1, got {confidence}")
    if top_k and not settings.greedy:
        raise ValueError("dynamic trees (top_k > 0) are verified greedily only; under sampling use tree_width")
    if top_k and (top_k < 1 or total_tokens < 2):
        raise ValueError(f"dynamic tree needs top_k >= 1, depth >= 1, total_tokens >= 2; got {top_k}, {gamma}, {total_tokens}")
    check_prompt(prompt)
    target, device, clock = models.target, models.target.device, devices(models.target)  # drafters sit on `device`
    t0 = now(*clock)
    tcache = new_cache(target)
    logits, feats = target_forward(target, tcache, drafter.layers, logits_to_keep=1, **prompt.target)
    first = next_token(logits[:, -1], settings, generator)
    drafter.start(None if feats is None else feats[0])  # all prompt positions' features
    t_prompt = cache_len(tcache)  # may exceed the input length (image tokens expanded by the model)
    out: list[int] = []
    done = extend(out, [int(first)], settings)
    t1 = now(*clock)

    stats = dict(target_calls=1, draft_calls=drafter.calls_per_step, accepted=[], drafted=[])
    while not done:
        # Draft from the tokens the drafter has not read yet (>= 1: it lags behind `out`).
        feed = out[drafter.generated():]
        if top_k:
            tree = drafter.draft_tree(feed, top_k, gamma, total_tokens)
        else:  # a block adds at most gamma + 1 tokens
            tree = draft_chain(drafter, feed, min(gamma, settings.max_new_tokens - len(out) - 1), tree_width, settings,
                               generator, confidence)

        # Verify the block in one target forward: [last committed token, node 0, node 1, ...].
        start = t_prompt + len(out) - 1
        block = torch.tensor([[out[-1]] + tree.tokens], device=device)
        if tree.chain:
            layout = {}
        else:
            mask, positions = tree_mask(tree.parents, tree.depths, start, device)
            layout = dict(attention_mask=per_layer_type(target, mask, positions), position_ids=positions)
        block_logits, feats = target_forward(target, tcache, drafter.layers, block, **layout)
        path, nxt = verify_tree(tree, block_logits[0], settings, generator)

        # Commit: both contexts keep the prefix, the accepted nodes and nothing else.
        rows = [0] + [1 + j for j in path]
        compact_cache(tcache, start, rows)
        kept = next((i for i, (a, b) in enumerate(zip(tree.spine, path)) if a != b), min(len(tree.spine), len(path)))
        drafter.crop(min(drafter.generated(), len(out) + kept))
        drafter.observe(Verdict(block_logits[0], rows, kept, None if feats is None else feats[0, rows]))
        stats["target_calls"] += 1
        stats["draft_calls"] += tree.calls
        stats["accepted"].append(len(path))
        stats["drafted"].append(tree.drafted)
        done = extend(out, [tree.tokens[j] for j in path] + [nxt], settings)
    t2 = now(*clock)
    stats.update(drafter.stats())
    stats.update(prefill_s=t1 - t0, decode_s=t2 - t1, caption_s=drafter.caption_s)
    return Result([out], stats)
