"""Captioners for the caption drafting mode (C): images -> one caption each, run inside the timed call.

`pair.captioner.id`:
- `draft`: the pair's own draft model (a vision-language draft) answers a captioning prompt greedily, so the
  embedded and random test pairs need no extra weights;
- a hub id or local folder of an image-to-text model with a task prompt (TABED: microsoft/Florence-2-large-ft
  with "<CAPTION>", beam search 3).
"""
from __future__ import annotations

import torch

from harness.hub import from_hf
from methods import DecodeSettings, get_method


class DraftCaptioner:
    def __init__(self, pair, prompt: str, max_new_tokens: int):
        self.pair, self.prompt, self.max_new_tokens = pair, prompt, max_new_tokens

    def __call__(self, images: list) -> list[str]:
        from methods import Models

        settings = DecodeSettings(max_new_tokens=self.max_new_tokens, eos_token_ids=self.pair.eos_token_ids)
        draft_only = Models(self.pair.models.draft)
        captions = []
        for image in images:
            prompt = self.pair.encode([{"role": "user", "content": self.prompt, "n_images": 1}], [image])
            out = get_method("ar")(draft_only, prompt, settings).tokens[0]
            captions.append(self.pair.tokenizer.decode(out, skip_special_tokens=True).strip())
        return captions


class HubCaptioner:
    def __init__(self, model_id: str, task: str, max_new_tokens: int, num_beams: int, device, dtype):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = from_hf(AutoProcessor, model_id)
        self.model = from_hf(AutoModelForImageTextToText, model_id, dtype=dtype).to(device).eval()
        self.task, self.max_new_tokens, self.num_beams = task, max_new_tokens, num_beams

    @torch.inference_mode()
    def __call__(self, images: list) -> list[str]:
        inputs = self.processor(text=[self.task] * len(images), images=images, return_tensors="pt").to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                  do_sample=False)
        return [t.strip() for t in self.processor.batch_decode(out, skip_special_tokens=True)]


def load_captioner(cfg, pair):
    """A captioner built on first use (so pairs that never caption load nothing)."""
    if cfg is None:
        return None
    if cfg.id == "draft":
        return DraftCaptioner(pair, cfg.get("prompt", "Describe the image in one sentence."),
                              cfg.get("max_new_tokens", 32))
    state = {}

    def caption(images):
        if "model" not in state:
            state["model"] = HubCaptioner(cfg.id, cfg.get("prompt", "<CAPTION>"), cfg.get("max_new_tokens", 1024),
                                          cfg.get("num_beams", 3), pair.device, pair.models.target.dtype)
        return state["model"](images)

    return caption
