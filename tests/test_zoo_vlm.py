"""tiny-llava, the embedded vision-language pair: loading, image-token expansion, the four drafting modes,
lossless sd in every mode, the held-out eval sets and the build script's smoke run."""
from __future__ import annotations

import argparse
import json
import random

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from safetensors import safe_open

from harness.models import load_pair
from harness import scenes
from harness.train import vlm_data
from harness.zoo import tiny_llava
from methods import DecodeSettings, get_method
from methods.drafting import CAPTION_PREFIX, mode_embeds, newline_id, vision_features
from tests.conftest import ROOT

N = tiny_llava.grid() ** 2  # image tokens per image of the committed target


@pytest.fixture(scope="module")
def pair():
    cfg = OmegaConf.load(ROOT / "conf" / "pair" / "tiny-llava.yaml")
    return load_pair(cfg, torch.device("cpu"), torch.float32)


def shapes(seed: int) -> Image.Image:
    return scenes.shapes_scene(seed, vlm_data.RENDER, n=3)[0]


def test_committed_weights_are_small_fp16_and_ours():
    files = sorted(tiny_llava.WEIGHTS_DIR.rglob("*.safetensors"))
    assert {f.parent.name for f in files} == {"target", "draft"}
    for f in files:
        assert f.stat().st_size <= tiny_llava.MAX_FILE_BYTES, f
        with safe_open(str(f), "pt") as st:
            keys = set(st.keys())
            assert {st.get_tensor(k).dtype for k in keys} <= {torch.float16, torch.bfloat16}
            if f.parent.name == "target":  # SmolLM2's weights are never stored: only the tower and projector
                assert all(k.startswith(("model.vision_tower.", "model.multi_modal_projector.")) for k in keys)
            else:  # the draft's tower is the target's
                assert not any(k.startswith("model.vision_tower.") for k in keys)


def test_pair_loads(pair):
    target, draft = pair.models.target, pair.models.draft
    assert type(target).__name__ == type(draft).__name__ == "LlavaForConditionalGeneration"
    assert target.config.text_config.vocab_size == draft.config.text_config.vocab_size == len(pair.tokenizer) == 49153
    assert target.config.image_token_id == pair.tokenizer.convert_tokens_to_ids("<image>") == 49152
    assert pair.processor is not None and pair.eos_token_ids == (2,)
    assert target.config.text_config.num_hidden_layers == 30  # SmolLM2-135M inside
    for name, p in target.model.vision_tower.state_dict().items():  # the draft shares the target's tower
        torch.testing.assert_close(draft.model.vision_tower.state_dict()[name], p)
    assert draft.lm_head.weight.data_ptr() == draft.get_input_embeddings().weight.data_ptr()  # tied


def test_processor_expands_image_tokens(pair):
    for n_images in (1, 3):
        prompt = pair.encode([{"role": "user", "content": "What is it?", "n_images": n_images}],
                             [shapes(i) for i in range(n_images)])
        ids = prompt.target["input_ids"][0]
        assert int((ids == pair.models.target.config.image_token_id).sum()) == N * n_images
        assert prompt.target["pixel_values"].shape == (n_images, 3, tiny_llava.IMAGE_SIZE, tiny_llava.IMAGE_SIZE)
        text = pair.tokenizer.decode(ids)
        assert text.endswith("<|im_start|>user\n" + ("<image>" * N + "\n") * n_images + "What is it?<|im_end|>\n"
                             "<|im_start|>assistant\n")
        assert text.startswith("<|im_start|>system\n" + tiny_llava.SYSTEM)
    # without images the template is SmolLM2's own, token for token
    text_only = pair.encode([{"role": "user", "content": "Hi there", "n_images": 0}])
    ref = pair.tokenizer.apply_chat_template([{"role": "user", "content": "Hi there"}], add_generation_prompt=True,
                                             return_dict=True, return_tensors="pt")["input_ids"]
    assert torch.equal(text_only.target["input_ids"], ref)


