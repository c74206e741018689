"""transformers' assisted generation (`hf_assisted`) and prompt lookup (`hf_pld`) as peers: greedy output
equals `ar` token for token, and the hook-counted statistics add up."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from omegaconf import OmegaConf

from harness.models import load_pair
from methods import DecodeSettings, Models, Prompt, get_method
from tests.conftest import ROOT, perturbed, tiny_llama

TARGET = tiny_llama(0)
DRAFTS = {"identical": perturbed(TARGET, 0.0, 0), "close": perturbed(TARGET, 0.05, 1), "unrelated": tiny_llama(7)}
PROMPTS = [torch.tensor([ids]) for ids in ([5, 17, 3, 42], [1], list(range(10, 40)), [88, 88, 88, 2, 9])]


def decode(method: str, draft, prompt, settings, generator=None, **options):
    return get_method(method)(Models(TARGET, draft), Prompt({"input_ids": prompt}), settings, generator, **options)


def check_stats(result, identical: bool = False):
    s, n = result.stats, len(result.tokens[0])
    assert len(s["accepted"]) == len(s["drafted"]) == s["target_calls"]  # the first call verifies a block too
    assert sum(s["accepted"]) + s["target_calls"] == n  # accepted drafts + one target token per call
    assert all(0 <= a <= d for a, d in zip(s["accepted"], s["drafted"]))
    assert n / s["target_calls"] >= 1
    assert s["prefill_s"] > 0 and s["decode_s"] >= 0
    if identical:
        assert s["accepted"] == s["drafted"]


@pytest.mark.parametrize("draft", list(DRAFTS))
@pytest.mark.parametrize("gamma", [1, 3, 5])
def test_hf_assisted_greedy_equals_ar(draft, gamma):
    settings = DecodeSettings(max_new_tokens=37)
    for prompt in PROMPTS:
        ar = decode("ar", None, prompt, settings).tokens
        result = decode("hf_assisted", DRAFTS[draft], prompt, settings, gamma=gamma)
        assert result.tokens == ar
        check_stats(result, identical=draft == "identical")
        assert result.stats["draft_calls"] >= sum(result.stats["drafted"])


@pytest.mark.parametrize("gamma", [2, 5])
def test_hf_pld_greedy_equals_ar(gamma):
    settings = DecodeSettings(max_new_tokens=37)
    for prompt in PROMPTS:
        result = decode("hf_pld", None, prompt, settings, gamma=gamma)
        assert result.tokens == decode("ar", None, prompt, settings).tokens
        check_stats(result)
        assert result.stats["draft_calls"] == 0


def test_eos_and_budget_like_ar():
    prompt = PROMPTS[0]
    free = decode("ar", None, prompt, DecodeSettings(max_new_tokens=40)).tokens[0]
    for position in (1, 6, 13):
        settings = DecodeSettings(max_new_tokens=40, eos_token_ids=(free[position],))
        ar = decode("ar", None, prompt, settings).tokens
        for method, draft in (("hf_assisted", DRAFTS["identical"]), ("hf_pld", None)):
            assert decode(method, draft, prompt, settings, gamma=5).tokens == ar
    for n in (1, 6):
        assert decode("hf_assisted", DRAFTS["identical"], prompt, DecodeSettings(max_new_tokens=n), gamma=5).tokens \
            == [free[:n]]


def test_sampling_is_seeded_by_the_generator():
    settings = DecodeSettings(max_new_tokens=20, temperature=0.8, top_p=0.9)

    def run(seed):
        return decode("hf_assisted", DRAFTS["close"], PROMPTS[0], settings, torch.Generator().manual_seed(seed),
                      gamma=3).tokens

    assert run(0) == run(0) and run(0) != run(1)


def test_model_generation_configs_are_restored():
    draft = DRAFTS["close"]
    before = (TARGET.generation_config, draft.generation_config)
    decode("hf_assisted", draft, PROMPTS[0], DecodeSettings(max_new_tokens=5), gamma=3)
    assert (TARGET.generation_config, draft.generation_config) == before


def test_draft_must_be_a_separate_generation_model():
    class Plain(torch.nn.Module):
        def forward(self, input_ids, **kw):
            raise AssertionError("never called")

    with pytest.raises(TypeError, match="Plain.*not a transformers GenerationMixin"):
        decode("hf_assisted", Plain(), PROMPTS[0], DecodeSettings(max_new_tokens=4))
    with pytest.raises(ValueError, match="draft is the target"):
        decode("hf_assisted", TARGET, PROMPTS[0], DecodeSettings(max_new_tokens=4))
    with pytest.raises(ValueError, match="gamma"):
        decode("hf_pld", None, PROMPTS[0], DecodeSettings(max_new_tokens=4), gamma=0)


def test_llava_target_with_images(llava_pair_dir):
    """Assisted generation passes pixel_values to both LLaVA models and equals ar; prompt lookup refuses images."""
    cfg = OmegaConf.create({"name": "tiny-llava", "target": {"id": str(llava_pair_dir / "target")},
                            "draft": {"id": str(llava_pair_dir / "draft")}, "captioner": {"id": "draft"}})
    pair = load_pair(cfg, torch.device("cpu"), torch.float32)
    prompt = pair.encode([{"role": "user", "content": "What is this?", "n_images": 1}],
                         [Image.new("RGB", (40, 40), "red")])
    settings = DecodeSettings(max_new_tokens=16)
    ar = get_method("ar")(pair.models, prompt, settings).tokens
    result = get_method("hf_assisted")(pair.models, prompt, settings, None, gamma=3)
    assert result.tokens == ar
    check_stats(result)
    with pytest.raises(NotImplementedError, match="hf_pld does not support image prompts"):
        get_method("hf_pld")(pair.models, prompt, settings, None, gamma=3)


def test_embedded_pair_equals_ar():
    """The real SmolLM2-135M-Instruct pair: its chat prompt contains its EOS token (<|im_end|> ends each turn),
    which must not be masked as padding, and its own generation config is set aside for the call."""
    pair = load_pair(OmegaConf.load(ROOT / "conf/pair/smollm2-135m__smol-draft.yaml"), torch.device("cpu"), torch.float32)
    settings = DecodeSettings(max_new_tokens=16, eos_token_ids=pair.eos_token_ids)
    prompt = pair.encode([{"role": "user", "content": "Name three colours of the rainbow."}])
    ar = get_method("ar")(pair.models, prompt, settings).tokens
    for method in ("hf_assisted", "hf_pld"):
        result = get_method(method)(pair.models, prompt, settings, None, gamma=4)
        assert result.tokens == ar
        check_stats(result)


def test_plain_generate_and_transformers_default_assisted_shape_equal_ar():
    """hf_generate (what a user runs without speculation) and hf_assisted at transformers' own defaults (20 tokens,
    confidence 0.4) decode ar's tokens; a bad schedule names the valid ones."""
    settings = DecodeSettings(max_new_tokens=30)
    for prompt in PROMPTS:
        ar = decode("ar", None, prompt, settings).tokens
        plain = decode("hf_generate", None, prompt, settings)
        assert plain.tokens == ar and plain.stats["target_calls"] == 30 and sum(plain.stats["drafted"]) == 0
        assisted = decode("hf_assisted", DRAFTS["close"], prompt, settings, gamma=20, confidence=0.4)
        assert assisted.tokens == ar
        check_stats(assisted)
    with pytest.raises(ValueError, match="schedule='fast'; valid choices: constant, heuristic"):
        decode("hf_assisted", DRAFTS["close"], PROMPTS[0], settings, schedule="fast")
