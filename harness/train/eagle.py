"""Build smol-eagle3 (and its SpecVocab speculator): an EAGLE-3 drafter for SmolLM2-135M-Instruct, on CPU.

    python -m harness.train.eagle                          # full vocab head (tied) + vocabulary speculator
    python -m harness.train.eagle --head reduced --vocab 8192   # EAGLE-3's reduced head with d2t/t2d
    python -m harness.train.eagle --smoke                  # end-to-end check in seconds
    python -m harness.train.eagle --target embedded:gemma3-270m   # another target: NAME-eagle3, never committed

`--target` (an `embedded:NAME`, a local folder or a hub id with a chat template) trains a drafter for another
target; its intermediate files and weights go under `<cache_root>/NAME-eagle3/` (only SmolLM2's drafters are
committed: e.g. Gemma's terms make a drafter distilled from Gemma's outputs a Model Derivative).

Stages (resumable; intermediate files under `<cache_root>/smol-eagle3/`):
  1. data      the target's own answers to datasets/zoo-prompts/train.jsonl with its top-k log-probabilities
               (shared with smol-draft: harness.train.draft's generate stage, same cache).
  2. features  the target's hidden states entering layers 2, L//2, L-3 over prompt + answer (bf16 shards).
  3. train     training-time test (EAGLE-3): step 0 reads the target's features; step i reads the drafter's own
               outputs of step i-1, one position back, and attends to the step-0 entries up to its chain's start
               plus its own chain, exactly as at inference. Loss: sum_i 0.8^i soft cross-entropy against the
               target's top-k distribution (renormalised on the head's vocabulary; positions whose target argmax
               is outside it are masked). With the full head, SpecVocab's speculator (Down d->d/8, Vocab) learns
               alongside from the same states (auxiliary loss weight 0.1, CE against the target distribution).
               A full head over 65,536 tokens (Gemma's 262k) scores a sampled softmax (--loss-negatives).
  4. export    the official EAGLE-3 layout: config.json + model.safetensors (or an index and shards when over
               20 MB) with fc, midlayer.*, norm, lm_head, d2t, t2d (speculator.* for ours), frequent_tokens.json
               (FR-Spec's slices), build.json (with held-out agreement: every 20th answer is not trained on).
  5. eval      tau and speedup of `eagle` (chain, gamma 5, greedy) on held-out prompts; draft/target step costs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm
from transformers import LlamaConfig

from harness.train import draft, prompts
from harness.train.common import atomic_save, autocast, compare_with_ar, digest, half_dtype, read_jsonl, write_build
from harness.train.frspec import frequency_order
from harness.zoo import eagle_cache, eagle_weights, smollm2
from methods.eagle3 import FREQUENT, INDEX, Eagle3, VocabSpeculator, feature_layers

EOS = 2  # SmolLM2's; also the filler id of padded positions (never trained on) for any target
DEFAULT_TARGET = "embedded:smollm2-135m-instruct"


# --- training-time test ------------------------------------------------------------------------------------


def ttt_attention(q, keys, values, step: int):
    """Attention of step `step`: query j sees step-0 entries at positions <= j - step and, for k = 1..step, the
    step-k entry at position j - step + k (its own chain). q [B, H, T, hd]; keys/values lists of [B, Hkv, T, hd]."""
    B, H, T, hd = q.shape
    rep = H // keys[0].shape[1]
    k0, v0 = keys[0].repeat_interleave(rep, 1), values[0].repeat_interleave(rep, 1)
    scores = q @ k0.transpose(-1, -2) / math.sqrt(hd)  # [B, H, T, T]
    j = torch.arange(T, device=q.device)
    visible = j[None, :] <= (j[:, None] - step).clamp_min(0)  # rows j < step are masked in the loss anyway
    scores = scores.masked_fill(~visible, float("-inf"))
    chain_k = [torch.roll(keys[k], step - k, dims=2).repeat_interleave(rep, 1) for k in range(1, step + 1)]
    chain_v = [torch.roll(values[k], step - k, dims=2).repeat_interleave(rep, 1) for k in range(1, step + 1)]
    if chain_k:
        chain = torch.stack([(q * k).sum(-1) for k in chain_k], -1) / math.sqrt(hd)  # [B, H, T, step]
        scores = torch.cat([scores, chain], -1)
    probs = torch.softmax(scores.float(), -1).to(q.dtype)
    out = probs[..., :T] @ v0
    for k, v in enumerate(chain_v):
        out = out + probs[..., T + k, None] * v
    return out


def ttt_states(eagle: Eagle3, features: torch.Tensor, next_tokens: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """The drafter's output states [B, T, d] for steps 0..steps-1. Position j of step 0 pairs feature j with
    next_tokens[:, j] (the token at j + 1); step i pairs the step i-1 state at j - 1 with the same token."""
    mid, attn = eagle.midlayer, eagle.midlayer.self_attn
    B, T = next_tokens.shape
    positions = torch.arange(T, device=features.device)[None].expand(B, -1)
    emb = eagle.embed_tokens(next_tokens).detach().to(eagle.fc.weight.dtype)  # the target's table: frozen
    hidden = eagle.fc(features.to(eagle.fc.weight.dtype))
    cos, sin = eagle.rotary(hidden, positions)
    keys, values, states = [], [], []
    for step in range(steps):
        q, k, v = attn.qkv(mid.inputs(emb, hidden), cos, sin)
        keys.append(k)
        values.append(v)
        o = ttt_attention(q, keys, values, step).transpose(1, 2).reshape(B, T, -1)
        out = mid.finish(hidden + attn.o_proj(o))
        states.append(out)
        hidden = F.pad(out[:, :-1], (0, 0, 1, 0))  # state of position j - 1 feeds position j
    return states


def soft_ce(logits: torch.Tensor, t_ids: torch.Tensor, t_lp: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the teacher's top-k distribution (renormalised over ids >= 0) per row."""
    valid = t_ids >= 0
    p = torch.softmax(t_lp.masked_fill(~valid, float("-inf")), -1).nan_to_num(0.0)
    logq = torch.log_softmax(logits.float(), -1)
    return -(p * logq.gather(-1, t_ids.clamp_min(0))).sum(-1)


