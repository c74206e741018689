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
    assert "| sd_g5 |" in (tmp_path / "bench" / "latest.md").read_text()


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
    assert raw["cost"]["predicted"] > 0 and raw["cost"]["t_verify"] > 0
