"""Replicas of the real checkpoints the pair configs name: random weights, but the published checkpoints'
transformers classes, file layouts, config keys, tokenizer files, chat templates and quirks, written offline (no hub).
The tests build them tiny (tests/replicas.py); `make gpu-check` (harness.gpu_check) builds the same ones at the real
hidden sizes on a GPU. A real pair config is checked only as far as its replica is faithful; each builder says what
it copies.

Facts come from the hub files of the checkpoints (see `../shared/reference/` and the issue that asked for them):
- llava-hf/llava-1.5-*-hf: `LlavaForConditionalGeneration`, `image_token_index` 32000 (= len(tokenizer) before the
  added `<image>`, `<pad>`), text vocab padded to a multiple of 64 (32064), CLIP-L/336 patch 14 -> 576 image tokens
  (`vision_feature_layer` -2, strategy "default", CLS dropped), float16, a Llama SentencePiece tokenizer with
  `legacy: false` and the chat template in `chat_template.json`; the older layout has no `processor_config.json`
  (so the processor knows no patch size);
- TABED's drafts (mjbooo/lvlm68m, lvlm160m-bf16): a smaller LLaVA with the same tokenizer and processor;
- EAGLE-3 (yuhuili/*): `config.json` with `draft_vocab_size`, no rope keys (RoPE base 10000), `pytorch_model.bin`
  holding fc / midlayer.* / norm / lm_head / d2t (int64 offsets) / t2d (bool), no embed_tokens; Vicuna's drafter has
  a full 32000-row head and `num_hidden_layers` 40 copied from its base; SpecForge exports are `model.safetensors`
  with architecture `LlamaForCausalLMEagle3` and sometimes `eagle_config.eagle_aux_hidden_state_layer_ids`;
  AngelSlim's Qwen3 drafters use the official names, `head_dim`, `rope_theta` 1e6 and bfloat16;
- Llama-3.1-8B-Instruct: llama3 RoPE scaling, untied head, bfloat16, three EOS ids, a header-style chat template
  that writes a knowledge-cutoff system block, 128,000 byte-level BPE tokens then 256 special ones
  (<|begin_of_text|> 128000, <|end_of_text|> 128001, <|eom_id|> 128008, <|eot_id|> 128009).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from harness import RESOURCES

LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
    "{{ '<|start_header_id|>system<|end_header_id|>\n\n' }}"
    "{{ 'Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n' + system + '<|eot_id|>' }}"
    "{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
# Llama-3's 256 special tokens in the hub's order (ids 128000-128255 after the 128,000 BPE tokens)
LLAMA3_SPECIALS = (["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
                    "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>",
                    "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
                   + [f"<|reserved_special_token_{i}|>" for i in range(3, 248)])
LLAMA3_EOS = ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")
# The tests' sizes (a few seconds on a CPU); harness.gpu_check passes the real ones
LLAVA_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
LLAVA_VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=336,
                    patch_size=14, projection_dim=16)
LLAMA31 = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2)


def corpus() -> list[str]:
    return [t for line in (RESOURCES / "datasets/zoo-prompts/train.jsonl").read_text().splitlines()[:400]
            for t in json.loads(line)["turns"]]


def sentencepiece_model(out: Path, vocab: int = 500) -> Path:
    """A Llama-style SentencePiece BPE model (byte fallback; <unk> 0, <s> 1, </s> 2) trained on the project's prompts."""
    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    text = out / "corpus.txt"
    text.write_text("\n".join(corpus()))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(out / "sp"), vocab_size=vocab, model_type="bpe",
                                   byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0,
                                   split_digits=True, minloglevel=2)
    return out / "sp.model"


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2))


def peaked(model, std: float | None = 0.3, seed: int = 0):
    """Random weights larger than the default init, so a tiny model's greedy outputs vary instead of repeating one
    token; `std` None keeps the config's init (at real widths it already varies, and larger weights overflow in
    half precision)."""
    if std is not None:
        torch.manual_seed(seed)
        for p in model.parameters():
            if p.ndim > 1:
                p.data.normal_(0, std)
    return model.eval()


# --- LLaVA-1.5 (llava-hf) and TABED's LLaVA drafts --------------------------------------------------------------


