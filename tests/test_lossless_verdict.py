"""The lossless verdict (harness.lossless): identical outputs are `exact`, rounding ties are `ties k/N`, and a
planted defect is `LOSSY k/N` with its sample, position and margin, in float32 and bfloat16 alike."""
from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from harness import lossless, ties
from harness.records import lossless_verdict
from harness.report import CELL_KEYS, load, report, summarize
from harness.models import load_pair
from harness.run import run_cell
from methods import DecodeSettings, Prompt, get_method
from methods.core import Result, extend, forward, new_cache, now
from methods.registry import method
from tests.conftest import ACCEPT_WEAK, ROOT, harness_cli, pair_overrides

PLANTED_AT, PLANTED_RANK = 2, 20  # the planted token: the target's 21st choice, at the third position


@method("planted_wrong_token")
@torch.inference_mode()
def planted_wrong_token(models, prompt, settings, generator=None) -> Result:
    """A defective method for these tests only: ar, except that at position PLANTED_AT it emits the target's
    choice of rank PLANTED_RANK (a plausible token, as a verify that accepted one wrong draft would)."""
    target, cache = models.target, new_cache(models.target)
    t0 = now(target.device)
    logits = forward(target, cache, logits_to_keep=1, **prompt.target)[0, -1]
    out, calls = [], 1
    while True:
        token = logits.topk(PLANTED_RANK + 1).indices[-1] if len(out) == PLANTED_AT else logits.argmax()
        if extend(out, [int(token)], settings):
            break
        logits = forward(target, cache, token.view(1, 1), logits_to_keep=1)[0, -1]
        calls += 1
    return Result([out], dict(prefill_s=0.0, decode_s=now(target.device) - t0, target_calls=calls, draft_calls=0,
                              accepted=[], drafted=[]))


