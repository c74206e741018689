"""EAGLE-3 drafting (Li et al. 2025) as a method: the drafter network (`methods.eagle3`) driven by the shared
speculative loop through `EagleDrafter`, in chains, chains with siblings, or EAGLE-2 dynamic trees; SpecVocab
is EAGLE-3 with its vocabulary-speculator head.
"""
from __future__ import annotations

import torch

from methods.core import DecodeSettings, Models, Prompt, Result
from methods.drafting import Drafter, Verdict
from methods.eagle3 import Eagle3, Head, checkpoint_head, feature_layers, head_for
from methods.registry import method
from methods.speculative import speculate
from methods.verify import Tree


class EagleDrafter(Drafter):
    """The EAGLE drafter as `speculate` drives it. Entry j of its cache pairs the target's feature at position j
    with the token at j + 1, so it can only be built once that token is known: after each verification the
    target's features of the committed positions wait in `pending` until the next `step` brings their next
    tokens. Draft steps deeper than one feed the drafter's own output state back; those entries are dropped
    at `crop` (the committed ones are rebuilt from the target's features, as in EAGLE)."""

    def __init__(self, eagle: Eagle3, head: Head, prompt_ids: torch.Tensor, layers: list[int], max_len: int):
        self.eagle, self.head, self.attn, self.layers = eagle, head, eagle.midlayer.self_attn, layers
        self.prompt_ids, self.max_len = prompt_ids, max_len
        self.prompt_next = prompt_ids[1:].tolist()  # next tokens of prompt positions 0 .. P-2

    def start(self, features: torch.Tensor) -> "EagleDrafter":
        """`features` [P, 3d]: the target's, at every prompt position."""
        if features.shape[0] != len(self.prompt_ids):
            raise ValueError(f"the target returned features for {features.shape[0]} prompt positions but the prompt "
                             f"has {len(self.prompt_ids)} tokens: EAGLE needs a target that does not expand its input")
        self.attn.reset(self.max_len, features.device, self.eagle.fc.weight.dtype)
        self.pending, self.committed, self.hidden = features, 0, None
        return self

    def generated(self) -> int:
        """Answer tokens the drafter has read (entry P-1 reads the first)."""
        return max(0, self.attn.length - len(self.prompt_next))

    def step(self, tokens: list[int]) -> torch.Tensor:
        from_target = self.pending is not None
        if from_target:  # target features, paired with the tokens that followed them
            hidden, tokens = self.pending, self.prompt_next[self.attn.length:] + tokens
            self.pending = None
        else:  # a deeper draft step: the drafter's own last state
            hidden = self.hidden
        n = len(tokens)
        if hidden.shape[0] != n:
            raise RuntimeError(f"EAGLE drafter: {hidden.shape[0]} states for {n} tokens")
        positions = torch.arange(self.attn.length, self.attn.length + n, device=hidden.device)[None]
        out = self.eagle.extend(hidden[None], torch.tensor([tokens], device=hidden.device), positions)[0]
        if from_target:
            self.committed = self.attn.length
        self.hidden = out[-1:]
        return self.head(self.eagle.norm(self.hidden))

    def crop(self, generated: int) -> None:
        """Drop the drafter's own entries; the committed positions come back through `observe`."""
        self.eagle.crop(min(self.committed, len(self.prompt_next) + generated))

    def observe(self, verdict: Verdict) -> None:
        """Keep the target's features of the newly committed positions [n, 3d]."""
        f = verdict.features
        self.pending = f if self.pending is None else torch.cat([self.pending, f])

    def draft_tree(self, feed: list[int], top_k: int, depth: int, total: int) -> Tree:
        """Expand the `top_k` best frontier nodes (by cumulative log-probability) level by level, `depth` levels
        deep, each into its `top_k` best children; keep the `total - 1` best candidates. A child never scores above
        its parent, so the kept set contains every kept node's ancestors (ties go to the older node). The kept
        nodes come in creation order; parent -1 is the root, the last committed token. The tree is drafted beside
        the committed context (its entries are dropped at `crop`), so it has no spine."""
        root = torch.log_softmax(self.step(feed)[0], -1).topk(top_k)
        tok, par, score, dep = root.indices.tolist(), [-1] * top_k, root.values.tolist(), [1] * top_k
        base, attn = self.attn.length, self.attn  # committed entries; the root's is the last of them
        entry, state, frontier = {}, {-1: self.hidden[0]}, list(range(top_k))
        for level in range(1, depth):
            n, past = len(frontier), attn.length
            mask = torch.zeros(n, past + n, dtype=torch.bool, device=self.hidden.device)
            mask[:, :base] = True
            for r, i in enumerate(frontier):
                a = par[i]
                while a >= 0:
                    mask[r, entry[a]] = True
                    a = par[a]
                mask[r, past + r] = True
            hidden = torch.stack([state[par[i]] for i in frontier])[None]
            positions = torch.full((1, n), base - 1 + level, device=hidden.device)
            out = self.eagle.extend(hidden, torch.tensor([[tok[i] for i in frontier]], device=hidden.device),
                                    positions, mask)[0]
            for r, i in enumerate(frontier):
                entry[i], state[i] = past + r, out[r]
            logp = torch.log_softmax(self.head(self.eagle.norm(out)), -1)
            best = (logp + torch.tensor([score[i] for i in frontier], device=logp.device)[:, None]).topk(top_k, -1)
            new = []
            for r, i in enumerate(frontier):
                for s, t in zip(best.values[r].tolist(), best.indices[r].tolist()):
                    tok.append(t), par.append(i), score.append(s), dep.append(level + 1), new.append(len(tok) - 1)
            frontier = sorted(new, key=lambda j: (-score[j], j))[:top_k]
        keep = sorted(sorted(range(len(tok)), key=lambda j: (-score[j], j))[: total - 1])
        index = {j: r for r, j in enumerate(keep)}
        return Tree([tok[j] for j in keep], [index[par[j]] if par[j] >= 0 else -1 for j in keep], [dep[j] for j in keep],
                    spine=[], chain=False, drafted=len(keep), calls=depth)