def sentencepiece_tokenizer(sp_model: Path, folder: Path, **config):
    """A folder holding only the SentencePiece model and a `LlamaTokenizer` config, as Llama-2-era repos ship."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(sp_model, folder / "tokenizer.model")
    token = lambda t: {"__type": "AddedToken", "content": t, "lstrip": False, "normalized": True, "rstrip": False,  # noqa: E731
                       "single_word": False}
    write_json(folder / "tokenizer_config.json", {
        "add_bos_token": True, "add_eos_token": False, "bos_token": token("<s>"), "eos_token": token("</s>"),
        "unk_token": token("<unk>"), "clean_up_tokenization_spaces": False, "model_max_length": 2048,
        "pad_token": None, "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer", **config})
    return folder


def llava_tokenizer(sp_model: Path, scratch: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(sentencepiece_tokenizer(sp_model, scratch, legacy=False, padding_side="left"))
    tok.add_special_tokens({"additional_special_tokens": ["<image>"], "pad_token": "<pad>"})  # 32000, 32001 on the hub
    return tok


def llava_model(tok, seed: int, text: dict | None = None, vision: dict | None = None, vocab: int = 0,
                std: float | None = 0.3):
    """A LLaVA-1.5 with `text` (Llama) and `vision` (CLIP) sizes over the tests' small defaults; its text vocabulary
    is the tokenizer's padded to a multiple of 64, or `vocab` rows when larger (the real 32064 over a tokenizer
    trained offline, which cannot learn 32,000 pieces from the project's prompts)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(**{**LLAVA_VISION, **(vision or {})})
    padded = max(-(-len(tok) // 64) * 64, vocab)  # 32002 tokens -> 32064 rows on the hub
    text = LlamaConfig(**{**LLAVA_TEXT, **(text or {})}, vocab_size=padded, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=tok.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
                         image_seq_length=(vision.image_size // vision.patch_size) ** 2)
    config.dtype = torch.float16
    model = peaked(LlavaForConditionalGeneration(config), std, seed)
    model.generation_config.bos_token_id, model.generation_config.eos_token_id = 1, 2
    model.generation_config.pad_token_id = tok.pad_token_id
    return model


def save_llava(model, tok, folder: Path, layout: str) -> Path:
    """`hub`: today's llava-hf files (processor_config.json with the patch geometry, chat_template.json); `legacy`: the
    older layout, no processor_config.json (the processor then has no patch size) and the template in its own json.
    The image processor resizes to the model's CLIP input (336 px for CLIP-L/336)."""
    from transformers import CLIPImageProcessor

    side = model.config.vision_config.image_size
    image_processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                         image_mean=[0.48145466, 0.4578275, 0.40821073],
                                         image_std=[0.26862954, 0.26130258, 0.27577711])
    save_model(model, folder)
    tok.save_pretrained(folder)
    image_processor.save_pretrained(folder)  # preprocessor_config.json
    if layout == "hub":
        write_json(folder / "processor_config.json", {
            "image_token": "<image>", "num_additional_image_tokens": 1, "patch_size": model.config.vision_config.patch_size,
            "processor_class": "LlavaProcessor", "vision_feature_select_strategy": "default"})
    write_json(folder / "chat_template.json", {"chat_template": LLAVA_TEMPLATE})
    config = json.loads((folder / "config.json").read_text())
    assert "image_token_index" in config, "the hub's key; transformers must keep writing it"
    return folder


def save_model(model, folder: Path) -> None:
    """Weights in the dtype the hub ships them in, with the config key the hub files carry (`torch_dtype`)."""
    model.to(getattr(torch, str(model.config.dtype).removeprefix("torch."))).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    for block in [config] + [v for v in config.values() if isinstance(v, dict) and "dtype" in v]:
        if "dtype" in block:
            block["torch_dtype"] = str(block.pop("dtype")).removeprefix("torch.")
    write_json(folder / "config.json", config)


# --- Llama-3.1-8B-Instruct --------------------------------------------------------------------------------------


def llama3_tokenizer(vocab: int = 128_256):
    """Llama-3.1's tokenizer layout at any size, built offline: byte-level BPE pieces learned from the project's
    prompts (the real 128,000 cannot be had without the hub), filler pieces up to `vocab` - 256, then the 256 special
    tokens in the hub's order (so at the real size <|begin_of_text|> is 128000 and <|eot_id|> 128009), BOS added in
    front as the hub's tokenizer.json does, the header-style chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    regular = vocab - len(LLAMA3_SPECIALS)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=min(regular, 4000), show_progress=False,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    learned = json.loads(bpe.to_str())["model"]
    pieces = sorted(learned["vocab"], key=learned["vocab"].get)
    pieces += [f"<|filler_{i}|>" for i in range(regular - len(pieces))]  # never produced by a merge
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(pieces)}, merges=merges))
    tok.pre_tokenizer, tok.decoder = bpe.pre_tokenizer, decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIALS])
    bos = LLAMA3_SPECIALS[0]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, regular)])
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token="<|eot_id|>")
    out.chat_template = LLAMA3_TEMPLATE
    return out


def llama31_model(tok, seed: int = 11, sizes: dict | None = None, std: float | None = 0.3):
    """A Llama-3.1-8B-Instruct with `sizes` over the tests' small defaults and a vocabulary of len(tok): llama3 RoPE
    scaling, untied head, bfloat16, its three EOS ids (by name in `tok`), the hub's sampling defaults in its
    generation config (the harness overrides them)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{**LLAMA31, **(sizes or {})}, vocab_size=len(tok), max_position_embeddings=131072,
                         rope_theta=500000.0,
                         rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192, "rope_type": "llama3"},
                         tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                         eos_token_id=[tok.convert_tokens_to_ids(t) for t in LLAMA3_EOS])
    config.dtype = torch.bfloat16
    torch.manual_seed(seed)
    model = peaked(LlamaForCausalLM(config), std, seed)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.update(do_sample=True, temperature=0.6, top_p=0.9)
    return model


def save_target(model, tok, folder: Path) -> Path:
    save_model(model, folder)
    tok.save_pretrained(folder)
    return folder


# --- EAGLE-3 drafters -------------------------------------------------------------------------------------------


def eagle3_checkpoint(folder: Path, target_folder: Path, draft_vocab: int | None = None, fmt: str = "bin",
                      embed: bool = False, extra_config: dict | None = None, seed: int = 0, head_dim: int | None = None,
                      std: float = 0.3) -> Path:
    """A drafter for the target in `target_folder`, written by name (not through our loader's classes): `fmt` bin
    (EAGLE's pytorch_model.bin) or safetensors (SpecForge's); a reduced head of `draft_vocab` rows over random target
    ids with d2t/t2d, or a full head when None; `embed` stores embed_tokens; weights N(0, `std`) (0.3 keeps a tiny
    drafter's guesses varied; real widths need about 0.02, or half precision overflows)."""
    target_cfg = json.loads((target_folder / "config.json").read_text())
    vocab, d = target_cfg["vocab_size"], target_cfg["hidden_size"]
    heads, kv = target_cfg["num_attention_heads"], target_cfg["num_key_value_heads"]
    hd = head_dim or d // heads
    inter = target_cfg["intermediate_size"]
    g = torch.Generator().manual_seed(seed)
    w = lambda *shape: torch.randn(*shape, generator=g) * std  # noqa: E731
    n = draft_vocab or vocab
    state = {"fc.weight": w(d, 3 * d),
             "midlayer.hidden_norm.weight": torch.ones(d), "midlayer.input_layernorm.weight": torch.ones(d),
             "midlayer.post_attention_layernorm.weight": torch.ones(d),
             "midlayer.self_attn.q_proj.weight": w(heads * hd, 2 * d), "midlayer.self_attn.k_proj.weight": w(kv * hd, 2 * d),
             "midlayer.self_attn.v_proj.weight": w(kv * hd, 2 * d), "midlayer.self_attn.o_proj.weight": w(d, heads * hd),
             "midlayer.mlp.gate_proj.weight": w(inter, d), "midlayer.mlp.up_proj.weight": w(inter, d),
             "midlayer.mlp.down_proj.weight": w(d, inter), "norm.weight": torch.ones(d), "lm_head.weight": w(n, d)}
    if draft_vocab:
        kept = torch.sort(torch.randperm(vocab, generator=g)[:draft_vocab]).values
        state["d2t"] = kept - torch.arange(draft_vocab)  # offsets: target id = draft id + d2t[draft id]
        state["t2d"] = torch.zeros(vocab, dtype=torch.bool).index_fill_(0, kept, True)
    if embed:
        state["embed_tokens.weight"] = w(vocab, d)
    dtype = torch.bfloat16 if (extra_config or {}).get("torch_dtype") == "bfloat16" else torch.float16
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "bin":
        torch.save(state, folder / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file(state, str(folder / "model.safetensors"))
    config = {"architectures": ["LlamaForCausalLM"], "bos_token_id": target_cfg.get("bos_token_id"),
              "eos_token_id": target_cfg.get("eos_token_id"), "hidden_act": "silu", "hidden_size": d,
              "initializer_range": 0.02, "intermediate_size": inter, "max_position_embeddings": 2048, "model_type": "llama",
              "num_attention_heads": heads, "num_key_value_heads": kv, "num_hidden_layers": 1, "pad_token_id": 0,
              "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "float16",
              "transformers_version": "4.28.1", "use_cache": True, "vocab_size": vocab, "draft_vocab_size": n}
    config.update(extra_config or {})
    write_json(folder / "config.json", config)
    return folder