def sampled_vocabulary(head_ids: torch.Tensor, n_rows: int, negatives: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sampled softmax over a large head: every teacher id in the batch plus `negatives` uniform draws from the other
    rows, each draw log-weighted by (other rows / negatives) so that the partition function stays an unbiased sum.
    Returns (head rows scored, their logit correction, map head row -> column, -1 outside). With as many draws as
    other rows it is the exact softmax."""
    taught = torch.zeros(n_rows, dtype=torch.bool)
    taught[head_ids[head_ids >= 0].unique()] = True
    others = (~taught).nonzero().squeeze(-1)
    drawn = others[torch.randperm(len(others))[:negatives]]
    rows = torch.cat([taught.nonzero().squeeze(-1), drawn])
    correction = torch.zeros(len(rows))
    if len(drawn):
        correction[-len(drawn):] = math.log(len(others) / len(drawn))
    column = torch.full((n_rows,), -1, dtype=torch.long)
    column[rows] = torch.arange(len(rows))
    return rows, correction, column


def ttt_loss(eagle: Eagle3, batch: dict, steps: int, head_weight: torch.Tensor, to_head: torch.Tensor,
             speculator: VocabSpeculator | None = None, aux_weight: float = 0.1, loss_frac: float = 1.0,
             noise: float = 0.0, negatives: int = 0):
    """(loss, per-step top-1 agreement with the target). `head_weight` [N, d] maps normed states to the head's N
    ids; `to_head` [V] maps target ids to head rows (-1 outside the head). `loss_frac` < 1 scores a random share
    of the positions: the full-vocabulary head dominates the cost, the decoder layer still sees every position.
    `negatives` > 0 scores a sampled softmax (`sampled_vocabulary`) instead of all N rows: a 262k-token head costs
    10x less, and agreement is then the argmax over the rows scored. `noise` > 0 adds uniform noise
    U(-noise, noise) to the (scaled) features, EAGLE's augmentation against memorising a small corpus through the
    wide fc."""
    features = batch["features"]
    if noise > 0:
        features = features + (torch.rand(features.shape) * 2 - 1).mul_(noise).to(features.dtype)
    states = ttt_states(eagle, features, batch["next"], steps)
    t_ids, t_lp, mask = batch["t_ids"], batch["t_lp"], batch["mask"]  # teacher of position j + 1, at row j
    head_ids = torch.where(t_ids >= 0, to_head[t_ids.long().clamp_min(0)], -1)
    bias, spec_weight = 0.0, speculator.vocab.weight if speculator is not None else None
    if 0 < negatives < len(head_weight):
        scored, bias, column = sampled_vocabulary(head_ids[mask], len(head_weight), negatives)
        head_weight, head_ids = head_weight[scored], torch.where(head_ids >= 0, column[head_ids.clamp_min(0)], -1)
        spec_weight = spec_weight[scored] if speculator is not None else None  # the full head: rows are target ids
    loss, agree = 0.0, []
    for i, h in enumerate(states):
        rows = mask.clone()
        rows[:, :i] = False  # a chain needs i earlier positions
        rows &= head_ids[..., 0] >= 0  # the target's choice is outside the head: nothing to learn
        if loss_frac < 1.0:
            rows &= torch.rand(rows.shape) < loss_frac
        hn = eagle.norm(h[rows])
        logits = hn @ head_weight.T
        loss = loss + 0.8**i * soft_ce(logits + bias, head_ids[rows], t_lp[rows]).mean()
        agree.append(float((logits.argmax(-1) == head_ids[rows][:, 0]).float().mean()))
        if speculator is not None and i == 0:
            approx = speculator.down(hn.detach()) @ spec_weight.T
            loss = loss + aux_weight * soft_ce(approx + bias, head_ids[rows], t_lp[rows]).mean()
    return loss, agree


@torch.no_grad()
def validate(eagle: Eagle3, items: list[dict], steps: int, head_weight: torch.Tensor, to_head: torch.Tensor,
             scale: torch.Tensor | None, batch: int = 8) -> list[float]:
    """Top-1 agreement with the target per TTT step on held-out answers (every answer position)."""
    hits, counts = [0.0] * steps, [0] * steps
    for s in range(0, len(items), batch):
        b = make_batch(items[s : s + batch], scale)
        states = ttt_states(eagle, b["features"].float(), b["next"], steps)
        head_ids = to_head[b["t_ids"][..., 0].long()]
        for i, h in enumerate(states):
            rows = b["mask"].clone()
            rows[:, :i] = False
            pred = (eagle.norm(h[rows]) @ head_weight.T).argmax(-1)
            hits[i] += float((pred == head_ids[rows]).sum())  # outside the head (-1) never matches
            counts[i] += int(rows.sum())
    return [h / max(c, 1) for h, c in zip(hits, counts)]


# --- data --------------------------------------------------------------------------------------------------


def extract_features(target, rows: list[dict], folder: Path, batch: int = 8) -> list[dict]:
    """Per answer: token ids (prompt + answer), the target's features [n, 3d] (bf16) and the teacher rows.
    Shards hold `batch` consecutive answers, so the first N answers of a generation (--answers N) reuse the
    shards of any longer run on it; a short last shard is named by its size."""
    layers = feature_layers(target.config.num_hidden_layers)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    chunks = [rows[s : s + batch] for s in range(0, len(rows), batch)]
    for c, chunk in enumerate(tqdm(chunks, desc="[2/5 features]", unit="batch")):
        shard = folder / (f"{c:05d}.pt" if len(chunk) == batch else f"{c:05d}-{len(chunk)}.pt")
        if not shard.exists():
            seqs = [r["prompt"] + r["response"] for r in chunk]
            width = max(map(len, seqs))
            ids = torch.tensor([s + [EOS] * (width - len(s)) for s in seqs])
            with torch.no_grad():
                hs = target(input_ids=ids, output_hidden_states=True).hidden_states
            feats = torch.cat([hs[i] for i in layers], -1).to(torch.bfloat16)
            items = [dict(ids=s, features=feats[b, : len(s)].clone(), prompt_len=len(r["prompt"]),
                          top_ids=r["top_ids"], top_lp=r["top_lp"]) for b, (s, r) in enumerate(zip(seqs, chunk))]
            atomic_save(items, shard)
        out.extend(torch.load(shard))
    return out


def feature_scale(items: list[dict], sink: int = 4) -> torch.Tensor:
    """Per-dimension RMS [3d] of the target's features (past the first `sink` positions, where attention sinks
    put values of ~25000). SmolLM2's mid and high layers carry a few massive dimensions (mean |x| ~350 against
    a typical ~5), which would swamp the fc input; training reads x / scale and the export folds the scale into
    fc (fc.weight / scale), so the official layout and the inference path stay unchanged."""
    total, count = None, 0
    for it in items:
        f = it["features"][sink:].float()
        total = f.pow(2).sum(0) if total is None else total + f.pow(2).sum(0)
        count += f.shape[0]
    return (total / max(count, 1)).sqrt().clamp_min(1e-3)


def make_batch(items: list[dict], scale: torch.Tensor | None = None) -> dict:
    """Right-padded batch: position j holds feature j (divided by `scale`), next token ids[j + 1] and the teacher
    for position j + 1 (defined on answer positions: j + 1 >= prompt_len - 1)."""
    T = max(len(it["ids"]) for it in items) - 1
    B, D, k = len(items), items[0]["features"].shape[-1], items[0]["top_ids"].shape[-1]
    batch = dict(features=torch.zeros(B, T, D, dtype=torch.bfloat16), next=torch.full((B, T), EOS),
                 t_ids=torch.full((B, T, k), -1, dtype=torch.int32), t_lp=torch.zeros(B, T, k),
                 mask=torch.zeros(B, T, dtype=torch.bool))
    for b, it in enumerate(items):
        n = len(it["ids"]) - 1
        batch["features"][b, :n] = it["features"][:n] if scale is None else it["features"][:n].float() / scale
        batch["next"][b, :n] = torch.tensor(it["ids"][1:])
        start = it["prompt_len"] - 2  # row j teaches position j + 1 = prompt_len - 1, which predicts answer[0]
        r = len(it["top_ids"])
        lo = max(start, 0)
        batch["t_ids"][b, lo : start + r] = it["top_ids"][lo - start :]
        batch["t_lp"][b, lo : start + r] = it["top_lp"][lo - start :].float()
        batch["mask"][b, lo : min(start + r, n)] = True
    batch["t_ids"], batch["t_lp"] = batch["t_ids"][:, :T], batch["t_lp"][:, :T]
    return batch


# --- build ---------------------------------------------------------------------------------------------------


def rope_theta(target_cfg) -> float:
    """The target's RoPE base; a target with per-layer-type RoPE (Gemma 3: local 10k on sliding layers, 1M on full
    ones) gives its full-attention layers' base, the one for long-range positions."""
    rope = target_cfg.rope_parameters
    if "rope_theta" not in rope:
        rope = rope.get("full_attention") or next(iter(rope.values()))
    return rope["rope_theta"]


