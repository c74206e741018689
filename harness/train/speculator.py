"""A SpecVocab vocabulary speculator for any EAGLE-3 checkpoint, trained on its own target (a GPU job on real models).

    python -m harness.train.speculator --pair llama-3.1-8b__eagle3 --out speculators/llama-3.1-8b.safetensors
    python -m harness method=specvocab pair=llama-3.1-8b__eagle3 pair.eagle.speculator=speculators/llama-3.1-8b.safetensors

SpecVocab (Samsung, 2026) drafts with the full tied head but evaluates it only on the top-k ids of a cheap
speculator, Down (d -> d/8) then Vocab (d/8 -> |V|). Official EAGLE-3 checkpoints ship none, so this trains one
for a frozen drafter: the target answers prompts greedily, the drafter reads the target's features over prompt +
answer as at a first draft step, and the speculator learns (soft cross-entropy) the full head's own top-32
distribution on the drafter's normed states, since those exact logits are what SpecVocab evaluates on its
candidates. SpecVocab trains the speculator together with its drafter (auxiliary loss weight 0.1); this frozen-drafter
version is ours, and so is learning from first-step states only. It prints the held-out recall: how often the full
head's argmax is among the speculator's top-k for the k the pair is run with.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm import tqdm

from harness import PROJECT_ROOT
from methods.core import forward, new_cache
from methods.eagle3 import VocabSpeculator

TEACHER_TOP = 32  # the full head's ids each state's teacher distribution keeps


def drafter_pair(name: str, target: str | None, eagle: str | None):
    """The pair config `name` with its ids overridden as asked; it must have an EAGLE-3 drafter."""
    from harness.models import pair_config

    cfg = pair_config(name)
    if target:
        cfg.target.id = target
    if eagle:
        cfg.eagle = {"id": eagle}
    if not cfg.get("eagle"):
        raise SystemExit(f"pair {cfg.name} has no EAGLE-3 drafter (pair.eagle.id)")
    cfg.eagle.speculator = None  # train a new one, whatever the config points at
    return cfg


@torch.inference_mode()
def collect(pair, prompts: list[str], max_new_tokens: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per prompt: (normed drafter states [n, d], teacher ids [n, TEACHER_TOP], teacher log-probs) at every
    position that drafts a token of the target's answer."""
    from methods import DecodeSettings, get_method

    models, eagle = pair.models, pair.models.eagle
    full = models.target.get_output_embeddings().weight
    settings = DecodeSettings(max_new_tokens=max_new_tokens, eos_token_ids=pair.eos_token_ids)
    out = []
    for text in tqdm(prompts, desc="[1/2 states]", unit="prompt"):
        prompt = pair.encode([{"role": "user", "content": text}])
        answer = get_method("ar")(models, prompt, settings).tokens[0]
        seq = torch.cat([prompt.target["input_ids"][0], torch.tensor(answer, device=pair.device)])
        _, feats = forward(models.target, new_cache(models.target), seq[None], layers=eagle.layers)
        eagle.midlayer.self_attn.reset(len(seq), pair.device, eagle.fc.weight.dtype)
        hidden = eagle.extend(feats[:, :-1], seq[None, 1:], torch.arange(len(seq) - 1, device=pair.device)[None])[0]
        h = eagle.norm(hidden[len(seq) - len(answer) - 1:])  # the states that draft the answer's tokens
        top = torch.log_softmax((h.to(full.dtype) @ full.T).float(), -1).topk(TEACHER_TOP, -1)
        out.append((h.float().cpu(), top.indices.cpu(), top.values.cpu()))
    return out


def recall(spec: VocabSpeculator, states: torch.Tensor, ids: torch.Tensor, k: int) -> float:
    """Share of states whose full-head argmax is among the speculator's top-k."""
    with torch.no_grad():
        top = spec(states).topk(min(k, spec.vocab.weight.shape[0]), -1).indices
    return float((top == ids[:, :1]).any(-1).float().mean()) if len(states) else float("nan")


def train(states, ids, logps, vocab: int, rank: int, steps: int, batch: int, lr: float, seed: int) -> VocabSpeculator:
    from harness.train.eagle import soft_ce

    torch.manual_seed(seed)
    spec = VocabSpeculator(states.shape[1], rank, vocab)
    opt = torch.optim.Adam(spec.parameters(), lr=lr)
    bar = tqdm(range(steps), desc="[2/2 train]", unit="step")
    for _ in bar:
        rows = torch.randint(len(states), (min(batch, len(states)),))
        loss = soft_ce(spec(states[rows]), ids[rows], logps[rows]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return spec


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(prog="python -m harness.train.speculator", description=__doc__.split("\n")[0])
    ap.add_argument("--pair", required=True, help="a pair config with an EAGLE-3 drafter (name or yaml path)")
    ap.add_argument("--target", help="override pair.target.id (a local folder, e.g. a replica)")
    ap.add_argument("--eagle", help="override pair.eagle.id")
    ap.add_argument("--prompts", type=Path, default=PROJECT_ROOT / "datasets/zoo-prompts/train.jsonl",
                    help="jsonl with 'turns' (the first turn is asked)")
    ap.add_argument("--n-prompts", type=int, default=1000)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--rank", type=int, default=0, help="speculator width d' (default d/8, SpecVocab's)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--k", type=int, default=2048, help="candidates per step the recall is reported for")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="the speculator file (.safetensors) to write")
    args = ap.parse_args(argv)
    from safetensors.torch import save_file

    from harness.models import load_pair, resolve_device, resolve_dtype

    device = resolve_device(args.device)
    pair = load_pair(drafter_pair(args.pair, args.target, args.eagle), device, resolve_dtype("auto", device),
                     need_draft=False, need_eagle=True)
    texts = [json.loads(line)["turns"][0] for line in args.prompts.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = texts[: args.n_prompts]
    per_prompt = collect(pair, texts, args.max_new_tokens)
    held = [c for i, c in enumerate(per_prompt) if i % 20 == 0]  # every 20th prompt: the held-out recall
    fit = [c for i, c in enumerate(per_prompt) if i % 20] or held  # (a handful of prompts: fit them all)
    states, ids, logps = (torch.cat(parts) for parts in zip(*fit))
    vocab = pair.models.target.get_output_embeddings().weight.shape[0]
    rank = args.rank or states.shape[1] // 8
    spec = train(states, ids, logps, vocab, rank, args.steps, args.batch, args.lr, args.seed)
    held_states, held_ids, _ = (torch.cat(parts) for parts in zip(*held))
    score = recall(spec, held_states, held_ids, args.k)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"speculator.{k}": v.contiguous() for k, v in spec.state_dict().items()}, str(args.out))
    card = {"pair": pair.name, "target": args.target or None, "eagle": args.eagle or None, "prompts": len(texts),
            "states": len(states), "rank": rank, "steps": args.steps, "k": args.k,
            "held_out_recall_at_k": round(score, 4)}
    args.out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {args.out}: rank {rank}, held-out recall@{args.k} {score:.3f} ({len(states)} training states)")
    return args.out


if __name__ == "__main__":
    main()
