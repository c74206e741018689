"""Build tiny-llava (harness/zoo/tiny_llava.py) on CPU: a LLaVA target around frozen SmolLM2-135M-Instruct and
a small LLaVA draft distilled from it.

    python -m harness.train.vlm            # full build (~70 min on 2 CPU cores), writes weights/tiny-llava/
    python -m harness.train.vlm --smoke    # end-to-end check in seconds on a tiny budget
    python -m harness.train.vlm --target-from harness/zoo/weights/tiny-llava --out DIR   # a new draft only

Stages (each resumable; intermediate files under `<cache_root>/tiny-llava/`, keyed by their settings):
  1. data     render-free sample lists from harness.train.vlm_data: the target's training set, the draft's
              distillation set (image samples + text-only prompts), the held-out eval sets.
  2. text     SmolLM2's own greedy answers to the text prompts (the target with no image *is* SmolLM2): labels
              for the target's "text question + unrelated picture" samples, and the draft's text-only data.
  3. vision   the vision tower + projector pretrained without the language model (LLaVA starts from a
              pretrained CLIP): each patch's projected feature regresses onto the mean SmolLM2 embedding of the
              words for what the patch shows ("red", "circle"; the background colour where nothing is), so
              image tokens start out reading like words. Without it the tower learned nothing useful: its
              features grew to 50x the embedding norm and the answers ignored the image.
  4. target   LLaVA recipe: the projector (and, at a tenth of the rate, the tower) learn, SmolLM2 stays frozen;
              cross-entropy on the answer tokens (and the closing <|im_end|>), bf16 autocast where the CPU
              has native bf16 (else float32: common.half_dtype), the shared system-prompt prefix computed once.
  5. answers  the trained target answers the draft's image samples greedily; its top-k log-probabilities at
              every answer token are kept as soft labels.
  6. draft    a small Llama + its own projector (vision tower copied from the target, frozen), distilled on the
              target's answers: every image sample as a multimodal view (M) and a text-only view (T: image
              tokens -> newline), a few as pooled views (P); 3-5-image sequences only as T views (like TABED's
              drafts, whose multimodal training saw single images). Soft cross-entropy against the top-k.
              --draft-grounded N adds N one-image questions as M views only; --draft-context L cuts every view
              to its first L tokens, so that a long multi-image prompt in M goes past what the draft has seen.
  7. eval     accuracy on counting/colour/yes-no questions vs chance, how often answers change when the image
              is swapped, and block efficiency tau (sd, gamma 5, greedy) of drafting modes M and T on the two
              held-out sets; everything into `--out`/build.json.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import DynamicCache

from harness import scenes
from harness.train import vlm_data
from harness.train.common import atomic_save, autocast, digest, greedy_topk, half_dtype, resume, write_build
from harness.zoo import smollm2, tiny_llava

EOS, NEWLINE = 2, 198


# --- tokens and pixels -----------------------------------------------------------------------------------

class Encoder:
    """Chat prompts as token ids (image tokens expanded) and images as pixel tensors, exactly as the
    processor builds them at run time."""

    def __init__(self, processor):
        self.processor, self.tok = processor, processor.tokenizer
        self.image_id = self.tok.convert_tokens_to_ids(tiny_llava.IMAGE_TOKEN)
        self.size = processor.image_processor.crop_size["height"]
        self.grid = self.size // processor.patch_size  # patches per side: grid ** 2 tokens per image
        self.image_tokens = self.grid ** 2
        self._cache = {}

    def prompt(self, question: str, n_images: int) -> list[int]:
        content = [{"type": "image"}] * n_images + [{"type": "text", "text": question}]
        text = self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        text = text.replace(tiny_llava.IMAGE_TOKEN, tiny_llava.IMAGE_TOKEN * self.image_tokens)
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def answer(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"] + [EOS]

    def pixels(self, specs: list[dict]) -> torch.Tensor:
        if not specs:
            return torch.zeros(0, 3, self.size, self.size)
        images = [scenes.render(s) for s in specs]
        return self.processor.image_processor(images, return_tensors="pt")["pixel_values"]

    @property
    def prefix(self) -> list[int]:
        """The token prefix every prompt shares (system prompt + '<|im_start|>user\\n')."""
        a, b = self.prompt("a", 0), self.prompt("b", 1)
        n = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        return a[:n]


# --- generation (stages 2 and 5) ----------------------------------------------------------------------------

def generate(model, enc: Encoder, samples: list[dict], max_new: int, topk: int, use_images: bool = True) -> list[dict]:
    """Greedy answers with top-k log-probs (harness.train.common.greedy_topk), keyed by sample id."""
    prompts = [enc.prompt(s["question"], len(s["images"]) if use_images else 0) for s in samples]
    extra = {}
    if use_images and any(s["images"] for s in samples):
        extra["pixel_values"] = torch.cat([enc.pixels(s["images"]) for s in samples]).to(model.dtype)
    rows = greedy_topk(model, prompts, max_new, topk, EOS, **extra)
    return [dict(id=s["id"], **r) for s, r in zip(samples, rows)]


def generate_all(model_fn, enc: Encoder, samples: list[dict], folder: Path, desc: str, max_new: int, topk: int,
                 batch: int, use_images: bool = True) -> dict[str, dict]:
    """`generate` over all samples in shards of `batch` (similar lengths together), resumable."""
    folder.mkdir(parents=True, exist_ok=True)
    order = sorted(samples, key=lambda s: (len(s["images"]) if use_images else 0, len(s["question"]), s["id"]))
    batches = [order[i : i + batch] for i in range(0, len(order), batch)]
    model, rows = None, {}
    for b, chunk in enumerate(tqdm(batches, desc=desc, unit="batch")):
        shard = folder / f"{b:05d}.pt"
        if shard.exists():
            got = torch.load(shard)
        else:
            model = model or model_fn()
            got = generate(model, enc, chunk, max_new, topk, use_images)
            atomic_save(got, shard)
        rows.update({r["id"]: r for r in got})
    return rows


# --- 3. vision ----------------------------------------------------------------------------------------------

TIME_WORDS = {"day": "daytime", "dusk": "sunset", "night": "night"}


def patch_words(spec: dict, g: int) -> list[list[str]]:
    """What each of the g x g patches shows, in words: each object's colour and kind (and label) in the
    patch that holds its centre (one patch per object, so objects can be counted); the scene's own words
    (background colour; ground and time of day; chart kind, colour and title; document kind and title) in
    the patches with no object centre, with the number of shapes in a shapes scene (so it can be read off)."""
    size = spec["size"]
    scene = {"shapes": lambda: [spec["background"], vlm_data.NUMBERS[len(spec["objects"])]],
             "landscape": lambda: [spec["ground"], TIME_WORDS[spec["time"]]],
             "chart": lambda: [spec["chart"], "chart", spec["color"], *spec["title"].split()],
             "document": lambda: [spec["doc"], "document", *spec["title"].split()]}[spec["kind"]]()
    cells = [[] for _ in range(g * g)]
    for o in spec.get("objects", []):
        cell = min(g - 1, int(o["y"] * g / size)) * g + min(g - 1, int(o["x"] * g / size))
        cells[cell] += [o["color"], o["kind"]] + ([str(o["label"])] if o.get("label") else [])
    return [c or scene for c in cells]


class WordTargets:
    """A patch's regression target: the mean of SmolLM2's input embeddings of its words (as they appear
    mid-sentence, with a leading space), rescaled to the mean embedding norm, so that after this stage an
    image token reads to the frozen language model like the words for what it shows."""

    def __init__(self, enc: Encoder, embed: torch.Tensor):
        self.enc, self.embed = enc, embed.detach().float()
        self.norm = self.embed[: enc.image_id].norm(dim=-1).mean()
        self._cache = {}

    def __call__(self, specs: list[dict]) -> torch.Tensor:
        out = []
        for spec in specs:
            for words in patch_words(spec, self.enc.grid):
                key = tuple(words)
                if key not in self._cache:
                    ids = [i for w in words for i in self.enc.tok(" " + w, add_special_tokens=False)["input_ids"]]
                    v = self.embed[ids].mean(0)
                    self._cache[key] = v * (self.norm / v.norm())
                out.append(self._cache[key])
        return torch.stack(out).view(len(specs), -1, self.embed.shape[1])


def vision_loss(model, enc: Encoder, targets: WordTargets, specs: list[dict]):
    """Cosine distance to each patch's word target plus the squared relative error of its norm."""
    from methods.drafting import vision_features

    feats = vision_features(model, enc.pixels(specs).to(model.dtype)).float()
    want = targets(specs)
    cos = F.cosine_similarity(feats, want, dim=-1)
    loss = (1 - cos).mean() + ((feats.norm(dim=-1) / targets.norm - 1) ** 2).mean()
    return loss, cos.mean().detach()


