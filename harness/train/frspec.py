"""FR-Spec's frequency list for any tokenizer: token ids by descending count over a text corpus.

    python -m harness.train.frspec --tokenizer meta-llama/Llama-3.1-8B-Instruct --corpus slimpajama.jsonl \
        --field text --max-lines 1000000 --out frspec/llama-3.1/frequent_tokens.json
    python -m harness method=grid/eagle_frspec32k pair=llama-3.1-8b__eagle3 pair.eagle.frequent_tokens=frspec/llama-3.1/frequent_tokens.json

FR-Spec (Zhao et al. 2025) counts tokens over the first 1M lines of SlimPajama and drafts only over the top-N of
them (N = 8k..64k), EOS always kept; `head=frspec head_size=N` reads the first N ids of this list. Every id of the
vocabulary is listed (unseen ones last, by id), so any N works. Corpus files are plain text (one document a line)
or jsonl (`--field` names the text); `.gz` is read as gzip.
"""
from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import torch
from tqdm import tqdm


def frequency_order(token_lists, vocab: int) -> list[int]:
    """Every id in [0, vocab) by descending count over `token_lists`, ties by id."""
    counts = torch.zeros(vocab, dtype=torch.long)
    for ids in token_lists:
        counts += torch.bincount(torch.as_tensor(ids, dtype=torch.long), minlength=vocab)[:vocab]
    return sorted(range(vocab), key=lambda i: (-int(counts[i]), i))


def corpus_lines(files: list[Path], field: str | None, max_lines: int | None):
    """The corpus's texts in order, at most `max_lines` of them."""
    n = 0
    for file in files:
        opener = gzip.open if file.suffix == ".gz" else open
        with opener(file, "rt", encoding="utf-8") as f:
            for line in f:
                if max_lines is not None and n >= max_lines:
                    return
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                if field:
                    try:
                        line = json.loads(line)[field]
                    except (json.JSONDecodeError, KeyError, TypeError) as err:
                        raise SystemExit(f"{file}: line {n + 1} is not a JSON object with {field!r} ({err})") from None
                n += 1
                yield line


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(prog="python -m harness.train.frspec", description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", required=True, help="the target's tokenizer: a hub id or a local folder")
    ap.add_argument("--corpus", type=Path, nargs="+", required=True, help="text or jsonl files (.gz allowed)")
    ap.add_argument("--field", default=None, help="jsonl: the key holding each document's text")
    ap.add_argument("--max-lines", type=int, default=1_000_000, help="documents counted (FR-Spec: the first 1M)")
    ap.add_argument("--vocab", type=int, default=None, help="ids to rank (default: the model's vocabulary, "
                    "read from the tokenizer's folder config if present, else the tokenizer's length)")
    ap.add_argument("--out", type=Path, required=True, help="where to write frequent_tokens.json")
    args = ap.parse_args(argv)
    from transformers import AutoConfig, AutoTokenizer

    from harness.hub import from_hf

    for file in args.corpus:
        if not file.is_file():
            ap.error(f"--corpus {file}: no such file")
    tok = from_hf(AutoTokenizer, args.tokenizer)
    vocab = args.vocab
    if vocab is None:
        try:  # the model's vocabulary can be padded past the tokenizer (LLaVA-1.5: 32064 rows, 32002 tokens)
            vocab = from_hf(AutoConfig, args.tokenizer).get_text_config().vocab_size
        except Exception:  # noqa: BLE001 - a tokenizer-only folder: its own size
            vocab = len(tok)
    texts = tqdm(corpus_lines(args.corpus, args.field, args.max_lines), desc="counting tokens", unit="doc",
                 total=args.max_lines)
    order = frequency_order((tok(t, add_special_tokens=False)["input_ids"] for t in texts), vocab)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(order) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}: {vocab} ids by frequency over {texts.n} documents")
    return args.out


if __name__ == "__main__":
    main()
