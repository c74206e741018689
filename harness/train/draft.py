"""Build smol-draft: distil SmolLM2-135M-Instruct into a small draft LM on CPU.

    python -m harness.train.draft            # full build (~40 min on 2 CPU cores), writes weights/smol-draft/
    python -m harness.train.draft --smoke    # end-to-end check in seconds on a tiny budget

Stages (each resumable; intermediate files under `<cache_root>/smol-draft/`, keyed by their settings):
  1. generate  the target answers `datasets/zoo-prompts/train.jsonl` greedily with its chat template
               (batched, bf16, left padding); second turns see the target's own first answers. The target's
               top-k log-probabilities at every answer token are kept as soft labels (the EAGLE data recipe,
               plus the teacher distribution for distillation). Saved one shard per batch.
  2. vocab     the draft's output vocabulary: the N most frequent tokens of those answers, EOS always in.
  3. train     soft cross-entropy against the target's top-k distribution restricted to the draft vocabulary
               (= forward KL up to a constant), on answer positions only; AdamW, cosine schedule, bf16
               autocast where the CPU has native bf16 (common.half_dtype); a checkpoint every `--ckpt-every` steps.
  4. export    fp16 safetensors + config.json into `--out`.
  5. eval      (unless --no-eval) block efficiency tau of `sd` (gamma 5, greedy) on held-out prompts and the
               measured draft-step / target-step cost, written to `--out`/build.json.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoTokenizer

from harness import PROJECT_ROOT
from harness.train.common import (atomic_save, autocast, compare_with_ar, digest, greedy_topk, half_dtype, read_jsonl,
                                   resume, write_build)
from harness.zoo import smol_draft, smollm2
from harness.zoo.smol_draft import DEFAULT_CONFIG, SmolDraft

PROMPTS = PROJECT_ROOT / "datasets" / "zoo-prompts"


# --- 1. generate ------------------------------------------------------------------------------------


@torch.no_grad()
def generate_batch(target, tokenizer, chats: list[list[dict]], max_new: int, k: int, eos: int | list[int]) -> list[dict]:
    prompts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, return_dict=True)["input_ids"] for c in chats]
    return greedy_topk(target, prompts, max_new, k, eos)


def stage_generate(args, work: Path, load=None, eos: int | list[int] | None = None, tokenizer=None) -> list[dict]:
    """The target's greedy answers to the training prompts with its top-k log-probabilities, cached in `work`.
    `load(dtype) -> (target, tokenizer)`, `eos` (its end-of-answer ids) and its `tokenizer` name another target
    than SmolLM2 (harness.train.eagle --target); `work` must then be that target's own folder."""
    load = load or smollm2.load_instruct
    eos = DEFAULT_CONFIG["eos_token_id"] if eos is None else eos
    questions = read_jsonl(args.prompts)[: args.n_prompts]
    key = digest(args.prompts.read_text(), args.n_prompts, args.max_new, args.topk, args.gen_batch, args.gen_dtype,
                 *([tokenizer.chat_template] if tokenizer is not None else []))  # another target: its prompt format
    folder = work / f"gen-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.gen_dtype]
    target = None
    answers: dict[tuple[int, int], dict] = {}
    for turn in range(max(len(q["turns"]) for q in questions)):
        todo = [i for i, q in enumerate(questions) if len(q["turns"]) > turn]
        chats = {}
        for i in todo:
            chat = []
            for t in range(turn + 1):
                chat.append({"role": "user", "content": questions[i]["turns"][t]})
                if t < turn:
                    chat.append({"role": "assistant", "content": answers[(i, t)]["text"]})
            chats[i] = chat
        # Similar prompt lengths share a batch (less padding); the order is deterministic.
        todo.sort(key=lambda i: len(json.dumps(chats[i])))
        batches = [todo[s : s + args.gen_batch] for s in range(0, len(todo), args.gen_batch)]
        for b, batch in enumerate(tqdm(batches, desc=f"[1/5 generate] turn {turn + 1}", unit="batch")):
            shard = folder / f"turn{turn}-{b:04d}.pt"
            if shard.exists():
                rows = torch.load(shard)
            else:
                if target is None:
                    target, tokenizer = load(dtype)
                    target.eval()
                rows = generate_batch(target, tokenizer, [chats[i] for i in batch], args.max_new, args.topk, eos)
                for i, r in zip(batch, rows):
                    r.update(qid=questions[i]["question_id"], turn=turn)
                atomic_save(rows, shard)
            for i, r in zip(batch, rows):
                if tokenizer is None:
                    tokenizer = AutoTokenizer.from_pretrained(smollm2.converted_dir())
                r["text"] = tokenizer.decode(r["response"], skip_special_tokens=True)
                answers[(i, turn)] = r
    return [answers[key] for key in sorted(answers)]