def test_drafting_modes_build_their_inputs(pair):
    images = [shapes(1), shapes(2)]
    prompt = pair.encode([{"role": "user", "content": "What changed?", "n_images": 2}], images)
    ids = prompt.target["input_ids"][0]
    image = ids == pair.models.target.config.image_token_id
    embed = pair.models.draft.get_input_embeddings()
    with torch.no_grad():
        m, _ = mode_embeds("M", pair.models, prompt)
        feats = vision_features(pair.models.draft, prompt.target["pixel_values"])
        assert m.shape == (len(ids), pair.models.draft.config.text_config.hidden_size)
        torch.testing.assert_close(m[image], feats.reshape(-1, m.shape[-1]))
        torch.testing.assert_close(m[~image], embed(ids[~image]))

        t, _ = mode_embeds("T", pair.models, prompt)  # each image's run of N placeholders -> one newline
        first = image & ~torch.roll(image, 1)
        assert t.shape[0] == len(ids) - 2 * (N - 1)
        torch.testing.assert_close(t[first[(~image) | first]], embed(torch.tensor([newline_id(pair.tokenizer)])).expand(2, -1))
        torch.testing.assert_close(t[~first[(~image) | first]], m[~image])

        p, _ = mode_embeds("P", pair.models, prompt)  # 4x4 patches pooled 2x2: 4 features per image
        assert p.shape[0] == len(ids) - 2 * (N - N // 4)
        pooled = vision_features(pair.models.draft, prompt.target["pixel_values"], pool=2)
        start = int(image.nonzero()[0])
        torch.testing.assert_close(p[start : start + N // 4], pooled[0])

        pair.models.captioner = lambda imgs: [f"caption {i}" for i in range(len(imgs))]
        try:
            c, _ = mode_embeds("C", pair.models, prompt)
        finally:
            pair.models.captioner = None
        pieces = sum(len(pair.tokenizer(CAPTION_PREFIX + f"caption {i}", add_special_tokens=False)["input_ids"]) for i in range(2))
        assert c.shape[0] == len(ids) - 2 * N + pieces


@pytest.mark.parametrize("mode", ["M", "T", "C", "P"])
def test_sd_equals_ar_in_every_mode(pair, mode):
    from harness.captioner import DraftCaptioner

    pair.models.captioner = DraftCaptioner(pair, "Describe the image in one sentence.", 8)
    settings = DecodeSettings(max_new_tokens=12, eos_token_ids=pair.eos_token_ids)
    cases = [([{"role": "user", "content": "How many shapes are there in the image?", "n_images": 1}], [shapes(3)]),
             ([{"role": "user", "content": "What is the difference between the two images?", "n_images": 2}],
              [shapes(4), shapes(5)])]
    for messages, images in cases:
        prompt = pair.encode(messages, images)
        ar = get_method("ar")(pair.models, prompt, settings)
        sd = get_method("sd")(pair.models, prompt, settings, None, gamma=5, drafting=mode)
        assert sd.tokens == ar.tokens
        assert len(ar.tokens[0]) >= 3


@pytest.mark.parametrize("drafts,batched,width", [("MT", True, 1), ("MT", False, 1), ("MTCP", True, 1), ("MT", True, 2)])
def test_tabed_equals_ar_on_the_embedded_pair(pair, drafts, batched, width):
    from harness.captioner import DraftCaptioner

    pair.models.captioner = DraftCaptioner(pair, "Describe the image in one sentence.", 8)
    settings = DecodeSettings(max_new_tokens=16, eos_token_ids=pair.eos_token_ids)
    prompt = pair.encode([{"role": "user", "content": "Describe this image.", "n_images": 1}], [shapes(6)])
    ar = get_method("ar")(pair.models, prompt, settings)
    res = get_method("tabed")(pair.models, prompt, settings, None, gamma=5, drafts=drafts, policy="wgrid",
                              batched=batched, tree_width=width)
    assert res.tokens == ar.tokens and len(ar.tokens[0]) >= 8


def test_answers_depend_on_the_image(pair):
    settings = DecodeSettings(max_new_tokens=10, eos_token_ids=pair.eos_token_ids)
    answers = set()
    for seed in range(4):
        prompt = pair.encode([{"role": "user", "content": "How many shapes are there in the image?", "n_images": 1}],
                             [scenes.shapes_scene(seed, vlm_data.RENDER, n=1 + seed)[0]])
        answers.add(tuple(get_method("ar")(pair.models, prompt, settings).tokens[0]))
    assert len(answers) >= 2


def test_eval_sets_are_the_generators(tmp_path):
    vlm_data.write_eval(tmp_path)
    for name in ("grounded", "texty"):
        committed = (ROOT / "datasets" / "vlm-eval" / f"vlm-{name}.jsonl").read_text()
        assert (tmp_path / f"vlm-{name}.jsonl").read_text() == committed
        first = json.loads(committed.splitlines()[0])["images"][0]
        assert (tmp_path / first).read_bytes() == (ROOT / "datasets" / "vlm-eval" / first).read_bytes()
    train = {s["question"] + json.dumps(s["images"]) for s in vlm_data.make_samples("train", 500)}
    held = vlm_data.eval_sets()
    assert not any(s["question"] + json.dumps(s["images"]) in train for s in held["grounded"] + held["texty"])


def test_smoke_build(tmp_path):
    from harness.train import vlm as train_vlm

    train_vlm.main(["--smoke", "--work", str(tmp_path), "--out", str(tmp_path / "weights")])
    build = json.loads((tmp_path / "weights" / "build.json").read_text())
    assert set(build["tau"]) == {"grounded/M", "grounded/T", "texty/M", "texty/T"}
    draft, processor = tiny_llava.load_draft(torch.float32, tmp_path / "weights")
    assert draft.config.text_config.hidden_size == 32 and processor.tokenizer.convert_tokens_to_ids("<image>") == 49152
    assert set(build["tau"]["texty/M"]["tau_by_kind"]) <= {"story", "text_image"}
    # a new draft for the same target: the target's files are kept, the draft is another
    train_vlm.main(["--smoke", "--work", str(tmp_path), "--out", str(tmp_path / "w2"), "--target-from",
                    str(tmp_path / "weights"), "--draft-layers", "2", "--draft-mixture", "grounded", "--draft-context", "48",
                    "--draft-grounded", "3", "--draft-rope-theta", "10000"])
    kept = {f.name: f.read_bytes() for f in (tmp_path / "weights" / "target").iterdir()}
    assert kept == {f.name: f.read_bytes() for f in (tmp_path / "w2" / "target").iterdir()}
    text_cfg = tiny_llava.load_draft(torch.float32, tmp_path / "w2")[0].config.text_config
    assert text_cfg.num_hidden_layers == 2 and text_cfg.max_position_embeddings == 48
    assert text_cfg.rope_parameters["rope_theta"] == 10000 and draft.config.text_config.rope_parameters["rope_theta"] == 1e5
    assert json.loads((tmp_path / "w2" / "build.json").read_text())["target_train"].startswith("kept from")


def test_draft_context_cuts_every_view_and_keeps_only_answers_inside_it(pair):
    """--draft-context: the loss sees no position past the cut, and it is the full loss on the kept answers."""
    from harness.train import vlm as train_vlm

    draft = pair.models.draft
    enc = train_vlm.Encoder(pair.processor)
    spec = vlm_data.make_samples("draft", 40, 0)
    sample = next(s for s in spec if len(s["images"]) == 2)
    prompt, response = enc.prompt(sample["question"], 2), enc.answer("a red square and a blue circle on grass")
    g = torch.Generator().manual_seed(0)
    row = dict(prompt=prompt, response=response, images=sample["images"], top_ids=torch.randint(0, 49152, (len(response), 4), generator=g),
               top_lp=torch.randn(len(response), 4, generator=g))
    for view in ("M", "P", "T"):
        assert train_vlm.view_embeds_len(row, view, N) == train_vlm.view_embeds(draft, enc, row, view).shape[0]
    full = train_vlm.view_embeds_len(row, "M", N)
    cut = full - 4  # the positions that predict the last 3 answer tokens are past the context
    with torch.no_grad():
        loss_cut, _ = train_vlm.draft_loss(draft, enc, [(row, "M")], context=cut)
        short = {**row, "response": response[:-3], "top_ids": row["top_ids"][:-3], "top_lp": row["top_lp"][:-3]}
        loss_short, _ = train_vlm.draft_loss(draft, enc, [(short, "M")])
        loss_full, _ = train_vlm.draft_loss(draft, enc, [(row, "M")], context=full)
        loss_none, _ = train_vlm.draft_loss(draft, enc, [(row, "M")])
    assert torch.allclose(loss_cut, loss_short) and torch.allclose(loss_full, loss_none)
    assert not torch.allclose(loss_cut, loss_none)
    args = argparse.Namespace(draft_max_m_images=2, p_views=0.0, draft_context=len(prompt) - 5)
    views = train_vlm.draft_views([{**sample, "id": "x"}], {"x": row}, args, random.Random(0), N)
    assert views == [(dict(row, images=sample["images"]), "T")]  # M's answer starts past the context: dropped
    args.draft_context = None  # --draft-grounded samples train in M only
    assert [v for _, v in train_vlm.draft_views([{**sample, "id": "x", "m_only": True}], {"x": row}, args, random.Random(0), N)] == ["M"]


def test_save_weights_splits_tensors_bigger_than_a_file(tmp_path):
    from transformers import LlavaConfig

    state = {"embed.weight": torch.randn(5000, 64), "norm.weight": torch.randn(64)}
    paths = tiny_llava.save_weights(state, tmp_path, LlavaConfig(), max_bytes=200_000)
    assert len(paths) >= 4 and all(p.stat().st_size <= 200_000 + 4096 for p in paths)  # + safetensors header
    back = tiny_llava.read_weights(tmp_path)
    assert sorted(back) == sorted(state)
    for k, v in state.items():
        assert torch.equal(back[k], v.half())


def test_vision_pretraining_targets_name_what_each_patch_shows():
    from harness.train.vlm import Encoder, WordTargets, patch_words

    g, size = tiny_llava.grid(), vlm_data.RENDER
    cell = size // g
    spec = {"kind": "shapes", "size": size, "background": "cream", "objects": [
        {"kind": "circle", "color": "red", "x": cell // 2, "y": cell // 2, "r": 10},
        {"kind": "star", "color": "blue", "x": size - 5, "y": 2 * cell + 3, "r": 10, "label": 7}]}
    words = patch_words(spec, g)
    assert len(words) == g * g
    assert words[0] == ["red", "circle"] and words[2 * g + g - 1] == ["blue", "star", "7"]
    assert all(w == ["cream", "two"] for i, w in enumerate(words) if i not in (0, 2 * g + g - 1))
    chart = vlm_data.make_samples("train", 1, 0, {vlm_data.chart: 1})[0]["images"][0]
    assert all(chart["chart"] in w and chart["color"] in w for w in patch_words(chart, g))

    processor = tiny_llava.make_processor()
    embed = torch.randn(49153, 8)
    targets = WordTargets(Encoder(processor), embed)
    t = targets([spec])
    assert t.shape == (1, g * g, 8)
    torch.testing.assert_close(t.norm(dim=-1), targets.norm.expand(1, g * g))
    red, circle = (processor.tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in ("red", "circle"))
    mean = embed[red + circle].mean(0)
    torch.testing.assert_close(t[0, 0], mean * targets.norm / mean.norm())


def test_a_target_with_more_patches_loads_with_its_own_image_tokens(tmp_path):
    """harness.train.vlm --image-size 192: a tower of 8 x 8 patches; the folder's vision config fixes the
    processor's image tokens (64 per image) at load time, the build's encoder agrees, and the pair decodes."""
    from harness.train.vlm import Encoder

    vision = {**tiny_llava.VISION, "image_size": 192, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 1, "num_attention_heads": 2, "projection_dim": 32}
    built = tiny_llava.build_target(torch.float32, vision)
    tiny_llava.save_weights(tiny_llava.target_parts(built), tmp_path / "target", built.config)
    target, processor = tiny_llava.load_target(torch.float32, tmp_path)
    enc = Encoder(processor)
    assert enc.image_tokens == 64 and target.config.image_seq_length == 64
    image = scenes.render(vlm_data.make_samples("train", 1, 0, {vlm_data.count: 1})[0]["images"][0])
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]}]
    text = processor.apply_chat_template(chat, add_generation_prompt=True)
    inputs = processor(images=[image], text=text, return_tensors="pt")
    assert inputs["input_ids"][0].tolist() == enc.prompt("How many?", 1)
    assert int((inputs["input_ids"] == target.config.image_token_id).sum()) == 64
    with torch.no_grad():
        out = target(**inputs)
    assert out.logits.shape[1] == inputs["input_ids"].shape[1]


TABED_DATASETS = ["llava_w", "docvqa", "pope", "mmvet", "iedit", "magicbrush", "spot_the_diff", "pororo_sv", "vist",
                  "nq", "gsm8k"]


def test_every_tabed_dataset_runs_offline_on_the_embedded_pair(tmp_path):
    """`python -m harness pair=tiny-llava dataset=<each of the 11>`: the bundled variants (no hub here), one
    sample each, multimodal drafting; every record ok and sd equal to ar."""
    from harness import report
    from tests.conftest import harness_cli

    proc = harness_cli("-m", "pair=tiny-llava", f"dataset={','.join(TABED_DATASETS)}", "method=ar,sd", "n_samples=1",
                       "max_new_tokens=6", "warmup=0", "progress=false", "run_name=offline",
                       "baseline_check=false",  # the ar-vs-generate() check has its own tests (test_baseline)
                       cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = report.load(tmp_path / "results" / "offline")
    assert sorted(df.dataset.unique()) == sorted(TABED_DATASETS)
    assert (df.status == "ok").all() and len(df) == 2 * len(TABED_DATASETS)
    sd = df[df.method != "ar"]
    assert all(a == b for a, b in zip(sd.output_ids, sd.ar_output_ids))
