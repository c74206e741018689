"""The embedded zoo's trained draft (smol-draft): interface, KV cache, build script, lossless SD."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import DynamicCache

from harness.zoo import load_embedded, smol_draft
from methods import DecodeSettings, Models, Prompt, get_method
from tests.conftest import ROOT, harness_cli

MAX_FILE_BYTES = 20 * 2**20


@pytest.fixture(scope="module")
def draft():
    return load_embedded("smol-draft", torch.float32)[0]


@pytest.fixture(scope="module")
def target():
    return load_embedded("smollm2-135m-instruct", torch.float32)


def test_committed_weights_are_small_and_ours():
    file = smol_draft.WEIGHTS_DIR / "model.safetensors"
    assert file.stat().st_size <= MAX_FILE_BYTES
    with safe_open(str(file), "pt") as f:
        keys = set(f.keys())
        assert {f.get_tensor(k).dtype for k in keys - {"vocab_ids"}} <= {torch.float16, torch.bfloat16}
    assert not any(k.startswith("embed.") for k in keys)  # the target's embedding is read at load time
    assert "vocab_ids" in keys and "head.weight" in keys and "proj.weight" in keys
    json.loads((smol_draft.WEIGHTS_DIR / "config.json").read_text())


def test_full_vocab_logits(draft):
    vocab = draft.config.get_text_config().vocab_size
    assert vocab == 49152 and draft.dtype == torch.float32 and draft.device.type == "cpu"
    assert draft.generation_config.eos_token_id == 2
    out = draft(input_ids=torch.tensor([[1, 504, 3458, 314]]), past_key_values=DynamicCache(config=draft.config),
                use_cache=True, logits_to_keep=1)
    assert out.logits.shape == (1, 1, vocab)
    finite = torch.isfinite(out.logits[0, 0])
    inside = torch.zeros(vocab, dtype=torch.bool)
    inside[draft.vocab_ids] = True
    assert torch.equal(finite, inside)  # -inf exactly outside the draft vocabulary
    assert torch.isneginf(out.logits[0, 0, ~inside]).all()
    assert 2 in draft.vocab_ids.tolist()  # EOS can be drafted
    all_pos = draft(input_ids=torch.tensor([[1, 504, 3458, 314]]), logits_to_keep=0).logits
    assert all_pos.shape == (1, 4, vocab)
    torch.testing.assert_close(all_pos[:, -1:], out.logits)


def test_copy_candidates():
    history = torch.tensor([[5, 6, 7, 8, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7]])
    cand = smol_draft.copy_candidates(history, 3, min_match=2, max_match=4)
    assert cand.tolist() == [[-1, 7, 8], [-1, -1, -1]]  # [5] is too short a match; [5, 6] -> 7; [5, 6, 7] -> 8
    assert smol_draft.copy_candidates(torch.tensor([[3, 9, 3, 4, 3, 9, 3]]), 1, 2, 4).tolist() == [[4]]  # longest wins


@pytest.mark.parametrize("pack", [False, True], ids=["dense", "packed"])
def test_decoding_path_computes_what_llamamodel_computes(pack):
    """Decoding with a cache (prompts, one-token draft steps, multi-token catch-up feeds) runs the fused path,
    not LlamaModel; it must give LlamaModel's hidden states up to float rounding, fill the cache the same way,
    and keep the same argmax, dense or with packed weights."""
    from harness.packing import pack_linears

    draft = load_embedded("smol-draft", torch.float32)[0]
    if pack:
        pack_linears(draft)
    ids = torch.tensor([[1, 9690, 198, 2683, 359, 9690, 198, 2683, 504, 3458, 77, 88, 99, 4021]])
    fused, reference = DynamicCache(config=draft.config), DynamicCache(config=draft.config)
    with torch.no_grad():
        for lo, hi in [(0, 6), (6, 7), (7, 8), (8, 11), (11, 12), (12, 14)]:
            x = ids[:, lo:hi]
            got = draft.hidden(x, fused, use_cache=True, attention_mask=torch.ones(1, hi, dtype=torch.long))
            want = draft.model(inputs_embeds=draft.proj(draft.embed(x)), past_key_values=reference,
                               use_cache=True).last_hidden_state
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
            assert torch.equal(draft.head(got).argmax(-1), draft.head(want).argmax(-1)), (lo, hi)
    assert fused.get_seq_length() == reference.get_seq_length() == ids.shape[1]
    for a, b in zip(fused.layers, reference.layers):
        torch.testing.assert_close(a.keys, b.keys, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(a.values, b.values, rtol=1e-4, atol=1e-4)
    # with gradients on, the modules run (the fused copies are detached): training still trains them
    assert draft.hidden(ids[:, :3], DynamicCache(config=draft.config), use_cache=True).requires_grad


def test_copy_candidates_match_their_definition():
    """The vectorised scan against the definition written out: the longest suffix (min..max tokens) of
    history[:t+1] that also ends at an earlier e < t, the most recent such e on ties; its follower h[e+1]."""
    def slow(h, t, lo, hi):
        best, follower = 0, -1
        for e in range(t):
            n = 0
            while n < hi and e - n >= 0 and h[e - n] == h[t - n]:
                n += 1
            if n >= max(lo, best):  # e ascends: a tie goes to the later occurrence
                best, follower = n, h[e + 1]
        return follower

    gen = torch.Generator().manual_seed(0)
    for vocab in (2, 3, 5):
        history = torch.randint(0, vocab, (2, 40), generator=gen)
        for lo, hi in [(1, 1), (2, 4), (3, 3), (1, 6)]:
            got = smol_draft.copy_candidates(history, 10, lo, hi)
            want = [[slow(h.tolist(), t, lo, hi) for t in range(30, 40)] for h in history]
            assert got.tolist() == want, (vocab, lo, hi)


def test_cache_crop_rolls_back(draft):
    # Repeated tokens so that the copy part is exercised too: its history must be cropped with the cache.
    ids = torch.tensor([[1, 9690, 198, 2683, 359, 9690, 198, 2683]])
    cache = DynamicCache(config=draft.config)
    draft(input_ids=ids[:, :5], past_key_values=cache, use_cache=True)
    first = draft(input_ids=ids[:, 5:], past_key_values=cache, use_cache=True).logits
    assert cache.get_seq_length() == 8
    cache.crop(-3)
    assert cache.get_seq_length() == 5
    again = draft(input_ids=ids[:, 5:], past_key_values=cache, use_cache=True).logits
    torch.testing.assert_close(again, first)
    torch.testing.assert_close(draft(input_ids=ids).logits[:, 5:], first, rtol=1e-4, atol=1e-4)


def test_smoke_build_runs_end_to_end(tmp_path):
    out = tmp_path / "weights"
    proc = harness_cli("--smoke", "--work", str(tmp_path / "work"), "--out", str(out), cwd=tmp_path,
                       module="harness.train.draft", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"model.safetensors", "config.json", "build.json"} <= {p.name for p in out.iterdir()}
    model, _ = smol_draft.load(torch.float32, out)
    logits = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, 49152)
    assert torch.isfinite(logits).sum() == 3 * model.cfg["n_draft_vocab"]
    # A second run resumes from the cached data and checkpoint.
    again = harness_cli("--smoke", "--work", str(tmp_path / "work"), "--out", str(out), cwd=tmp_path,
                        module="harness.train.draft", timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from step 3" in again.stdout


def test_sd_with_smol_draft_is_lossless(draft, target):
    model, tokenizer = target
    settings = DecodeSettings(max_new_tokens=24, eos_token_ids=(tokenizer.eos_token_id,))
    accepted = 0
    for text in ("What is the capital of France?", "Write a Python function that adds two numbers."):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            return_dict=True, return_tensors="pt")["input_ids"]
        ar = get_method("ar")(Models(model, None), Prompt({"input_ids": ids}), settings)
        sd = get_method("sd")(Models(model, draft), Prompt({"input_ids": ids}), settings, gamma=5)
        assert sd.tokens == ar.tokens
        accepted += sum(sd.stats["accepted"])
        hf = get_method("hf_assisted")(Models(model, draft), Prompt({"input_ids": ids}), settings, gamma=5)
        assert hf.tokens == ar.tokens  # the draft also serves transformers' own assisted generation
    assert accepted > 0  # the trained draft agrees with the target at least sometimes


def test_missing_weights_say_how_to_build(tmp_path):
    from harness import HarnessError

    with pytest.raises(HarnessError, match="harness.train.draft"):
        smol_draft.load(torch.float32, tmp_path)


def test_prompt_sets_are_disjoint():
    rows = {name: [json.loads(x) for x in (ROOT / "datasets" / "zoo-prompts" / f"{name}.jsonl").read_text().splitlines()]
            for name in ("train", "eval")}
    train = {r["turns"][0] for r in rows["train"]}
    assert len(rows["eval"]) >= 30 and not train & {r["turns"][0] for r in rows["eval"]}


def test_more_training_prompts_extend_the_bundled_file_unchanged(tmp_path):
    """harness.train.eagle --train-prompts N: the bundled 1600 first (so the first answers are the committed
    drafter's), then new prompts of the same generator, written once and reproducibly."""
    from harness.train import prompts

    bundled = ROOT / "datasets" / "zoo-prompts" / "train.jsonl"
    assert prompts.train_file(prompts.N_TRAIN, tmp_path) == bundled
    bigger = prompts.train_file(1700, tmp_path)
    lines = bigger.read_text().splitlines()
    assert len(lines) == 1700 and lines[:1600] == bundled.read_text().splitlines()
    assert len({json.loads(x)["turns"][0] for x in lines}) == 1700  # no prompt twice
    bigger.unlink()
    assert prompts.train_file(1700, tmp_path).read_text().splitlines() == lines


def test_eagle_curve_builds_each_point_once(tmp_path, monkeypatch):
    """harness.train.eagle_curve on the smoke budget: one drafter per point, its tau measured against ar and
    kept beside it, the table written; a second run reuses the point instead of training again."""
    from harness.train import eagle_curve

    argv = ["--points", "4", "--train-prompts", "1600", "--n-eval", "1", "--eval-tokens", "4", "--out", str(tmp_path),
            "--results", str(tmp_path / "results.md"), "--smoke"]
    eagle_curve.main(argv)
    (row,) = [line for line in (tmp_path / "results.md").read_text().splitlines() if line.startswith("| 4 |")]
    assert row.endswith("| 1/1 |")  # lossless against ar
    assert (tmp_path / "tau_vs_answers.png").stat().st_size > 0
    monkeypatch.setattr(eagle_curve.eagle, "main", lambda argv: pytest.fail("a finished point was trained again"))
    eagle_curve.main(argv)


def test_eagle_smoke_build_exports_the_official_layout(tmp_path, target):
    """harness.train.eagle end to end on a tiny budget: the export loads as an EAGLE-3 checkpoint (tied full
    head, speculator, frequency list) and decodes losslessly with every head."""
    from methods.eagle3 import FREQUENT, load_eagle3

    out = tmp_path / "eagle"
    proc = harness_cli("--smoke", "--out", str(out), cwd=tmp_path, module="harness.train.eagle", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert {"fc.weight", "norm.weight", "midlayer.self_attn.q_proj.weight", "speculator.down.weight"} <= keys
    assert "lm_head.weight" not in keys  # tied to the target's head, not stored
    model, tokenizer = target
    eagle = load_eagle3(out, model, torch.float32)
    assert len(json.loads((out / FREQUENT).read_text())) == 49152
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Say hi."}], add_generation_prompt=True,
                                        return_dict=True, return_tensors="pt")["input_ids"]
    settings = DecodeSettings(max_new_tokens=12, eos_token_ids=(2,))
    ar = get_method("ar")(Models(model), Prompt({"input_ids": ids}), settings)
    for head, size in (("full", 0), ("specvocab", 64), ("frspec", 2048)):
        res = get_method("eagle")(Models(model, eagle=eagle), Prompt({"input_ids": ids}), settings, head=head, head_size=size)
        assert res.tokens == ar.tokens


EAGLES = {"smol-eagle3": 49152, "smol-eagle3-r8192": 8192, "smol-eagle3-r16384": 16384}


@pytest.mark.parametrize("name", sorted(EAGLES))
def test_committed_eagle_drafters_load_and_decode_losslessly(name, target):
    """The committed EAGLE-3 drafters: small fp16 files in the official layout (a sharded index where one file
    would pass 20 MB), loaded through their pair's id; every head they serve, chain and dynamic tree, equals ar."""
    from harness.models import load_eagle
    from harness.zoo import WEIGHTS

    folder = WEIGHTS / name
    files = sorted(folder.glob("model*.safetensors"))
    assert files and all(f.stat().st_size <= MAX_FILE_BYTES for f in files)
    for f in files:
        with safe_open(str(f), "pt") as st:
            assert {st.get_tensor(k).dtype for k in st.keys()} <= {torch.float16, torch.bool, torch.int64}
    model, tokenizer = target
    eagle = load_eagle(f"embedded:{name}", model, torch.float32)
    assert eagle.config.hidden_size == 576 and eagle.fc.weight.shape == (576, 3 * 576)
    assert eagle.lm_head.weight.shape[0] == EAGLES[name] and eagle.frequent.numel() == 49152
    ids = torch.arange(EAGLES[name]) + eagle.d2t
    assert ids.unique().numel() == EAGLES[name] and bool(eagle.t2d[ids].all()) and 2 in ids.tolist()  # EOS draftable
    build = json.loads((folder / "build.json").read_text())
    assert build["train"]["val_agree_per_step"][0] > 0.3  # held-out agreement with the target, recorded by the build
    if name == "smol-eagle3":
        assert eagle.lm_head.weight is model.get_output_embeddings().weight and eagle.speculator is not None
        heads = [("full", 0), ("frspec", 8192), ("specvocab", 768)]
    else:
        heads = [("reduced", 0)]
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Write a Python function that adds two numbers."}],
                                           add_generation_prompt=True, return_dict=True, return_tensors="pt")["input_ids"]
    settings = DecodeSettings(max_new_tokens=32, eos_token_ids=(2,))
    ar = get_method("ar")(Models(model), Prompt({"input_ids": prompt}), settings)
    accepted = 0
    for head, size in heads:
        for tree in ({}, {"top_k": 4, "total_tokens": 16}):
            res = get_method("eagle")(Models(model, eagle=eagle), Prompt({"input_ids": prompt}), settings, head=head,
                                      head_size=size, **tree)
            assert res.tokens == ar.tokens, (head, tree)
            accepted += sum(res.stats["accepted"])
    assert accepted > 0
