"""Pieces every build script in harness.train shares: cache keys, atomic writes, resuming from a checkpoint, the
target's greedy answers with its top-k log-probabilities (the distillation data), and the build.json every weights
folder carries."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from harness import kernels


@functools.cache
def half_dtype() -> torch.dtype:
    """The build scripts' mixed-precision dtype, chosen by measurement once per machine (harness.kernels)."""
    return kernels.training_dtype()


def autocast():
    """Mixed precision in `half_dtype()` where it pays, plain float32 where it does not."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=half_dtype() == torch.bfloat16)


def digest(*parts) -> str:
    """A short stable key for cached stage outputs, from the settings that produced them."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def atomic_save(obj, path: Path) -> None:
    """torch.save through a temporary file, so an interrupted build never leaves a half-written shard."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").rename(path)


def resume(ckpt: Path, model, opt, log=print) -> int:
    """Load an interrupted training run's model and optimiser state from `ckpt` when there; return its step."""
    if not ckpt.exists():
        return 0
    state = torch.load(ckpt)
    model.load_state_dict(state["model"], strict=False)
    opt.load_state_dict(state["opt"])
    log(f"resuming from step {state['step']} ({ckpt})")
    return state["step"]


class TopK(LogitsProcessor):
    """Records the top-k log-probabilities of every generation step; leaves the scores unchanged."""

    def __init__(self, k: int):
        self.k, self.steps = k, []

    def __call__(self, input_ids, scores):
        lp, ids = torch.log_softmax(scores.float(), dim=-1).topk(self.k, dim=-1)
        self.steps.append((ids.to(torch.int32), lp.to(torch.float16)))
        return scores


@torch.no_grad()
def greedy_topk(model, prompts: list[list[int]], max_new: int, k: int, eos: int | list[int], **extra) -> list[dict]:
    """Greedy answers to a left-padded batch of prompt ids; per prompt: prompt, response (its first EOS included
    when reached; `eos` one id or several, the first also pads), and the top-k ids and log-probs at every response
    position."""
    stops = [eos] if isinstance(eos, int) else list(eos)
    width = max(map(len, prompts))
    ids = torch.tensor([[stops[0]] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    rec = TopK(k)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                         logits_processor=LogitsProcessorList([rec]), pad_token_id=stops[0], eos_token_id=eos,
                         top_k=None, top_p=None, temperature=None, **extra)
    top_ids, top_lp = torch.stack([s[0] for s in rec.steps], 1), torch.stack([s[1] for s in rec.steps], 1)
    rows = []
    for b, p in enumerate(prompts):
        resp = out[b, width:].tolist()
        ends = [i for i, t in enumerate(resp) if t in stops]
        if ends:
            resp = resp[: ends[0] + 1]
        n = len(resp)
        rows.append(dict(prompt=p, response=resp, top_ids=top_ids[b, :n].clone(), top_lp=top_lp[b, :n].clone()))
    return rows


def write_build(out: Path, build: dict, times: dict) -> None:
    """build.json next to the weights, with the wall time of every stage."""
    build["wall_s"] = times
    out.mkdir(parents=True, exist_ok=True)
    (out / "build.json").write_text(json.dumps(build, indent=2, default=str) + "\n")
    print("stage wall times: " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items()))


@torch.no_grad()
def compare_with_ar(models, tokenizer, questions: list[dict], settings, method: str, desc: str, **options) -> dict:
    """`method` against `ar` on the first turn of each question (alternating per prompt, same process): tau,
    walltime speedup (ratio of totals) and how many outputs were identical to ar's."""
    from methods import Prompt, get_method

    tot = dict(ar_s=0.0, s=0.0, tokens=0, calls=0, same=0)
    for q in tqdm(questions, desc=desc, unit="prompt"):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": q["turns"][0]}], add_generation_prompt=True,
                                            return_dict=True, return_tensors="pt")["input_ids"]
        ar = get_method("ar")(models, Prompt({"input_ids": ids}), settings)
        res = get_method(method)(models, Prompt({"input_ids": ids}), settings, **options)
        tot["ar_s"] += ar.stats["prefill_s"] + ar.stats["decode_s"]
        tot["s"] += res.stats["prefill_s"] + res.stats["decode_s"]
        tot["tokens"] += len(res.tokens[0])
        tot["calls"] += res.stats["target_calls"]
        tot["same"] += ar.tokens == res.tokens
    return dict(tau=tot["tokens"] / tot["calls"], speedup=tot["ar_s"] / tot["s"], identical=f"{tot['same']}/{len(questions)}")
