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
   step never pays for SmolLM2's full 576x49152 head.

2. Copy by suffix match (as in prompt-lookup decoding): when the last `copy_min_match`..`copy_max_match`
   tokens occurred earlier in the sequence (prompt or answer), the token that followed the longest, most
   recent such occurrence gets the logit `max + copy_bonus`, so it is drafted. SmolLM2 repeats the prompt's
   words and its own phrases often; on held-out prompts this lifts the draft's agreement with the target
   far more than a bigger LM would (see cards/smol-draft.md). The draft keeps the token history on the
   `DynamicCache` object it is given, truncated to the cache's length on every call, so cropping the cache
   rolls the history back too.

Files in `weights/smol-draft/`: `config.json` (sizes) and `model.safetensors` (fp16 weights written by
`python -m harness.zoo.train_draft`, plus the int32 `vocab_ids` map).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, GenerationConfig, GenerationMixin, LlamaConfig, LlamaModel, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from harness import HarnessError
from harness.zoo import smollm2

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "smol-draft"
BUILD = "python -m harness.zoo.train_draft"
HISTORY = "smol_draft_ids"  # attribute of the DynamicCache holding the token history

# Sizes of the committed draft; train_draft.py may override them.
DEFAULT_CONFIG = dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                      intermediate_size=1024, n_draft_vocab=8192, embed_dim=576, target_vocab=49152,
                      rope_theta=100000.0, rms_norm_eps=1e-5, eos_token_id=2, bos_token_id=1,
                      copy_min_match=2, copy_max_match=4, copy_bonus=3.0)


def copy_candidates(history: torch.Tensor, n_last: int, min_match: int, max_match: int) -> torch.Tensor:
    """For each of the last `n_last` positions t of `history` [B, T]: the token that followed the most recent
    earlier occurrence of the longest suffix of history[:, :t+1] (between `min_match` and `max_match`
    tokens long); -1 where there is none. Returns [B, n_last]."""
    B, T = history.shape
    out = torch.full((B, n_last), -1, dtype=torch.long)
    if min_match < 1 or max_match < min_match:
        return out
    for b in range(B):
        h = history[b]
        for j, t in enumerate(range(T - n_last, T)):
            ends = torch.arange(t, device=h.device)  # an earlier occurrence ending at e < t, followed by h[e+1]
            length, alive = torch.zeros(t, dtype=torch.long), torch.ones(t, dtype=torch.bool)
            for i in range(min(max_match, t + 1)):
                alive &= (ends >= i) & (h[(ends - i).clamp_min(0)] == h[t - i])
                length += alive
            if t and int(length.max()) >= min_match:
                e = int((length * T + ends).argmax())  # longest match, then the most recent
                out[b, j] = h[e + 1]
    return out


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
        x = self.proj(self.embed(input_ids))
        one_step = (x.shape[1] == 1 and use_cache and past_key_values is not None
                    and (attention_mask is None or bool(attention_mask.all())))
        if not one_step:  # prompts, blocks, padded batches, training: the full LlamaModel path
            return self.model(inputs_embeds=x, past_key_values=past_key_values, use_cache=use_cache,
                              attention_mask=attention_mask).last_hidden_state
        # One new token with nothing masked (a draft step, ours or transformers' assisted generation): the same
        # layers called directly, without LlamaModel's mask building (a query of one attends to every cached
        # position), which was a third of a draft step. Same numbers (tests/test_zoo.py).
        position = torch.full((1, 1), past_key_values.get_seq_length(), device=x.device)
        rope = self.model.rotary_emb(x, position)
        for layer in self.model.layers:
            x = layer(x, position_ids=position, past_key_values=past_key_values, use_cache=True, position_embeddings=rope)
        return self.model.norm(x)

    def lm_logits(self, input_ids, past_key_values=None, use_cache=True, logits_to_keep=0, attention_mask=None):
        """The LM part alone, over all target ids (-inf outside the draft vocabulary)."""
        h = self.hidden(input_ids, past_key_values, use_cache, attention_mask)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        small = self.head(h)
        logits = small.new_full((*small.shape[:-1], self.config.vocab_size), float("-inf"))
        logits[..., self.vocab_ids] = small
        return logits

    def forward(self, input_ids, past_key_values=None, use_cache=True, logits_to_keep=0, attention_mask=None, **_):
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        logits = self.lm_logits(input_ids, past_key_values, use_cache, logits_to_keep, attention_mask)
        # Token history for copying: what this cache has seen (cropped with it), then the new tokens.
        seen = getattr(past_key_values, HISTORY, None) if past_key_values is not None else None
        if seen is not None and seen.shape[1] >= past and seen.shape[0] == input_ids.shape[0]:
            history = torch.cat([seen[:, :past].to(input_ids.device), input_ids], dim=1)
        else:  # a cache filled elsewhere: copy from what we were given
            history = input_ids
        if past_key_values is not None and use_cache:
            setattr(past_key_values, HISTORY, history)
        cand = copy_candidates(history.cpu(), logits.shape[1], self.cfg["copy_min_match"], self.cfg["copy_max_match"])
        rows, cols = (cand >= 0).nonzero(as_tuple=True)
        if len(rows):
            cand = cand.to(logits.device)
            logits[rows, cols, cand[rows, cols]] = logits[rows, cols].max(dim=-1).values + self.cfg["copy_bonus"]
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
