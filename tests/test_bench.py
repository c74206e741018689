"""`make bench` sections run end to end (on tiny random pairs here; the numbers are not asserted)."""
import json

import yaml

from harness.bench import main


def test_tabed_draft_cost_section(tmp_path, llava_pair_dir):
    pair = tmp_path / "pair.yaml"
    pair.write_text(yaml.safe_dump({"name": "tiny-llava", "target": {"id": str(llava_pair_dir / "target")},
                                    "draft": {"id": str(llava_pair_dir / "draft")}, "captioner": {"id": "draft",
                                                                                              "max_new_tokens": 4}}))
    assert main(["--sections", "tabed", "--vlm-pair", str(pair), "--vlm-dataset", "mmvet", "--steps", "3",
                 "--out", str(tmp_path / "bench")]) == 0
    table = (tmp_path / "bench" / "latest.md").read_text()
    for row in ("K=1 M batched", "K=2 MT batched", "K=2 MT sequential", "K=4 MTCP batched", "K=4 MTCP sequential"):
        assert row in table
    assert (tmp_path / "bench" / "raw.json").exists()


def test_sd_section_checks_losslessness(tmp_path, random_pair_dir):
    pair = tmp_path / "pair.yaml"
    pair.write_text(yaml.safe_dump({"name": "tiny-random", "target": {"id": str(random_pair_dir / "target")},
                                    "draft": {"id": str(random_pair_dir / "draft")}}))
    assert main(["--sections", "sd", "--pair", str(pair), "--prompts", "2", "--repeats", "1", "--max-new-tokens", "8",
                 "--out", str(tmp_path / "bench")]) == 0
    table = (tmp_path / "bench" / "latest.md").read_text()
    assert "| sd_g5 |" in table and "| sd_g3_w2 |" in table  # the --shape variant: a token tree
    assert main(["--sections", "hf", "--pair", str(pair), "--prompts", "1", "--repeats", "1", "--max-new-tokens", "4",
                 "--out", str(tmp_path / "bench")]) == 0  # another section: replaces nothing it did not measure
    both = (tmp_path / "bench" / "latest.md").read_text()
    assert table.split("<!-- bench section: sd -->")[1] in both and "| hf_assisted_g5 |" in both
    assert set(json.loads((tmp_path / "bench" / "raw.json").read_text())) == {"sd", "hf"}


def test_kernels_section_compares_dense_and_packed_weights(tmp_path, random_pair_dir):
    pair = tmp_path / "pair.yaml"
    pair.write_text(yaml.safe_dump({"name": "tiny-random", "target": {"id": str(random_pair_dir / "target")},
                                    "draft": {"id": str(random_pair_dir / "draft")}}))
    assert main(["--sections", "kernels", "--pair", str(pair), "--steps", "2", "--out", str(tmp_path / "bench")]) == 0
    table = (tmp_path / "bench" / "latest.md").read_text()
    for row in ("| target 1 token |", "| target 6 tokens |", "| target 16 tokens |", "| draft 1 token |",
                "**verify of 6 tokens / 1-token step: dense", "**draft step / target step: dense"):
        assert row in table
    raw = json.loads((tmp_path / "bench" / "raw.json").read_text())["kernels"]["data"]["forward_s"]
    assert len(raw["true target 6"]) == len(raw["false target 6"]) == 2 and min(raw["true target 6"]) > 0


def test_hf_overhead_and_cost_sections(tmp_path, random_pair_dir):
    pair = tmp_path / "pair.yaml"
    pair.write_text(yaml.safe_dump({"name": "tiny-random", "target": {"id": str(random_pair_dir / "target")},
                                    "draft": {"id": str(random_pair_dir / "draft")}}))
    assert main(["--sections", "hf,overhead,cost", "--pair", str(pair), "--prompts", "2", "--repeats", "1",
                 "--max-new-tokens", "12", "--gamma", "3", "--out", str(tmp_path / "bench")]) == 0
    table = (tmp_path / "bench" / "latest.md").read_text()
    for row in ("| hf_assisted_g3 |", "| hf_pld_g3 |", "**sd vs hf_assisted:", "**overhead:", "**cost model:"):
        assert row in table
    raw = json.loads((tmp_path / "bench" / "raw.json").read_text())
    assert {"hf", "overhead", "cost"} <= set(raw)
    assert raw["cost"]["data"]["predicted"] > 0 and raw["cost"]["data"]["t_verify"] > 0


