"""Your pair without code: `pair=custom` names itself after its folders, refuses a shipped pair's name, and a template
file gives a chat template to a tokenizer that ships none."""
from __future__ import annotations

import json
import shutil

from tests.conftest import harness_cli

FAST = ("n_samples=1", "max_new_tokens=4", "warmup=0", "baseline_check=false")


def test_a_custom_pair_is_named_after_its_folders_and_may_not_take_a_shipped_name(tmp_path, random_pair_dir):
    target, draft = random_pair_dir / "target", random_pair_dir / "draft"
    run = harness_cli("pair=custom", f"pair.target.id={target}", f"pair.draft.id={draft}", "method=sd", *FAST,
                      cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "results/default/target__draft/tiny/sd_M_g5_w1/summary.json").exists()
    alone = harness_cli("pair=custom", f"pair.target.id={target}", "method=ar", *FAST, cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    assert (tmp_path / "results/default/target/tiny/ar/summary.json").exists()  # no draft: no draft in the name
    taken = harness_cli("pair=custom", f"pair.target.id={target}", "pair.name=smollm2-135m__smol-draft", *FAST,
                        cwd=tmp_path)
    assert taken.returncode == 2 and "the shipped pair" in taken.stderr and "pair.name=" in taken.stderr


def test_a_template_file_serves_a_tokenizer_without_one(tmp_path, random_pair_dir):
    """A replica of a template-less checkpoint: refused with the way out named, then decoded with the given
    template, whose text is what the prompt is built from."""
    bare = tmp_path / "bare"
    shutil.copytree(random_pair_dir / "target", bare)
    (bare / "chat_template.jinja").unlink()
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    refused = harness_cli("pair=custom", f"pair.target.id={bare}", *FAST, cwd=tmp_path)
    assert refused.returncode == 2 and "pair.target.chat_template=FILE.jinja" in refused.stderr, refused.stderr

    lengths = {}
    for name, text in (("short", "{{ messages[-1]['content'] }}"),
                       ("long", "Question, answered carefully and at length: {{ messages[-1]['content'] }} Answer:")):
        (tmp_path / f"{name}.jinja").write_text(text)
        run = harness_cli("pair=custom", f"pair.target.id={bare}", f"pair.target.chat_template={tmp_path / name}.jinja",
                          f"run_name={name}", *FAST, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        (record,) = [json.loads(line) for line in
                     (tmp_path / f"results/{name}/bare/tiny/ar/samples.jsonl").read_text().splitlines()]
        lengths[name] = record["n_prompt_tokens"]
    assert lengths["long"] > lengths["short"] + 5
    missing = harness_cli("pair=custom", f"pair.target.id={bare}", "pair.target.chat_template=nowhere.jinja", *FAST,
                          cwd=tmp_path)
    assert missing.returncode == 2 and "nowhere.jinja: no such file" in missing.stderr
