"""smol-llama-draft: smol-draft's language model as a plain LlamaForCausalLM, which any engine can load.

smol-draft (cards/smol-draft.md) is a custom class that vLLM cannot load. Its language model, though, is Llama
blocks between a projected embedding and a head over an 8,192-token draft vocabulary, and folds exactly into a
plain `LlamaForCausalLM` with the target's 49,152-token vocabulary:

- input embedding = smol-draft's `proj` applied to the target's (frozen) embedding table: one 49152 x 256 table;
- decoder layers and final norm = smol-draft's own;
- output head = smol-draft's head rows at their target ids, zero rows elsewhere (logit 0 where smol-draft had
  -inf: a token outside the draft vocabulary is drafted only when every draft-vocabulary logit is below 0).

What does not fold is smol-draft's copy-by-suffix-match, so this draft agrees with the target less often (card:
tau 1.77 against smol-draft's 1.94 with sd gamma 3 on 6 zoo-eval prompts). It is built on first use from the
committed smol-draft weights and the target's embedding, into the cache beside the target's converted copy: no
new weights are committed and no hub is needed; vLLM's `draft_model` and our `sd` read the same folder.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from harness.zoo import smol_draft, smollm2


def folder() -> Path:
    """The draft's folder (config.json, model.safetensors, tokenizer), built once per smol-draft weights (by hash)."""
    weights = smol_draft.WEIGHTS_DIR / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12] if weights.exists() else "missing"
    target = smollm2.cache_root() / f"smol-llama-draft-{digest}"
    if (target / "model.safetensors").exists():
        return target
    model = fold(smol_draft.load(torch.float32)[0])
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(smollm2.converted_dir()).save_pretrained(tmp)
    if target.exists():  # a concurrent build won the race
        shutil.rmtree(tmp)
    else:
        tmp.rename(target)
    return target


@torch.no_grad()
def fold(draft: smol_draft.SmolDraft) -> LlamaForCausalLM:
    """smol-draft's language model as a LlamaForCausalLM over all target ids (module docstring)."""
    config = draft.config
    config.tie_word_embeddings = False
    model = LlamaForCausalLM(config).eval()
    model.model.embed_tokens.weight.copy_(draft.proj(draft.embed.weight))
    model.model.layers.load_state_dict(draft.model.layers.state_dict())
    model.model.norm.load_state_dict(draft.model.norm.state_dict())
    model.lm_head.weight.zero_()
    model.lm_head.weight[draft.vocab_ids] = draft.head.weight
    model.generation_config = draft.generation_config
    return model


def load(dtype: torch.dtype):
    path = folder()
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval(), AutoTokenizer.from_pretrained(path)
