"""Drafting modes, TABED and tree verification on tiny random LLaVA pairs: greedy outputs equal `ar`
token for token, sampling matches the target distribution, and each mode builds the input TABED describes."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from transformers import LlavaForConditionalGeneration

from harness.models import load_pair
from methods import DecodeSettings, Models, Prompt, get_method
from methods.drafting import ModelDrafter, mode_embeds, newline_id
from methods.weights import Weights, weight_grid
from tests.conftest import tiny_llama, tiny_llava
from tests.test_sampling import chi_square_pvalue


def colour_captioner(images):
    """A real (if simple) captioner: names each image's dominant colour channel."""
    names = ("red", "green", "blue")
    return [f"a mostly {names[int(torch.tensor(list(im.resize((4, 4)).get_flattened_data())).float().mean(0).argmax())]} picture"
            for im in images]


@pytest.fixture(scope="module")
def pair(llava_pair_dir):
    cfg = OmegaConf.create({"name": "tiny-llava", "target": {"id": str(llava_pair_dir / "target")},
                            "draft": {"id": str(llava_pair_dir / "draft")}})
    p = load_pair(cfg, torch.device("cpu"), torch.float32)
    # A second, less similar draft, so that modes disagree and blocks get rejected.
    far = LlavaForConditionalGeneration(p.models.target.config).eval()
    far.load_state_dict({k: v + 0.15 * torch.randn_like(v) for k, v in p.models.target.state_dict().items()})
    p.far = far
    return p


def prompts(pair):
    red, blue = Image.new("RGB", (32, 32), (230, 30, 30)), Image.new("RGB", (32, 32), (30, 30, 230))
    one = pair.encode([{"role": "user", "content": "Describe the picture.", "n_images": 1}], [red])
    two = pair.encode([{"role": "user", "content": "Compare them.", "n_images": 2}], [red, blue])
    text = pair.encode([{"role": "user", "content": "Hello there."}], [])
    return {"one image": one, "two images": two, "text": text}


def models(pair, draft=None):
    return Models(pair.models.target, draft or pair.models.draft, pair.tokenizer, colour_captioner)


SETTINGS = DecodeSettings(max_new_tokens=19)


@pytest.mark.parametrize("drafting", ["M", "T", "C", "P"])
@pytest.mark.parametrize("width", [1, 2, 3])
def test_sd_every_mode_and_tree_width_equals_ar(pair, drafting, width):
    for name, prompt in prompts(pair).items():
        ar = get_method("ar")(pair.models, prompt, SETTINGS).tokens
        for draft in (pair.models.draft, pair.far):
            for gamma in (1, 4):
                out = get_method("sd")(models(pair, draft), prompt, SETTINGS, None, gamma=gamma, drafting=drafting,
                                       tree_width=width)
                assert out.tokens == ar, (name, gamma)


@pytest.mark.parametrize("drafts", ["MT", "MTCP"])
@pytest.mark.parametrize("policy", ["wgrid", "uniform", "kld", "tvd"])
@pytest.mark.parametrize("batched", [True, False])
def test_tabed_equals_ar(pair, drafts, policy, batched):
    prompt = prompts(pair)["two images"]
    ar = get_method("ar")(pair.models, prompt, SETTINGS).tokens
    for width in (1, 2):
        out = get_method("tabed")(models(pair, pair.far), prompt, SETTINGS, None, gamma=4, drafts=drafts,
                                  policy=policy, batched=batched, tree_width=width)
        assert out.tokens == ar
        s = out.stats
        assert len(s["weights"]) == len(s["mode_agree"]) <= len(s["accepted"])
        assert all(len(w) == len(drafts) and abs(sum(w) - 1) < 1e-3 for w in s["weights"])
        assert s["weights"][0] == [round(1 / len(drafts), 4)] * len(drafts)  # the first block is uniform


