"""Step costs timed by forward hooks, apart from a cell's decode times: what each one measures, and when it
cannot measure."""
import pytest
import torch
from torch import nn

from harness.latency import DECODES, STEP_TOKENS, forward_timer, step_costs
from methods import DecodeSettings, Models, Prompt, get_method
from tests.conftest import perturbed, tiny_llama

TARGET = tiny_llama(0)
PAIR = Models(TARGET, perturbed(TARGET, 0.05, 1))
PROMPT = Prompt({"input_ids": torch.tensor([[5, 17, 3, 42]])})


def test_forward_timer_clocks_every_forward_and_removes_its_hooks():
    with forward_timer(PAIR) as calls:
        get_method("ar")(PAIR, PROMPT, DecodeSettings(max_new_tokens=5))
    assert [(who, n) for who, n, _, _ in calls] == [("target", 4)] + [("target", 1)] * 4
    assert all(dt > 0 for *_, dt in calls) and [t for _, _, t, _ in calls] == sorted(t for _, _, t, _ in calls)
    assert not TARGET._forward_hooks and not TARGET._forward_pre_hooks


@pytest.mark.parametrize("width", [1, 2])
def test_sd_step_costs_time_the_verification_of_its_blocks(width):
    costs = step_costs(PAIR, get_method("sd"), {"gamma": 3, "tree_width": width}, PROMPT,
                       DecodeSettings(max_new_tokens=100))
    assert costs["verify_tokens"] == 1 + 3 * width  # gamma + 1 tokens for a chain
    assert min(costs["t_target_ms"], costs["t_draft_ms"], costs["t_verify_ms"]) > 0
    assert costs["draft_forwards_per_step"] == 1
    assert costs["c"] == pytest.approx(costs["t_draft_ms"] / costs["t_target_ms"])
    assert costs["v"] == pytest.approx(costs["t_verify_ms"] / costs["t_target_ms"])
    assert (costs["decodes"], costs["new_tokens"], costs["prompt_tokens"]) == (DECODES, STEP_TOKENS, 4)


def test_an_early_eos_does_not_cut_the_timing_decodes():
    first = get_method("ar")(PAIR, PROMPT, DecodeSettings(max_new_tokens=1)).tokens[0][0]
    costs = step_costs(PAIR, get_method("sd"), {"gamma": 3}, PROMPT, DecodeSettings(eos_token_ids=(first,)))
    assert costs["verify_tokens"] == 4 and costs["t_target_ms"] > 0


def test_what_cannot_be_timed_says_why():
    settings = DecodeSettings(max_new_tokens=8)
    assert step_costs(PAIR, get_method("ar"), {}, PROMPT, settings) == {
        "skipped": "the method ran no draft step with the draft model"}
    assert step_costs(Models(TARGET), get_method("ar"), {}, PROMPT, settings) == {"skipped": "no draft model to time"}
    eagle = step_costs(Models(TARGET, eagle=nn.Linear(2, 2)), get_method("eagle"), {}, PROMPT, settings)
    assert "EAGLE drafter" in eagle["skipped"] and "hooks" in eagle["skipped"]
    one = step_costs(PAIR, get_method("sd"), {"gamma": 3}, PROMPT, DecodeSettings(max_new_tokens=1))
    assert "skipped" in one


@pytest.mark.parametrize("batched,forwards", [(True, 1), (False, 2)])
def test_a_tabed_draft_step_costs_every_forward_of_the_step(batched, forwards):
    """TABED's two modes of an image prompt: one batched forward a step, or one forward per mode."""
    from tests.test_tabed import IDS, PIXELS, SMALL_DRAFT, SMALL_TARGET, NewlineTokenizer

    prompt = Prompt({"input_ids": IDS, "pixel_values": PIXELS})
    costs = step_costs(Models(SMALL_TARGET, SMALL_DRAFT, NewlineTokenizer()), get_method("tabed"),
                       {"gamma": 3, "drafts": "MT", "batched": batched}, prompt, DecodeSettings())
    assert costs["draft_forwards_per_step"] == forwards and costs["verify_tokens"] == 4
    assert costs["c"] == pytest.approx(forwards * costs["t_draft_ms"] / costs["t_target_ms"])
