"""Dataset loading: the bundled set, deterministic selection, and clear errors for bad files."""
import json
import re

import pytest

from harness import HarnessError
from harness.data import load_jsonl, load_samples
from omegaconf import OmegaConf

from tests.conftest import ROOT


def test_tiny_dataset_loads_in_order():
    cfg = OmegaConf.load(ROOT / "conf/dataset/tiny.yaml")
    samples = load_samples(cfg, None).samples
    assert len(samples) == 10 and samples[0].id == "tiny-01"
    assert [s.id for s in load_samples(cfg, 3).samples] == ["tiny-01", "tiny-02", "tiny-03"]
    assert any(len(s.turns) == 2 for s in samples)
    with pytest.raises(HarnessError, match="n_samples=0"):
        load_samples(cfg, 0)


@pytest.mark.parametrize("line,message", [
    ("{not json", "line 2 (byte offset 39): not valid JSON"),
    ('{"turns": ["hi"]}', "line 2: missing required key 'question_id'"),
    ('{"question_id": 2, "turns": "hi"}', "line 2: 'turns' must be a non-empty list"),
    ('{"question_id": 1, "turns": ["again"]}', "line 2: duplicate question_id '1'"),
    ("[1, 2]", "line 2: expected a JSON object"),
])
def test_bad_lines_name_the_line_and_the_problem(tmp_path, line, message):
    f = tmp_path / "q.jsonl"
    f.write_text(json.dumps({"question_id": 1, "turns": ["hello"]}) + "\n" + line + "\n")
    with pytest.raises(HarnessError, match=re.escape(message)):
        load_jsonl(str(f), "mine")


def test_missing_file_and_unknown_loader(tmp_path):
    with pytest.raises(HarnessError, match="not found"):
        load_jsonl(str(tmp_path / "nope.jsonl"), "mine")
    with pytest.raises(HarnessError, match="unknown loader 'csv'; valid choices: jsonl"):
        load_samples(OmegaConf.create({"name": "x", "loader": "csv"}), None)


def test_line_separators_inside_strings_do_not_split_a_line(tmp_path):
    """U+2028, U+2029 and U+0085 are legal unescaped in JSON strings; `str.splitlines()` tore such lines."""
    text = "one\u2028two\u2029three\x85four"
    f = tmp_path / "q.jsonl"
    f.write_bytes((json.dumps({"question_id": 1, "turns": [text]}, ensure_ascii=False) + "\n").encode())
    samples = load_jsonl(str(f), "mine")
    assert len(samples) == 1 and samples[0].turns == [text]


def test_a_non_utf8_byte_names_file_line_and_byte_offset(tmp_path):
    f = tmp_path / "q.jsonl"
    first = json.dumps({"question_id": 1, "turns": ["hello"]}).encode() + b"\n"
    f.write_bytes(first + b'{"question_id": 2, "turns": ["caf\xff"]}\n')
    offset = len(first) + len('{"question_id": 2, "turns": ["caf')
    with pytest.raises(HarnessError, match=re.escape(f"{f}, line 2 (byte offset {len(first)}): not UTF-8 "
                                                     f"(byte 0xff at byte offset {offset})")):
        load_jsonl(str(f), "mine")


def test_last_line_without_a_newline_and_blank_lines(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_bytes(b'{"question_id": 1, "turns": ["a"]}\r\n\n  \n{"question_id": 2, "turns": ["b"]}')
    assert [s.turns for s in load_jsonl(str(f), "mine")] == [["a"], ["b"]]


def image_question_file(tmp_path, image: str):
    folder = tmp_path / "set"
    (folder / "images").mkdir(parents=True)
    f = folder / "q.jsonl"
    f.write_text(json.dumps({"question_id": 1, "turns": ["<image> what?"], "images": ["images/ok.png"]}) + "\n"
                 + json.dumps({"question_id": 2, "turns": ["<image> what?"], "images": [image]}) + "\n")
    return f


@pytest.mark.parametrize("image", ["../x.png", "images/../../x.png", "/etc/passwd"])
def test_image_paths_stay_inside_the_question_files_folder(tmp_path, image):
    f = image_question_file(tmp_path, image)
    with pytest.raises(HarnessError, match=re.escape(f"{f}, line 2: image path {image!r} is outside")):
        load_jsonl(str(f), "mine")
    samples = load_jsonl(str(f), "mine", allow_outside_images=True)
    assert samples[0].images == [str(f.parent / "images/ok.png")] and samples[1].images == [str(f.parent / image)]


def test_outside_images_are_allowed_only_by_the_dataset_setting(tmp_path):
    f = image_question_file(tmp_path, "../x.png")
    cfg = OmegaConf.load(ROOT / "conf/dataset/jsonl.yaml")
    cfg.path = str(f)
    assert cfg.allow_outside_images is False
    with pytest.raises(HarnessError, match="dataset.allow_outside_images=true"):
        load_samples(cfg, None)
    cfg.allow_outside_images = True
    assert len(load_samples(cfg, None).samples) == 2
