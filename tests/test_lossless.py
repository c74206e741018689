"""Speculative decoding must reproduce autoregressive greedy output token for token."""
from __future__ import annotations

import pytest
import torch

from methods import DecodeSettings, Models, Prompt, get_method
from tests.conftest import perturbed, tiny_llama

TARGET = tiny_llama(0)
DRAFTS = {
    "identical": TARGET,  # every draft accepted: full blocks and bonus tokens
    "close": perturbed(TARGET, 0.05, 1),  # partial acceptance
    "unrelated": tiny_llama(7),  # mostly rejected
}
PROMPTS = [torch.tensor([ids]) for ids in ([5, 17, 3, 42], [1], list(range(10, 40)), [88, 88, 88, 2, 9])]


def decode(method: str, draft, prompt, settings, **options) -> list[int]:
    return get_method(method)(Models(TARGET, draft), Prompt({"input_ids": prompt}), settings, None, **options).tokens[0]


@pytest.mark.parametrize("draft", list(DRAFTS))
@pytest.mark.parametrize("gamma", range(1, 9))
def test_sd_greedy_equals_ar(draft, gamma):
    settings = DecodeSettings(max_new_tokens=37)  # 37: the budget ends inside a block for most gammas
    for prompt in PROMPTS:
        ar = decode("ar", None, prompt, settings)
        assert len(ar) == 37
        assert decode("sd", DRAFTS[draft], prompt, settings, gamma=gamma) == ar


@pytest.mark.parametrize("gamma", [3, 5, 8])
def test_eos_inside_a_draft_block(gamma):
    """Stop at the first EOS exactly as ar does, even when it is accepted mid-block."""
    prompt = PROMPTS[0]
    free = decode("ar", None, prompt, DecodeSettings(max_new_tokens=40))
    for position in (1, 6, 13):
        eos = free[position]
        settings = DecodeSettings(max_new_tokens=40, eos_token_ids=(eos,))
        ar = decode("ar", None, prompt, settings)
        assert ar[-1] == eos and eos not in ar[:-1]
        for draft in DRAFTS.values():
            assert decode("sd", draft, prompt, settings, gamma=gamma) == ar


def test_max_new_tokens_one_and_mid_block():
    prompt = PROMPTS[2]
    for n in (1, 2, 6, 7, 11):
        settings = DecodeSettings(max_new_tokens=n)
        ar = decode("ar", None, prompt, settings)
        assert len(ar) == n
        assert decode("sd", DRAFTS["identical"], prompt, settings, gamma=5) == ar


def test_sd_statistics_are_consistent():
    settings = DecodeSettings(max_new_tokens=30)
    result = get_method("sd")(Models(TARGET, DRAFTS["identical"]), Prompt({"input_ids": PROMPTS[0]}), settings, None,
                              gamma=4)
    s = result.stats
    assert s["target_calls"] == 1 + len(s["accepted"])  # prefill + one verification per block
    assert sum(s["accepted"]) + len(s["accepted"]) + 1 == len(result.tokens[0])  # accepted + one per block + first
    assert all(a == d for a, d in zip(s["accepted"], s["drafted"]))  # identical draft: everything accepted
    assert s["prefill_s"] > 0 and s["decode_s"] > 0


def test_sd_rejects_bad_gamma_and_empty_prompt():
    with pytest.raises(ValueError, match="gamma"):
        decode("sd", TARGET, PROMPTS[0], DecodeSettings(max_new_tokens=4), gamma=0)
    with pytest.raises(ValueError, match="input_ids"):
        decode("ar", None, torch.zeros(1, 0, dtype=torch.long), DecodeSettings(max_new_tokens=4))
    with pytest.raises(ValueError, match="unknown method 'nope'; valid choices: ar, eagle, .*sd, specvocab, tabed"):
        get_method("nope")


@pytest.mark.parametrize("draft", list(DRAFTS))
@pytest.mark.parametrize("width", [1, 2])
def test_blocks_that_end_where_the_draft_is_unsure_stay_lossless(draft, width):
    """confidence > 0 (transformers' assistant_confidence_threshold): blocks end early, of varying length, and the
    output is still ar's."""
    settings = DecodeSettings(max_new_tokens=37)
    lengths = set()
    for prompt in PROMPTS:
        ar = decode("ar", None, prompt, settings)
        result = get_method("sd")(Models(TARGET, DRAFTS[draft]), Prompt({"input_ids": prompt}), settings, None, gamma=8,
                                  tree_width=width, confidence=0.5)
        assert result.tokens[0] == ar
        lengths |= set(result.stats["drafted"])
    assert len(lengths) > 1 and min(lengths) < 8  # blocks did end early
    with pytest.raises(ValueError, match="confidence"):
        decode("sd", TARGET, PROMPTS[0], settings, confidence=1.5)
