"""Drafters: the contract the speculative loop drives (`Drafter`), and the draft-model drafter (`ModelDrafter`)
with the drafting modes it runs, one (SD) or several in one batch (TABED).

Modes, for prompts with images (a text prompt is the same in every mode):
  M  multimodal: the images through the draft's own vision tower and projector;
  T  text-only: each image (its whole run of placeholder tokens, 576 for LLaVA-1.5 once the processor has
     expanded it) becomes one newline token, no pixels: TABED's T, written for unexpanded prompts where an
     image is one `<image>` token;
  C  caption: each image's placeholder run becomes "image: " + a caption of that image, produced by
     `models.captioner` inside the timed call;
  P  pooled: the draft's vision features average-pooled 2x2 before its projector (24x24 -> 12x12 for CLIP-336).

Every mode becomes input embeddings for the draft, so several modes of one draft model run as one batch:
rows are left-padded to one length, and every drafted token is appended to all rows (TABED's batched
ensemble; `batched=False` runs them one after another for comparison).
"""
from __future__ import annotations

import abc
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from methods.core import DecodeSettings, Models, Prompt, cache_len, crop_cache, forward, new_cache, probs_from_logits


# --- the contract -------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What the target decided about a block, for the drafter to learn from: `logits` [1 + n, V] of the whole
    block, `rows` the committed block rows (row 0, the accepted nodes), `kept` how many of the nodes the drafter
    read while drafting were accepted (`Tree.spine`), `features` the target's features of the committed rows
    (drafters with `layers` only)."""

    logits: torch.Tensor
    rows: list[int]
    kept: int
    features: torch.Tensor | None = None


class Drafter(abc.ABC):
    """What `methods.speculative.speculate` needs from a drafter: every member the loop calls. `start` runs inside
    the timed call, after the target's prefill; `step(tokens)` appends tokens to the drafter's context and returns
    each of its K modes' next-token logits over the target's vocabulary [K, V]; `mix` turns those into the one draft
    distribution q; `crop` rolls the context back to `generated` answer tokens; `observe` hears the target's verdict
    on each block; `draft_tree` (dynamic trees, `top_k` > 0 only) proposes a whole tree at once. A drafter that
    reads the target's hidden states names their `hidden_states` indices in `layers`."""

    layers: list[int] | None = None  # target features read, or None
    calls_per_step = 1  # draft forwards per `step`
    caption_s = 0.0  # seconds spent captioning images (drafting mode C)

    @abc.abstractmethod
    def start(self, features: torch.Tensor | None) -> "Drafter":
        """Prefill with the prompt; `features` [P, len(layers) * d] of the prompt positions when `layers`."""

    @abc.abstractmethod
    def generated(self) -> int:
        """Answer tokens in the drafter's context."""

    @abc.abstractmethod
    def step(self, tokens: list[int]) -> torch.Tensor:
        """Append `tokens`; each mode's next-token logits [K, V] over the target's vocabulary."""

    @abc.abstractmethod
    def crop(self, generated: int) -> None:
        """Keep the first `generated` answer tokens of the context."""

    def mix(self, logits: torch.Tensor, settings: DecodeSettings) -> torch.Tensor:
        return ensemble(logits, None, settings)

    def observe(self, verdict: Verdict) -> None:
        """Nothing to learn by default."""

    def draft_tree(self, feed: list[int], top_k: int, depth: int, total: int):
        """A dynamic token tree (`methods.verify.Tree`) of `total` nodes, `depth` deep, `top_k` children a node."""
        raise NotImplementedError(f"{type(self).__name__} drafts chains and fixed-width trees only: use top_k=0")

    def stats(self) -> dict:
        """Per-sample statistics of the drafter's own, merged into the record."""
        return {}


def ensemble(mode_logits: torch.Tensor, weights: torch.Tensor | None, settings: DecodeSettings) -> torch.Tensor:
    """q = sum_d w_d q_d over K modes' logits [K, V]; q_d is the decoding distribution (softmax at T=1 under greedy
    decoding, where only its ranking matters: one greedy mode is ranked by its logits as they are, which saves a
    full-vocabulary softmax per draft step). One mode needs no `weights`."""
    if settings.greedy:
        if len(mode_logits) == 1:
            return mode_logits[0]
        probs = torch.softmax(mode_logits, dim=-1)
    else:
        probs = probs_from_logits(mode_logits, settings)
    return probs[0] if len(probs) == 1 else weights.to(probs) @ probs


# --- the draft model's drafting modes -----------------------------------------------------------------------


MODES = ("M", "T", "C", "P")
CAPTION_PREFIX = "image: "


