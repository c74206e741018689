"""Every real pair config runs on replicas of its checkpoints (tests/replicas.py) with every method it supports,
composed by Hydra as `python -m harness pair=NAME pair.*.id=<replica>` composes it, and every greedy cell equals
`ar` token for token. The replicas are random-weight models, so this proves the code path (loading, prompts, image
handling, heads, feature layers, dtypes), not tau or speed; docs/reproducing.md says what still needs a GPU."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from harness.run import run_cell
from tests import replicas as R
from tests.conftest import ACCEPT_WEAK, ROOT

# The methods each kind of pair supports, as a user names them (method group entries).
LLAVA_METHODS = ["sd", "grid/sd_T", "grid/sd_C", "grid/sd_P", "grid/sd_w2", "tabed", "grid/tabed_MTCP", "hf_assisted"]
EAGLE_METHODS = ["eagle", "grid/eagle_full", "grid/eagle_tree16", "eagle+tree_width=2"]
FAST = ["max_new_tokens=10", "warmup=0", "progress=false", "temperature=0.0", *ACCEPT_WEAK]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, smol_tokenizer_dir) -> dict[str, Path]:
    """Every replica folder, built once (a few seconds)."""
    root = tmp_path_factory.mktemp("replicas")
    sp = R.sentencepiece_model(root / "sp")
    tok = R.llava_tokenizer(sp, root / "sp-tokenizer")
    target = R.llava_model(tok, seed=0)
    out = {"llava-hf": R.save_llava(target, tok, root / "llava-1.5-7b-hf", "hub"),
           "llava-legacy": R.save_llava(target, tok, root / "llava-1.5-13b-hf", "legacy"),
           # TABED's drafts: the target with noise (high acceptance); their vocabulary size is not published, so one is
           # padded as the target is (transformers' assisted generation needs equal sizes) and one is not
           "lvlm68m": R.save_llava(R.noisy_copy(target, 0.05, 1), tok, root / "lvlm68m", "hub")}
    bf16 = R.noisy_copy(target, 0.05, 2, vocab=len(tok))
    bf16.config.dtype = torch.bfloat16
    out["lvlm160m-bf16"] = R.save_llava(bf16, tok, root / "lvlm160m-bf16", "hub")
    out["florence2"] = R.florence2(root / "florence-2", smol_tokenizer_dir)
    out["llama3.1"] = R.llama31_target(smol_tokenizer_dir, root / "Llama-3.1-8B-Instruct")
    out["llama3.1-eagle3"] = R.eagle3_checkpoint(root / "EAGLE3-LLaMA3.1", out["llama3.1"], draft_vocab=512)
    out["specforge"] = R.eagle3_checkpoint(
        root / "specforge-llama3.1", out["llama3.1"], draft_vocab=512, fmt="safetensors", seed=1,
        extra_config={"architectures": ["LlamaForCausalLMEagle3"], "eagle_config": {"eagle_aux_hidden_state_layer_ids": [1, 2, 3]}})
    out["qwen3"] = R.qwen3_target(smol_tokenizer_dir, root / "Qwen3-8B")
    out["qwen3-eagle3"] = R.eagle3_checkpoint(
        root / "Qwen3-8B_eagle3", out["qwen3"], draft_vocab=512, fmt="safetensors", embed=True, seed=2, head_dim=16,
        extra_config={"architectures": ["LlamaForCausalLMEagle3"], "head_dim": 16, "rope_theta": 1000000.0,
                      "torch_dtype": "bfloat16"})
    out["vicuna"] = R.vicuna_target(sp, root / "vicuna-13b-v1.3")
    out["vicuna-eagle3"] = R.eagle3_checkpoint(root / "EAGLE3-Vicuna1.3", out["vicuna"], seed=3,
                                               extra_config={"num_hidden_layers": 40})
    return out


# Each real pair config -> the replicas standing in for its checkpoints, the dataset and the methods it runs.
PAIRS = {
    "llava-1.5-7b__lvlm68m": ({"target": "llava-hf", "draft": "lvlm68m", "captioner": "florence2"}, LLAVA_METHODS),
    "llava-1.5-7b__lvlm160m": ({"target": "llava-hf", "draft": "lvlm160m-bf16", "captioner": "florence2"},
                               [m for m in LLAVA_METHODS if m != "hf_assisted"]),  # its vocabulary is not padded
    "llava-1.5-13b__lvlm68m": ({"target": "llava-legacy", "draft": "lvlm68m", "captioner": "florence2"}, LLAVA_METHODS),
    "llama-3.1-8b__eagle3": ({"target": "llama3.1", "eagle": "llama3.1-eagle3"}, EAGLE_METHODS),
    # Llama-3.3-70B is Llama-3.1's architecture and tokenizer, larger; its pair's device_map: auto runs for real here
    # (accelerate places the replica on the CPU, the only device)
    "llama-3.3-70b__eagle3": ({"target": "llama3.1", "eagle": "llama3.1-eagle3"}, EAGLE_METHODS[:2]),
    "qwen3-8b__eagle3": ({"target": "qwen3", "eagle": "qwen3-eagle3"}, EAGLE_METHODS),
    "vicuna-13b__eagle3": ({"target": "vicuna", "eagle": "vicuna-eagle3"}, EAGLE_METHODS),
}


def test_every_real_pair_config_has_a_replica():
    real = {p.stem for p in (ROOT / "conf/pair").glob("*.yaml")
            if "embedded:" not in p.read_text() and p.stem != "custom"}  # custom: the user's folders (test_custom_pair)
    assert real == set(PAIRS)


def run(pair: str, ids: dict, replicas: dict, method: str, dataset: list[str], out: Path, extra=()) -> list[dict]:
    method, _, opts = method.partition("+")
    overrides = [f"pair={pair}", f"method={method}", *dataset, *FAST, f"output_root={out}", "run_name=replica",
                 *[f"pair.{role}.id={replicas[name]}" for role, name in ids.items()],
                 *[f"method.{o}" for o in opts.split("+") if o], *extra]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    from harness.records import cell_dir
    from harness.run import CellFailed

    try:
        run_cell(cfg)
    except CellFailed:  # every sample failed: the records say why, and the cell is not marked finished
        assert not (cell_dir(cfg) / "summary.json").exists()
    return [json.loads(x) for x in (cell_dir(cfg) / "samples.jsonl").read_text().splitlines()]


def check_lossless(pair, ids, replicas, methods, dataset, out, extra=()) -> dict:
    ar = run(pair, ids, replicas, "ar", dataset, out)
    assert ar and all(r["status"] == "ok" for r in ar), [r["error"] for r in ar]
    ar_ids = {(r["id"], r["turn"]): r["output_ids"] for r in ar}
    records = {}
    for method in methods:
        recs = run(pair, ids, replicas, method, dataset, out, extra)
        assert all(r["status"] == "ok" for r in recs), (method, [r["error"] for r in recs if r["error"]])
        assert {(r["id"], r["turn"]): r["output_ids"] for r in recs} == ar_ids, f"{pair} {method} is not lossless"
        records[method] = recs
    return records


@pytest.mark.parametrize("pair", [p for p in PAIRS if p.startswith("llava")])
def test_llava_pairs_run_every_method_losslessly(pair, replicas, tmp_path):
    ids, methods = PAIRS[pair]
    one_image = ["dataset=llava_w", "dataset.source=bundled", "n_samples=2",
                 "pair.captioner.max_new_tokens=16"]  # a random Florence-2 never stops by itself (TABED: up to 1024)
    records = check_lossless(pair, ids, replicas, methods, one_image, tmp_path)
    # Interleave-Bench's layout: two images, their <image> markers in the question's text
    two_images = ["dataset=iedit", "dataset.source=bundled", "n_samples=1", "pair.captioner.max_new_tokens=16"]
    check_lossless(pair, ids, replicas, [m for m in methods if m != "hf_assisted"], two_images, tmp_path / "iedit")
    sd = records["sd"]
    assert sum(r["new_tokens"] for r in sd) / sum(r["target_calls"] for r in sd) > 1.5  # the noisy copy is accepted
    if "hf_assisted" in records:  # transformers' assistant never sees the image: recorded, never silent
        assert all(r["assistant_sees_images"] is False for r in records["hf_assisted"])
    else:  # a draft whose vocabulary differs from the target's: transformers refuses it, and the record says why
        failed = run(pair, ids, replicas, "hf_assisted", one_image, tmp_path / "hf")
        assert failed and all("different tokenizers" in r["error"] and "502" in r["error"] for r in failed)


@pytest.mark.parametrize("pair", [p for p in PAIRS if not p.startswith("llava")])
def test_eagle_pairs_run_every_method_losslessly(pair, replicas, tmp_path):
    ids, methods = PAIRS[pair]
    two_turns = ["dataset=mt_bench", "dataset.source=bundled", "n_samples=2"]
    records = check_lossless(pair, ids, replicas, methods, two_turns, tmp_path)
    # method=eagle drafts with the checkpoint's own trained head (Vicuna's covers all 32000 ids), not the target's
    assert {r["head"] for r in records["eagle"]} == {"reduced"}
    assert {r["head"] for r in records["grid/eagle_full"]} == {"full"}
    placed = {json.loads(env.read_text())["kernels"]["target"].get("device_map") for env in tmp_path.rglob("env.json")}
    assert placed == {"auto" if pair == "llama-3.3-70b__eagle3" else None}  # the split target's cells say so


def test_a_specforge_drafter_reads_the_layers_its_config_names(replicas, tmp_path):
    """`eagle_config.eagle_aux_hidden_state_layer_ids` [1, 2, 3] (SpecForge: outputs of those layers) are
    hidden_states [2, 3, 4], not EAGLE's default inputs of layers 2, L//2, L-3 ([2, 3, 3] for 6 layers)."""
    ids = {"target": "llama3.1", "eagle": "specforge"}
    records = check_lossless("llama-3.1-8b__eagle3", ids, replicas, ["eagle"], ["dataset=mt_bench", "dataset.source=bundled",
                                                                               "n_samples=1"], tmp_path)
    assert {tuple(r["feature_layers"]) for r in records["eagle"]} == {(2, 3, 4)}
    default = check_lossless("llama-3.1-8b__eagle3", PAIRS["llama-3.1-8b__eagle3"][0], replicas, ["eagle"],
                             ["dataset=mt_bench", "dataset.source=bundled", "n_samples=1"], tmp_path / "official")
    assert {tuple(r["feature_layers"]) for r in default["eagle"]} == {(2, 3, 3)}