def cells(tmp_path, pair_dir, dtype: str, methods: list[str]) -> None:
    """ar and `methods` (a method config, or `planted_wrong_token` on ar's config) decoded in-process."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for name in ["ar", *methods]:
            cfg = compose("config", overrides=[
                f"method={'ar' if name == 'planted_wrong_token' else name}", "n_samples=3", "max_new_tokens=24",
                "warmup=0", "progress=false", f"dtype={dtype}", "run_name=r", f"output_root={tmp_path}",
                "dataset=zoo-eval", *pair_overrides(pair_dir), *ACCEPT_WEAK])
            if name == "planted_wrong_token":
                with open_dict(cfg):
                    cfg.method.name = cfg.method.tag = name
            run_cell(cfg)


def verdicts(root) -> dict[str, str]:
    return dict(summarize(load(root), CELL_KEYS)[["method", "lossless"]].values)


def test_the_verdict_names_its_counts():
    assert lossless_verdict(["same"] * 3) == "exact"
    assert lossless_verdict(["same", "tie", "tie"]) == "ties 2/3"
    assert lossless_verdict(["tie", "lossy", "same"]) == "LOSSY 1/3"
    assert lossless_verdict(["tie", "unchecked", "same"]) == "unchecked 2/3"
    assert lossless_verdict(["lossy", "unchecked"]) == "LOSSY 1/2, unchecked 1/2"
    assert lossless_verdict([]) == "n/a"


def test_a_wrong_stop_is_lossy_even_when_every_token_is_the_argmax():
    assert ties.stop_error([4, 5, 2], eos=(2,), max_new_tokens=8) is None
    assert ties.stop_error([4, 5, 6], eos=(2,), max_new_tokens=3) is None
    assert "past the EOS at position 1" in ties.stop_error([4, 2, 6], eos=(2,), max_new_tokens=8)
    assert "stops after 2 tokens without an EOS" in ties.stop_error([4, 5], eos=(2,), max_new_tokens=8)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_planted_wrong_token_is_lossy_with_its_sample_position_and_margin(tmp_path, random_pair_dir, dtype):
    cells(tmp_path, random_pair_dir, dtype, ["planted_wrong_token"])
    assert verdicts(tmp_path)["planted_wrong_token"] == "unchecked 3/3"  # differs; nothing judged it yet
    rows = {r["cell"].rsplit("/", 1)[1]: r for r in lossless.check_tree(tmp_path)}
    row = rows["planted_wrong_token"]
    assert row["verdict"] == "LOSSY 3/3" and row["n_lossy"] == 3
    tolerance = row["tolerance"]["tolerance"]
    assert row["tolerance"]["positions"] == 3 * 24 and row["tolerance"]["outputs"] == 3
    for s in row["samples"]:
        first = s["beyond"][0]
        assert first["position"] == s["first_position"] == PLANTED_AT and first["margin"] > tolerance
        assert abs(first["rank"] - PLANTED_RANK) <= (0 if dtype == "float32" else 3)  # bf16 may reorder near-ties
    stored = json.loads((tmp_path / "r/tiny-random/zoo-eval/planted_wrong_token/lossless.json").read_text())
    assert stored["verdict"] == "LOSSY 3/3" and stored["dtype"] == dtype
    text = report(tmp_path)  # the report reads the stored check, lists each LOSSY output, recomputes nothing
    assert verdicts(tmp_path)["planted_wrong_token"] == "LOSSY 3/3"
    assert text.count("planted_wrong_token sample ") == 3 and "margin" in text


def test_an_edited_record_is_found_by_the_command_line_and_its_check_holds_for_those_outputs_only(tmp_path,
                                                                                                   random_pair_dir):
    """sd decodes exactly; a record edited afterwards to a low-probability token is LOSSY on a recheck (exit 1);
    restored, the stored check no longer applies to it (it judged other outputs)."""
    cells(tmp_path, random_pair_dir, "float32", ["sd"])
    sd = next((tmp_path / "r/tiny-random/zoo-eval").glob("sd_*"))
    assert verdicts(tmp_path)[sd.name] == "exact"
    records = [json.loads(line) for line in (sd / "samples.jsonl").read_text().splitlines()]
    ar_first = list(records[0]["output_ids"])
    records[0]["output_ids"][5] = 12345  # a token the random target gives almost no probability
    (sd / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    done = harness_cli(str(tmp_path), cwd=tmp_path, module="harness.lossless")
    assert done.returncode == 1, done.stderr
    assert "LOSSY 1/3" in done.stdout and f"sample {records[0]['id']} turn 0: position 5" in done.stdout
    assert ties.stored_checks(sd)[(records[0]["id"], 0)]["verdict"] == "lossy"
    records[0]["output_ids"] = ar_first
    (sd / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert verdicts(tmp_path)[sd.name] == "exact"
    assert harness_cli(str(tmp_path), cwd=tmp_path, module="harness.lossless").returncode == 0


def test_a_flip_within_the_tolerance_is_a_tie_and_beyond_it_lossy(random_pair_dir):
    """The rule at its boundary: ar's output flipped to the target's second choice at its closest call (the
    smallest top-2 gap), then continued greedily, is a tie under a tolerance above that gap and LOSSY below it."""
    pair = load_pair(OmegaConf.create({"name": "t", "target": {"id": str(random_pair_dir / "target")}}),
                     torch.device("cpu"), torch.float32, need_draft=False, pack=False)
    prompt = pair.encode([{"role": "user", "content": "Name three colours.", "n_images": 0}])
    ar_out = get_method("ar")(pair.models, prompt, DecodeSettings(max_new_tokens=16)).tokens[0]
    top = ties.teacher_forced(pair.models.target, prompt, ar_out).topk(2, dim=-1)
    i = int((top.values[:, 0] - top.values[:, 1]).argmin())
    gap = float(top.values[i, 0] - top.values[i, 1])
    forced = ar_out[:i] + [int(top.indices[i, 1])]
    rest = Prompt({"input_ids": torch.cat([prompt.target["input_ids"], torch.tensor([forced])], dim=1)})
    out = forced + get_method("ar")(pair.models, rest, DecodeSettings(max_new_tokens=16 - len(forced))).tokens[0] \
        if len(forced) < 16 else forced
    tie = ties.check_output(pair, None, prompt, None, out, ar_out, gap + 1e-3, 16)
    assert tie["verdict"] == "tie" and tie["first_position"] == i and tie["rank"] == 1
    assert tie["margin"] == pytest.approx(gap, abs=1e-4)
    lossy = ties.check_output(pair, None, prompt, None, out, ar_out, gap / 2, 16)
    assert lossy["verdict"] == "lossy" and lossy["beyond"][0]["position"] == i


def test_a_sampling_cell_has_no_verdict_but_the_distribution_tests(tmp_path, random_pair_dir):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for name in ("ar", "sd"):
            run_cell(compose("config", overrides=[
                f"method={name}", "n_samples=2", "max_new_tokens=8", "warmup=0", "progress=false", "temperature=1.0",
                "run_name=t", f"output_root={tmp_path}", "dataset=zoo-eval", *pair_overrides(random_pair_dir)]))
    (row,) = lossless.check_tree(tmp_path)
    assert row["verdict"].startswith("n/a (sampling")
