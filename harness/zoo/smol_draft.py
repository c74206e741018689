"""smol-draft: a small independent draft for the embedded SmolLM2-135M-Instruct target.

Two parts, combined in the draft's logits:

1. A small LM distilled from the target (nanoGPT-sized, built from transformers' Llama blocks so that
   `DynamicCache` and its `crop` work unchanged):

       target token id --(target's frozen 49152x576 embedding)--> 576 --(proj)--> d
           --> `num_hidden_layers` Llama decoder layers at width d --> RMSNorm --> head d x N
           --> logits scattered to the target's 49152 ids (-inf outside the N-token draft vocabulary)

   The input embedding is the target's own table, read from the target's weights at load time and never
   stored here: any target id (prompt, correction) can be fed in, and the weight file stays small. The
   output vocabulary is the N tokens most frequent in the target's own answers (EOS included), so a draft
   step never pays for SmolLM2's full 576x49152 head. Decoding (a cache, no gradients) runs the same
   weights through a fused path (`decode_hidden`) instead of LlamaModel, which training uses.

2. Copy by suffix match (as in prompt-lookup decoding): when the last `copy_min_match`..`copy_max_match`
   tokens occurred earlier in the sequence (prompt or answer), the token that followed the longest, most
   recent such occurrence gets the logit `max + copy_bonus`, so it is drafted. SmolLM2 repeats the prompt's
   words and its own phrases often; on held-out prompts this lifts the draft's agreement with the target
   far more than a bigger LM would (see cards/smol-draft.md). The draft keeps each cache's token history in
   its own state (a weak map from cache to ids: a history goes when its cache does), truncated to the cache's
   length on every call, so cropping the cache rolls the history back too.

Files in `weights/smol-draft/`: `config.json` (sizes) and `model.safetensors` (fp16 weights written by
`python -m harness.train.draft`, plus the int32 `vocab_ids` map).
"""
from __future__ import annotations

import json
import weakref
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, GenerationConfig, GenerationMixin, LlamaConfig, LlamaModel, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from harness import HarnessError
from harness.packing import PackedLinear
from harness.zoo import smollm2

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "smol-draft"
BUILD = "python -m harness.train.draft"

# Sizes of the committed draft; harness/train/draft.py may override them.
DEFAULT_CONFIG = dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                      intermediate_size=1024, n_draft_vocab=8192, embed_dim=576, target_vocab=49152,
                      rope_theta=100000.0, rms_norm_eps=1e-5, eos_token_id=2, bos_token_id=1,
                      copy_min_match=2, copy_max_match=4, copy_bonus=3.0)


def copy_candidates(history: torch.Tensor, n_last: int, min_match: int, max_match: int) -> torch.Tensor:
    """For each of the last `n_last` positions t of `history` [B, T]: the token that followed the most recent
    earlier occurrence of the longest suffix of history[:, :t+1] (between `min_match` and `max_match`
    tokens long); -1 where there is none. Returns [B, n_last].

    Runs on every draft step, so it scans with numpy (one vectorised pass finds the earlier occurrences of the
    last token, a short loop extends each) rather than a dozen small torch ops."""
    B, T = history.shape
    out = np.full((B, n_last), -1, dtype=np.int64)
    if min_match >= 1 and max_match >= min_match:
        for b, h in enumerate(history.cpu().numpy()):
            for j, t in enumerate(range(T - n_last, T)):
                best, best_end = 0, -1
                for e in np.flatnonzero(h[:t] == h[t])[::-1].tolist():  # most recent first: ties keep it
                    n = 1
                    while n < max_match and e >= n and h[e - n] == h[t - n]:
                        n += 1
                    if n > best:
                        best, best_end = n, e
                        if n == max_match:
                            break
                if best >= min_match:
                    out[b, j] = h[best_end + 1]
    return torch.from_numpy(out)


