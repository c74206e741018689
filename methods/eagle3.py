"""The EAGLE-3 drafter network (Li et al. 2025) and its checkpoint format: a one-layer drafter reading the
target's own hidden features. The method that drives it in the speculative loop is `methods.eagle`; trainers and
benchmarks import this module only.

Drafter: features of the target (hidden states entering layers 2, L//2 and L-3, concatenated: 3d) -> fc -> one
decoder layer whose attention reads [norm(embedding of the next token), norm(feature)] (2d wide) -> norm -> head.
At position t it pairs the feature of token t with the embedding of token t+1 and predicts token t+2; deeper
draft steps feed its own output hidden state back in place of a target feature.

Heads (`head=`):
  checkpoint the head the checkpoint was trained with (the default, so a number labelled EAGLE-3 is EAGLE-3's):
             `reduced` when it stores its own lm_head, `full` when it stores none (tied to the target);
  full       the target's own output embedding (tied, frozen): exact but costs a full-vocabulary matmul per step;
  reduced    the checkpoint's trained head over its draft vocabulary, mapped to target ids with d2t (EAGLE-3);
  frspec     the full head's rows sliced to the top-N frequent tokens (FR-Spec), EOS always kept;
  specvocab  per step a vocabulary speculator (Down d->d', Vocab d'->|V|) picks top-k candidate ids and exact
             logits are computed for those rows of the full head only (SpecVocab).
Tokens a head cannot propose get -inf (never drafted); verification stays full-vocabulary, so output is lossless.

The drafter loads the official checkpoint format (config.json + model.safetensors / pytorch_model.bin with keys
fc, midlayer.*, norm, lm_head, d2t, t2d) and keeps its own preallocated KV cache indexed by position (gpt-fast
style): rolling back is moving a length, and tree compaction is one gather.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from methods.core import devices


def feature_layers(num_layers: int, config: dict | None = None) -> list[int]:
    """hidden_states indices of the target features a drafter reads (hidden_states[i] enters layer i): EAGLE-3's
    inputs of layers 2, L//2 and L-3, unless a SpecForge-style config names the layers whose outputs it was
    trained on (`eagle_config.eagle_aux_hidden_state_layer_ids`; the output of layer i enters layer i + 1).
    Engines disagree on those ids: vLLM reads them as layer inputs, SGLang (since 2026-05) as outputs only when
    the first id is 1; SpecForge, which writes them, captures outputs, and so do we."""
    ids = ((config or {}).get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
    if ids is None:
        return [2, num_layers // 2, num_layers - 3]
    if len(ids) != 3 or not all(isinstance(i, int) and 0 <= i < num_layers for i in ids):
        raise ValueError(f"eagle_aux_hidden_state_layer_ids {ids}: need 3 layer indices of a {num_layers}-layer target")
    return [i + 1 for i in ids]


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x):
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


class Attention(nn.Module):
    """Grouped-query attention over [norm(embedding), norm(hidden)] with a preallocated KV cache."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        d, self.heads, self.kv_heads = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or d // self.heads
        self.q_proj = nn.Linear(2 * d, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(2 * d, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(2 * d, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, d, bias=False)
        self.k_cache = self.v_cache = None
        self.length = 0

    def reset(self, max_len: int, device, dtype):
        shape = (1, self.kv_heads, max_len, self.head_dim)
        self.k_cache, self.v_cache = torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def qkv(self, x, cos, sin):
        """Queries, keys (rotated) and values [b, heads, n, head_dim] of the 2d-wide inputs x."""
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        return q, k, v

    def forward(self, x, cos, sin, mask):
        b, n, _ = x.shape
        q, k, v = self.qkv(x, cos, sin)
        end = self.length + n
        if end > self.k_cache.shape[2]:  # grow the cache (rare: long outputs)
            extra = max(end, 2 * self.k_cache.shape[2]) - self.k_cache.shape[2]
            self.k_cache = F.pad(self.k_cache, (0, 0, 0, extra))
            self.v_cache = F.pad(self.v_cache, (0, 0, 0, extra))
        self.k_cache[:, :, self.length:end] = k
        self.v_cache[:, :, self.length:end] = v
        self.length = end
        keys, values = self.k_cache[:, :, :end], self.v_cache[:, :, :end]
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=self.kv_heads != self.heads)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MidLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.hidden_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = Mlp(cfg)

    def inputs(self, emb, hidden):
        """The attention's 2d-wide input: [norm(token embedding), norm(hidden)]."""
        return torch.cat([self.input_layernorm(emb), self.hidden_norm(hidden)], dim=-1)

    def finish(self, hidden):
        """The MLP half of the layer, after the attention's residual."""
        return hidden + self.mlp(self.post_attention_layernorm(hidden))

    def forward(self, emb, hidden, cos, sin, mask):
        return self.finish(hidden + self.self_attn(self.inputs(emb, hidden), cos, sin, mask))


class Eagle3(nn.Module):
    """The drafter: call `extend(features_or_hidden, tokens)`; it returns output hidden states [1, n, d].
    `layers` are the target's hidden_states indices it reads (the inputs of layers 2, L//2, L-3 unless the
    checkpoint names others)."""

    def __init__(self, cfg: LlamaConfig, target_hidden: int, layers: list[int] | None = None):
        super().__init__()
        self.config, self.layers = cfg, layers
        self.fc = nn.Linear(3 * target_hidden, cfg.hidden_size, bias=False)
        self.midlayer = MidLayer(cfg)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        draft_vocab = getattr(cfg, "draft_vocab_size", None) or cfg.vocab_size
        self.lm_head = nn.Linear(cfg.hidden_size, draft_vocab, bias=False)
        self.own_head = draft_vocab != cfg.vocab_size  # trained its own head (a checkpoint that stores lm_head)
        self.register_buffer("d2t", torch.zeros(draft_vocab, dtype=torch.long))
        self.register_buffer("t2d", torch.ones(cfg.vocab_size, dtype=torch.bool))
        self.rotary = LlamaRotaryEmbedding(cfg)
        self.inv_freq32 = self.rotary.inv_freq.float().clone()  # a plain attribute: casts leave it alone
        self.embed_tokens = None  # the target's input embedding, attached at load time (frozen, not stored)
        self.speculator: VocabSpeculator | None = None  # SpecVocab's, when the checkpoint has one
        self.frequent: torch.Tensor | None = None  # token ids by corpus frequency, for FR-Spec slices
        self.heads: dict = {}

    def extend(self, hidden: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        """Append n positions: `hidden` [1, n, 3*target_d] target features or [1, n, d] own outputs, `tokens` [1, n]
        the next tokens, `positions` [1, n]. `mask` [n, past + n] (True = attend) replaces causal attention, e.g.
        for tree nodes that see only their ancestors."""
        if hidden.shape[-1] != self.config.hidden_size:
            hidden = self.fc(hidden.to(self.fc.weight.dtype))
        emb = self.embed_tokens(tokens).to(hidden.dtype)
        cos, sin = self.rotary(hidden, positions)
        n, past = tokens.shape[1], self.midlayer.self_attn.length
        if mask is None:
            mask = torch.ones(n, past + n, dtype=torch.bool, device=tokens.device).tril(past)
        return self.midlayer(emb, hidden, cos, sin, mask[None, None])

    def crop(self, length: int) -> None:
        self.midlayer.self_attn.length = length

    def _apply(self, fn, recurse=True):
        """Casting the drafter (to float16, say) must not round RoPE's frequencies: transformers keeps rotary
        tables in float32 (a float16 inv_freq puts cos off by 0.25 at position 4000)."""
        super()._apply(fn, recurse)
        device = self.rotary.inv_freq.device
        self.rotary.inv_freq, self.rotary.original_inv_freq = self.inv_freq32.to(device), self.inv_freq32.to(device)
        return self


# --- heads: from the drafter's hidden state to target-vocabulary logits ----------------------------------


HEADS = ("full", "reduced", "frspec", "specvocab")  # and, as a method option, "checkpoint": the one it was trained with


class Head:
    """Logits over the target vocabulary [n, V]; tokens the head cannot propose get -inf."""

    def __init__(self, kind: str, drafter: Eagle3, target, k: int = 0, frequent: torch.Tensor | None = None,
                 speculator: nn.Module | None = None):
        if kind not in HEADS:
            raise ValueError(f"head {kind!r}; valid choices: {', '.join(HEADS)}")
        self.kind, self.k, self.speculator = kind, k, speculator
        self.full = target.get_output_embeddings().weight  # [V, d_target]; tied drafter heads need d == d_target
        self.vocab = self.full.shape[0]
        if kind != "reduced" and drafter.config.hidden_size != self.full.shape[1]:
            raise ValueError(f"head {kind!r} reuses the target's output embedding (width {self.full.shape[1]}), but the "
                             f"drafter's width is {drafter.config.hidden_size}; use head 'reduced'")
        if kind in ("frspec", "specvocab") and k < 1:
            raise ValueError(f"head {kind!r} needs head_size >= 1 (frspec: tokens kept; specvocab: candidates per step)")
        if kind == "reduced":
            self.weight = drafter.lm_head.weight
            self.ids = torch.arange(len(drafter.d2t), device=drafter.d2t.device) + drafter.d2t
        elif kind == "frspec":
            if frequent is None:
                raise ValueError(f"head frspec needs token frequencies: the drafter's folder has no {FREQUENT}; make one "
                                 "with `python -m harness.train.frspec --tokenizer TARGET --corpus FILE --out PATH` and "
                                 "set pair.eagle.frequent_tokens=PATH")
            self.ids = frequent.to(self.full.device)
            self.weight = self.full[self.ids]
        elif kind == "specvocab" and speculator is None:
            raise ValueError("head specvocab needs a vocabulary speculator: the drafter checkpoint has no "
                             "speculator.down/speculator.vocab weights; train one with `python -m "
                             "harness.train.speculator --pair PAIR --out PATH` and set pair.eagle.speculator=PATH")

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        h = h.to(self.full.dtype)
        if self.kind == "full":
            return (h @ self.full.T).float()
        if self.kind == "specvocab":
            approx = self.speculator(h)  # [n, V] cheap low-rank logits
            ids = approx.topk(self.k, dim=-1).indices  # [n, k]
            exact = torch.einsum("nd,nkd->nk", h, self.full[ids])  # gather-dot of k head rows
            return torch.full((h.shape[0], self.vocab), -torch.inf, device=h.device).scatter_(1, ids, exact.float())
        logits = torch.full((h.shape[0], self.vocab), -torch.inf, device=h.device)
        return logits.index_copy_(1, self.ids, (h @ self.weight.T).float())


class VocabSpeculator(nn.Module):
    """SpecVocab's approximate logits: Down(d -> d') then Vocab(d' -> |V|)."""

    def __init__(self, d: int, rank: int, vocab: int):
        super().__init__()
        self.down = nn.Linear(d, rank, bias=False)
        self.vocab = nn.Linear(rank, vocab, bias=False)

    def forward(self, h):
        return self.vocab(self.down(h))


# --- loading the official checkpoint format -----------------------------------------------------------------


FREQUENT = "frequent_tokens.json"  # target token ids by descending corpus frequency (FR-Spec's slices)


INDEX = "model.safetensors.index.json"  # sharded checkpoints: {"weight_map": {tensor name: shard file}}


def read_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    if (folder / "model.safetensors").exists():
        return load_file(str(folder / "model.safetensors"))
    if (folder / INDEX).exists():
        shards = sorted(set(json.loads((folder / INDEX).read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(str(folder / shard)).items()}
    if (folder / "pytorch_model.bin").exists():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder} has none of model.safetensors, {INDEX}, pytorch_model.bin")


def load_eagle3(folder: str | Path, target, dtype=None, speculator: str | Path | None = None,
                frequent: str | Path | None = None) -> Eagle3:
    """An EAGLE-3 checkpoint folder (official format) attached to `target` (its embedding, feature width).
    `speculator` (a safetensors file of speculator.* weights) and `frequent` (a FREQUENT file) add what an official
    checkpoint ships without: SpecVocab's speculator (harness.train.speculator) and FR-Spec's token frequencies
    (harness.train.frspec); by default they are read from the folder when there."""
    folder = Path(folder)
    raw = json.loads((folder / "config.json").read_text())
    cfg = LlamaConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "model_type")})
    cfg.draft_vocab_size = raw.get("draft_vocab_size") or raw["vocab_size"]
    target_cfg = target.config.get_text_config()
    target_hidden = raw.get("target_hidden_size") or target_cfg.hidden_size
    if target_hidden != target_cfg.hidden_size or raw["vocab_size"] != target_cfg.vocab_size:
        raise ValueError(f"EAGLE-3 checkpoint {folder} expects a target with hidden size {target_hidden} and vocabulary "
                         f"{raw['vocab_size']}; this target has {target_cfg.hidden_size} and {target_cfg.vocab_size}")
    drafter = Eagle3(cfg, target_hidden, feature_layers(target_cfg.num_hidden_layers, raw))
    state = {k: v for k, v in read_weights(folder).items() if not k.startswith("embed_tokens")}
    spec = {k.removeprefix("speculator."): state.pop(k) for k in list(state) if k.startswith("speculator.")}
    if speculator is not None:
        from safetensors.torch import load_file

        spec = {k.removeprefix("speculator."): v for k, v in load_file(str(speculator)).items()}
    if "t2d" in state:  # the official checkpoints store d2t as offsets and t2d as a mask
        state["t2d"] = state["t2d"].bool()
    tied = "lm_head.weight" not in state and cfg.draft_vocab_size == cfg.vocab_size
    if tied:  # a full-vocabulary head stored without its weight: the target's own output embedding (frozen)
        drafter.lm_head.weight = target.get_output_embeddings().weight
    drafter.own_head = not tied
    missing, unexpected = drafter.load_state_dict(state, strict=False)
    missing = [m for m in missing if m not in ("d2t", "t2d") and not m.startswith("rotary") and not (tied and m == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"EAGLE-3 checkpoint {folder}: missing {missing}, unexpected {unexpected}")
    if spec:  # ours: SpecVocab's vocabulary speculator stored next to the drafter
        drafter.speculator = VocabSpeculator(cfg.hidden_size, spec["down.weight"].shape[0], spec["vocab.weight"].shape[0])
        drafter.speculator.load_state_dict(spec)
    frequent = Path(frequent) if frequent is not None else folder / FREQUENT
    if frequent.exists() or frequent != folder / FREQUENT:  # a named file must exist
        drafter.frequent = torch.tensor(json.loads(frequent.read_text()), dtype=torch.long)
    drafter.embed_tokens = target.get_input_embeddings()
    return drafter.to(device=devices(target)[0], dtype=dtype or target.dtype).eval()


# --- which head drafts ------------------------------------------------------------------------------------------


def checkpoint_head(eagle: Eagle3) -> str:
    """The head the checkpoint was trained with: its own lm_head (`reduced`, mapped through d2t), or `full` when
    it stores none and drafts with the target's output embedding."""
    return "reduced" if eagle.own_head else "full"


def head_for(eagle: Eagle3, target, kind: str, size: int) -> Head:
    """The head of this kind, built once per drafter (FR-Spec's slice copies `size` rows of the full head)."""
    key = (kind, size)
    if key not in eagle.heads:
        frequent = eagle.frequent[:size] if kind == "frspec" and eagle.frequent is not None else None
        if kind == "frspec" and frequent is not None:
            eos = target.generation_config.eos_token_id
            eos = eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else []
            frequent = torch.unique(torch.cat([frequent, torch.tensor(eos, dtype=frequent.dtype)]))
        eagle.heads[key] = Head(kind, eagle, target, k=size, frequent=frequent, speculator=eagle.speculator)
    return eagle.heads[key]