def stage_vision(args, work: Path, enc: Encoder, model) -> dict:
    """Pretrain the vision tower and projector without the language model (fast: no LM forward), as LLaVA
    starts from a pretrained CLIP: per-patch regression onto word embeddings (WordTargets), on the images of
    `n_vision` samples of the training mixture (their own split: scenes the target stage does not see)."""
    images = [spec for s in vlm_data.make_samples("vision", args.n_vision, args.seed) for spec in s["images"]]
    targets = WordTargets(enc, model.model.language_model.embed_tokens.weight)
    params = [p for p in model.parameters() if p.requires_grad]

    def batches(epoch, rng):
        order = images[:]
        rng.shuffle(order)
        return [order[i : i + args.vision_batch] for i in range(0, len(order), args.vision_batch)]

    key = digest(half_dtype(), args.vision, len(images), args.vision_steps, args.vision_batch, args.vision_lr, args.seed)
    final = train_loop("3/7 vision", model, [(params, 1.0)], batches, lambda b: vision_loss(model, enc, targets, b),
                       args.vision_steps, args.vision_lr, max(1, args.vision_steps // 20), work / f"vision-{key}" / "ckpt.pt",
                       lambda: tiny_llava.target_parts(model), args.ckpt_every, args.seed)
    return dict(images=len(images), final_loss=final)


# --- 4. target ----------------------------------------------------------------------------------------------

def shared_prefix_cache(model, prefix: list[int], batch: int) -> DynamicCache:
    """The frozen LM's KV cache of the shared prompt prefix, repeated over the batch (no gradient needed:
    nothing before the images is trainable)."""
    key = (tuple(prefix), batch)
    if getattr(model, "_prefix_key", None) != key:
        with torch.no_grad(), autocast():
            one = DynamicCache(config=model.config.text_config)
            model.model.language_model(input_ids=torch.tensor([prefix]), past_key_values=one, use_cache=True)
        model._prefix_layers = [(l.keys, l.values) for l in one.layers]
        model._prefix_key = key
    cache = DynamicCache(config=model.config.text_config)
    for i, (k, v) in enumerate(model._prefix_layers):
        cache.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), i)
    return cache