def _token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def newline_id(tokenizer) -> int:
    return _token_ids(tokenizer, "\n")[-1]  # sentencepiece may prepend a bare-space piece


def vision_features(draft, pixel_values: torch.Tensor, pool: int = 1) -> torch.Tensor:
    """[n_images, tokens / pool^2, d]: the draft's image features, selected as its config says (feature
    layer(s), CLS dropped for the 'default' strategy), average-pooled on the patch grid, then projected."""
    cfg = draft.config
    out = draft.model.vision_tower(pixel_values.to(draft.dtype), output_hidden_states=True, return_dict=True)
    layers = cfg.vision_feature_layer if isinstance(cfg.vision_feature_layer, (list, tuple)) else [cfg.vision_feature_layer]
    hidden = [out.hidden_states[i] for i in layers]
    if cfg.vision_feature_select_strategy == "default":
        hidden = [h[:, 1:] for h in hidden]
    h = torch.cat(hidden, dim=-1)
    if pool > 1:
        n, tokens, c = h.shape
        side = int(round(tokens ** 0.5))
        if side * side != tokens:
            raise ValueError(f"pooled drafting needs a square patch grid, got {tokens} tokens")
        h = F.avg_pool2d(h.transpose(1, 2).reshape(n, c, side, side), pool).flatten(2).transpose(1, 2)
    return draft.model.multi_modal_projector(h)


