"""Primitives every decoding method shares: settings, model calls, KV-cache bookkeeping,
token choice from logits, and a synchronised clock.

Methods are flat functions built from these pieces; nothing here knows which method calls it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TypedDict

import torch
from transformers import DynamicCache


@dataclass(frozen=True)
class DecodeSettings:
    """How to decode, independent of the method: identical for `ar` and every SD method."""

    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    eos_token_ids: tuple[int, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class Models:
    """The models a method may use; `draft` is None for methods that need none. `tokenizer` (the shared
    token space) and `captioner` (images -> captions, for the caption drafting mode) serve drafting modes."""

    target: torch.nn.Module
    draft: torch.nn.Module | None = None
    tokenizer: object = None
    captioner: object = None
    eagle: torch.nn.Module | None = None  # an EAGLE-3 drafter reading the target's features (methods.eagle3)


@dataclass
class Prompt:
    """A prepared prompt: `target` holds the keyword inputs of the target's first forward (`input_ids`
    [batch, length] and any extra inputs such as `pixel_values`); `images` are the raw images, for drafting
    modes that caption them."""

    target: dict
    images: list = field(default_factory=list)


class Stats(TypedDict, total=False):
    """What a method's `Result.stats` carries into its record (any other key is recorded as it is). Required:
    `prefill_s` (seconds up to the first new token), `decode_s` (seconds after it), `target_calls` (target forwards,
    the prefill included: τ = new tokens / target_calls), `draft_calls` (draft forwards; 0 without a draft).
    Optional: `accepted` and `drafted` (per block: draft tokens accepted, drafted; the acceptance metrics)."""

    prefill_s: float
    decode_s: float
    target_calls: int
    draft_calls: int
    accepted: list[int]
    drafted: list[int]


REQUIRED_STATS = ("prefill_s", "decode_s", "target_calls", "draft_calls")


@dataclass
class Result:
    """What a method returns: the new tokens (batch of lists) and its `Stats`, checked when it is made."""

    tokens: list[list[int]]
    stats: Stats = field(default_factory=dict)

    def __post_init__(self):
        missing = [k for k in REQUIRED_STATS if k not in self.stats]
        if missing:
            raise TypeError(f"Result.stats lacks {', '.join(missing)}: every method reports {', '.join(REQUIRED_STATS)} "
                            "(methods.core.Stats), so that its records time and count like every other method's")
        self.stats.setdefault("accepted", [])
        self.stats.setdefault("drafted", [])


# --- clock -------------------------------------------------------------------------------------


def devices(model) -> tuple[torch.device, ...]:
    """The devices a model computes on, its first (input) device first: one, or several when a `device_map` split it
    (`hf_device_map`; a module offloaded to "disk" computes on the CPU)."""
    placed = getattr(model, "hf_device_map", None)
    if not placed:
        return (model.device,)
    named = (torch.device("cuda", d) if isinstance(d, int) else torch.device("cpu" if d == "disk" else d)
             for d in placed.values())
    return tuple(dict.fromkeys(named))


def now(*on: torch.device) -> float:
    """perf_counter after every device in `on` has finished its queued work, so GPU timings are real (for a target
    split over several GPUs, pass them all: `now(*devices(target))`)."""
    for device in on:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return time.perf_counter()


# --- model calls and the KV cache ----------------------------------------------------------------


def new_cache(model) -> DynamicCache:
    """A cache that can roll back to any length. A sliding-window model (Gemma 3: 5 of every 6 layers see the last
    512 positions) gets full layers everywhere: transformers' sliding layers drop the positions past their window
    and then refuse `crop`, and `compact_cache` reads positions by index. The model's own masks still apply the
    window, so outputs are unchanged; the cost is those layers' keys for the whole context."""
    text = model.config.get_text_config(decoder=True)
    if "sliding_attention" in (getattr(text, "layer_types", None) or ()):
        return DynamicCache()
    return DynamicCache(config=model.config)


def cache_len(cache: DynamicCache) -> int:
    return cache.get_seq_length()