@method("eagle", needs=("eagle",))
def generate(models: Models, prompt: Prompt, settings: DecodeSettings, generator: torch.Generator | None = None,
             gamma: int = 5, tree_width: int = 1, head: str = "checkpoint", head_size: int = 0, top_k: int = 0,
             total_tokens: int = 60) -> Result:
    """EAGLE-3 drafting with one of the heads of `methods.eagle3` (`head_size`: N for frspec, k for specvocab). `top_k` > 0
    drafts EAGLE-2 dynamic trees `gamma` levels deep with `total_tokens` nodes (root included); otherwise a
    chain (`tree_width` 1) or a chain with `tree_width - 1` siblings per depth."""
    eagle = models.eagle
    if eagle is None:
        raise ValueError("this method needs a pair with an EAGLE-3 drafter (pair.eagle)")
    target = models.target
    head = checkpoint_head(eagle) if head == "checkpoint" else head
    head_fn = head_for(eagle, target, head, head_size)
    layers = eagle.layers or feature_layers(target.config.get_text_config().num_hidden_layers)
    ids = prompt.target["input_ids"][0]
    max_len = len(ids) + settings.max_new_tokens + gamma * max(top_k, 1) + 1
    drafter = EagleDrafter(eagle, head_fn, ids, layers, max_len)
    result = speculate(models, prompt, settings, generator, drafter, gamma=gamma, tree_width=tree_width,
                       top_k=top_k, total_tokens=total_tokens)
    result.stats.update(head=head, feature_layers=layers)  # what `checkpoint` resolved to, in every record
    return result


@method("specvocab", needs=("eagle",))
def generate_specvocab(models: Models, prompt: Prompt, settings: DecodeSettings,
                       generator: torch.Generator | None = None, gamma: int = 5, tree_width: int = 1,
                       k: int = 768, top_k: int = 0, total_tokens: int = 60) -> Result:
    """SpecVocab: the full tied head evaluated only on the vocabulary speculator's top-k ids per step (per tree
    node in dynamic trees)."""
    return generate(models, prompt, settings, generator, gamma=gamma, tree_width=tree_width, head="specvocab",
                    head_size=k, top_k=top_k, total_tokens=total_tokens)
