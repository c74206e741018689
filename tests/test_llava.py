"""LLaVA pairs load from local folders through the public Auto* APIs and decode losslessly with images."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from harness.models import load_pair
from methods import DecodeSettings, get_method


@pytest.fixture(scope="module")
def llava_pair(llava_pair_dir):
    cfg = OmegaConf.create({"name": "tiny-llava", "target": {"id": str(llava_pair_dir / "target")},
                            "draft": {"id": str(llava_pair_dir / "draft")}})
    return load_pair(cfg, torch.device("cpu"), torch.float32)


def test_llava_loads_and_expands_image_tokens(llava_pair):
    assert llava_pair.processor is not None
    red = Image.new("RGB", (40, 30), (220, 20, 20))
    prompt = llava_pair.encode([{"role": "user", "content": "What colour is it?", "n_images": 1}], [red])
    image_id = llava_pair.models.target.config.image_token_id
    assert int((prompt.target["input_ids"] == image_id).sum()) == 16  # (32 / 8)^2 patches
    assert prompt.target["pixel_values"].shape == (1, 3, 32, 32)
    text = llava_pair.tokenizer.decode(prompt.target["input_ids"][0])
    assert text.startswith("USER: <image>") and text.endswith("ASSISTANT:")


def test_llava_sd_equals_ar_and_depends_on_the_image(llava_pair):
    settings = DecodeSettings(max_new_tokens=20, eos_token_ids=llava_pair.eos_token_ids)
    outs = []
    for colour in ((220, 20, 20), (20, 20, 220)):
        prompt = llava_pair.encode([{"role": "user", "content": "Describe.", "n_images": 1}], [Image.new("RGB", (32, 32), colour)])
        ar = get_method("ar")(llava_pair.models, prompt, settings)
        for gamma in (1, 3, 6):
            assert get_method("sd")(llava_pair.models, prompt, settings, None, gamma=gamma).tokens == ar.tokens
        outs.append(ar.tokens)
    assert outs[0] != outs[1]


def test_two_turns_with_images_in_each_turn(llava_pair):
    """A qaorg-style second turn brings its own image; the prompt holds both placeholders in order."""
    a, b = Image.new("RGB", (32, 32), (220, 20, 20)), Image.new("RGB", (32, 32), (20, 220, 20))
    messages = [{"role": "user", "content": "First?", "n_images": 1}, {"role": "assistant", "content": "An answer."},
                {"role": "user", "content": "Second?", "n_images": 1}]
    prompt = llava_pair.encode(messages, [a, b])
    image_id = llava_pair.models.target.config.image_token_id
    assert int((prompt.target["input_ids"] == image_id).sum()) == 32
    assert prompt.target["pixel_values"].shape[0] == 2
    text = llava_pair.tokenizer.decode(prompt.target["input_ids"][0]).replace("<image>", "")
    assert text == "USER: \nFirst? ASSISTANT: An answer.</s>USER: \nSecond? ASSISTANT:"
    with pytest.raises(ValueError, match="1 images for 2 placeholders"):
        llava_pair.encode(messages, [a])


def test_a_question_that_carries_its_image_markers_keeps_them_in_place(llava_pair):
    """Interleave-Bench questions hold one `<image>` per image: those are the images' places, not extra ones (the
    harness added one more per image before, and the processor failed with 4 markers for 2 images)."""
    a, b = Image.new("RGB", (32, 32), (220, 20, 20)), Image.new("RGB", (32, 32), (20, 220, 20))
    encode = lambda text, n=2: llava_pair.encode([{"role": "user", "content": text, "n_images": n}], [a, b][:n])  # noqa: E731
    ids = lambda p: p.target["input_ids"][0].tolist()  # noqa: E731
    assert ids(encode("<image>\n<image>\nWhich differs?")) == ids(encode("Which differs?"))  # markers first = images first
    mixed = llava_pair.tokenizer.decode(ids(encode("Before: <image> After: <image> Which differs?")))
    image = "<image>" * 16
    assert mixed == f"USER: Before: {image} After: {image} Which differs? ASSISTANT:"
    with pytest.raises(Exception, match="1 <image> marker.*2 image"):
        encode("Only <image> here.")