# --- 2. vocab ---------------------------------------------------------------------------------------


def stage_vocab(data: list[dict], n: int, eos: int, target_vocab: int) -> torch.Tensor:
    counts = torch.zeros(target_vocab, dtype=torch.long)
    for r in tqdm(data, desc="[2/5 vocab]", unit="answer"):
        counts += torch.bincount(torch.tensor(r["response"]), minlength=target_vocab)
    rank = counts.clone()
    rank[eos] = counts.max() + 1
    # Most frequent first; ties (incl. unseen tokens) go to lower ids, i.e. earlier BPE merges.
    order = sorted(range(target_vocab), key=lambda i: (-int(rank[i]), i))
    vocab = torch.tensor(sorted(order[:n]))
    print(f"[2/5 vocab] {n} tokens cover {counts[vocab].sum() / counts.sum():.2%} of answer tokens")
    return vocab


# --- 3. train ---------------------------------------------------------------------------------------


def init_from_target(model: SmolDraft, embed: torch.Tensor) -> None:
    """proj and head start in the target's embedding geometry: its top principal directions (the target
    ties input and output embeddings, so similar tokens get similar head rows), rescaled to std 0.02."""
    d = model.cfg["hidden_size"]
    _, _, v = torch.linalg.svd(embed - embed.mean(0), full_matrices=False)
    basis = v[:d].T  # [576, d]
    with torch.no_grad():
        model.proj.weight.copy_(basis.T * (0.02 / basis.std()))
        head = embed[model.vocab_ids] @ basis
        model.head.weight.copy_(head * (0.02 / head.std()))


def make_batch(rows: list[dict], to_draft: torch.Tensor, eos: int):
    """Right-padded token ids, plus per loss position (flattened): its index, teacher ids (draft vocab
    indices, -1 outside it) and teacher log-probs. Right padding never affects earlier positions."""
    seqs = [r["prompt"] + r["response"] for r in rows]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [eos] * (width - len(s)) for s in seqs])
    pos, t_ids, t_lp = [], [], []
    for b, r in enumerate(rows):
        start = len(r["prompt"]) - 1  # logits here predict response[0]
        pos.append(b * width + start + torch.arange(len(r["response"])))
        t_ids.append(to_draft[r["top_ids"].long()])
        t_lp.append(r["top_lp"].float())
    return ids, torch.cat(pos), torch.cat(t_ids), torch.cat(t_lp)


def loss_fn(model: SmolDraft, batch):
    ids, pos, t_ids, t_lp = batch
    h = model.hidden(ids).flatten(0, 1)[pos]
    logq = torch.log_softmax(model.head(h).float(), dim=-1)
    valid = t_ids >= 0
    p = torch.softmax(t_lp.masked_fill(~valid, float("-inf")), dim=-1).nan_to_num(0.0)
    keep = valid.any(-1)
    loss = -(p * logq.gather(-1, t_ids.clamp_min(0))).sum(-1)[keep].mean()
    # Greedy acceptance proxy: the draft's argmax equals the target's (teacher top-1 is its greedy token).
    agree = ((logq.argmax(-1) == t_ids[:, 0]) & valid[:, 0]).float().mean()
    return loss, agree