def test_batched_drafter_matches_sequential(pair):
    prompt = prompts(pair)["two images"]
    m = models(pair)
    batched, sequential = (ModelDrafter(m, prompt, list("MTCP"), b).start() for b in (True, False))
    assert len(batched.groups) == 1 and len(sequential.groups) == 4
    for tokens in ([5], [7, 9], [11]):
        torch.testing.assert_close(batched.step(tokens), sequential.step(tokens), rtol=1e-4, atol=1e-4)
    batched.crop(1)
    sequential.crop(1)
    assert batched.generated() == sequential.generated() == 1
    torch.testing.assert_close(batched.step([3]), sequential.step([3]), rtol=1e-4, atol=1e-4)


def test_each_mode_builds_the_input_tabed_describes(pair):
    prompt = prompts(pair)["two images"]
    m = models(pair)
    ids = prompt.target["input_ids"][0]
    image_id = pair.models.target.config.image_token_id
    embed = pair.models.draft.get_input_embeddings()
    n_image_tokens = int((ids == image_id).sum())
    assert n_image_tokens == 32  # two images of 16 tokens

    text_only, _ = mode_embeds("T", m, prompt)  # TABED's T: each image -> one newline (not one per placeholder)
    first = (ids == image_id) & (torch.roll(ids, 1) != image_id)
    collapsed = ids.masked_fill(first, newline_id(pair.tokenizer))[(ids != image_id) | first]
    assert len(collapsed) == len(ids) - n_image_tokens + 2
    torch.testing.assert_close(text_only, embed(collapsed))

    pooled, _ = mode_embeds("P", m, prompt)  # 4x4 patches pooled 2x2 -> 4 tokens per image
    assert pooled.shape[0] == len(ids) - n_image_tokens + 2 * 4

    captioned, seconds = mode_embeds("C", m, prompt)
    caption_ids = pair.tokenizer("image: a mostly red picture", add_special_tokens=False)["input_ids"]
    first = int((ids == image_id).nonzero()[0])
    torch.testing.assert_close(captioned[first:first + len(caption_ids)], embed(torch.tensor(caption_ids)))
    assert seconds >= 0

    multimodal, _ = mode_embeds("M", m, prompt)  # the draft's own LLaVA forward sees the same thing
    own = pair.models.draft(**prompt.target, output_hidden_states=True).hidden_states[0][0]
    torch.testing.assert_close(multimodal, own, rtol=1e-5, atol=1e-5)


def test_text_only_draft_supports_t_and_c_only(pair):
    vocab = pair.models.target.config.get_text_config().vocab_size
    text_draft = tiny_llama(5, vocab=vocab, hidden=32)
    prompt = prompts(pair)["one image"]
    ar = get_method("ar")(pair.models, prompt, SETTINGS).tokens
    for drafting in ("T", "C"):
        assert get_method("sd")(models(pair, text_draft), prompt, SETTINGS, None, drafting=drafting).tokens == ar
    with pytest.raises(ValueError, match="mode M needs a vision-language draft"):
        get_method("sd")(models(pair, text_draft), prompt, SETTINGS, None, drafting="M")


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="drafting mode 'X'; valid choices: M, T, C, P"):
        ModelDrafter(Models(tiny_llama(0)), Prompt({"input_ids": torch.tensor([[1, 2]])}), ["X"])
    with pytest.raises(ValueError, match="weight policy 'best'; valid choices"):
        Weights("best", 2)
    with pytest.raises(ValueError, match="at least two drafting modes"):
        get_method("tabed")(Models(tiny_llama(0), tiny_llama(1)), Prompt({"input_ids": torch.tensor([[1]])}),
                            SETTINGS, None, drafts="M")