def test_vocab_section_times_every_head(tmp_path, random_pair_dir):
    """The vocabulary grid on a random target with random EAGLE-3 drafters (a full one with a speculator and
    frequency list, a reduced one): every variant decodes losslessly, is timed, and the goals are stated."""
    from tests.test_eagle import write_checkpoint

    vocab = 49152
    write_checkpoint(tmp_path / "full", draft_vocab=vocab, vocab=vocab, hidden=64, fmt="safetensors")
    write_checkpoint(tmp_path / "r512", draft_vocab=512, vocab=vocab, hidden=64, speculator=False)
    pair = tmp_path / "pair.yaml"
    pair.write_text(yaml.safe_dump({"name": "tiny-eagle", "target": {"id": str(random_pair_dir / "target")},
                                    "eagle": {"id": str(tmp_path / "full")}}))
    assert main(["--sections", "vocab", "--eagle-pair", str(pair), "--eagle-dataset", "tiny", "--reduced",
                 str(tmp_path / "r512"), "--frspec", "1024", "--specvocab-k", "16,64", "--prompts", "2", "--repeats",
                 "1", "--max-new-tokens", "8", "--steps", "3", "--out", str(tmp_path / "bench")]) == 0
    table = (tmp_path / "bench" / "latest.md").read_text()
    for row in ("| eagle full_g5 |", "| eagle r512_g5 |", "| frspec 1024_g5 |", "| specvocab k16_g5 |",
                "| specvocab k64_g5 |", "**specvocab tau / full tau:", "**specvocab draft step / full:",
                "**specvocab vs best reduced-vocabulary variant:"):
        assert row in table
    raw = json.loads((tmp_path / "bench" / "raw.json").read_text())
    assert len(raw["vocab"]["data"]["draft_step_s"]["specvocab k16_g5"]) == 3


def test_baseline_section_names_the_rows_a_script_reads(tmp_path, random_pair_dir):
    pair = tmp_path / "pair.yaml"
    pair.write_text(yaml.safe_dump({"name": "tiny-random", "target": {"id": str(random_pair_dir / "target")},
                                    "draft": {"id": str(random_pair_dir / "draft")}}))
    assert main(["--sections", "baseline", "--pair", str(pair), "--prompts", "2", "--repeats", "1",
                 "--max-new-tokens", "8", "--out", str(tmp_path / "bench")]) == 0
    table = (tmp_path / "bench" / "latest.md").read_text()
    for row in ("| ar dense |", "| ar packed |", "| generate dense |", "| generate packed |", "| sd_g3_w2 |",
                "| hf_assisted defaults |", "| sd dynamic packed |", "**ar vs generate: ", "**best sd vs generate: ", "**best sd vs best hf_assisted: "):
        assert row in table
    raw = json.loads((tmp_path / "bench" / "raw.json").read_text())["baseline"]["data"]
    assert raw["ar_kind"] in ("dense", "packed") and raw["best_sd"].startswith("sd")


def test_interleaving_checks_each_variant_against_its_own_reference(tmp_path, random_pair_dir):
    """How the vllm section holds an engine's sd to the engine's ar (and only reports its agreement with ours):
    a variant that differs from ar aborts the benchmark unless its reference says otherwise."""
    import argparse

    import pytest

    from harness import bench
    from methods import Result, get_method

    pair = tmp_path / "pair.yaml"
    pair.write_text(yaml.safe_dump({"name": "tiny-random", "target": {"id": str(random_pair_dir / "target")},
                                    "draft": {"id": str(random_pair_dir / "draft")}}))
    args = argparse.Namespace(pair=str(pair), dataset="tiny", prompts=2, repeats=1, max_new_tokens=6,
                              pack_weights="false")

    def other(models, prompt, settings, generator=None):  # another engine whose kernels round differently
        return Result([[7] * settings.max_new_tokens], dict(prefill_s=0.01, decode_s=0.01, target_calls=6,
                                                                  draft_calls=0))

    variants = {"ar": (get_method("ar"), {}), "other ar": (other, {}), "other sd": (other, {})}
    settled = []
    runs = bench.interleaved(args, bench.resolve_device("cpu"), variants, settle=lambda: settled.append(1),
                             references={"other ar": None, "other sd": "other ar"})
    assert [r["agrees_with_ar"] for r in runs["other ar"]] == [False, False] and len(settled) == 3 + 3 * 2
    with pytest.raises(SystemExit, match="outputs of other sd differ from ar"):
        bench.interleaved(args, bench.resolve_device("cpu"), variants, references={"other ar": None})