def stage_train(args, work: Path, data: list[dict], vocab: torch.Tensor, cfg: dict, embed: torch.Tensor):
    """The trained draft and its (validation loss, validation top-1 agreement) on every 20th answer."""
    torch.manual_seed(args.seed)
    val = [r for i, r in enumerate(data) if i % 20 == 19]
    train = [r for i, r in enumerate(data) if i % 20 != 19] or data
    to_draft = torch.full((cfg["target_vocab"],), -1, dtype=torch.long)
    to_draft[vocab] = torch.arange(len(vocab))
    model = SmolDraft(cfg, vocab, embed)
    init_from_target(model, embed)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    key = digest(half_dtype(), cfg, vocab.tolist(), len(data), args.steps, args.batch, args.lr, args.wd, args.seed,
                 args.warmup)
    ckpt = work / f"train-{key}" / "ckpt.pt"
    step = resume(ckpt, model, opt, lambda msg: print(f"[3/5 train] {msg}"))
    rng = random.Random(args.seed * 1000 + step)

    def lr_at(s):
        if s < args.warmup:
            return args.lr * (s + 1) / args.warmup
        frac = (s - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    def save_ckpt():
        atomic_save({"model": model.trained_state(), "opt": opt.state_dict(), "step": step}, ckpt)

    def evaluate():
        model.eval()
        with torch.no_grad(), autocast():
            out = [loss_fn(model, make_batch(val[i : i + args.batch], to_draft, cfg["eos_token_id"]))
                   for i in range(0, len(val), args.batch)]
        model.train()
        return sum(float(o[0]) for o in out) / len(out), sum(float(o[1]) for o in out) / len(out)

    model.train()
    bar = tqdm(total=args.steps, initial=step, desc="[3/5 train]", unit="step")
    while step < args.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        batch = make_batch(rng.sample(train, min(args.batch, len(train))), to_draft, cfg["eos_token_id"])
        with autocast():
            loss, agree = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", top1=f"{agree.item():.3f}")
        if step % args.ckpt_every == 0 or step == args.steps:
            save_ckpt()
            if val and (step % args.eval_every == 0 or step == args.steps):
                vl, va = evaluate()
                tqdm.write(f"[3/5 train] step {step}: val loss {vl:.3f}, val top-1 agreement {va:.3f}")
    bar.close()
    return model.eval(), (evaluate() if val else (None, None))


# --- 5. eval ----------------------------------------------------------------------------------------


def step_ms(model, ctx: int = 200, reps: int = 40) -> float:
    """Median wall time of one single-token forward with a `ctx`-token cache, batch 1."""
    from methods.core import forward, new_cache
    cache, times = new_cache(model), []
    with torch.no_grad():
        forward(model, cache, torch.randint(0, 8000, (1, ctx)), logits_to_keep=1)
        for _ in range(reps):
            t = time.perf_counter()
            forward(model, cache, torch.tensor([[42]]), logits_to_keep=1).argmax(-1)
            times.append(time.perf_counter() - t)
            cache.crop(-1)
    return sorted(times)[reps // 2] * 1e3


def stage_eval(args, folder: Path) -> dict:
    from methods import DecodeSettings, Models
    target, tokenizer = smollm2.load_instruct(torch.float32)
    draft, _ = smol_draft.load(torch.float32, folder)
    models = Models(target.eval(), draft)
    settings = DecodeSettings(max_new_tokens=args.eval_tokens, eos_token_ids=(DEFAULT_CONFIG["eos_token_id"],))
    questions = read_jsonl(args.eval_prompts)[: args.n_eval]
    res = compare_with_ar(models, tokenizer, questions, settings, "sd", "[5/5 eval] ar vs sd", gamma=5)
    t_ms, d_ms = step_ms(target), step_ms(draft)
    res = dict(n_prompts=len(questions), max_new_tokens=args.eval_tokens, gamma=5, tau=res["tau"], speedup=res["speedup"],
               lossless=res["identical"], target_step_ms=t_ms, draft_step_ms=d_ms, draft_target_cost=d_ms / t_ms)
    print(f"[5/5 eval] tau {res['tau']:.2f}, speedup {res['speedup']:.2f}x, identical {res['lossless']}, "
          f"draft step {d_ms:.2f} ms / target step {t_ms:.1f} ms = {res['draft_target_cost']:.1%}")
    return res


# --- main -------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny prompts/model/steps: an end-to-end check in seconds")
    ap.add_argument("--out", type=Path, help=f"weights folder (default {smol_draft.WEIGHTS_DIR})")
    ap.add_argument("--work", type=Path, help="intermediate files (default <cache_root>/smol-draft)")
    ap.add_argument("--prompts", type=Path, default=PROMPTS / "train.jsonl")
    ap.add_argument("--eval-prompts", type=Path, default=PROMPTS / "eval.jsonl")
    ap.add_argument("--n-prompts", type=int, default=None, help="use the first N training prompts (default all)")
    ap.add_argument("--max-new", type=int, default=160, help="answer length cap when generating data")
    ap.add_argument("--topk", type=int, default=20, help="teacher log-probs kept per token")
    ap.add_argument("--gen-batch", type=int, default=48)
    ap.add_argument("--gen-dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--hidden", type=int, default=DEFAULT_CONFIG["hidden_size"])
    ap.add_argument("--layers", type=int, default=DEFAULT_CONFIG["num_hidden_layers"])
    ap.add_argument("--vocab", type=int, default=DEFAULT_CONFIG["n_draft_vocab"])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=16, help="answers per step")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-every", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--n-eval", type=int, default=40, help="held-out prompts for the tau/speed check")
    ap.add_argument("--eval-tokens", type=int, default=128)
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--until", choices=["generate", "vocab", "train"], help="stop after this stage")
    return ap