def target_batch(enc: Encoder, rows: list[dict], skip: int):
    """Right-padded ids after the shared prefix (`skip` tokens), pixel values, and the flattened positions
    whose logits predict answer tokens, with those tokens."""
    seqs = [r["prompt"][skip:] + r["answer_ids"] for r in rows]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [EOS] * (width - len(s)) for s in seqs])
    pos, labels = [], []
    for b, r in enumerate(rows):
        start = len(r["prompt"]) - skip - 1
        pos.append(b * width + start + torch.arange(len(r["answer_ids"])))
        labels.append(torch.tensor(r["answer_ids"]))
    pixels = torch.cat([enc.pixels(r["images"]) for r in rows])
    return ids, pixels, torch.cat(pos), torch.cat(labels)


def target_loss(model, enc: Encoder, rows: list[dict], prefix: list[int]):
    ids, pixels, pos, labels = target_batch(enc, rows, len(prefix))
    cache = shared_prefix_cache(model, prefix, len(rows))
    with autocast():
        h = model.model(input_ids=ids, pixel_values=pixels if len(pixels) else None, past_key_values=cache,
                        use_cache=True).last_hidden_state
        logits = model.lm_head(h.flatten(0, 1)[pos]).float()
    loss = F.cross_entropy(logits, labels)
    return loss, (logits.argmax(-1) == labels).float().mean()


def length_batches(rows: list[dict], batch: int, rng: random.Random) -> list[list[dict]]:
    """Shuffled batches of similar lengths (less padding): sort within windows of 50 batches."""
    rows = rows[:]
    rng.shuffle(rows)
    out = []
    for w in range(0, len(rows), 50 * batch):
        window = sorted(rows[w : w + 50 * batch], key=lambda r: len(r["prompt"]) + len(r["answer_ids"]))
        out += [window[i : i + batch] for i in range(0, len(window), batch)]
    rng.shuffle(out)
    return out