def drafter_config(target_cfg, draft_vocab: int, eos: int | list[int] = EOS, bos: int = 1) -> dict:
    """Official EAGLE-3 config.json keys; the decoder layer takes the target's own sizes, as EAGLE-3 does (its head
    width too, when the target's is not hidden / heads: Gemma 3's 256)."""
    config = {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "bos_token_id": bos, "eos_token_id": eos,
              "hidden_act": "silu", "hidden_size": target_cfg.hidden_size, "intermediate_size": target_cfg.intermediate_size,
              "num_attention_heads": target_cfg.num_attention_heads, "num_key_value_heads": target_cfg.num_key_value_heads,
              "num_hidden_layers": 1, "max_position_embeddings": 8192, "rms_norm_eps": target_cfg.rms_norm_eps,
              "rope_theta": rope_theta(target_cfg), "tie_word_embeddings": False,
              "vocab_size": target_cfg.vocab_size, "draft_vocab_size": draft_vocab, "torch_dtype": "float16"}
    head_dim = getattr(target_cfg, "head_dim", None)
    if head_dim and head_dim != target_cfg.hidden_size // target_cfg.num_attention_heads:
        config["head_dim"] = head_dim
    return config


def new_drafter(config: dict, target, seed: int) -> Eagle3:
    torch.manual_seed(seed)
    cfg = LlamaConfig(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")})
    cfg.draft_vocab_size = config["draft_vocab_size"]
    eagle = Eagle3(cfg, target.config.hidden_size)
    for name, p in eagle.named_parameters():
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=0.02)
    eagle.embed_tokens = target.get_input_embeddings()
    return eagle


