"""The speculative decoding loop every draft-model method shares (Leviathan et al. 2023; TABED).

Each block: the drafter's K modes propose next-token distributions, combined as q = sum_d w_d q_d (K = 1:
plain SD); the path token (argmax of q, or a sample) is fed back for `gamma` steps, with `width - 1` extra
candidates per depth for tree verification; the target scores the whole block in one forward; verification
keeps the longest acceptable path (plus a sibling leaf) and one target token; both KV caches keep exactly
the committed tokens (crop for chains, compaction for trees) and nothing accepted is recomputed.
"""
from __future__ import annotations

import torch

from methods.core import (
    DecodeSettings, Models, Prompt, Result, cache_len, check_prompt, compact_cache, extend, forward,
    new_cache, next_token, now, probs_from_logits, sample,
)
from methods.drafting import Drafter
from methods.verify import parent_row, tree_layout, verify_block
from methods.weights import Weights


def ensemble(mode_logits: torch.Tensor, weights: torch.Tensor, settings: DecodeSettings) -> torch.Tensor:
    """q = sum_d w_d q_d over the K modes' logits [K, V]; q_d is the decoding distribution (softmax at T=1
    under greedy decoding, where only its ranking matters: one greedy mode is ranked by its logits as they are,
    which saves a full-vocabulary softmax per draft step)."""
    if settings.greedy:
        if len(mode_logits) == 1:
            return mode_logits[0]
        probs = torch.softmax(mode_logits, dim=-1)
    else:
        probs = probs_from_logits(mode_logits, settings)
    return probs[0] if len(probs) == 1 else weights.to(probs) @ probs


def candidates(q: torch.Tensor, width: int, settings: DecodeSettings, generator) -> list[int]:
    """Path token first: the top `width` tokens of q (greedy) or `width` i.i.d. samples from q."""
    if settings.greedy:
        return q.topk(width).indices.tolist() if width > 1 else [int(q.argmax())]
    return [int(sample(q, generator)) for _ in range(width)]


@torch.inference_mode()
def speculate(
    models: Models,
    prompt: Prompt,
    settings: DecodeSettings,
    generator: torch.Generator | None,
    modes: list[str],
    gamma: int = 5,
    width: int = 1,
    policy: str = "uniform",
    window: int = 0,
    batched: bool = True,
    layers: list[int] | None = None,
    new_drafter=None,
    confidence: float = 0.0,
) -> Result:
    """With `layers` and `new_drafter(prompt_features)`, a feature-level drafter (EAGLE) replaces the draft
    model's Drafter: it reads the target's hidden states entering those layers, for the prompt at creation and
    for every committed position after each verification (`observe`). `confidence` > 0 ends a block's drafting
    early once the draft's top probability falls below it (transformers' assistant_confidence_threshold): a
    decision on the draft's own distribution, so the output stays lossless."""
    if gamma < 1 or width < 1:
        raise ValueError(f"need gamma >= 1 and tree width >= 1, got gamma={gamma}, width={width}")
    if not 0.0 <= confidence < 1.0:
        raise ValueError(f"need 0 <= confidence < 1, got {confidence}")
    check_prompt(prompt)
    target, device = models.target, models.target.device
    t0 = now(device)
    tcache = new_cache(target)
    if layers:
        logits, feats = forward(target, tcache, logits_to_keep=1, layers=layers, **prompt.target)  # all positions' features
    else:
        logits = forward(target, tcache, logits_to_keep=1, **prompt.target)
    first = next_token(logits[:, -1], settings, generator)
    drafter = new_drafter(feats[0]) if layers else Drafter(models, prompt, modes, batched)
    weights = Weights(policy, len(modes), window)
    t_prompt = cache_len(tcache)  # may exceed the input length (image tokens expanded by the model)
    out: list[int] = []
    done = extend(out, [int(first)], settings)
    t1 = now(device)

    stats = dict(target_calls=1, draft_calls=drafter.calls_per_step, accepted=[], drafted=[])
    q_is_logits = settings.greedy and len(modes) == 1  # ensemble() skips the softmax then
    if len(modes) > 1:
        stats.update(weights=[], mode_agree=[])
    while not done:
        g = min(gamma, settings.max_new_tokens - len(out) - 1)  # a block adds at most g + 1 tokens
        # Draft along the path; the drafter lags behind `out` by the tokens it has not seen yet (>= 1).
        feed, cands, qs, mode_logits = out[drafter.generated():], [], [], []
        for _ in range(g):
            lg = drafter.step(feed)
            q = ensemble(lg, weights.current, settings)
            cands.append(candidates(q, width, settings, generator))
            qs.append(q)
            mode_logits.append(lg)
            feed = cands[-1][:1]
            if confidence and float((torch.softmax(q, -1) if q_is_logits else q).max()) < confidence:
                break  # the draft is unsure of what follows: verify what it has
        g = len(cands)
        stats["draft_calls"] += g * drafter.calls_per_step

        # Verify the block in one target forward: [last committed token, depth-0 candidates, ...].
        start = t_prompt + len(out) - 1
        block = torch.tensor([[out[-1]] + [t for c in cands for t in c]], device=device)
        tree = {} if width == 1 or g == 0 else dict(zip(("attention_mask", "position_ids"), tree_layout(g, width, start, device)))
        if layers:
            tl, feats = forward(target, tcache, block, layers=layers, **tree)
        else:
            tl = forward(target, tcache, block, **tree)
        tl = tl[0]
        stats["target_calls"] += 1
        n, leaf, nxt = verify_block(cands, qs, tl, settings, generator)
        stats["accepted"].append(n + (leaf is not None))
        stats["drafted"].append(g)

        # Keep the committed tokens only: the prefix, the accepted path and the accepted leaf.
        rows = [0] + [1 + i * width for i in range(n)] + ([1 + n * width + cands[n].index(leaf)] if leaf is not None else [])
        compact_cache(tcache, start, rows)
        drafter.crop(min(drafter.generated(), len(out) + n))
        if layers:
            drafter.observe(feats[0, rows])

        valid = min(n + 1, g)  # positions where every mode's context was right
        if len(modes) > 1 and valid:  # TABED: the weights learn from them
            p = torch.softmax(tl[[parent_row(i, width) for i in range(valid)]], dim=-1)
            q = torch.softmax(torch.stack(mode_logits[:valid]), dim=-1)
            stats["weights"].append([round(w, 4) for w in weights.current.tolist()])
            stats["mode_agree"].append(weights.observe(p, q)["mode_agree"])
        done = extend(out, [cands[i][0] for i in range(n)] + ([leaf] if leaf is not None else []) + [nxt], settings)
    t2 = now(device)
    stats.update(prefill_s=t1 - t0, decode_s=t2 - t1, caption_s=drafter.caption_s)
    return Result([out], stats)
