"""End to end through `python -m harness`, as a user runs it, on small random-weight local models."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.conftest import ACCEPT_WEAK, ROOT, harness_cli, pair_overrides

FAST = ["max_new_tokens=24", "warmup=1", "progress=false"]


def lines(cell):
    return [json.loads(x) for x in (cell / "samples.jsonl").read_text().splitlines()]


def test_ar_and_sd_multirun_then_report(tmp_path, random_pair_dir):
    proc = harness_cli("-m", "method=ar,sd", "n_samples=4", "run_name=e2e", *FAST,
                       *pair_overrides(random_pair_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "results" / "e2e" / "tiny-random" / "tiny"
    for tag in ("ar", "sd_M_g5_w1"):
        cell = run / tag
        assert {p.name for p in cell.iterdir()} >= {"config.yaml", "env.json", "samples.jsonl", "summary.json"}
        recs = lines(cell)
        assert [r["id"] for r in recs if r["turn"] == 0] == ["tiny-01", "tiny-02", "tiny-03", "tiny-04"]
        assert len(recs) == 5  # tiny-04 has two turns
        assert all(r["status"] == "ok" and r["prefill_s"] > 0 and r["decode_s"] > 0 for r in recs)
        env = json.loads((cell / "env.json").read_text())
        assert env["versions"]["torch"] and env["cpu_model"]
    summary = json.loads((run / "sd_M_g5_w1" / "summary.json").read_text())
    assert summary["n_ok"] == 5 and summary["tau"] > 1.0 and summary["sample_ids"][0] == "tiny-01"

    report = harness_cli(str(tmp_path / "results" / "e2e"), cwd=tmp_path, module="harness.report")
    assert report.returncode == 0, report.stderr
    sd_row = next(line for line in report.stdout.splitlines() if line.startswith("| sd "))  # sd_M_g5_w1's name
    assert "exact" in [c.strip() for c in sd_row.split("|")]  # lossless: every output identical to ar's
    assert (tmp_path / "results" / "e2e" / "report.csv").exists()

    # A finished cell is skipped: nothing is decoded again, nothing appended.
    again = harness_cli("method=sd", "n_samples=4", "run_name=e2e", *FAST,
                        *pair_overrides(random_pair_dir), cwd=tmp_path)
    assert again.returncode == 0 and "skip" in again.stderr
    assert len(lines(run / "sd_M_g5_w1")) == 5

    # Other decoding settings into the same cell are refused, naming what differs.
    clash = harness_cli("method=sd", "n_samples=4", "run_name=e2e", "max_new_tokens=9", "warmup=1",
                        *pair_overrides(random_pair_dir), cwd=tmp_path)
    assert clash.returncode == 2 and "max_new_tokens" in clash.stderr and "Traceback" not in clash.stderr


def test_killed_run_resumes_without_loss_or_duplicates(tmp_path, random_pair_dir):
    args = ["method=sd", "method.gamma=2", "run_name=kill", "max_new_tokens=160", "warmup=0", "progress=false",
            *pair_overrides(random_pair_dir)]
    cell = tmp_path / "results" / "kill" / "tiny-random" / "tiny" / "sd_M_g2_w1"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args, *ACCEPT_WEAK], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        if (cell / "samples.jsonl").exists() and len((cell / "samples.jsonl").read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cell / "summary.json").exists(), "the run finished before it could be killed"
    partial = lines(cell)
    assert 3 <= len(partial) < 12

    resumed = harness_cli(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    final = lines(cell)
    keys = [(r["id"], r["turn"]) for r in final]
    assert len(keys) == len(set(keys)) == 12  # 10 samples, two with a second turn
    assert final[: len(partial)] == partial  # what was finished is kept as it was

    clean = harness_cli(*[a.replace("run_name=kill", "run_name=clean") for a in args], cwd=tmp_path)
    assert clean.returncode == 0
    reference = lines(tmp_path / "results" / "clean" / "tiny-random" / "tiny" / "sd_M_g2_w1")
    assert [r["output_ids"] for r in reference] == [r["output_ids"] for r in final]


def test_missing_weights_give_one_clear_error(tmp_path):
    proc = harness_cli("pair.target.id=nobody/not-a-cached-model", "n_samples=1", cwd=tmp_path)
    assert proc.returncode == 2
    assert "nobody/not-a-cached-model" in proc.stderr and "hf download nobody/not-a-cached-model" in proc.stderr
    assert "HF_HUB_OFFLINE" in proc.stderr and "Traceback" not in proc.stderr


def test_failed_sample_is_recorded_and_the_run_goes_on(tmp_path, random_pair_dir):
    data = tmp_path / "q.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [
        {"question_id": "ok-1", "turns": ["Say hi."]},
        {"question_id": "empty", "turns": ["   "]},
        {"question_id": "bad-image", "turns": ["Describe it."], "images": ["missing.png"]},
        {"question_id": "ok-2", "turns": ["Count to three."]},
    ]) + "\n")
    proc = harness_cli("method=ar", "dataset.path=" + str(data), "dataset.name=mine", "run_name=fail", *FAST,
                       *pair_overrides(random_pair_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    recs = {r["id"]: r for r in lines(tmp_path / "results" / "fail" / "tiny-random" / "mine" / "ar")}
    assert recs["ok-1"]["status"] == recs["ok-2"]["status"] == "ok"
    assert recs["empty"]["status"] == "error" and "empty prompt" in recs["empty"]["error"]
    assert recs["bad-image"]["status"] == "error" and "missing.png" in recs["bad-image"]["error"]
    summary = json.loads((tmp_path / "results" / "fail" / "tiny-random" / "mine" / "ar" / "summary.json").read_text())
    assert summary["n_ok"] == 2 and summary["n_failed"] == 2


def test_image_prompts_with_a_second_turn_and_reused_first_turns(tmp_path, llava_pair_dir):
    """A LLaVA pair on a question file with images: turn 2 (captioning) builds on the target's own first
    answer; a later run reuses those stored first answers and decodes only turn 2, identically."""
    from PIL import Image

    for i, colour in enumerate(((200, 30, 30), (30, 30, 200))):
        Image.new("RGB", (40, 40), colour).save(tmp_path / f"img{i}.png")
    data = tmp_path / "q.jsonl"
    data.write_text("\n".join(json.dumps({"question_id": f"s{i}", "turns": ["What is shown?"],
                                          "images": [f"img{i}.png"]}) for i in range(2)) + "\n")
    common = ["dataset=jsonl", f"dataset.path={data}", "dataset.name=pics", "dataset.second_turn=captioning",
              *FAST, *pair_overrides(llava_pair_dir, "tiny-llava")]
    first = harness_cli("method=ar", "run_name=full", *common, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    ar_cell = tmp_path / "results" / "full" / "tiny-llava" / "pics" / "ar"
    full = lines(ar_cell)
    assert [(r["id"], r["turn"], r["status"]) for r in full] == [("s0", 0, "ok"), ("s0", 1, "ok"), ("s1", 0, "ok"),
                                                                 ("s1", 1, "ok")]
    assert full[1]["n_prompt_tokens"] > full[0]["n_prompt_tokens"] + full[0]["new_tokens"]
    assert full[0]["output_ids"] != full[2]["output_ids"]  # the answer depends on the image

    second = harness_cli("method=sd", "run_name=reuse", f"reuse_first_turn={ar_cell}", *common, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    reused = lines(tmp_path / "results" / "reuse" / "tiny-llava" / "pics" / "sd_M_g5_w1")
    assert [(r["id"], r["turn"]) for r in reused] == [("s0", 1), ("s1", 1)]
    assert [r["output_ids"] for r in reused] == [full[1]["output_ids"], full[3]["output_ids"]]