def warm_start(eagle: Eagle3, folder: Path, scale: torch.Tensor | None) -> None:
    """Start from another drafter of the same target (e.g. the full-head smol-eagle3 for a reduced head): its fc
    (unfolded back to scaled features), decoder layer and norm; the head stays as initialised."""
    from methods.eagle3 import read_weights

    state = read_weights(folder)
    fc = state["fc.weight"].float()
    if scale is not None:
        fc = fc * scale[None, :]
    keep = {k: v.float() for k, v in state.items() if k.startswith(("midlayer.", "norm."))}
    missing = [k for k in eagle.state_dict() if k.startswith(("midlayer.", "norm.")) and k not in keep]
    if missing:
        raise ValueError(f"--init-from {folder}: no {missing[:3]}")
    eagle.load_state_dict({**keep, "fc.weight": fc}, strict=False)


def train(eagle: Eagle3, target, items: list[dict], head: str, vocab_ids: torch.Tensor, steps: int, batch: int,
          ttt: int, lr: float, ckpt: Path | None = None, speculator: VocabSpeculator | None = None, seed: int = 0,
          desc: str = "[3/5 train]", loss_frac: float = 1.0, scale: torch.Tensor | None = None,
          weight_decay: float = 0.0, noise: float = 0.0, val: list[dict] | None = None, negatives: int = 0) -> dict:
    """AdamW with warmup + cosine; resumable from `ckpt`. Returns the top-1 agreement per TTT step with the target,
    averaged over the last 20 steps, and on the held-out answers `val`."""
    V = target.config.vocab_size
    to_head = torch.full((V,), -1, dtype=torch.long)
    to_head[vocab_ids] = torch.arange(len(vocab_ids))
    modules = [eagle] + ([speculator] if speculator is not None else [])
    shared = {id(p) for p in target.parameters()}  # the target's embedding (and a tied head) stay frozen
    params = [p for m in modules for p in m.parameters() if p.requires_grad and id(p) not in shared]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    step = 0
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt)
        eagle.load_state_dict(state["eagle"], strict=False)
        if speculator is not None:
            speculator.load_state_dict(state["speculator"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
    rng = random.Random(seed * 7919 + step)
    warmup = max(1, steps // 20)
    # the head's rows: the target's frozen output embedding, or the drafter's own (trained) reduced head
    weight = target.get_output_embeddings().weight.detach() if head == "full" else eagle.lm_head.weight
    # the target's embedding is not ours to save, nor (full head) the drafter's untrained lm_head: 2/3 of Gemma's ckpt
    unsaved = ("embed_tokens", "lm_head") if head == "full" else ("embed_tokens",)
    bar = tqdm(total=steps, initial=step, desc=desc, unit="step")
    recent = []
    while step < steps:
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
        with autocast():
            loss, agree = ttt_loss(eagle, make_batch(rng.sample(items, min(batch, len(items))), scale), ttt,
                                   weight, to_head, speculator, loss_frac=loss_frac, noise=noise,
                                   negatives=negatives)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        recent = (recent + [agree])[-20:]
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", top1="/".join(f"{a:.2f}" for a in agree[:3]))
        if ckpt is not None and (step % 50 == 0 or step == steps):
            state = {"eagle": {k: v for k, v in eagle.state_dict().items() if not k.startswith(unsaved)},
                     "opt": opt.state_dict(), "step": step}
            if speculator is not None:
                state["speculator"] = speculator.state_dict()
            atomic_save(state, ckpt)
    bar.close()
    log = {"agree_per_step": [sum(a[i] for a in recent) / len(recent) for i in range(ttt)] if recent else []}
    if val:
        log["val_agree_per_step"] = validate(eagle, val, ttt, weight.float(), to_head, scale)
        print(f"{desc} held-out top-1 per step: " + "/".join(f"{a:.3f}" for a in log["val_agree_per_step"]))
    return log


def export(eagle: Eagle3, config: dict, vocab_ids: torch.Tensor, frequent: list[int], out: Path,
           speculator: VocabSpeculator | None, scale: torch.Tensor | None = None, max_bytes: int | None = 19_000_000) -> None:
    """The official layout; a training-time feature scale is folded into fc. `max_bytes` caps a file (the repository's
    20 MB; None for drafters that are never committed, whose single tensors may be larger: a 262k-token speculator)."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in eagle.state_dict().items() if not k.startswith(("embed_tokens", "rotary", "d2t", "t2d"))}
    if scale is not None:
        state["fc.weight"] = state["fc.weight"].float() / scale[None, :]
    if config["draft_vocab_size"] < config["vocab_size"]:  # official maps: d2t offsets, t2d mask
        state["d2t"] = vocab_ids - torch.arange(len(vocab_ids))
        t2d = torch.zeros(config["vocab_size"], dtype=torch.bool)
        t2d[vocab_ids] = True
        state["t2d"] = t2d
    else:
        state.pop("lm_head.weight")  # full head: the target's own, tied
    if speculator is not None:
        state.update({f"speculator.{k}": v for k, v in speculator.state_dict().items()})
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    save_shards(state, out, max_bytes)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / FREQUENT).write_text(json.dumps(frequent) + "\n")


def save_shards(state: dict, out: Path, max_bytes: int | None = 19_000_000) -> None:
    """model.safetensors, or when that would pass `max_bytes` (the repository keeps every file under 20 MB),
    whole-tensor shards model-0000i-of-0000n.safetensors with the standard model.safetensors.index.json."""
    for old in [*out.glob("model*.safetensors"), out / INDEX]:
        old.unlink(missing_ok=True)
    nbytes = {k: v.numel() * v.element_size() for k, v in state.items()}
    if max_bytes is None or sum(nbytes.values()) <= max_bytes:
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        return
    shards, size = [{}], 0
    for k in sorted(state, key=lambda k: -nbytes[k]):
        if nbytes[k] > max_bytes:
            raise ValueError(f"tensor {k} has {nbytes[k]} bytes, more than a shard's {max_bytes}")
        if shards[-1] and size + nbytes[k] > max_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = state[k]
        size += nbytes[k]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards):
        save_file(shard, str(out / name), metadata={"format": "pt"})
    index = {"metadata": {"total_size": sum(nbytes.values())},
             "weight_map": {k: name for name, shard in zip(names, shards) for k in sorted(shard)}}
    (out / INDEX).write_text(json.dumps(index, indent=2) + "\n")


# --- the target ----------------------------------------------------------------------------------------------


def load_target(target_id: str, dtype: torch.dtype):
    """(model, tokenizer) of `--target`: the embedded SmolLM2 (the default), another `embedded:NAME`, a local folder
    or a hub id."""
    from harness.hub import embedded_name, from_hf
    from harness.zoo import load_embedded

    if target_id == DEFAULT_TARGET:
        return smollm2.load_instruct(dtype)
    if (name := embedded_name(target_id)) is not None:
        return load_embedded(name, dtype)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return from_hf(AutoModelForCausalLM, target_id, dtype=dtype), from_hf(AutoTokenizer, target_id)


def drafter_path(value: str) -> Path:
    """--init-from: a folder, or an `embedded:NAME` drafter wherever harness.models keeps it (committed or cached)."""
    from harness import HarnessError
    from harness.hub import embedded_name
    from harness.models import eagle_folder

    try:
        return eagle_folder(value) if embedded_name(value) is not None else Path(value)
    except HarnessError as err:  # argparse then names the option and exits 2
        raise argparse.ArgumentTypeError(str(err)) from None


def target_name(target_id: str) -> str:
    """A short name for a target's drafter and cache folders: smol for the default, the zoo name of an embedded
    target, else the folder or hub name with a digest of the full id (two folders of the same name stay apart)."""
    from harness.hub import embedded_name

    if target_id == DEFAULT_TARGET:
        return "smol"
    if (name := embedded_name(target_id)) is not None:
        return name
    return f"{target_id.rstrip('/').split('/')[-1]}-{digest(target_id)[:6]}"


def eos_ids(target) -> list[int]:
    """The target's end-of-answer ids (generation config first: Gemma 3 ends a turn with <end_of_turn>, 106)."""
    eos = target.generation_config.eos_token_id
    eos = target.config.eos_token_id if eos is None else eos
    return [eos] if isinstance(eos, int) else list(eos or [EOS])


# --- 5. eval -------------------------------------------------------------------------------------------------


def stage_eval(folder: Path, n_eval: int, tokens: int, heads: list[tuple[str, int]], target_id: str = DEFAULT_TARGET) -> dict:
    """tau, speedup over ar (same process, alternating) and draft step time per head on held-out prompts."""
    from methods import DecodeSettings, Models
    from methods.eagle3 import head_for, load_eagle3

    target, tokenizer = load_target(target_id, torch.float32)
    eagle = load_eagle3(folder, target, torch.float32)
    models = Models(target.eval(), eagle=eagle)
    settings = DecodeSettings(max_new_tokens=tokens, eos_token_ids=tuple(eos_ids(target)))
    questions = read_jsonl(draft.PROMPTS / "eval.jsonl")[:n_eval]
    results = {}
    with torch.no_grad():
        h = torch.randn(1, eagle.config.hidden_size)
        for kind, size in heads:
            head = head_for(eagle, target, kind, size)
            times = []
            for _ in range(30):
                t = time.perf_counter()
                head(eagle.norm(h))
                times.append(time.perf_counter() - t)
            results[f"{kind}{size or ''}"] = dict(
                **compare_with_ar(models, tokenizer, questions, settings, "eagle", f"[5/5 eval] {kind}{size or ''}",
                                  head=kind, head_size=size), head_ms=sorted(times)[15] * 1e3)
            print(f"[5/5 eval] {kind}{size or ''}: " + json.dumps(results[f'{kind}{size or ""}']))
    return results


# --- main ----------------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="a few answers and steps: an end-to-end check in seconds")
    ap.add_argument("--target", default=DEFAULT_TARGET,
                    help="the target: embedded:NAME, a local folder or a hub id (its drafter is never committed "
                         "unless it is the default SmolLM2)")
    ap.add_argument("--head", choices=["full", "reduced"], default="full",
                    help="full: tied target head (+ SpecVocab speculator); reduced: trained top-N head with d2t/t2d")
    ap.add_argument("--vocab", type=int, default=8192, help="N for --head reduced")
    ap.add_argument("--rank", type=int, default=0, help="speculator width d' (default d/8)")
    ap.add_argument("--train-prompts", type=int, default=prompts.N_TRAIN,
                    help="training prompts the target answers: the bundled train.jsonl's 1600, or more from the same "
                         "generator (its first 1600 unchanged; written into the cache)")
    ap.add_argument("--answers", type=int, help="training answers used (the generate stage's first N; default all)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ttt", type=int, default=4, help="unrolled steps of training-time test")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--loss-frac", type=float, default=0.35, help="share of answer positions scored per step")
    ap.add_argument("--scale-features", action=argparse.BooleanOptionalAction, default=True,
                    help="train on per-dimension RMS-scaled target features (folded into fc at export)")
    ap.add_argument("--loss-negatives", type=int,
                    help="score a sampled softmax: the batch's teacher ids plus N uniform draws from the other rows "
                         "(0: the whole head; default 16384 for a full head over 65,536 tokens, whose logits would "
                         "dominate a step: Gemma's 262k, 7x faster; else 0)")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--feature-noise", type=float, default=0.3,
                    help="uniform noise amplitude on the (scaled) target features during training (EAGLE's augmentation)")
    ap.add_argument("--init-from", type=drafter_path,
                    help="warm start from this drafter (fc, decoder layer, norm): a folder, or embedded:NAME as pair "
                         "configs name it (e.g. embedded:gemma3-270m-eagle3, built into the cache)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="weights folder (default harness/zoo/weights/smol-eagle3[-rN]; "
                                             "<cache_root>/NAME-eagle3/weights/NAME-eagle3[-rN] for another --target)")
    ap.add_argument("--n-eval", type=int, default=20)
    ap.add_argument("--eval-tokens", type=int, default=128)
    ap.add_argument("--no-eval", action="store_true")
    args = ap.parse_args(argv)
    draft_args = draft.parser().parse_args(["--smoke"] if args.smoke else [])
    draft_args.prompts = prompts.train_file(args.train_prompts, smollm2.cache_root() / "zoo-prompts")
    if args.smoke:
        draft_args.n_prompts, draft_args.max_new, draft_args.gen_batch = 4, 8, 4
        args.answers, args.steps, args.batch, args.ttt, args.vocab, args.no_eval = 4, 2, 2, 2, 512, True
    default = args.target == DEFAULT_TARGET
    base = f"{target_name(args.target)}-eagle3"
    name = base if args.head == "full" else f"{base}-r{args.vocab}"
    root = eagle_cache(target_name(args.target), args.smoke)
    out = args.out or eagle_weights(target_name(args.target), name, args.smoke)
    times = {}

    target, tokenizer = load_target(args.target, torch.bfloat16)
    target.eval()
    t = time.time()
    loaded = {torch.bfloat16: (target, tokenizer)}
    load = lambda dtype: loaded.get(dtype) or load_target(args.target, dtype)  # noqa: E731
    if default:  # shared with smol-draft (same cache)
        data = draft.stage_generate(draft_args, smollm2.cache_root() / ("smol-draft-smoke" if args.smoke else "smol-draft"),
                                    load)
    else:
        data = draft.stage_generate(draft_args, root / "answers", load, eos_ids(target), tokenizer)
    key = digest(len(data), sum(len(r["response"]) for r in data), args.smoke)  # the whole generation's features
    subset = [f"answers{args.answers}"] if args.answers is not None and args.answers < len(data) else []
    data = data[: args.answers]
    times["data_s"] = time.time() - t
    t = time.time()
    items = extract_features(target, data, root / f"features-{key}")
    times["features_s"] = time.time() - t

    val, fit = items[::20], [it for i, it in enumerate(items) if i % 20]  # held out: every 20th answer
    stops = eos_ids(target) if not default else [EOS]
    draft_vocab = target.config.vocab_size if args.head == "full" else args.vocab
    if args.loss_negatives is None:
        args.loss_negatives = 16384 if draft_vocab > 65536 else 0
    config = drafter_config(target.config, draft_vocab) if default else drafter_config(
        target.config, draft_vocab, stops[0] if len(stops) == 1 else stops, target.config.bos_token_id)
    frequent = frequency_order([r["response"] for r in data], target.config.vocab_size)
    vocab_ids = torch.arange(target.config.vocab_size) if args.head == "full" else torch.tensor(sorted(frequent[: args.vocab]))
    if args.head == "reduced" and not all(e in vocab_ids for e in stops):  # every EOS stays draftable
        kept = [i for i in frequent if i not in stops][: args.vocab - len(stops)]
        vocab_ids = torch.tensor(sorted(kept + stops))
    eagle = new_drafter(config, target, args.seed)
    if args.head == "reduced":  # start the trained head from the target's own rows of its vocabulary
        eagle.lm_head.weight.data.copy_(target.get_output_embeddings().weight.detach()[vocab_ids].float())
    scale = feature_scale(fit) if args.scale_features else None
    if args.init_from:
        warm_start(eagle, args.init_from, scale)
    speculator = VocabSpeculator(config["hidden_size"], args.rank or config["hidden_size"] // 8,
                                 config["vocab_size"]) if args.head == "full" else None
    t = time.time()
    warm = [hashlib.sha1(eagle.fc.weight.detach().numpy().tobytes()).hexdigest()] if args.init_from else []
    run = digest(half_dtype(), name, key, args.steps, args.batch, args.ttt, args.lr, args.seed, args.rank, args.loss_frac,
                 args.scale_features, "val20", args.weight_decay, args.feature_noise, *warm,
                 *([f"neg{args.loss_negatives}"] if args.loss_negatives else []), *subset)
    log = train(eagle.float(), target, fit, args.head, vocab_ids, args.steps, args.batch, args.ttt, args.lr,
                root / f"train-{run}" / "ckpt.pt", speculator, args.seed, loss_frac=args.loss_frac, scale=scale,
                weight_decay=args.weight_decay, noise=args.feature_noise, val=val,
                negatives=args.loss_negatives)
    times["train_s"] = time.time() - t
    export(eagle, config, vocab_ids, frequent, out, speculator, scale, max_bytes=19_000_000 if default else None)
    n_params = sum(v.numel() for k, v in eagle.state_dict().items()
                   if not k.startswith(("embed_tokens", "rotary")) and not (args.head == "full" and k == "lm_head.weight"))
    build = dict(name=name, target=args.target, head=args.head, params=n_params,
                 file_bytes=sum(f.stat().st_size for f in out.glob("model*.safetensors")),
                 data=dict(answers=len(data), tokens=sum(len(it["ids"]) for it in items)),
                 train=dict(steps=args.steps, batch=args.batch, ttt=args.ttt, lr=args.lr, loss_frac=args.loss_frac,
                            loss_negatives=args.loss_negatives,
                            scale_features=args.scale_features, weight_decay=args.weight_decay,
                            feature_noise=args.feature_noise, held_out_answers=len(val),
                            init_from=str(args.init_from) if args.init_from else None, **log),
                 speculator_rank=speculator.down.weight.shape[0] if speculator is not None else None)
    print(f"[4/5 export] {n_params / 1e6:.2f}M params -> {out}")
    if not args.no_eval:
        t = time.time()
        heads = [("full", 0), ("specvocab", 768), ("frspec", 8192)] if args.head == "full" else [("reduced", 0)]
        build["eval"] = stage_eval(out, args.n_eval, args.eval_tokens, heads, args.target)
        times["eval_s"] = time.time() - t
    write_build(out, build, times)


if __name__ == "__main__":
    main()
