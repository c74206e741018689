"""EAGLE-3 drafting: the official checkpoint format loads, every head is lossless, the drafter's cache holds
exactly what a from-scratch run over the committed tokens would hold, and sampling keeps the distribution."""
from __future__ import annotations

import json

import pytest
import torch

from methods import DecodeSettings, Models, Prompt, get_method
from methods.core import forward, new_cache
from methods.eagle3 import FREQUENT, Eagle3, feature_layers, load_eagle3
from tests.conftest import harness_cli, pair_overrides, tiny_llama

VOCAB, HIDDEN = 96, 32


TARGET = tiny_llama(0, vocab=VOCAB, hidden=HIDDEN, layers=3)


def bigram_target():
    """Every layer a no-op: the next token depends on the current token only, so a drafter can learn to
    predict the target several tokens ahead (trained below; random drafters accept almost nothing)."""
    model = tiny_llama(1, vocab=VOCAB, hidden=HIDDEN, layers=3)
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight.data.zero_()
        layer.mlp.down_proj.weight.data.zero_()
    return model


BIGRAM = bigram_target()
PROMPTS = [torch.tensor([ids]) for ids in ([5, 17, 3, 42], [1, 2], list(range(10, 40)))]


def write_checkpoint(folder, draft_vocab: int = 48, seed: int = 0, speculator: bool = True, fmt: str = "bin",
                     vocab: int = VOCAB, hidden: int = HIDDEN):
    """A tiny drafter in the layout of yuhuili/EAGLE3-LLaMA3.1-Instruct-8B: its config.json keys, weight names,
    d2t as offsets (target id = draft id + d2t) and t2d as a mask; no d2t/t2d when the vocabularies are equal."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    d, inter, heads, kv = hidden, 64, 4, 2
    config = {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "bos_token_id": 1, "eos_token_id": 2,
              "hidden_act": "silu", "hidden_size": d, "initializer_range": 0.02, "intermediate_size": inter,
              "max_position_embeddings": 2048, "num_attention_heads": heads, "num_key_value_heads": kv,
              "num_hidden_layers": 1, "pad_token_id": 0, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": "4.28.1",
              "use_cache": True, "vocab_size": vocab, "draft_vocab_size": draft_vocab}
    (folder / "config.json").write_text(json.dumps(config))
    w = lambda *shape: torch.randn(*shape, generator=g) * 0.3  # noqa: E731
    hd = d // heads
    state = {"fc.weight": w(d, 3 * d), "midlayer.hidden_norm.weight": torch.ones(d),
             "midlayer.input_layernorm.weight": torch.ones(d), "midlayer.post_attention_layernorm.weight": torch.ones(d),
             "midlayer.self_attn.q_proj.weight": w(heads * hd, 2 * d), "midlayer.self_attn.k_proj.weight": w(kv * hd, 2 * d),
             "midlayer.self_attn.v_proj.weight": w(kv * hd, 2 * d), "midlayer.self_attn.o_proj.weight": w(d, heads * hd),
             "midlayer.mlp.gate_proj.weight": w(inter, d), "midlayer.mlp.up_proj.weight": w(inter, d),
             "midlayer.mlp.down_proj.weight": w(d, inter), "norm.weight": torch.ones(d), "lm_head.weight": w(draft_vocab, d)}
    if draft_vocab < vocab:
        kept = torch.randperm(vocab, generator=g)[:draft_vocab].sort().values
        state["d2t"] = kept - torch.arange(draft_vocab)
        t2d = torch.zeros(vocab, dtype=torch.bool)
        t2d[kept] = True
        state["t2d"] = t2d
    if speculator:
        state["speculator.down.weight"], state["speculator.vocab.weight"] = w(d // 8, d), w(vocab, d // 8)
    state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    if fmt == "bin":
        torch.save(state, folder / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file(state, str(folder / "model.safetensors"))
    (folder / FREQUENT).write_text(json.dumps(torch.randperm(vocab, generator=g).tolist()))
    return state


@pytest.fixture(scope="module")
def drafters(tmp_path_factory):
    root = tmp_path_factory.mktemp("eagle")
    write_checkpoint(root / "reduced", draft_vocab=48)
    write_checkpoint(root / "same-vocab", draft_vocab=VOCAB, fmt="safetensors")
    return {name: load_eagle3(root / name, TARGET, torch.float32) for name in ("reduced", "same-vocab")}


def bigram_items(n: int, new_tokens: int, seed: int) -> list[dict]:
    """Training items (harness.train.eagle's layout) from the bigram target's greedy answers to n random 5-token prompts:
    ids, features, and the target's top-8 log-probabilities at every answer position."""
    g, items = torch.Generator().manual_seed(seed), []
    with torch.no_grad():
        for _ in range(n):
            prompt = torch.randint(0, VOCAB, (1, 5), generator=g)
            settings = DecodeSettings(max_new_tokens=new_tokens)
            ids = prompt[0].tolist() + decode("ar", None, prompt, settings, target=BIGRAM).tokens[0]
            logits, feats = forward(BIGRAM, new_cache(BIGRAM), torch.tensor([ids]), layers=feature_layers(3))
            lp, top = torch.log_softmax(logits[0], -1).topk(8, -1)
            items.append(dict(ids=ids, features=feats[0].to(torch.bfloat16), prompt_len=5, top_ids=top[4:-1].int(),
                              top_lp=lp[4:-1].half()))
    return items


@pytest.fixture(scope="module")
def trained():
    """A drafter trained with training-time test on the bigram target's own greedy outputs (seconds)."""
    from harness.train.eagle import drafter_config, new_drafter, train
    from methods.eagle3 import VocabSpeculator

    items = bigram_items(48, new_tokens=24, seed=0)
    eagle, spec = new_drafter(drafter_config(BIGRAM.config, VOCAB), BIGRAM, 0), VocabSpeculator(HIDDEN, 8, VOCAB)
    log = train(eagle, BIGRAM, items, "full", torch.arange(VOCAB), steps=200, batch=8, ttt=3, lr=1e-2, speculator=spec)
    eagle.speculator = spec
    eagle.frequent = torch.arange(VOCAB)
    return eagle.eval(), log


def decode(method, eagle, prompt, settings, generator=None, target=TARGET, **options):
    return get_method(method)(Models(target, eagle=eagle), Prompt({"input_ids": prompt}), settings, generator, **options)


def test_official_format_loads(drafters, tmp_path):
    red, same = drafters["reduced"], drafters["same-vocab"]
    assert red.lm_head.weight.shape == (48, HIDDEN) and red.fc.weight.shape == (HIDDEN, 3 * HIDDEN)
    ids = torch.arange(48) + red.d2t
    assert ids.unique().numel() == 48 and red.t2d[ids].all() and red.t2d.sum() == 48  # d2t and t2d agree
    assert torch.equal(same.d2t, torch.zeros(VOCAB, dtype=torch.long))  # absent maps: identity
    assert red.embed_tokens is TARGET.get_input_embeddings() and red.speculator is not None
    assert red.frequent.numel() == VOCAB
    write_checkpoint(tmp_path / "bad", draft_vocab=48)
    cfg = json.loads((tmp_path / "bad" / "config.json").read_text())
    (tmp_path / "bad" / "config.json").write_text(json.dumps({**cfg, "vocab_size": VOCAB + 1}))
    with pytest.raises(ValueError, match="vocabulary"):
        load_eagle3(tmp_path / "bad", TARGET)


def test_feature_layers_are_low_mid_high():
    assert feature_layers(32) == [2, 16, 29] and feature_layers(30) == [2, 15, 27] and feature_layers(3) == [2, 1, 0]


def test_training_time_test_learns(trained):
    """Training reaches high agreement at every unrolled step, and the drafter is accepted at decode time."""
    eagle, log = trained
    assert min(log["agree_per_step"]) > 0.8
    res = decode("eagle", eagle, PROMPTS[2], DecodeSettings(max_new_tokens=40), gamma=4, target=BIGRAM)
    assert 40 / res.stats["target_calls"] > 2.5


def pick(name, drafters, trained):
    return (trained[0], BIGRAM) if name == "trained" else (drafters[name], TARGET)


HEADS = [("same-vocab", "full", 0), ("reduced", "reduced", 0), ("same-vocab", "frspec", 24),
         ("same-vocab", "specvocab", 8), ("trained", "full", 0), ("trained", "frspec", 48), ("trained", "specvocab", 16)]


SHAPES = [dict(gamma=1), dict(gamma=4), dict(gamma=5), dict(gamma=3, tree_width=2), dict(gamma=4, tree_width=3),
          dict(gamma=1, top_k=3, total_tokens=4), dict(gamma=4, top_k=3, total_tokens=10),
          dict(gamma=5, top_k=4, total_tokens=40)]  # the last three: EAGLE-2 dynamic trees


@pytest.mark.parametrize("name,head,size", HEADS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
def test_greedy_equals_ar(drafters, trained, name, head, size, shape):
    settings = DecodeSettings(max_new_tokens=29)
    eagle, target = pick(name, drafters, trained)
    for prompt in PROMPTS:
        ar = decode("ar", None, prompt, settings, target=target).tokens[0]
        res = decode("eagle", eagle, prompt, settings, head=head, head_size=size, target=target, **shape)
        assert res.tokens[0] == ar
        assert sum(res.stats["accepted"]) + res.stats["target_calls"] >= len(ar)  # one target token per call
        if "top_k" in shape:
            assert max(res.stats["drafted"]) <= shape["total_tokens"] - 1


def test_dynamic_tree_of_width_one_is_the_chain(trained):
    """top_k 1 keeps exactly the chain's path: same drafts, same acceptance block by block."""
    eagle, _ = trained
    settings = DecodeSettings(max_new_tokens=48)
    chain = decode("eagle", eagle, PROMPTS[2], settings, gamma=4, target=BIGRAM)
    tree = decode("eagle", eagle, PROMPTS[2], settings, gamma=4, top_k=1, total_tokens=5, target=BIGRAM)
    assert tree.tokens == chain.tokens and tree.stats["accepted"][:-1] == chain.stats["accepted"][:-1]  # the chain's last
    # block is cut to the token budget; the tree drafts full depth
    assert sum(chain.stats["accepted"]) > 20
    with pytest.raises(ValueError, match="greedily"):
        decode("eagle", eagle, PROMPTS[0], DecodeSettings(max_new_tokens=4, temperature=1.0), top_k=2, target=BIGRAM)


def test_tree_draft_keeps_ancestors_and_best_scores(trained):
    """The kept nodes are closed under ancestry, ordered parents first, at most total - 1 of them."""
    from methods.eagle import EagleDrafter
    from methods.eagle3 import head_for

    eagle, _ = trained
    ids = PROMPTS[2][0]
    _, feats = forward(BIGRAM, new_cache(BIGRAM), ids[None], layers=feature_layers(3))
    drafter = EagleDrafter(eagle, head_for(eagle, BIGRAM, "full", 0), ids, feature_layers(3), 128).start(feats[0])
    tree = drafter.draft_tree([7], top_k=3, depth=4, total=12)
    tokens, parents, depths = tree.tokens, tree.parents, tree.depths
    assert len(tokens) == 11 and max(depths) <= 4
    for i, p in enumerate(parents):
        assert p < i and (depths[i] == 1 if p < 0 else depths[i] == depths[p] + 1)


def test_specvocab_method_is_eagle_with_the_speculator_head(drafters):
    settings = DecodeSettings(max_new_tokens=20)
    a = decode("specvocab", drafters["same-vocab"], PROMPTS[0], settings, k=8)
    b = decode("eagle", drafters["same-vocab"], PROMPTS[0], settings, head="specvocab", head_size=8)
    assert a.tokens == b.tokens and a.stats["accepted"] == b.stats["accepted"]


def test_heads_propose_only_their_tokens(drafters):
    from methods.eagle3 import head_for

    eagle, h = drafters["same-vocab"], torch.randn(3, HIDDEN)
    for kind, size, allowed in (("frspec", 24, set(eagle.frequent[:24].tolist())), ("specvocab", 8, None)):
        logits = head_for(eagle, TARGET, kind, size)(h)
        finite = [set(torch.isfinite(row).nonzero().flatten().tolist()) for row in logits]
        if allowed is not None:
            assert all(f <= allowed | {2} for f in finite)  # frequent tokens (+ EOS when the target has one)
        else:
            assert all(len(f) == 8 for f in finite)
            top = eagle.speculator(h).topk(8).indices
            assert all(f == set(t.tolist()) for f, t in zip(finite, top))
            full = h @ TARGET.get_output_embeddings().weight.T  # exact logits on the candidates
            assert torch.allclose(logits.gather(1, top), full.gather(1, top), atol=1e-5)
    red = drafters["reduced"]
    logits = head_for(red, TARGET, "reduced", 0)(h)
    assert set(torch.isfinite(logits[0]).nonzero().flatten().tolist()) == set(red.t2d.nonzero().flatten().tolist())
    with pytest.raises(ValueError, match="head_size"):
        head_for(eagle, TARGET, "specvocab", 0)
    with pytest.raises(ValueError, match="valid choices"):
        head_for(eagle, TARGET, "nope", 0)


@pytest.mark.parametrize("name", ["same-vocab", "trained"])
@pytest.mark.parametrize("shape", [dict(tree_width=1), dict(tree_width=2), dict(top_k=3, total_tokens=12)])
def test_drafter_cache_equals_a_fresh_run(drafters, trained, name, shape):
    """Entries built during decoding (from prefill and tree/chain verification features, across rejections)
    equal the entries of one fresh pass over the committed tokens."""
    eagle, target = pick(name, drafters, trained)
    prompt = PROMPTS[2]
    res = decode("eagle", eagle, prompt, DecodeSettings(max_new_tokens=40), gamma=4, target=target, **shape)
    out = res.tokens[0]
    assert name != "trained" or sum(res.stats["accepted"]) > 10  # the accepted-path bookkeeping is exercised
    attn = eagle.midlayer.self_attn
    assert attn.length > prompt.shape[1]
    k_run, v_run = attn.k_cache[:, :, : attn.length].clone(), attn.v_cache[:, :, : attn.length].clone()
    n = attn.length  # a drafter with n entries has read tokens 1..n: the run may have cut it short mid-block
    seq = torch.cat([prompt[0], torch.tensor(out)])
    _, feats = forward(target, new_cache(target), seq[None, :n], layers=feature_layers(3))
    attn.reset(64, feats.device, feats.dtype)
    eagle.extend(feats, seq[None, 1 : n + 1], torch.arange(n)[None])
    assert torch.allclose(k_run, attn.k_cache[:, :, :n], atol=1e-5)
    assert torch.allclose(v_run, attn.v_cache[:, :, :n], atol=1e-5)


def test_missing_drafter_and_bad_heads(drafters):
    settings = DecodeSettings(max_new_tokens=5)
    with pytest.raises(ValueError, match="EAGLE-3 drafter"):
        decode("eagle", None, PROMPTS[0], settings)
    with pytest.raises(ValueError, match="reduced"):  # a drafter narrower than the target cannot use its head
        narrow = Eagle3(drafters["same-vocab"].config.__class__(hidden_size=16, num_attention_heads=2,
                                                                  num_key_value_heads=1, intermediate_size=32,
                                                                  vocab_size=VOCAB), HIDDEN)
        decode("eagle", narrow, PROMPTS[0], settings, head="full")
    from harness import HarnessError
    from harness.models import eagle_folder

    with pytest.raises(HarnessError, match="--head reduced --vocab 4096 --init-from"):  # names the build command
        eagle_folder("embedded:smol-eagle3-r4096")


def test_eagle_and_specvocab_through_the_cli(tmp_path, random_pair_dir):
    """`method=eagle` / `method=specvocab` with `pair.eagle.id` pointing at a folder in the official format."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(random_pair_dir / "target")
    write_checkpoint(tmp_path / "eagle", draft_vocab=cfg.vocab_size, vocab=cfg.vocab_size, hidden=cfg.hidden_size)
    common = ["n_samples=2", "max_new_tokens=12", "warmup=1", "progress=false", "run_name=e",
              *pair_overrides(random_pair_dir), f"+pair.eagle.id={tmp_path / 'eagle'}"]
    for args in (["-m", "method=ar,eagle"], ["method=specvocab", "method.k=16"]):
        proc = harness_cli(*args, *common, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    report = harness_cli(str(tmp_path / "results" / "e"), cwd=tmp_path, module="harness.report")
    import pandas as pd

    table = pd.read_csv(tmp_path / "results" / "e" / "report.csv").set_index("method")
    assert table.loc[["eagle_checkpoint0_g5_w1_k0t60", "specvocab_k16_g5_w1_k0t60"], "lossless"].tolist() == ["exact"] * 2
    missing = harness_cli("method=eagle", *common[:-1], "run_name=no-eagle", cwd=tmp_path)
    assert missing.returncode == 2 and "no EAGLE-3 drafter" in missing.stderr


def test_feature_scale_is_folded_into_fc_at_export(tmp_path):
    """Training reads features / per-dimension RMS (SmolLM2's massive dimensions would swamp fc); the exported
    fc must compute the same thing from raw features, so the inference path is unchanged."""
    from harness.train.eagle import drafter_config, export, feature_scale, make_batch, new_drafter, ttt_states

    g = torch.Generator().manual_seed(3)
    feats = torch.randn(12, 3 * HIDDEN, generator=g)
    feats[:, 5] *= 300.0
    item = dict(ids=list(range(1, 13)), features=feats.to(torch.bfloat16), prompt_len=4,
                top_ids=torch.zeros(9, 8, dtype=torch.int32), top_lp=torch.zeros(9, 8))
    scale = feature_scale([item], sink=0)
    assert scale[5] > 100 * scale[6]
    config = drafter_config(TARGET.config, VOCAB)
    eagle = new_drafter(config, TARGET, 0)
    batch = make_batch([item], scale)
    with torch.no_grad():
        trained_view = ttt_states(eagle, batch["features"].float(), batch["next"], 1)[0]
    export(eagle, config, torch.arange(VOCAB), list(range(VOCAB)), tmp_path, None, scale)
    loaded = load_eagle3(tmp_path, TARGET, torch.float32)
    loaded.midlayer.self_attn.reset(32, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        served = loaded.extend(item["features"][None, :11].float(), batch["next"], torch.arange(11)[None])
    torch.testing.assert_close(served, trained_view, rtol=0.03, atol=0.03)


def test_big_checkpoints_are_sharded_with_the_standard_index(tmp_path):
    """A reduced head of 16384 rows does not fit one 20 MB file: export writes whole-tensor shards and the
    model.safetensors.index.json that the hub's sharded checkpoints use; the loader reads them back."""
    from harness.train.eagle import save_shards
    from methods.eagle3 import INDEX, read_weights

    state = write_checkpoint(tmp_path / "one", draft_vocab=48, fmt="safetensors")
    nbytes = sum(v.numel() * v.element_size() for v in state.values())
    (tmp_path / "sharded").mkdir()
    (tmp_path / "sharded" / "model.safetensors").write_text("stale")  # an older single-file export is replaced
    save_shards(state, tmp_path / "sharded", max_bytes=nbytes // 3)
    shards = sorted(p.name for p in (tmp_path / "sharded").glob("model*.safetensors"))
    assert len(shards) >= 3 and "model.safetensors" not in shards
    weight_map = json.loads((tmp_path / "sharded" / INDEX).read_text())["weight_map"]
    assert set(weight_map) == set(state) and set(weight_map.values()) == set(shards)
    back = read_weights(tmp_path / "sharded")
    assert all(torch.equal(back[k], v) for k, v in state.items())
    for f in ("config.json", FREQUENT):
        (tmp_path / "sharded" / f).write_text((tmp_path / "one" / f).read_text())
    a, b = load_eagle3(tmp_path / "one", TARGET, torch.float32), load_eagle3(tmp_path / "sharded", TARGET, torch.float32)
    assert torch.equal(a.lm_head.weight, b.lm_head.weight) and torch.equal(a.d2t, b.d2t)
    with pytest.raises(ValueError, match="fc.weight"):
        save_shards({"fc.weight": state["fc.weight"]}, tmp_path / "small", max_bytes=16)


def test_validation_counts_agreement_on_held_out_answers(trained):
    """Held-out top-1 per TTT step: high for the trained drafter on fresh bigram outputs, near chance for an
    untrained one (the measure the build reports next to the training agreement)."""
    from harness.train.eagle import drafter_config, new_drafter, validate

    eagle, _ = trained
    items = bigram_items(8, new_tokens=16, seed=11)
    head, to_head = BIGRAM.get_output_embeddings().weight.float(), torch.arange(VOCAB)
    good = validate(eagle.float(), items, 3, head, to_head, None)
    fresh = validate(new_drafter(drafter_config(BIGRAM.config, VOCAB), BIGRAM, 1), items, 3, head, to_head, None)
    assert len(good) == 3 and min(good) > 0.5 and max(fresh) < 0.2, (good, fresh)


def test_warm_start_reads_back_what_training_saw(tmp_path):
    """A reduced head starts from the full-head drafter: warm_start undoes the export's folded feature scale, so
    the new drafter computes exactly the trained drafter's states; the head is left alone."""
    from harness.train.eagle import drafter_config, export, new_drafter, warm_start

    scale = torch.rand(3 * HIDDEN) * 10 + 0.5
    trained_full = new_drafter(drafter_config(TARGET.config, VOCAB), TARGET, 0)
    export(trained_full, drafter_config(TARGET.config, VOCAB), torch.arange(VOCAB), list(range(VOCAB)), tmp_path,
           None, scale)
    reduced = new_drafter(drafter_config(TARGET.config, 48), TARGET, 1)
    head = reduced.lm_head.weight.detach().clone()
    warm_start(reduced, tmp_path, scale)
    torch.testing.assert_close(reduced.fc.weight, trained_full.fc.weight, rtol=2e-3, atol=1e-4)  # fp16 storage
    torch.testing.assert_close(reduced.midlayer.mlp.up_proj.weight, trained_full.midlayer.mlp.up_proj.weight,
                               rtol=2e-3, atol=1e-4)
    assert torch.equal(reduced.lm_head.weight, head)


def test_sampled_softmax_with_every_row_is_the_exact_loss():
    """The sampled-vocabulary loss (for 262k-token heads) is the exact one, value and gradients, when its draws
    cover every row; with few draws its partition-function correction keeps it near the exact loss."""
    from harness.train.eagle import drafter_config, make_batch, new_drafter, ttt_loss
    from methods.eagle3 import VocabSpeculator

    batch = make_batch(bigram_items(1, new_tokens=6, seed=3))  # 6 x top-8 teacher ids: most rows are drawn
    head, to_head = BIGRAM.get_output_embeddings().weight.detach().float(), torch.arange(VOCAB)
    eagle, spec = new_drafter(drafter_config(BIGRAM.config, VOCAB), BIGRAM, 2), VocabSpeculator(HIDDEN, 8, VOCAB)

    def loss_and_grad(negatives):
        eagle.zero_grad(), spec.zero_grad()
        loss, _ = ttt_loss(eagle, batch, 3, head, to_head, spec, negatives=negatives)
        loss.backward()
        return loss.detach(), eagle.fc.weight.grad.clone(), spec.vocab.weight.grad.clone()

    exact, covered = loss_and_grad(0), loss_and_grad(VOCAB - 1)
    for a, b in zip(exact, covered):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.manual_seed(0)
    few = torch.stack([loss_and_grad(VOCAB // 4)[0] for _ in range(20)])
    assert not torch.allclose(few, exact[0]) and abs(float(few.mean()) - float(exact[0])) < 0.05 * float(exact[0])


def test_a_drafter_trained_on_a_sampled_softmax_agrees_with_the_full_head():
    from harness.train.eagle import drafter_config, new_drafter, train

    torch.manual_seed(0)
    items = bigram_items(48, new_tokens=24, seed=0)
    eagle = new_drafter(drafter_config(BIGRAM.config, VOCAB), BIGRAM, 0)
    log = train(eagle, BIGRAM, items[8:], "full", torch.arange(VOCAB), steps=200, batch=8, ttt=3, lr=1e-2,
                val=items[:8], negatives=VOCAB // 8)
    assert min(log["val_agree_per_step"]) > 0.7, log


def test_a_full_head_checkpoint_resumes_without_the_unused_drafter_head(tmp_path):
    """The full head scores with the target's rows, so its checkpoint leaves out the drafter's own lm_head (for
    Gemma's 262k vocabulary two thirds of the file) and the target's embedding; resuming restores every trained
    weight all the same."""
    from harness.train.eagle import drafter_config, new_drafter, train
    from methods.eagle3 import VocabSpeculator

    items, ckpt = bigram_items(8, new_tokens=8, seed=1), tmp_path / "ckpt.pt"
    first, spec = new_drafter(drafter_config(BIGRAM.config, VOCAB), BIGRAM, 0), VocabSpeculator(HIDDEN, 8, VOCAB)
    train(first, BIGRAM, items, "full", torch.arange(VOCAB), steps=3, batch=4, ttt=2, lr=1e-2, ckpt=ckpt, speculator=spec)
    saved = torch.load(ckpt)
    assert saved["step"] == 3 and not any(k.startswith(("lm_head", "embed_tokens")) for k in saved["eagle"])
    again, spec2 = new_drafter(drafter_config(BIGRAM.config, VOCAB), BIGRAM, 1), VocabSpeculator(HIDDEN, 8, VOCAB)
    train(again, BIGRAM, items, "full", torch.arange(VOCAB), steps=3, batch=4, ttt=2, lr=1e-2, ckpt=ckpt, speculator=spec2)
    for k, v in first.state_dict().items():
        if not k.startswith(("lm_head", "embed_tokens")):
            assert torch.equal(v, again.state_dict()[k]), k
    assert all(torch.equal(v, spec2.state_dict()[k]) for k, v in spec.state_dict().items())


def test_the_first_answers_reuse_the_feature_shards_of_the_whole_generation(tmp_path):
    """--answers N trains on the first N answers of a generation: their features are the whole run's shards
    (consecutive answers per shard), only a short last shard is new; the features match a fresh extraction."""
    from harness.train.eagle import extract_features

    g = torch.Generator().manual_seed(0)
    rows = [dict(prompt=torch.randint(0, VOCAB, (5,), generator=g).tolist(),
                 response=torch.randint(0, VOCAB, (3 + i % 4,), generator=g).tolist(), top_ids=None, top_lp=None)
            for i in range(10)]
    whole = extract_features(TARGET, rows, tmp_path, batch=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.pt", "00001.pt", "00002-2.pt"]
    first = extract_features(TARGET, rows[:6], tmp_path, batch=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.pt", "00001-2.pt", "00001.pt", "00002-2.pt"]
    fresh = extract_features(TARGET, rows[:6], tmp_path / "fresh", batch=4)
    for a, b, c in zip(first, whole, fresh):
        assert a["ids"] == b["ids"] == c["ids"]
        torch.testing.assert_close(a["features"].float(), c["features"].float(), atol=2e-2, rtol=2e-2)