def crop_cache(cache: DynamicCache, length: int) -> None:
    """Keep the first `length` positions. (transformers 5.x `crop` takes minus the number to drop.)"""
    extra = cache_len(cache) - length
    if extra < 0:
        raise ValueError(f"cannot crop a cache of {cache_len(cache)} positions to {length}")
    if extra:
        cache.crop(-extra)


def compact_cache(cache: DynamicCache, start: int, rows: list[int]) -> None:
    """Keep the first `start` positions and the block rows `rows` (sorted offsets from `start`): the accepted
    path of a chain (rows 0..n, a plain crop) or of a token tree. The prefix stays where it is and only the kept
    rows move, so the cost is the block's, not the context's (re-gathering the whole cache made token trees lose
    to chains on a CPU: results/bench/latest.md, section `design`)."""
    if sorted(rows) != list(rows) or len(set(rows)) != len(rows) or (rows and rows[0] < 0):
        raise ValueError(f"rows must be sorted, distinct offsets >= 0, got {rows}")
    if list(rows) != list(range(len(rows))):  # a gap: move the kept rows down over it
        kept = torch.tensor(rows, device=cache.layers[0].keys.device) + start
        for layer in cache.layers:
            index = kept.to(layer.keys.device)  # layers of a split target sit on their own devices
            layer.keys[..., start:start + len(rows), :] = layer.keys[..., index, :]  # gathered first: no overlap
            layer.values[..., start:start + len(rows), :] = layer.values[..., index, :]
    crop_cache(cache, start + len(rows))


def forward(model, cache: DynamicCache, input_ids: torch.Tensor | None = None, logits_to_keep: int = 0,
            layers: list[int] | None = None, **extra):
    """One forward that appends its tokens (`input_ids`, or `inputs_embeds` in `extra`) to `cache`; returns
    logits of the last `logits_to_keep` positions (0 = all) in float32, so that token choice does not depend
    on the model dtype's rounding of the softmax. With `layers`, returns (logits, features): the hidden states
    entering those decoder layers at every new position, concatenated [batch, n, len(layers) * d] (EAGLE-3's
    input; read through the public `output_hidden_states`, whose entry i is the input of layer i). Both come back on
    the inputs' device, also from a target split over several (its last layers' device differs)."""
    out = model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=logits_to_keep,
                output_hidden_states=layers is not None, **extra)
    where = (input_ids if input_ids is not None else extra["inputs_embeds"]).device
    logits = out.logits.float().to(where)
    if layers is None:
        return logits
    return logits, torch.cat([out.hidden_states[i].to(where) for i in layers], dim=-1)


# --- from logits to tokens ------------------------------------------------------------------------


def probs_from_logits(logits: torch.Tensor, settings: DecodeSettings) -> torch.Tensor:
    """The sampling distribution (temperature, then nucleus/top-p) over the last dimension.

    SD is lossless with respect to exactly this distribution, so `ar` and every SD method use it."""
    probs = torch.softmax(logits / settings.temperature, dim=-1)
    if settings.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= settings.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of `probs` [..., V] -> [...]."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def next_token(logits: torch.Tensor, settings: DecodeSettings, generator: torch.Generator | None) -> torch.Tensor:
    """argmax under greedy decoding, else a sample from `probs_from_logits`."""
    if settings.greedy:
        return logits.argmax(dim=-1)
    return sample(probs_from_logits(logits, settings), generator)


def extend(out: list[int], new: list[int], settings: DecodeSettings) -> bool:
    """Append `new` to `out`, stopping after an EOS or at max_new_tokens; return True when decoding is done.

    Every method ends its output here, so all of them stop at exactly the same token as `ar`."""
    for t in new:
        out.append(t)
        if t in settings.eos_token_ids or len(out) >= settings.max_new_tokens:
            return True
    return False


def check_prompt(prompt: Prompt) -> int:
    ids = prompt.target["input_ids"]
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"prompt input_ids must be [batch, length>0], got shape {tuple(ids.shape)}")
    if ids.shape[0] != 1:
        raise NotImplementedError(f"batch size {ids.shape[0]}: only batch size 1 is implemented")
    return ids.shape[1]