# --- fidelity defects the replicas exposed, each pinned by a test ----------------------------------------------


def test_a_float16_drafter_keeps_float32_rotary_tables(replicas):
    from transformers import AutoModelForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from methods.eagle3 import load_eagle3

    target = AutoModelForCausalLM.from_pretrained(replicas["llama3.1"], dtype=torch.float32)
    eagle = load_eagle3(replicas["llama3.1-eagle3"], target, torch.float16)
    assert eagle.fc.weight.dtype == torch.float16 and eagle.rotary.inv_freq.dtype == torch.float32
    position = torch.tensor([[4000]])
    cos16, _ = eagle.rotary(torch.zeros(1, dtype=torch.float16), position)
    cos32, _ = LlamaRotaryEmbedding(eagle.config)(torch.zeros(1), position)
    assert (cos16.float() - cos32).abs().max() < 2e-3  # a float16 inv_freq is 0.25 off here


def test_dtype_auto_on_cuda_is_each_checkpoints_own(replicas):
    from transformers import AutoConfig

    from harness.models import resolve_dtype, shipped_dtype

    assert resolve_dtype("auto", torch.device("cuda")) is None and resolve_dtype("auto", torch.device("cpu")) == torch.float32
    shipped = {name: shipped_dtype(AutoConfig.from_pretrained(replicas[name]))
               for name in ("llava-hf", "lvlm160m-bf16", "llama3.1", "qwen3", "vicuna")}
    assert shipped == {"llava-hf": torch.float16, "lvlm160m-bf16": torch.bfloat16, "llama3.1": torch.bfloat16,
                       "qwen3": torch.bfloat16, "vicuna": torch.float16}