def cosine(step: int, total: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


def train_loop(name: str, model, groups, batches_fn, loss_fn, args_steps: int, lr: float, warmup: int, ckpt: Path,
               state_fn, ckpt_every: int, seed: int):
    """AdamW + cosine schedule with resumable checkpoints; `groups` is [(parameters, lr multiplier)],
    `batches_fn(epoch, rng)` yields batches."""
    params = [p for ps, _ in groups for p in ps]
    opt_groups = []
    for ps, scale in groups:
        opt_groups += [{"params": [p for p in ps if p.ndim >= 2], "weight_decay": 0.05, "scale": scale},
                       {"params": [p for p in ps if p.ndim < 2], "weight_decay": 0.0, "scale": scale}]
    opt = torch.optim.AdamW([g for g in opt_groups if g["params"]], lr=lr, betas=(0.9, 0.98))
    step = resume(ckpt, model, opt, lambda msg: tqdm.write(f"[{name}] {msg}"))
    model.train()
    bar = tqdm(total=args_steps, initial=step, desc=f"[{name}]", unit="step")
    per_epoch = len(batches_fn(0, random.Random(seed * 1000)))
    epoch, skip, ema = step // per_epoch, step % per_epoch, None
    while step < args_steps:
        for i, batch in enumerate(batches_fn(epoch, random.Random(seed * 1000 + epoch))):
            if step >= args_steps:
                break
            if i < skip:  # resuming mid-epoch: the data order is deterministic, skip what was done
                continue
            for g in opt.param_groups:
                g["lr"] = cosine(step, args_steps, lr, warmup) * g["scale"]
            loss, acc = loss_fn(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            value = float(loss.detach())
            ema = value if ema is None else 0.95 * ema + 0.05 * value
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.3f}", acc=f"{float(acc):.3f}")
            if step % ckpt_every == 0 or step == args_steps:
                atomic_save({"model": state_fn(), "opt": opt.state_dict(), "step": step}, ckpt)
        epoch, skip = epoch + 1, 0
    bar.close()
    model.eval()
    return ema


def stage_target(args, work: Path, enc: Encoder, samples: list[dict], text: dict[str, dict]):
    """Stage 3 (vision pretraining) then stage 4: the LLaVA recipe with the language model in the loop; the
    projector learns at the full rate, the pretrained tower at `tower_lr_scale` of it."""
    rows = []
    for s in samples:
        if s["kind"] == "text_image":
            ans = text[s["id"]]["response"][: args.text_label_tokens]
        else:
            ans = enc.answer(s["answer"])
        rows.append({"prompt": enc.prompt(s["question"], len(s["images"])), "answer_ids": ans, "images": s["images"]})
    torch.manual_seed(args.seed)
    model = tiny_llava.build_target(torch.float32, args.vision)
    report = {"vision": stage_vision(args, work, enc, model)}
    model.model.language_model.to(half_dtype())  # frozen: weights in the autocast dtype
    tower = [p for p in model.model.vision_tower.parameters() if p.requires_grad]
    projector = [p for p in model.model.multi_modal_projector.parameters() if p.requires_grad]
    prefix = enc.prefix
    key = digest(half_dtype(), args.vision, len(rows), [r["answer_ids"][:3] for r in rows[:50]], args.target_steps,
                 args.target_batch, args.target_lr, args.tower_lr_scale, args.seed, args.n_vision, args.vision_steps,
                 args.vision_lr)
    final = train_loop("4/7 target", model, [(projector, 1.0), (tower, args.tower_lr_scale)],
                       lambda e, rng: length_batches(rows, args.target_batch, rng),
                       lambda b: target_loss(model, enc, b, prefix), args.target_steps, args.target_lr,
                       max(1, args.target_steps // 20), work / f"target-{key}" / "ckpt.pt",
                       lambda: tiny_llava.target_parts(model), args.ckpt_every, args.seed)
    model.float()
    tokens = sum(len(r["prompt"]) - len(prefix) + len(r["answer_ids"]) for r in rows)
    return model, dict(**report, samples=len(rows), tokens_per_epoch=tokens, final_loss=final)


# --- 6. draft -----------------------------------------------------------------------------------------------

def init_from_target(draft, target) -> None:
    """Warm start. The draft's tied embedding is SmolLM2's embedding in its top-d principal directions, rescaled
    to std 0.02 (E_draft = E P^T): similar tokens start similar, in and out. Its projector is the target's
    squeezed into that space: the d hidden units that contribute most to the target's projector output, then
    P, so the draft's image tokens start as roughly the word-like vectors the target's stage 3 taught."""
    d = draft.config.text_config.hidden_size
    smol = target.model.language_model.embed_tokens.weight.detach().float()
    _, _, v = torch.linalg.svd(smol - smol.mean(0), full_matrices=False)
    proj = v[:d] * (0.02 / (smol @ v[:d].T).std())  # P [d, 576]
    tp, dp = target.model.multi_modal_projector, draft.model.multi_modal_projector
    w2 = tp.linear_2.weight.detach().float()
    units = w2.norm(dim=0).topk(d).indices
    with torch.no_grad():
        draft.model.language_model.embed_tokens.weight.copy_(smol @ proj.T)
        dp.linear_1.weight.copy_(tp.linear_1.weight[units])
        dp.linear_1.bias.copy_(tp.linear_1.bias[units])
        dp.linear_2.weight.copy_(proj @ w2[:, units])
        dp.linear_2.bias.copy_(proj @ tp.linear_2.bias.float())


def view_embeds(draft, enc: Encoder, row: dict, view: str) -> torch.Tensor:
    """The draft's input embeddings [L, d] for one view of a sample, as methods.drafting.mode_embeds builds
    them at run time (M: projected image features; P: features pooled 2x2; T: a newline per image; text: ids)."""
    from methods.drafting import vision_features

    ids = torch.tensor(row["prompt"] + row["response"])
    embed = draft.get_input_embeddings()
    slots = ids == enc.image_id  # image placeholders of the prompt; an answer may spell "<image>" as a plain token
    slots[len(row["prompt"]):] = False
    if view == "T" or not row["images"]:  # T: each image's run of placeholders becomes one newline
        keep = torch.ones_like(ids, dtype=torch.bool)
        for run in slots.nonzero().flatten().split(enc.image_tokens):
            keep[run[1:]] = False
        return embed(ids.masked_fill(slots, NEWLINE)[keep])
    with torch.no_grad():
        pixels = enc.pixels(row["images"])
    pool = 2 if view == "P" else 1
    feats = vision_features(draft, pixels, pool)  # [n_images, tokens, d]
    if pool > 1:  # keep one image token per pooled feature
        keep = torch.ones_like(ids, dtype=torch.bool)
        for run in slots.nonzero().flatten().split(enc.image_tokens):
            keep[run[feats.shape[1]:]] = False
        ids, slots = ids[keep], slots[keep]
    e = embed(ids)
    return e.masked_scatter(slots[:, None], feats.reshape(-1, e.shape[-1]).to(e.dtype))


def draft_loss(draft, enc: Encoder, views: list[tuple[dict, str]], context: int | None = None):
    """Soft cross-entropy against the target's top-k distribution at every answer position; with `context`,
    each view is cut to its first `context` tokens (the draft never sees a longer one, as a draft trained at a
    fixed length never sees past it)."""
    full = [view_embeds(draft, enc, r, v) for r, v in views]
    embeds = [e[:context] for e in full]
    width = max(e.shape[0] for e in embeds)
    x = embeds[0].new_zeros(len(embeds), width, embeds[0].shape[-1])
    pos, t_ids, t_lp = [], [], []
    for b, ((r, _), f, e) in enumerate(zip(views, full, embeds)):
        x[b, : e.shape[0]] = e
        n = len(r["response"])
        first = f.shape[0] - n - 1  # the position that predicts the first answer token
        kept = max(0, min(n, e.shape[0] - first))
        pos.append(b * width + first + torch.arange(kept))
        t_ids.append(r["top_ids"][:kept].long())
        t_lp.append(r["top_lp"][:kept].float())
    pos, t_ids, t_lp = torch.cat(pos), torch.cat(t_ids), torch.cat(t_lp)
    with autocast():
        h = draft.model.language_model(inputs_embeds=x).last_hidden_state
        logq = torch.log_softmax(draft.lm_head(h.flatten(0, 1)[pos]).float(), dim=-1)
    p = torch.softmax(t_lp, dim=-1)
    loss = -(p * logq.gather(-1, t_ids)).sum(-1).mean()
    return loss, (logq.argmax(-1) == t_ids[:, 0]).float().mean()


def view_embeds_len(row: dict, view: str, image_tokens: int) -> int:
    """The length of view_embeds(row, view) without building it."""
    n_images = len(row["images"])
    per_image = {"M": image_tokens, "P": image_tokens // 4}.get(view, 1) if n_images else image_tokens
    return len(row["prompt"]) + len(row["response"]) - n_images * (image_tokens - per_image)


def draft_views(samples: list[dict], answers: dict[str, dict], args, rng: random.Random,
                image_tokens: int) -> list[tuple[dict, str]]:
    """Every sample's training views; with --draft-context, only views whose answer starts inside it."""
    views = []
    for s in samples:
        r = answers.get(s["id"])
        if r is None or not r["response"]:
            continue
        r = {**r, "images": s["images"]}
        if not s["images"]:
            views.append((r, "text"))
            continue
        if not s.get("m_only"):
            views.append((r, "T"))
        if len(s["images"]) <= args.draft_max_m_images:
            views.append((r, "M"))
            if rng.random() < args.p_views:
                views.append((r, "P"))
    if args.draft_context:
        views = [(r, v) for r, v in views
                 if view_embeds_len(r, v, image_tokens) - len(r["response"]) < args.draft_context]
    return views


def stage_draft(args, work: Path, enc: Encoder, target, samples: list[dict], answers: dict[str, dict]):
    torch.manual_seed(args.seed)
    draft_text = {**(args.draft_text or {}), **({"max_position_embeddings": args.draft_context} if args.draft_context else {})}
    draft = tiny_llava.build_draft(*tiny_llava.vision_of(target), draft_text)
    init_from_target(draft, target)
    views = draft_views(samples, answers, args, random.Random(args.seed), enc.image_tokens)
    params = [p for p in draft.parameters() if p.requires_grad]

    def batches(epoch, rng):
        vs = views[:]
        rng.shuffle(vs)
        window = 50 * args.draft_batch
        out = []
        for w in range(0, len(vs), window):
            chunk = sorted(vs[w : w + window], key=lambda v: len(v[0]["prompt"]) + len(v[0]["response"]))
            out += [chunk[i : i + args.draft_batch] for i in range(0, len(chunk), args.draft_batch)]
        rng.shuffle(out)
        return out

    key = digest(half_dtype(), draft_text, len(views), args.draft_steps, args.draft_batch, args.draft_lr, args.seed,
                 args.draft_max_m_images, args.p_views, [answers[k]["response"][:8] for k in sorted(answers)[:50]],
                 float(target.model.multi_modal_projector.linear_2.weight.detach().sum()))
    final = train_loop("6/7 draft", draft, [(params, 1.0)], batches, lambda b: draft_loss(draft, enc, b, args.draft_context),
                       args.draft_steps,
                       args.draft_lr, max(1, args.draft_steps // 20), work / f"draft-{key}" / "ckpt.pt",
                       lambda: tiny_llava.draft_parts(draft), args.ckpt_every, args.seed)
    counts = {v: sum(1 for _, x in views if x == v) for v in ("M", "T", "P", "text")}
    return draft, dict(views=counts, final_loss=final)


# The draft's image kinds: the target's mixture, or one where the image decides a short answer more often.
DRAFT_MIXTURES = {"default": vlm_data.MIXTURE,
                  "grounded": {**vlm_data.MIXTURE, **{k: 3 * vlm_data.MIXTURE[k] for k in (vlm_data.count, vlm_data.color,
                                                                                           vlm_data.exists)}}}


# --- 7. eval ------------------------------------------------------------------------------------------------

WORDS = {"count": vlm_data.NUMBERS, "color": scenes.SHAPE_COLORS + sorted(scenes.BACKGROUNDS)}


def first_option(text: str, options: list[str]) -> str | None:
    """The option named first in `text` (longest match wins at a position: 'light blue' before 'blue')."""
    best = None
    for o in options:
        m = re.search(rf"\b{re.escape(o)}\b", text.lower())
        if m and (best is None or (m.start(), -len(o)) < (best[0], -len(best[1]))):
            best = (m.start(), o)
    return best[1] if best else None


def stage_accuracy(args, target, enc: Encoder) -> dict:
    """Accuracy on held-out questions with a known answer word, vs chance (1 / number of options), and how
    often the answer changes when each image is replaced by the next sample's image."""
    mix = {vlm_data.count: 3, vlm_data.color: 3, vlm_data.exists: 2, vlm_data.landscape: 1, vlm_data.chart: 1}
    samples = [s for s in vlm_data.make_samples("eval-accuracy", args.n_accuracy, args.seed, mix) if s.get("truth")]
    swapped = [{**s, "images": samples[(i + 1) % len(samples)]["images"]} for i, s in enumerate(samples)]
    tok = enc.tok
    answers = {}
    for tag, group in (("own", samples), ("swapped", swapped)):
        for i in tqdm(range(0, len(group), 16), desc=f"[7/7 eval] answers ({tag} image)", unit="batch"):
            rows = generate(target, enc, group[i : i + 16], 24, 1)
            for s, r in zip(group[i : i + 16], rows):
                answers[(tag, s["id"])] = tok.decode(r["response"], skip_special_tokens=True).strip()
    by_kind = {}
    for s in samples:
        k = by_kind.setdefault(s["kind"], dict(n=0, correct=0, chance=0.0, changed=0))
        k["n"] += 1
        k["correct"] += first_option(answers[("own", s["id"])], s["options"]) == s["truth"]
        k["chance"] += 1 / len(s["options"])
        k["changed"] += answers[("own", s["id"])] != answers[("swapped", s["id"])]
    n = len(samples)
    changed = sum(k["changed"] for k in by_kind.values()) / n
    for k in by_kind.values():
        k.update(accuracy=k["correct"] / k["n"], chance=k["chance"] / k["n"], changed=k["changed"] / k["n"])
    examples = [dict(question=s["question"], truth=s["truth"], answer=answers[("own", s["id"])],
                     answer_with_other_image=answers[("swapped", s["id"])]) for s in samples[:6]]
    return dict(n=n, accuracy=sum(k["correct"] for k in by_kind.values()) / n,
                chance=sum(1 / len(s["options"]) for s in samples) / n,
                answer_changed_with_image=changed,
                by_kind=by_kind, examples=examples)


def stage_tau(args, target, draft, enc: Encoder) -> dict:
    """tau = new tokens / target calls of `sd` (gamma 5, greedy) per drafting mode on each held-out set."""
    from harness.models import Pair
    from methods import DecodeSettings, Models, get_method

    pair = Pair("tiny-llava", Models(target, draft, enc.tok), enc.tok, enc.processor, (EOS,))
    settings = DecodeSettings(max_new_tokens=args.eval_tokens, eos_token_ids=(EOS,))
    out = {}
    for name, samples in vlm_data.eval_sets(args.seed).items():
        samples = samples[: args.n_tau]
        for mode in ("M", "T"):
            tokens = calls = same = 0
            by_kind = {}
            for s in tqdm(samples, desc=f"[7/7 eval] tau {name} {mode}", unit="sample"):
                prompt = pair.encode([{"role": "user", "content": s["question"], "n_images": len(s["images"])}],
                                     [scenes.render(x) for x in s["images"]])
                res = get_method("sd")(pair.models, prompt, settings, None, gamma=5, drafting=mode)
                tokens += len(res.tokens[0])
                calls += res.stats["target_calls"]
                kind = by_kind.setdefault(s["kind"], [0, 0])
                kind[0] += len(res.tokens[0])
                kind[1] += res.stats["target_calls"]
                if mode == "M":
                    same += get_method("ar")(pair.models, prompt, settings).tokens == res.tokens
            out[f"{name}/{mode}"] = dict(n=len(samples), tau=tokens / calls, new_tokens=tokens,
                                         tau_by_kind={k: round(t / c, 3) for k, (t, c) in sorted(by_kind.items())})
            if mode == "M":
                out[f"{name}/{mode}"]["identical_to_ar"] = f"{same}/{len(samples)}"
    return out


# --- main ---------------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny data/model/steps: an end-to-end check in seconds")
    ap.add_argument("--out", type=Path, help=f"weights folder (default {tiny_llava.WEIGHTS_DIR})")
    ap.add_argument("--work", type=Path, help="intermediate files (default <cache_root>/tiny-llava)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-target", type=int, default=6000, help="target training samples")
    ap.add_argument("--n-draft", type=int, default=2400, help="draft distillation samples (image + text)")
    ap.add_argument("--draft-text-share", type=float, default=0.2, help="text-only share of the draft samples")
    ap.add_argument("--text-max-new", type=int, default=128, help="answer cap for text prompts")
    ap.add_argument("--text-label-tokens", type=int, default=48, help="target labels: first N tokens of text answers")
    ap.add_argument("--answer-max-new", type=int, default=128, help="answer cap when the target answers images")
    ap.add_argument("--topk", type=int, default=20)
    ap.add_argument("--gen-batch", type=int, default=32)
    ap.add_argument("--n-vision", type=int, default=24000, help="stage-3 samples (their images; ~1.3 per sample)")
    ap.add_argument("--image-size", type=int, default=tiny_llava.IMAGE_SIZE,
                    help=f"the tower's input size in pixels, patches of {tiny_llava.PATCH}: 96 -> 16 image tokens (the "
                         "committed target), 192 -> 64 (images drawn at 192, so the finer patches see more)")
    ap.add_argument("--vision-steps", type=int, default=2000, help="stage 3 steps (no language model: fast)")
    ap.add_argument("--vision-batch", type=int, default=32, help="images per stage-3 step")
    ap.add_argument("--vision-lr", type=float, default=2e-3)
    ap.add_argument("--target-steps", type=int, default=1200)
    ap.add_argument("--target-batch", type=int, default=16)
    ap.add_argument("--target-lr", type=float, default=1e-3, help="projector learning rate in stage 4")
    ap.add_argument("--tower-lr-scale", type=float, default=0.1, help="the tower's stage-4 rate, relative")
    ap.add_argument("--draft-steps", type=int, default=1500)
    ap.add_argument("--draft-batch", type=int, default=24)
    ap.add_argument("--draft-lr", type=float, default=2e-3)
    ap.add_argument("--draft-max-m-images", type=int, default=2, help="samples with more images train as T views only")
    ap.add_argument("--draft-layers", type=int, help=f"draft decoder layers (default {tiny_llava.DRAFT_TEXT['num_hidden_layers']})")
    ap.add_argument("--draft-rope-theta", type=float, help="the draft's RoPE base (default SmolLM2's 1e5; TABED's "
                    "Llama-68M drafts use 1e4)")
    ap.add_argument("--draft-mixture", choices=sorted(DRAFT_MIXTURES), default="default",
                    help="the draft's image kinds: the target's mixture (default), or one with 3x the counting, "
                         "colour and yes/no questions, whose short answers the image decides (grounded)")
    ap.add_argument("--target-from", type=Path, help="a tiny-llava weights folder whose target to keep (stages 2-4 "
                                                     "then answer only the draft's text prompts)")
    ap.add_argument("--draft-grounded", type=int, default=0, help="this many more one-image questions whose short "
                    "answer the image decides (the eval set's kinds), trained as M views only: practice reading images")
    ap.add_argument("--draft-context", type=int, help="train the draft on the first N tokens of each view only (as "
                                                     "Llama-68M, whose 2,048 positions a 5-image LLaVA-1.5 story passes)")
    ap.add_argument("--p-views", type=float, default=0.2, help="share of multimodal samples also trained pooled (P)")
    ap.add_argument("--ckpt-every", type=int, default=50)
    ap.add_argument("--n-accuracy", type=int, default=160)
    ap.add_argument("--n-tau", type=int, default=12, help="held-out samples per set for the tau check")
    ap.add_argument("--eval-tokens", type=int, default=128)
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--until", choices=["data", "text", "target", "answers", "draft"], help="stop after this stage")
    args = ap.parse_args(argv)
    args.vision = None if args.image_size == tiny_llava.IMAGE_SIZE else {**tiny_llava.VISION, "image_size": args.image_size}
    if args.target_from:  # its images, its tokens
        args.vision = tiny_llava.vision_config(args.target_from / "target")
    args.draft_text = {**({"num_hidden_layers": args.draft_layers} if args.draft_layers else {}),
                       **({"rope_parameters": {"rope_type": "default", "rope_theta": args.draft_rope_theta}}
                          if args.draft_rope_theta else {})} or None
    if args.smoke:
        args.n_target, args.n_draft, args.text_max_new, args.text_label_tokens, args.answer_max_new = 12, 8, 4, 4, 4
        args.gen_batch, args.target_steps, args.target_batch, args.draft_steps, args.draft_batch = 8, 2, 4, 2, 4
        args.n_vision, args.vision_steps, args.vision_batch = 8, 2, 4
        args.ckpt_every, args.n_accuracy, args.n_tau, args.eval_tokens, args.topk = 1, 8, 1, 6, 4
        args.vision = {**(args.vision or tiny_llava.VISION), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "projection_dim": 32}
        args.draft_text = {**dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  num_key_value_heads=1), **(args.draft_text or {})}
    root = smollm2.cache_root() / ("tiny-llava-smoke" if args.smoke else "tiny-llava")
    work = args.work or root
    out = args.out or (work / "weights" if args.smoke else tiny_llava.WEIGHTS_DIR)
    times, build = {}, {}
    enc = Encoder(tiny_llava.make_processor(args.vision))

    t = time.time()
    train = vlm_data.make_samples("train", args.n_target, args.seed)
    draft_set = vlm_data.make_samples("draft", args.n_draft, args.seed, DRAFT_MIXTURES[args.draft_mixture],
                                      text_share=args.draft_text_share)
    build["data"] = dict(target_kinds={k: sum(s["kind"] == k for s in train) for k in sorted({s["kind"] for s in train})},
                         draft_kinds={k: sum(s["kind"] == k for s in draft_set) for k in sorted({s["kind"] for s in draft_set})})
    times["data_s"] = time.time() - t
    print(f"[1/7 data] {len(train)} target samples, {len(draft_set)} draft samples")
    if args.until == "data":
        return

    t = time.time()
    text_samples = [s for s in ([] if args.target_from else train) + draft_set if s["kind"] in ("text", "text_image")]

    def smol():
        return tiny_llava.build_target(half_dtype()).eval()

    text_key = digest(half_dtype(), args.seed, args.n_target, args.n_draft, args.draft_text_share, args.text_max_new,
                      args.topk, *([args.draft_mixture, "draft-only"] if args.target_from else []))
    text = generate_all(smol, enc, text_samples, work / f"text-{text_key}",
                        "[2/7 text] SmolLM2 answers", args.text_max_new, args.topk, args.gen_batch, use_images=False)
    times["text_s"] = time.time() - t
    if args.until == "text":
        return

    t = time.time()
    if args.target_from:  # kept as it is: its committed files, copied
        target = tiny_llava.load_target(torch.float32, args.target_from)[0]
        build["target_train"] = f"kept from {args.target_from}"
        (out / "target").mkdir(parents=True, exist_ok=True)
        for f in (args.target_from / "target").iterdir():
            if f.resolve() != (out / "target" / f.name).resolve():
                shutil.copy2(f, out / "target" / f.name)
    else:
        target, build["target_train"] = stage_target(args, work, enc, train, text)
        tiny_llava.save_weights(tiny_llava.target_parts(target), out / "target", target.config)
    times["target_s"] = time.time() - t
    if args.until == "target":
        return

    t = time.time()
    image_samples = [s for s in draft_set if s["images"]]
    key = digest(half_dtype(), sorted(tiny_llava.target_parts(target).items())[0][1].sum().item(), args.seed, args.n_draft,
                 args.answer_max_new, args.topk, args.draft_text_share,
                 *([args.draft_mixture] if args.draft_mixture != "default" else []))

    def trained():
        return tiny_llava.load_target(half_dtype(), out)[0]

    answers = generate_all(trained, enc, image_samples, work / f"answers-{key}", "[5/7 answers] target answers",
                           args.answer_max_new, args.topk, args.gen_batch)
    answers.update({s["id"]: text[s["id"]] for s in draft_set if not s["images"]})
    if args.draft_grounded:  # their own cache: the draft set's answers above stay reusable
        grounded = vlm_data.make_samples("draft-grounded", args.draft_grounded, args.seed, vlm_data.GROUNDED)
        answers.update(generate_all(trained, enc, grounded, work / f"answers-grounded-{key}-{args.draft_grounded}",
                                    "[5/7 answers] target answers (grounded, M views only)", args.answer_max_new,
                                    args.topk, args.gen_batch))
        draft_set = draft_set + [{**s, "m_only": True} for s in grounded]
    times["answers_s"] = time.time() - t
    if args.until == "answers":
        return

    t = time.time()
    draft, build["draft_train"] = stage_draft(args, work, enc, target, draft_set, answers)
    tiny_llava.save_weights(tiny_llava.draft_parts(draft), out / "draft", draft.config)
    times["draft_s"] = time.time() - t
    if args.until == "draft":
        return

    files = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*.safetensors"))}
    build.update(files=files, params=dict(
        target_trained=sum(v.numel() for v in tiny_llava.target_parts(target).values()),
        target_total=sum(p.numel() for p in target.parameters()),
        draft_own=sum(v.numel() for v in tiny_llava.draft_parts(draft).values()),
        draft_total=sum(p.numel() for p in draft.parameters())))
    print(f"[export] {json.dumps(build['params'])} -> {out}")
    if not args.no_eval:
        t = time.time()
        target, _ = tiny_llava.load_target(torch.float32, out)
        draft, _ = tiny_llava.load_draft(torch.float32, out)
        build["accuracy"] = stage_accuracy(args, target, enc)
        build["tau"] = stage_tau(args, target, draft, enc)
        times["eval_s"] = time.time() - t
        print(f"[7/7 eval] accuracy {build['accuracy']['accuracy']:.2f} (chance {build['accuracy']['chance']:.2f}), "
              f"answer changed with the image {build['accuracy']['answer_changed_with_image']:.2f}; tau "
              + ", ".join(f"{k} {v['tau']:.2f}" for k, v in build["tau"].items()))
    build["args"] = {k: v for k, v in vars(args).items() if k not in ("out", "work")}
    write_build(out, build, times)


if __name__ == "__main__":
    main()