def test_weight_grid_and_policies():
    assert [len(weight_grid(k)) for k in (2, 3, 4)] == [11, 66, 286]
    assert torch.allclose(weight_grid(3).sum(1), torch.ones(66))
    v = 50
    p = torch.zeros(6, v)
    p[torch.arange(6), torch.arange(6)] = 1.0  # the target picks token i at position i
    good = p * 0.7 + 0.3 / v  # mode 0 agrees everywhere
    bad = torch.roll(p, 1, dims=1) * 0.7 + 0.3 / v  # mode 1 never agrees
    q = torch.stack([good, bad], dim=1)
    for policy in ("wgrid", "kld", "tvd"):
        w = Weights(policy, 2)
        assert torch.allclose(w.current, torch.tensor([0.5, 0.5]))
        agree = w.observe(p, q)["mode_agree"]
        assert agree == [6, 0]
        assert w.current[0] > w.current[1], policy
    w = Weights("wgrid", 2)
    w.observe(p, q)
    assert torch.allclose(w.current, torch.tensor([1.0, 0.0]))  # agreement ties from 0.6 on; KL picks pure mode 0
    u = Weights("uniform", 3)
    u.observe(p, torch.stack([good, bad, good], dim=1))
    assert torch.allclose(u.current, torch.full((3,), 1 / 3))


# --- sampling: a LLaVA pair with a vocabulary of 12 so the target distribution can be enumerated --------

V, IMG = 12, 11
SMALL_TARGET = tiny_llava(V, IMG, 20)
SMALL_DRAFT = tiny_llava(V, IMG, 21)
PIXELS = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
IDS = torch.tensor([[1, 2] + [IMG] * 16 + [3]])


class NewlineTokenizer:
    """The two token ids the T mode needs, for a vocabulary without a real tokenizer."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [4] if text == "\n" else [5, 6]}


def exact_joint(settings, n=3):
    from methods.core import probs_from_logits

    embed = SMALL_TARGET.get_input_embeddings()
    with torch.no_grad():  # the prompt as the target embeds it (image features in place), then plain tokens
        prompt = SMALL_TARGET(input_ids=IDS, pixel_values=PIXELS, output_hidden_states=True).hidden_states[0]
    joint = {(): 1.0}
    for _ in range(n):
        nxt = {}
        for prefix, mass in joint.items():
            embeds = torch.cat([prompt, embed(torch.tensor([prefix], dtype=torch.long))], dim=1)
            with torch.no_grad():
                probs = probs_from_logits(SMALL_TARGET(inputs_embeds=embeds).logits[0, -1], settings)
            for t in range(V):
                if probs[t] > 0:
                    nxt[prefix + (t,)] = mass * float(probs[t])
        joint = nxt
    return joint


@pytest.mark.parametrize("method,options", [
    ("sd", {"gamma": 2, "tree_width": 2}),
    ("tabed", {"gamma": 2, "drafts": "MT", "policy": "wgrid"}),
    ("tabed", {"gamma": 2, "drafts": "MTP", "policy": "kld", "tree_width": 3}),
])
def test_sampling_matches_target_distribution(method, options):
    settings = DecodeSettings(max_new_tokens=3, temperature=1.0)
    m = Models(SMALL_TARGET, SMALL_DRAFT, NewlineTokenizer())
    generate, g = get_method(method), torch.Generator().manual_seed(7)
    runs, counts = 2500, {}
    for _ in range(runs):
        key = tuple(generate(m, Prompt({"input_ids": IDS, "pixel_values": PIXELS}), settings, g, **options).tokens[0])
        counts[key] = counts.get(key, 0) + 1
    assert chi_square_pvalue(counts, exact_joint(settings), runs) > 1e-3


def test_draft_captioner_from_the_pair_config(llava_pair_dir):
    """`pair.captioner.id=draft`: the pair's own draft captions each image (no extra weights needed)."""
    cfg = OmegaConf.create({"name": "tiny-llava", "target": {"id": str(llava_pair_dir / "target")},
                            "draft": {"id": str(llava_pair_dir / "draft")},
                            "captioner": {"id": "draft", "max_new_tokens": 6}})
    p = load_pair(cfg, torch.device("cpu"), torch.float32)
    prompt = prompts(p)["two images"]
    captions = p.models.captioner(prompt.images)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    ar = get_method("ar")(p.models, prompt, SETTINGS).tokens
    out = get_method("tabed")(p.models, prompt, SETTINGS, None, drafts="MTC")
    assert out.tokens == ar and out.stats["caption_s"] > 0