class SmolDraft(PreTrainedModel, GenerationMixin):
    """The draft model: a transformers causal LM (`input_ids`, `past_key_values`, `use_cache`, `logits_to_keep`;
    `.logits` over all `target_vocab` ids), so transformers' own assisted generation can use it too."""

    config_class = LlamaConfig
    _supports_cache_class = True

    def __init__(self, cfg: dict, vocab_ids: torch.Tensor, target_embed: torch.Tensor | None = None):
        super().__init__(self.llama_config(cfg))
        self.cfg = dict(cfg)
        self.generation_config = GenerationConfig(bos_token_id=cfg["bos_token_id"], eos_token_id=cfg["eos_token_id"],
                                                  pad_token_id=cfg["eos_token_id"])
        # The target's embedding table: frozen, and left out of the saved weights.
        self.embed = nn.Embedding(cfg["target_vocab"], cfg["embed_dim"])
        self.embed.weight.requires_grad_(False)
        if target_embed is not None:
            self.embed.weight.data.copy_(target_embed)
        self.proj = nn.Linear(cfg["embed_dim"], cfg["hidden_size"], bias=False)
        self.model = LlamaModel(self.config)
        self.model.embed_tokens = None  # inputs come through `embed` + `proj`
        self.head = nn.Linear(cfg["hidden_size"], cfg["n_draft_vocab"], bias=False)
        self.register_buffer("vocab_ids", vocab_ids.long().clone())
        self._fused = self._rotary = None  # decoding's fused weights and rotary table, built on first use
        self._history = weakref.WeakKeyDictionary()  # cache -> the token ids it holds (for copying)

    @staticmethod
    def llama_config(cfg: dict) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=cfg["target_vocab"], hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
            num_key_value_heads=cfg["num_key_value_heads"],
            rope_parameters={"rope_type": "default", "rope_theta": cfg["rope_theta"]}, rms_norm_eps=cfg["rms_norm_eps"],
            max_position_embeddings=8192, tie_word_embeddings=False,
            bos_token_id=cfg["bos_token_id"], eos_token_id=cfg["eos_token_id"], pad_token_id=cfg["eos_token_id"])

    def get_input_embeddings(self):
        return self.embed

    def hidden(self, input_ids, past_key_values=None, use_cache=False, attention_mask=None):
        if (use_cache and past_key_values is not None and not torch.is_grad_enabled()
                and (attention_mask is None or bool(attention_mask.all()))):
            return self.decode_hidden(input_ids, past_key_values)
        # training, padded batches, calls without a cache: the LlamaModel path
        x = self.proj(self.embed(input_ids))
        return self.model(inputs_embeds=x, past_key_values=past_key_values, use_cache=use_cache,
                          attention_mask=attention_mask).last_hidden_state

    def decode_hidden(self, input_ids: torch.Tensor, cache) -> torch.Tensor:
        """What `LlamaModel` computes for new tokens appended to `cache` with nothing masked (every draft step,
        ours or transformers' assisted generation, and prompts), with fewer operations: the input embedding
        and `proj` folded into one table, q/k/v and gate/up each one matmul, rotary angles from a table, one
        SDPA call per layer, and no mask building (a single new token attends to every cached position). It and
        the numpy copy scan cut the draft step's time (results/bench/latest.md, sections `design` and `kernels`).
        Same results as the LlamaModel path up to float rounding (tests/test_zoo.py); the cache is filled
        through its public `update`, so cropping works as before."""
        fused = self.fused_for_decoding()
        n, past = input_ids.shape[1], cache.get_seq_length()
        cos, sin = self.rotary_table(past + n)
        cos, sin = cos[None, past:past + n], sin[None, past:past + n]  # [1, n, head_dim]
        mask = None if n == 1 else torch.ones(n, past + n, dtype=torch.bool, device=input_ids.device).tril(past)
        heads, kv_heads, head_dim = fused["heads"]
        eps = self.config.rms_norm_eps
        x = fused["embed"][input_ids]  # [B, n, d]
        for i, layer in enumerate(fused["layers"]):
            q, k, v = layer["qkv"](F.rms_norm(x, x.shape[-1:], layer["norm1"], eps)).split(
                [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
            q, k, v = (t.unflatten(-1, (-1, head_dim)).transpose(1, 2) for t in (q, k, v))  # [B, h, n, head_dim]
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            k, v = cache.update(k, v, i)
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=kv_heads != heads)
            x = x + layer["o"](att.transpose(1, 2).flatten(2))
            gate, up = layer["gate_up"](F.rms_norm(x, x.shape[-1:], layer["norm2"], eps)).chunk(2, dim=-1)
            x = x + layer["down"](F.silu(gate) * up)
        return F.rms_norm(x, x.shape[-1:], self.model.norm.weight, eps)

    def fused_for_decoding(self) -> dict:
        """The fused weights `decode_hidden` multiplies by, built on first use from the current weights (after
        `pack_linears`, which they follow: packed when the model's linears are). Copies, like the packed
        weights: for decoding only, so the weights must not change afterwards."""
        if self._fused is not None:
            return self._fused
        packed = isinstance(self.head, PackedLinear)

        def linear(*weights):  # one nn.Linear over the stacked rows (made on "meta": no init to throw away)
            w = torch.cat([w.detach() for w in weights])
            fused = nn.Linear(w.shape[1], w.shape[0], bias=False, device="meta")
            fused.weight = nn.Parameter(w, requires_grad=False)
            return PackedLinear(fused) if packed else fused

        layers = []
        for layer in self.model.layers:
            att, mlp = layer.self_attn, layer.mlp
            layers.append(dict(norm1=layer.input_layernorm.weight.detach(), norm2=layer.post_attention_layernorm.weight.detach(),
                               qkv=linear(att.q_proj.weight, att.k_proj.weight, att.v_proj.weight),
                               o=linear(att.o_proj.weight), gate_up=linear(mlp.gate_proj.weight, mlp.up_proj.weight),
                               down=linear(mlp.down_proj.weight)))
        cfg = self.config
        self._fused = dict(embed=self.proj(self.embed.weight).detach(), layers=layers,
                           heads=(cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads))
        return self._fused

    def rotary_table(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin [positions, head_dim] from the model's own rotary embedding, for at least `length`
        positions (grown by doubling)."""
        table = self._rotary
        if table is None or table[0].shape[0] < length:
            size = max(1024, 2 ** (length - 1).bit_length())
            positions = torch.arange(size, device=self.device)[None]
            cos, sin = self.model.rotary_emb(self.embed.weight[:1, None], positions)
            self._rotary = table = (cos[0].to(self.dtype), sin[0].to(self.dtype))
        return table

    def forward(self, input_ids, past_key_values=None, use_cache=True, logits_to_keep=0, attention_mask=None, **_):
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        h = self.hidden(input_ids, past_key_values, use_cache, attention_mask)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        small = self.head(h)  # over the draft vocabulary; widened to all target ids, -inf outside it
        logits = small.new_full((*small.shape[:-1], self.config.vocab_size), float("-inf"))
        logits[..., self.vocab_ids] = small
        # Token history for copying: what this cache has seen (cropped with it), then the new tokens.
        seen = self._history.get(past_key_values) if past_key_values is not None else None
        if seen is not None and seen.shape[1] >= past and seen.shape[0] == input_ids.shape[0]:
            history = torch.cat([seen[:, :past].to(input_ids.device), input_ids], dim=1)
        else:  # a cache filled elsewhere: copy from what we were given
            history = input_ids
        if past_key_values is not None and use_cache:
            self._history[past_key_values] = history
        cand = copy_candidates(history.cpu(), logits.shape[1], self.cfg["copy_min_match"], self.cfg["copy_max_match"])
        rows, cols = (cand >= 0).nonzero(as_tuple=True)
        if len(rows):
            cand = cand.to(logits.device)
            logits[rows, cols, cand[rows, cols]] = small[rows, cols].max(dim=-1).values + self.cfg["copy_bonus"]
        return CausalLMOutputWithPast(logits=logits, past_key_values=past_key_values)

    def trained_state(self) -> dict:
        """The weights our training produced (everything but the target's embedding table)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("embed.")}


def target_embedding() -> torch.Tensor:
    """SmolLM2-135M-Instruct's input embedding (= its tied output head), read without loading the model."""
    with safe_open(str(smollm2.converted_dir() / "model.safetensors"), "pt") as f:
        return f.get_tensor("model.embed_tokens.weight").float()


def save(model: SmolDraft, folder: Path, dtype=torch.float16) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(torch.int32) if k == "vocab_ids" else v.to(dtype)).contiguous()
             for k, v in model.trained_state().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(model.cfg, indent=2) + "\n")


def load(dtype: torch.dtype = torch.float32, folder: Path = WEIGHTS_DIR):
    """(draft, target tokenizer): the loader registered as `embedded:smol-draft`."""
    if not (folder / "model.safetensors").exists():
        raise HarnessError(f"smol-draft weights are missing ({folder / 'model.safetensors'}); build them with:\n"
                           f"    {BUILD}")
    cfg = {**DEFAULT_CONFIG, **json.loads((folder / "config.json").read_text())}
    state = load_file(str(folder / "model.safetensors"))
    model = SmolDraft(cfg, state["vocab_ids"], target_embedding())
    missing = set(model.trained_state()) - set(state)
    if missing:
        raise HarnessError(f"{folder / 'model.safetensors'} lacks {sorted(missing)[:3]}; rebuild with:\n    {BUILD}")
    model.load_state_dict(state, strict=False)  # `embed` came from the target
    return model.to(dtype).eval(), AutoTokenizer.from_pretrained(smollm2.converted_dir())
