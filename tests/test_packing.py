"""Prepacked CPU linear weights (harness.packing): same numbers as nn.Linear, same Parameters, and every
method stays token-identical to `ar` when both decode with the packed models."""
from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from harness import HarnessError
from harness.models import load_pair
from harness.packing import PackedLinear, pack_linears, wanted
from methods import DecodeSettings, get_method
from tests.conftest import ROOT, harness_cli, pair_overrides, tiny_llama

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")
CPU = torch.device("cpu")


@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_computes_what_linear_computes(bias):
    torch.manual_seed(0)
    linear = nn.Linear(48, 80, bias=bias)
    packed = PackedLinear(linear)
    assert packed.weight is linear.weight and packed.bias is linear.bias
    for shape in [(1, 48), (3, 48), (1, 6, 48), (2, 5, 48)]:
        x = torch.randn(shape)
        with torch.no_grad():
            assert torch.allclose(packed(x), linear(x), atol=1e-5, rtol=1e-5), shape
    assert packed.state_dict().keys() == linear.state_dict().keys()


def test_pack_linears_keeps_parameters_ties_and_logits():
    model = tiny_llama(0, vocab=96, hidden=32, layers=2, tie_word_embeddings=True)
    model.tie_weights()
    ids = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        dense = model(ids).logits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_linear = sum(type(m) is nn.Linear for m in model.modules())
    assert pack_linears(model) == n_linear > 0
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    with torch.no_grad():
        packed = model(ids).logits
    assert torch.allclose(packed, dense, atol=1e-4, rtol=1e-4)
    assert torch.equal(packed.argmax(-1), dense.argmax(-1))


def test_wanted_resolves_auto_and_names_bad_values():
    assert wanted("auto", CPU, torch.float32) is None  # measured per model (harness.kernels)
    assert wanted(True, CPU, torch.float32)
    assert not wanted("auto", CPU, torch.bfloat16) and not wanted("auto", torch.device("cuda"), torch.float16)
    assert not wanted(False, CPU, torch.float32) and not wanted("false", CPU, torch.float32)
    with pytest.raises(HarnessError, match=r"pack_weights='maybe'; valid choices: auto, true, false"):
        wanted("maybe", CPU, torch.float32)
    with pytest.raises(HarnessError, match="needs a CPU device, dtype float32"):
        wanted("true", CPU, torch.float16)


def test_packed_embedded_pairs_decode_losslessly():
    """The speed lever must not cost the contract: on the embedded pairs with packed weights, sd, hf_assisted
    and EAGLE (full, SpecVocab and reduced heads, chain and tree) equal packed ar token for token."""
    pair = load_pair(OmegaConf.load(ROOT / "conf/pair/smollm2-135m__smol-draft.yaml"), CPU, torch.float32, pack=True)
    assert isinstance(pair.models.target.get_output_embeddings(), PackedLinear)
    assert isinstance(pair.models.draft.model.layers[0].mlp.down_proj, PackedLinear)
    dense = load_pair(OmegaConf.load(ROOT / "conf/pair/smollm2-135m__smol-draft.yaml"), CPU, torch.float32)
    assert type(dense.models.target.get_output_embeddings()) is nn.Linear  # the cached dense model is untouched
    settings = DecodeSettings(max_new_tokens=32, eos_token_ids=pair.eos_token_ids)
    questions = ["Name three colours of the rainbow.", "Write a Python function that reverses a string."]
    for question in questions:
        prompt = pair.encode([{"role": "user", "content": question}])
        ar = get_method("ar")(pair.models, prompt, settings)
        assert get_method("sd")(pair.models, prompt, settings, None, gamma=5).tokens == ar.tokens
        assert get_method("hf_assisted")(pair.models, prompt, settings, None, gamma=5).tokens == ar.tokens
    for name in ("smollm2-135m__smol-eagle3", "smollm2-135m__smol-eagle3-r8192"):
        eagle_pair = load_pair(OmegaConf.load(ROOT / f"conf/pair/{name}.yaml"), CPU, torch.float32,
                               need_draft=False, need_eagle=True, pack=True)
        heads = [{"head": "reduced"}] if name.endswith("r8192") else [{}, {"head": "specvocab", "head_size": 384}]
        prompt = eagle_pair.encode([{"role": "user", "content": questions[1]}])
        ar = get_method("ar")(eagle_pair.models, prompt, settings)
        for head in heads:
            for tree in ({}, {"top_k": 4, "total_tokens": 16}):
                out = get_method("eagle")(eagle_pair.models, prompt, settings, None, gamma=5, **head, **tree)
                assert out.tokens == ar.tokens, (name, head, tree)


def test_run_records_packing_and_refuses_to_mix_it(tmp_path, random_pair_dir):
    args = ["method=ar", "n_samples=1", "run_name=pk", "max_new_tokens=8", "warmup=0", "progress=false",
            *pair_overrides(random_pair_dir)]
    proc = harness_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cell = tmp_path / "results" / "pk" / "tiny-random" / "tiny" / "ar"
    env = json.loads((cell / "env.json").read_text())
    timing = env["kernels"]["target"]  # auto: decided by a measured 1-token step, recorded with the timings
    assert timing["tokens"] == 1 and env["packed_linear_weights"]["target"] == (timing["packed_ms"] < timing["dense_ms"])
    forced = harness_cli(*args, "run_name=pk-true", "pack_weights=true", cwd=tmp_path)  # may be slower: accepted
    assert forced.returncode == 0, forced.stderr
    assert json.loads((cell.parents[3] / "pk-true/tiny-random/tiny/ar/env.json").read_text())["packed_linear_weights"] == {
        "target": True}
    clash = harness_cli(*args, "pack_weights=false", cwd=tmp_path)
    assert clash.returncode == 2 and "pack_weights" in clash.stderr and "Traceback" not in clash.stderr
    bad = harness_cli(*args, "run_name=pk2", "pack_weights=maybe", cwd=tmp_path)
    assert bad.returncode == 2 and "pack_weights='maybe'; valid choices: auto, true, false" in bad.stderr
