"""Under sampling, speculative decoding must draw from exactly the target's distribution.

With a vocabulary of 8, the exact joint distribution of the first three new tokens is enumerated from
the target (8 + 64 prefixes), and a chi-square goodness-of-fit test compares it with thousands of `sd`
runs. The same test must reject samples drawn from the draft alone, which shows it has the power to fail.
"""
from __future__ import annotations


import pytest
import torch

from methods import DecodeSettings, Models, Prompt, get_method
from methods.core import probs_from_logits
from tests.conftest import tiny_llama

V = 8
TARGET = tiny_llama(3, vocab=V, hidden=16)
DRAFT = tiny_llama(4, vocab=V, hidden=16)  # unrelated: many rejections, residual sampling exercised
PROMPT = torch.tensor([[1, 5, 2]])
RUNS = 4000


def exact_joint(model, settings: DecodeSettings, n: int = 3) -> dict[tuple, float]:
    joint = {(): 1.0}
    for _ in range(n):
        nxt = {}
        for prefix, mass in joint.items():
            with torch.no_grad():
                logits = model(torch.cat([PROMPT, torch.tensor([prefix], dtype=torch.long)], dim=1)).logits[0, -1]
            probs = probs_from_logits(logits.float(), settings)
            for t in range(V):
                if probs[t] > 0:
                    nxt[prefix + (t,)] = mass * float(probs[t])
        joint = nxt
    return joint


def chi_square_pvalue(counts: dict[tuple, int], expected_probs: dict[tuple, float], n: int) -> float:
    """Pearson chi-square with cells of expected count < 5 pooled into one."""
    observed, expected, pool_o, pool_e = [], [], 0, 0.0
    for key in set(expected_probs) | set(counts):
        e = expected_probs.get(key, 0.0) * n
        o = counts.get(key, 0)
        if e < 5:
            pool_o, pool_e = pool_o + o, pool_e + e
        else:
            observed.append(o)
            expected.append(e)
    if pool_e > 0:
        observed.append(pool_o)
        expected.append(pool_e)
    o, e = torch.tensor(observed, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64)
    stat = float(((o - e) ** 2 / e).sum())
    dof = len(observed) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(stat / 2)))


def sampled_counts(method: str, models: Models, settings: DecodeSettings, **options) -> dict[tuple, int]:
    generate = get_method(method)
    g = torch.Generator().manual_seed(1234)
    counts: dict[tuple, int] = {}
    for _ in range(RUNS):
        key = tuple(generate(models, Prompt({"input_ids": PROMPT}), settings, g, **options).tokens[0])
        counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.mark.parametrize("temperature,top_p,gamma", [(1.0, 1.0, 2), (0.7, 0.9, 3)])
def test_sd_sampling_matches_target_distribution(temperature, top_p, gamma):
    settings = DecodeSettings(max_new_tokens=3, temperature=temperature, top_p=top_p)
    exact = exact_joint(TARGET, settings)
    counts = sampled_counts("sd", Models(TARGET, DRAFT), settings, gamma=gamma)
    assert sum(counts.values()) == RUNS
    assert chi_square_pvalue(counts, exact, RUNS) > 1e-3


def test_blocks_that_end_where_the_draft_is_unsure_sample_the_target_distribution():
    settings = DecodeSettings(max_new_tokens=3, temperature=1.0)
    counts = sampled_counts("sd", Models(TARGET, DRAFT), settings, gamma=3, confidence=0.3)
    assert chi_square_pvalue(counts, exact_joint(TARGET, settings), RUNS) > 1e-3


def test_a_draft_with_a_smaller_vocabulary_samples_the_target_distribution():
    """A target padded past its tokenizer (LLaVA-1.5: 32064 rows) with a draft that is not: the draft's
    distribution is widened with zeros for the ids it cannot produce (it crashed in verification before)."""
    settings = DecodeSettings(max_new_tokens=3, temperature=1.0)
    counts = sampled_counts("sd", Models(TARGET, tiny_llama(4, vocab=V - 2, hidden=16)), settings, gamma=2)
    assert chi_square_pvalue(counts, exact_joint(TARGET, settings), RUNS) > 1e-3


def test_ar_sampling_matches_target_distribution():
    settings = DecodeSettings(max_new_tokens=3, temperature=1.0)
    counts = sampled_counts("ar", Models(TARGET), settings)
    assert chi_square_pvalue(counts, exact_joint(TARGET, settings), RUNS) > 1e-3


def test_the_chi_square_test_can_fail():
    """Samples from the draft's own distribution (what a broken verifier would emit) are rejected."""
    settings = DecodeSettings(max_new_tokens=3, temperature=1.0)
    counts = sampled_counts("ar", Models(DRAFT), settings)
    assert chi_square_pvalue(counts, exact_joint(TARGET, settings), RUNS) < 1e-6


def eagle_drafter(seed: int = 0):
    """A random EAGLE-3 drafter for TARGET, its weights scaled up so its proposals are peaked and often wrong."""
    from harness.train.eagle import drafter_config, new_drafter
    from methods.eagle3 import VocabSpeculator

    eagle = new_drafter(drafter_config(TARGET.config, V), TARGET, seed)
    for p in eagle.parameters():
        if p.ndim == 2 and p is not TARGET.get_input_embeddings().weight:
            p.data.mul_(15)
    eagle.speculator = VocabSpeculator(16, 2, V)
    eagle.frequent = torch.arange(V)
    return eagle.eval()


@pytest.mark.parametrize("method,options", [
    ("eagle", dict(gamma=2)),
    ("eagle", dict(gamma=3, tree_width=2, head="frspec", head_size=5)),  # tokens 5..7 are never drafted
    ("specvocab", dict(gamma=2, k=3)),
])
def test_eagle_sampling_matches_target_distribution(method, options):
    settings = DecodeSettings(max_new_tokens=3, temperature=0.8, top_p=0.95)
    counts = sampled_counts(method, Models(TARGET, eagle=eagle_drafter()), settings, **options)
    assert chi_square_pvalue(counts, exact_joint(TARGET, settings), RUNS) > 1e-3
