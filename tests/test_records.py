"""Records you can trust (issue 20): no wrong number recorded as a success, no record lost or doubled, setup
mistakes stopped before decoding. In-process runs on small random-weight models; a few through the CLI for exit codes."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness import HarnessError
from harness.jsonl import BadLine, parse, split_lines
from harness.models import check_same_tokenizer, load_pair
from harness.records import CORRUPT, LOCK, RETRIED, CellBusy, cell_lock, lock_holder, read_records
from harness.report import main as report_main
from harness.report import status
from harness.run import CellFailed, check_settings, run_cell
from tests.conftest import ROOT, harness_cli, pair_overrides, tiny_llama

FAST = ["max_new_tokens=8", "warmup=0", "progress=false", "baseline_check=false"]


def config(tmp_path, pair_dir, *extra):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*FAST, f"output_root={tmp_path / 'results'}", *pair_overrides(pair_dir),
                                            *extra])


def questions(tmp_path, rows, name="q.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [f"dataset.path={path}", "dataset.name=mine"]


def cell_of(tmp_path, run, dataset="mine", tag="ar"):
    return tmp_path / "results" / run / "tiny-random" / dataset / tag


def lines(cell):
    return [json.loads(x) for x in (cell / "samples.jsonl").read_bytes().split(b"\n") if x]


# --- 1. a prompt the target cannot hold ------------------------------------------------------------------


def test_a_prompt_longer_than_the_context_fails_its_sample_with_the_reason(tmp_path, random_pair_dir):
    long = " ".join(["word"] * 1100)  # the tiny target has 1024 positions
    data = questions(tmp_path, [{"question_id": "short", "turns": ["Say hi."]},
                                {"question_id": "long", "turns": [long]}])
    summary = run_cell(config(tmp_path, random_pair_dir, "method=ar", "run_name=ctx", *data))
    recs = {r["id"]: r for r in lines(cell_of(tmp_path, "ctx"))}
    assert recs["short"]["status"] == "ok"
    assert recs["long"]["status"] == "error" and "exceeds the target's context of 1024 positions" in recs["long"]["error"]
    assert summary["n_ok"] == 1 and summary["n_failed"] == 1
    # prompt + max_new_tokens must fit, not the prompt alone
    fits = " ".join(["word"] * 1000)
    data = questions(tmp_path, [{"question_id": "edge", "turns": [fits]}], "edge.jsonl")
    with pytest.raises(CellFailed, match="every sample failed.*exceeds"):
        run_cell(config(tmp_path, random_pair_dir, "method=ar", "run_name=edge", "max_new_tokens=100", *data))


# --- 2. one writer per cell ------------------------------------------------------------------------------


def test_a_second_process_refuses_a_cell_another_one_holds(tmp_path, random_pair_dir):
    cfg = config(tmp_path, random_pair_dir, "method=ar", "run_name=lock", "n_samples=1")
    cell = cell_of(tmp_path, "lock", "tiny")
    with cell_lock(cell):
        holder = lock_holder(cell)
        assert f'"pid": {os.getpid()}' in holder
        with pytest.raises(CellBusy, match=f"another process.*{os.getpid()}"):
            run_cell(cfg)
        proc = harness_cli("method=ar", "run_name=lock", "n_samples=1", *FAST, *pair_overrides(random_pair_dir),
                           cwd=tmp_path)
        assert proc.returncode == 3, proc.stderr
        assert "being decoded by another process" in proc.stderr and "Traceback" not in proc.stderr
        assert not (cell / "samples.jsonl").exists()
    assert lock_holder(cell) is None
    assert run_cell(cfg)["n_ok"] == 1  # released: the cell runs


def test_a_lock_dies_with_its_holder(tmp_path):
    """kill -9 leaves no stale lock: the kernel drops the flock with the process."""
    cell = tmp_path / "cell"
    code = (f"import time; from pathlib import Path; from harness.records import cell_lock\n"
            f"with cell_lock(Path({str(cell)!r})):\n    print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    assert f'"pid": {proc.pid}' in lock_holder(cell)
    with pytest.raises(CellBusy):
        with cell_lock(cell):
            pass
    proc.kill()
    proc.wait()
    assert lock_holder(cell) is None
    with cell_lock(cell):
        assert (cell / LOCK).exists()


def test_duplicated_records_are_named(tmp_path, caplog):
    cell = tmp_path / "c"
    cell.mkdir()
    rec = {"id": "a", "turn": 0, "status": "ok", "final_turn": True}
    (cell / "samples.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "id": "b"}) + "\n"
                                        + json.dumps(rec) + "\n")
    with caplog.at_level(logging.WARNING, logger="harness"):
        kept = read_records(cell)
    assert [r["id"] for r in kept] == ["a", "b"]
    assert "1 records appear more than once" in caplog.text and "a turn 0" in caplog.text


# --- 3. setup mistakes stop before decoding --------------------------------------------------------------


@pytest.mark.parametrize("override, named", [
    ("method.gamma=0", "method.gamma=0"), ("method.tree_width=0", "method.tree_width=0"),
    ("temperature=nan", "temperature=nan"), ("n_samples=abc", "n_samples='abc'"), ("top_p=0", "top_p=0"),
    ("method.drafting=X", "method.drafting='X'"), ("+method.gama=3", "method.gama: sd has no such option"),
    ("method.name=nope", "unknown method 'nope'"),
])
def test_bad_settings_are_one_line_before_anything_loads(tmp_path, override, named):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["method=sd", override])
    with pytest.raises(HarnessError, match="valid|need") as err:
        check_settings(cfg)
    assert named in str(err.value)


def test_bad_settings_exit_2_without_a_traceback_or_a_cell(tmp_path):
    for override in ("n_samples=abc", "method.name=nope", "method.gamma=0"):
        proc = harness_cli("method=sd", override, "run_name=bad", cwd=tmp_path)
        assert proc.returncode == 2, (override, proc.stderr)
        assert "Traceback" not in proc.stderr and "ERROR" in proc.stderr
    assert not (tmp_path / "results" / "bad").exists()


def test_a_sweep_goes_on_past_a_bad_cell_and_exits_with_its_code(tmp_path, random_pair_dir):
    proc = harness_cli("-m", "method=sd", "method.gamma=0,2", "run_name=sweep", "n_samples=1", *FAST,
                       *pair_overrides(random_pair_dir), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "1 cell(s) of the sweep did not finish" in proc.stderr and "exit 2: method=sd method.gamma=0" in proc.stderr
    assert (cell_of(tmp_path, "sweep", "tiny", "sd_M_g2_w1") / "summary.json").exists()


def test_every_shipped_method_config_passes_its_own_check():
    for path in sorted((ROOT / "conf" / "method").rglob("*.yaml")):
        name = path.relative_to(ROOT / "conf" / "method").with_suffix("").as_posix()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            check_settings(compose("config", overrides=[f"method={name}"]))


def test_an_image_dataset_on_a_text_pair_is_refused(tmp_path, random_pair_dir):
    with pytest.raises(HarnessError, match="image dataset.*text-only"):
        run_cell(config(tmp_path, random_pair_dir, "method=ar", "run_name=img", "dataset=vlm-grounded"))
    assert not (cell_of(tmp_path, "img", "vlm-grounded") / "summary.json").exists()


def test_identical_failures_of_the_first_samples_stop_the_cell_unfinished(tmp_path, llava_pair_dir):
    """Prompt lookup on image prompts fails every sample alike: stop after three, mark nothing finished."""
    from PIL import Image

    rows = []
    for i in range(5):
        Image.new("RGB", (40, 40), (40 * i, 30, 30)).save(tmp_path / f"img{i}.png")
        rows.append({"question_id": f"s{i}", "turns": ["What is shown?"], "images": [f"img{i}.png"]})
    args = ["method=hf_pld", "run_name=setup", *FAST, *questions(tmp_path, rows), "dataset.name=pics",
            *pair_overrides(llava_pair_dir, "tiny-llava")]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*args, f"output_root={tmp_path / 'results'}"])
    with pytest.raises(CellFailed, match="first 3 samples all failed with: NotImplementedError: hf_pld does not"):
        run_cell(cfg)
    cell = tmp_path / "results" / "setup" / "tiny-llava" / "pics" / "hf_pld_g5"
    assert len(lines(cell)) == 3 and not (cell / "summary.json").exists()
    proc = harness_cli(*args, cwd=tmp_path)
    assert proc.returncode == 4 and "not marked finished" in proc.stderr, proc.stderr
    assert len(lines(cell)) == 3 and (cell / RETRIED).exists()  # retried, not skipped as done; the old tries kept
    assert status(tmp_path / "results").set_index("cell").state["setup/tiny-llava/pics/hf_pld_g5"] == "partial"


def test_a_draft_with_another_tokenizer_is_refused_at_load(tmp_path, random_pair_dir, smol_tokenizer_dir):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    words = ["<unk>", "</s>"] + [f"w{i}" for i in range(94)]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    small = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="</s>")
    draft = tmp_path / "small-draft"
    tiny_llama(5, vocab=96).save_pretrained(draft)
    small.save_pretrained(draft)
    cfg = OmegaConf.create({"name": "mismatch", "target": {"id": str(random_pair_dir / "target")},
                            "draft": {"id": str(draft)}})
    with pytest.raises(HarnessError, match=f"draft {draft} and target .* have different tokenizers"):
        load_pair(cfg, torch.device("cpu"), torch.float32)
    # same size, two ids swapped: still not the same tokenizer
    target_tok = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    vocab = target_tok.get_vocab()
    a, b = sorted(vocab, key=vocab.get)[300:302]
    swapped = json.loads(target_tok.backend_tokenizer.to_str())
    swapped["model"]["vocab"][a], swapped["model"]["vocab"][b] = vocab[b], vocab[a]
    other = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(swapped)))
    with pytest.raises(HarnessError, match=f"id {vocab[a]} is"):
        check_same_tokenizer("t", target_tok, "d", other)
    check_same_tokenizer("t", target_tok, "d", AutoTokenizer.from_pretrained(smol_tokenizer_dir))


# --- 4. the report on a cell with no successful record ---------------------------------------------------


def test_the_report_shows_a_cell_whose_every_record_failed(tmp_path, random_pair_dir, capsys):
    run_cell(config(tmp_path, random_pair_dir, "method=ar", "run_name=r", "n_samples=2"))
    data = questions(tmp_path, [{"question_id": "tiny-01", "turns": ["  "]}, {"question_id": "tiny-02", "turns": [" "]}])
    with pytest.raises(CellFailed):
        run_cell(config(tmp_path, random_pair_dir, "method=sd", "run_name=r", *data, "dataset.name=tiny"))
    assert report_main([str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| sd "))  # sd_M_g5_w1, its display name
    assert "HarnessError: empty prompt (×2)" in row


# --- 5. resume keeps every good record -------------------------------------------------------------------


def test_resume_keeps_every_good_record_around_a_corrupt_line(tmp_path, random_pair_dir, caplog):
    cfg = config(tmp_path, random_pair_dir, "method=ar", "run_name=corrupt", "n_samples=5")
    run_cell(cfg)
    cell = cell_of(tmp_path, "corrupt", "tiny")
    raw = (cell / "samples.jsonl").read_bytes().split(b"\n")
    before = lines(cell)
    raw[1] = b'{"id": "tiny-02", "turn": 0, "stat\xff'  # a corrupt middle line (and not UTF-8)
    (cell / "samples.jsonl").write_bytes(b"\n".join(raw))
    (cell / "summary.json").unlink()
    assert [r["id"] for r in read_records(cell)] == ["tiny-01", "tiny-03", "tiny-04", "tiny-04", "tiny-05"]
    with caplog.at_level(logging.WARNING, logger="harness"):
        run_cell(cfg)
    assert "line 2 (byte offset" in caplog.text and "set aside in samples.corrupt.jsonl" in caplog.text
    after = lines(cell)
    assert [(r["id"], r["turn"]) for r in after] == [(r["id"], r["turn"]) for r in before[:1] + before[2:] + before[1:2]]
    assert after[:5] == before[:1] + before[2:]  # kept as they were, not decoded again
    assert (cell / CORRUPT).read_bytes() == raw[1] + b"\n"


def test_jsonl_lines_end_at_newline_only_and_bad_bytes_are_located():
    data = json.dumps({"q": "a\u2028b\u0085c"}, ensure_ascii=False).encode() + b"\n{\"x\": 1}\n\xff\xfe\ntorn"
    got, tail = split_lines(data)
    assert len(got) == 3 and tail == b"torn"
    assert parse("f", got[0]) == {"q": "a\u2028b\u0085c"}
    with pytest.raises(BadLine, match=r"f, line 3 \(byte offset %d\): not UTF-8 \(byte 0xff" % got[2].offset):
        parse("f", got[2])


# --- 8. warm-up, retries, status -------------------------------------------------------------------------


def test_warm_up_uses_the_first_sample_that_works(tmp_path, random_pair_dir, caplog):
    data = questions(tmp_path, [{"question_id": "bad", "turns": [" "]}, {"question_id": "good", "turns": ["Hi."]}])
    with caplog.at_level(logging.DEBUG, logger="harness"):
        run_cell(config(tmp_path, random_pair_dir, "method=ar", "run_name=warm", "warmup=1", *data))
    assert "warm-up: none" not in caplog.text
    data = questions(tmp_path, [{"question_id": "bad", "turns": [" "]}], "none.jsonl")
    with caplog.at_level(logging.WARNING, logger="harness"), pytest.raises(CellFailed):
        run_cell(config(tmp_path, random_pair_dir, "method=ar", "run_name=warm2", "warmup=1", *data))
    assert "warm-up: none of the first 1 samples decodes" in caplog.text


def test_failed_samples_are_listed_and_retried_on_request(tmp_path, random_pair_dir):
    rows = [{"question_id": "a", "turns": ["Say hi."]}, {"question_id": "b", "turns": ["  "]}]
    data = questions(tmp_path, rows)
    cfg = config(tmp_path, random_pair_dir, "method=ar", "run_name=retry", *data)
    assert run_cell(cfg)["n_failed"] == 1
    table = status(tmp_path / "results")
    assert table.state.tolist() == ["failed"] and "b (turn 0: HarnessError: empty prompt)" in table.note[0]
    assert "retry_failed=true" in table.note[0]
    rows[1]["turns"] = ["Count to three."]  # the user fixes the question
    questions(tmp_path, rows)
    assert run_cell(cfg)["n_failed"] == 1  # finished: skipped
    cell = cell_of(tmp_path, "retry")
    first = lines(cell)
    summary = run_cell(config(tmp_path, random_pair_dir, "method=ar", "run_name=retry", "retry_failed=true", *data))
    assert summary["n_failed"] == 0 and summary["n_ok"] == 2
    after = lines(cell)
    assert after[0] == first[0] and after[1]["id"] == "b" and after[1]["status"] == "ok"
    assert [json.loads(x)["status"] for x in (cell / RETRIED).read_text().splitlines()] == ["error"]


def test_status_says_running_while_a_process_holds_the_cell(tmp_path, random_pair_dir):
    cfg = config(tmp_path, random_pair_dir, "method=ar", "run_name=live", "n_samples=1")
    run_cell(cfg)
    cell = cell_of(tmp_path, "live", "tiny")
    (cell / "summary.json").unlink()
    with cell_lock(cell):
        row = status(tmp_path / "results").iloc[0]
    assert row.state == "running" and str(os.getpid()) in row.note
    assert status(tmp_path / "results").iloc[0].state == "partial"