def test_models_load_straight_onto_the_device(replicas, monkeypatch):
    """from_pretrained gets the device (device_map), so a 13B model is never built in host RAM first."""
    import transformers

    import harness.models as models

    calls, real = [], transformers.AutoModelForCausalLM

    class Spy:
        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            calls.append(kwargs)
            return real.from_pretrained(*args, **kwargs)

    monkeypatch.setattr(models, "AutoModelForCausalLM", Spy)
    models.load_model.cache_clear()
    try:
        model, _, _ = models.load_model(str(replicas["vicuna"]), torch.float32, torch.device("cpu"))
    finally:
        models.load_model.cache_clear()
    assert calls and all(c.get("device_map") == "cpu" for c in calls) and model.device.type == "cpu"


def test_a_model_that_cannot_load_is_one_line_naming_it(replicas, tmp_path):
    import shutil

    from harness import HarnessError
    from harness.models import load_model

    broken = tmp_path / "vicuna-broken"
    shutil.copytree(replicas["vicuna"], broken)
    (broken / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(HarnessError, match="vicuna-broken") as err:
        load_model(str(broken), torch.float32, torch.device("cpu"))
    assert "\n" not in str(err.value)


def test_a_tokenizer_without_a_chat_template_needs_a_named_format(replicas, tmp_path):
    """Vicuna has no chat template: the pair names FastChat's vicuna_v1.1 (EAGLE's prompts); without it, a clear
    error instead of transformers' template error on every sample."""
    from omegaconf import OmegaConf

    from harness import HarnessError
    from harness.models import VICUNA_SYSTEM, load_pair

    cfg = OmegaConf.create({"name": "v", "target": {"id": str(replicas["vicuna"])}, "eagle": None})
    with pytest.raises(HarnessError, match="chat_format"):
        load_pair(cfg, torch.device("cpu"), torch.float32, need_draft=False)
    cfg.target.chat_format = "vicuna_v1.1"
    pair = load_pair(cfg, torch.device("cpu"), torch.float32, need_draft=False)
    two = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    text = pair.tokenizer.decode(pair.encode(two).target["input_ids"][0])
    assert text == f"<s> {VICUNA_SYSTEM} USER: Hi ASSISTANT: Hello.</s>USER: Bye ASSISTANT:"


@pytest.mark.parametrize("pair", ["llama-3.1-8b__eagle3", "qwen3-8b__eagle3", "vicuna-13b__eagle3"])  # 3.3: 3.1's replica
def test_official_checkpoints_get_frspec_and_specvocab_from_the_projects_tools(pair, replicas, tmp_path):
    """An official EAGLE-3 checkpoint has no speculator and no frequency list: the error names the tool that makes
    each, and with their outputs (pair.eagle.speculator / frequent_tokens) SpecVocab and FR-Spec run losslessly."""
    from harness.train import frspec, speculator as train_speculator

    ids = PAIRS[pair][0]
    data = ["dataset=mt_bench", "dataset.source=bundled", "n_samples=1"]
    before = run(pair, ids, replicas, "specvocab", data, tmp_path / "before")
    assert before and all("harness.train.speculator" in r["error"] for r in before)
    before = run(pair, ids, replicas, "grid/eagle_frspec8k", data, tmp_path / "before")
    assert before and all("harness.train.frspec" in r["error"] for r in before)

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in R.corpus()[:200]))
    freq = frspec.main(["--tokenizer", str(replicas[ids["target"]]), "--corpus", str(corpus), "--field", "text",
                        "--out", str(tmp_path / "frspec" / "frequent_tokens.json")])
    order = json.loads(freq.read_text())
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(replicas[ids["target"]])
    counts = {}
    for t in R.corpus()[:200]:
        for i in tok(t, add_special_tokens=False)["input_ids"]:
            counts[i] = counts.get(i, 0) + 1
    assert sorted(order) == list(range(len(order))) and order[0] == max(counts, key=lambda i: (counts[i], -i))

    spec = train_speculator.main(["--pair", pair, "--target", str(replicas[ids["target"]]), "--eagle",
                                  str(replicas[ids["eagle"]]), "--n-prompts", "4", "--max-new-tokens", "8",
                                  "--steps", "30", "--k", "64", "--device", "cpu", "--out", str(tmp_path / "spec.safetensors")])
    assert json.loads(spec.with_suffix(".json").read_text())["held_out_recall_at_k"] >= 0
    extra = [f"pair.eagle.speculator={spec}", f"pair.eagle.frequent_tokens={freq}"]
    check_lossless(pair, ids, replicas, ["specvocab+k=64", "grid/eagle_frspec8k", "grid/specvocab_k384_tree16"], data,
                   tmp_path / "after", extra)


def test_the_llama_pair_is_prompted_as_eagles_evaluation_prompts_it(replicas):
    """EAGLE's Llama-3 evaluation puts Llama-2's default system message before every conversation."""
    from hydra import compose, initialize_config_dir

    from harness.models import load_pair

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["pair=llama-3.1-8b__eagle3", f"pair.target.id={replicas['llama3.1']}"]).pair
    assert "while being safe.  Your answers" in cfg.target.system_prompt  # the anchor's text, double space and all
    pair = load_pair(cfg, torch.device("cpu"), torch.float32, need_draft=False)
    text = pair.tokenizer.decode(pair.encode([{"role": "user", "content": "Hi"}]).target["input_ids"][0])
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date")
    assert f"{cfg.target.system_prompt}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" in text