def main(argv=None):
    args = parser().parse_args(argv)
    if args.smoke:
        args.n_prompts, args.max_new, args.gen_batch, args.hidden, args.layers, args.vocab = 4, 8, 4, 64, 1, 512
        args.steps, args.batch, args.warmup, args.ckpt_every, args.eval_every = 3, 2, 1, 2, 2
        args.no_eval = True
    root = smollm2.cache_root() / ("smol-draft-smoke" if args.smoke else "smol-draft")
    work = args.work or root
    out = args.out or (root / "weights" if args.smoke else smol_draft.WEIGHTS_DIR)
    cfg = {**DEFAULT_CONFIG, "hidden_size": args.hidden, "num_hidden_layers": args.layers,
           "num_attention_heads": max(1, args.hidden // 64), "num_key_value_heads": max(1, args.hidden // 64),
           "intermediate_size": 4 * args.hidden, "n_draft_vocab": args.vocab}
    times = {}

    t = time.time()
    data = stage_generate(args, work)
    times["generate_s"] = time.time() - t
    if args.until == "generate":
        return
    t = time.time()
    vocab = stage_vocab(data, args.vocab, cfg["eos_token_id"], cfg["target_vocab"])
    times["vocab_s"] = time.time() - t
    if args.until == "vocab":
        return
    t = time.time()
    embed = smol_draft.target_embedding()
    model, (val_loss, val_top1) = stage_train(args, work, data, vocab, cfg, embed)
    times["train_s"] = time.time() - t
    if args.until == "train":
        return
    t = time.time()
    smol_draft.save(model, out)
    times["export_s"] = time.time() - t
    n_params = sum(v.numel() for k, v in model.trained_state().items() if k != "vocab_ids")
    build = dict(params=n_params, file_bytes=(out / "model.safetensors").stat().st_size, config=cfg,
                 data=dict(prompts=len({r["qid"] for r in data}), answers=len(data),
                           answer_tokens=sum(len(r["response"]) for r in data), max_new=args.max_new, topk=args.topk),
                 train=dict(steps=args.steps, batch=args.batch, lr=args.lr, wd=args.wd, warmup=args.warmup,
                            val_loss=val_loss, val_top1=val_top1))
    print(f"[4/5 export] {n_params / 1e6:.2f}M params, {build['file_bytes'] / 2**20:.1f} MiB -> {out}")
    if not args.no_eval:
        t = time.time()
        build["eval"] = stage_eval(args, out)
        times["eval_s"] = time.time() - t
    write_build(out, build, times)


if __name__ == "__main__":
    main()