def image_positions(ids: torch.Tensor, image_id: int | None, n_images: int) -> list[torch.Tensor]:
    """Positions of each image's placeholder tokens, in order."""
    if image_id is None or n_images == 0:
        return []
    pos = (ids == image_id).nonzero().flatten()
    if len(pos) % n_images:
        raise ValueError(f"{len(pos)} image tokens do not split evenly over {n_images} images")
    return list(pos.split(len(pos) // n_images))


def _replace_runs(ids: torch.Tensor, runs: list[torch.Tensor], pieces: list[torch.Tensor]) -> torch.Tensor:
    """`ids` with each run of positions replaced by the matching piece of token ids."""
    out, start = [], 0
    for run, piece in zip(runs, pieces):
        out += [ids[start:run[0]], piece]
        start = int(run[-1]) + 1
    return torch.cat(out + [ids[start:]])


def mode_embeds(mode: str, models: Models, prompt: Prompt) -> tuple[torch.Tensor, float]:
    """The draft's prompt for one mode as embeddings [L, d], and the seconds spent captioning."""
    draft, ids = models.draft, prompt.target["input_ids"][0]
    embed = draft.get_input_embeddings()
    pixels = prompt.target.get("pixel_values")
    runs = image_positions(ids, getattr(models.target.config, "image_token_id", None),
                           0 if pixels is None else pixels.shape[0])
    if not runs:
        return embed(ids), 0.0
    if mode in ("M", "P") and not hasattr(getattr(draft, "model", None), "vision_tower"):
        raise ValueError(f"drafting mode {mode} needs a vision-language draft; use T or C with a text-only draft")
    if mode == "T":
        newline = torch.tensor([newline_id(models.tokenizer)], device=ids.device)
        return embed(_replace_runs(ids, runs, [newline] * len(runs))), 0.0
    if mode == "C":
        if models.captioner is None:
            raise ValueError("drafting mode C needs a captioner (pair.captioner)")
        start = time.perf_counter()
        captions = models.captioner(prompt.images)
        seconds = time.perf_counter() - start
        if len(captions) != len(runs):
            raise ValueError(f"{len(captions)} captions for {len(runs)} images (prompt.images holds the raw images)")
        pieces = [torch.tensor(_token_ids(models.tokenizer, CAPTION_PREFIX + c), device=ids.device) for c in captions]
        return embed(_replace_runs(ids, runs, pieces)), seconds
    pool = 2 if mode == "P" else 1
    feats = vision_features(draft, pixels, pool)  # [n_images, per_image, d]
    image_id = ids[runs[0][0]]
    short = _replace_runs(ids, runs, [image_id.repeat(feats.shape[1])] * len(runs))
    e = embed(short)
    return e.masked_scatter((short == image_id)[:, None], feats.reshape(-1, e.shape[-1]).to(e.dtype)), 0.0


def align_vocab(logits: torch.Tensor, vocab: int) -> torch.Tensor:
    """Draft logits [..., V_draft] widened to the target's V: ids the draft cannot produce (a target padded to a
    multiple of 64, a draft that is not) get -inf, so probability 0, wherever distributions meet. Should the target
    commit such an id, the draft reads it as its unknown token (`ModelDrafter.step`); verification keeps it lossless."""
    if logits.shape[-1] > vocab:
        raise ValueError(f"draft logits over {logits.shape[-1]} ids, more than the target's {vocab}")
    return F.pad(logits, (0, vocab - logits.shape[-1]), value=-torch.inf) if logits.shape[-1] < vocab else logits


class ModelDrafter(Drafter):
    """Runs K drafting modes of one draft model; every call to `step` appends the same tokens to all K
    contexts and returns each mode's next-token logits [K, V]. A row group is one batched forward: all K
    modes in one group (batched), one group per mode (sequential), or one row serving all modes when the
    prompt has no images (every mode then reads the same)."""

    def __init__(self, models: Models, prompt: Prompt, drafts: str | list[str], batched: bool = True):
        for mode in drafts:
            if mode not in MODES:
                raise ValueError(f"drafting mode {mode!r}; valid choices: {', '.join(MODES)}")
        self.models, self.prompt, self.drafts, self.batched = models, prompt, list(drafts), batched
        self.draft, self.k = models.draft, len(self.drafts)
        self.vocab = models.target.get_output_embeddings().weight.shape[0]  # logits come out this wide
        self.known = self.draft.get_input_embeddings().num_embeddings  # ids the draft can read
        unk = getattr(models.tokenizer, "unk_token_id", None)
        self.unknown = unk if unk is not None and unk < self.known else 0

    def start(self, features: torch.Tensor | None = None) -> "ModelDrafter":
        prompt, self.caption_s = self.prompt, 0.0
        if prompt.target.get("pixel_values") is None:
            cache = new_cache(self.draft)
            forward(self.draft, cache, prompt.target["input_ids"], logits_to_keep=1)
            self.groups = [{"cache": cache, "mask": None, "length": cache_len(cache), "shared": True, "rows": 1}]
            return self
        embeds = []
        for mode in self.drafts:
            e, seconds = mode_embeds(mode, self.models, prompt)
            embeds.append(e)
            self.caption_s += seconds
        self.groups = [self._prefill(embeds)] if self.batched else [self._prefill([e]) for e in embeds]
        return self

    def _prefill(self, embeds: list[torch.Tensor]) -> dict:
        """Left-pad rows to one length; padding is masked out and positions count real tokens only."""
        length = max(e.shape[0] for e in embeds)
        batch = embeds[0].new_zeros(len(embeds), length, embeds[0].shape[-1])
        mask = torch.zeros(len(embeds), length, dtype=torch.long, device=batch.device)
        for i, e in enumerate(embeds):
            batch[i, length - e.shape[0]:] = e
            mask[i, length - e.shape[0]:] = 1
        group = {"cache": new_cache(self.draft), "length": length, "shared": False, "rows": len(embeds),
                 "mask": mask if (mask == 0).any() else None}  # no padding: plain causal attention
        forward(self.draft, group["cache"], None, logits_to_keep=1, inputs_embeds=batch, **self._masking(group))
        return group

    @staticmethod
    def _masking(group: dict, new: int = 0) -> dict:
        """attention_mask and position_ids for a padded group after appending `new` tokens."""
        mask = group["mask"]
        if mask is None:
            return {}
        positions = (mask.cumsum(dim=1) - 1).clamp_min(0)
        return {"attention_mask": mask, "position_ids": positions[:, mask.shape[1] - new:] if new else positions}

    @property
    def calls_per_step(self) -> int:
        """Draft forwards per step: one per row group (a shared row serves every mode)."""
        return 1 if self.groups[0]["shared"] else len(self.groups)

    def generated(self) -> int:
        """Tokens after the prompt that are in the draft's caches (the same for every mode)."""
        return cache_len(self.groups[0]["cache"]) - self.groups[0]["length"]

    def step(self, tokens: list[int]) -> torch.Tensor:
        if self.known < self.vocab:  # a target token beyond the draft's vocabulary reads as unknown to the draft
            tokens = [t if t < self.known else self.unknown for t in tokens]
        ids = torch.tensor([tokens], device=self.draft.device)
        out = []
        for g in self.groups:
            if g["mask"] is not None:
                g["mask"] = torch.cat([g["mask"], g["mask"].new_ones(g["mask"].shape[0], len(tokens))], dim=1)
            logits = forward(self.draft, g["cache"], ids.expand(g["rows"], -1), logits_to_keep=1,
                             **self._masking(g, len(tokens)))[:, -1]
            out.append(logits.expand(self.k, -1) if g["shared"] else logits)
        return align_vocab(torch.cat(out, dim=0), self.vocab)

    def crop(self, generated: int) -> None:
        """Roll every mode back to the first `generated` tokens after the prompt."""
        for g in self.groups:
            crop_cache(g["cache"], g["length"] + generated)
            if g["mask"] is not None:
                g["mask"] = g["mask"][:, : g["length"] + generated]
