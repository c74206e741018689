"""The conversation a sample's turn is decoded from: every user turn up to it with its images, each earlier one
followed by the target's own answer. One builder for decoding (harness.run) and the lossless check, which rebuilds the
same prompts from the records (harness.lossless)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from harness import HarnessError
from harness.data import Sample, open_images
from harness.models import Pair
from harness.records import CONFIG, SAMPLES, read_records


def turn_prompt(pair: Pair, sample: Sample, turn: int, answers: list[str]):
    """Turn `turn` of a sample as the target's prompt: every user turn up to it with its images, each earlier one
    followed by the target's own answer (`answers[k]` for turn k). The one conversation builder: decoding and the
    lossless check (harness.lossless) rebuild the same prompt from it."""
    messages, n_images = [], 0
    for k, (text, added) in enumerate(zip(sample.turns[:turn + 1], sample.images_per_turn())):
        messages.append({"role": "user", "content": text, "n_images": added})
        n_images += added
        if k < turn:
            messages.append({"role": "assistant", "content": answers[k]})
    return pair.encode(messages, open_images(sample.images[:n_images]))


def first_prompt(pair: Pair, sample: Sample):
    """The sample's first turn as the target's prompt, with its images (for timings outside the records)."""
    return turn_prompt(pair, sample, 0, [])


def stored_first_turns(cfg) -> dict[str, str]:
    """Turn-0 answers of another finished cell (`reuse_first_turn=DIR`), to decode only later turns."""
    src = cfg.get("reuse_first_turn")
    if not src:
        return {}
    cell = Path(src)
    if not (cell / SAMPLES).exists() or not (cell / CONFIG).exists():
        raise HarnessError(f"reuse_first_turn={src}: not a results cell (needs {SAMPLES} and {CONFIG})")
    other = OmegaConf.load(cell / CONFIG)
    if other.pair.target.id != cfg.pair.target.id or other.dataset.name != cfg.dataset.name:
        raise HarnessError(f"reuse_first_turn={src} was decoded by target {other.pair.target.id} on "
                           f"{other.dataset.name}, not {cfg.pair.target.id} on {cfg.dataset.name}")
    return {r["id"]: r["output_text"] for r in read_records(cell) if r["turn"] == 0 and r["status"] == "ok"}
