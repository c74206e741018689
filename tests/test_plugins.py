"""Methods from outside the repository (harness.plugins, docs/extending.md): an installed package's entry point, a
module named with plugins=[...], no YAML, the plugin's own conf/; the public surface says what it needs."""
from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from methods import Drafter, Result
from tests.conftest import ROOT, harness_cli


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """examples/plugin installed as a user would, into a folder of its own (then on PYTHONPATH)."""
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(ROOT / "examples" / "plugin")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return target


def test_an_installed_plugin_method_runs_from_outside_the_repo_with_its_own_sweep(tmp_path, installed_plugin):
    """No file of the harness names `suffix`: the entry point brings it in, it composes without a YAML, the plugin's
    sweep preset comes from its conf/, the report shows it lossless and --status expands the run."""
    env = {"PYTHONPATH": f"{installed_plugin}:{ROOT}"}
    run = harness_cli("-m", "+sweep=suffix_vs_lookup", "n_samples=2", "max_new_tokens=24", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    cells = tmp_path / "results/suffix_vs_lookup/smollm2-135m__smol-draft/zoo-eval"
    assert sorted(p.name for p in cells.iterdir()) == ["ar", "hf_pld_g5", "suffix"]
    report = harness_cli("results/suffix_vs_lookup", cwd=tmp_path, env=env, module="harness.report")
    assert report.returncode == 0, report.stderr
    table = pd.read_csv(tmp_path / "results/suffix_vs_lookup/report.csv").set_index("method")
    assert table.loc["suffix", "lossless"] == "exact" and table.loc["suffix", "n_ok"] == 2
    status = harness_cli("--status", "results", cwd=tmp_path, env=env, module="harness.report")
    assert status.returncode == 0 and "done: 3" in status.stdout and "missing: 0" in status.stdout, status.stdout


def test_a_module_on_the_path_is_a_plugin_too_and_a_missing_one_is_named(tmp_path):
    (tmp_path / "mine.py").write_text(
        "from methods import get_method, method\n\n"
        "@method('twice_checked')\n"
        "def generate(models, prompt, settings, generator=None, unused: int = 1):\n"
        "    return get_method('ar')(models, prompt, settings, generator)\n")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    run = harness_cli("plugins=[mine]", "method=twice_checked", "method.unused=2", "n_samples=1", "max_new_tokens=8",
                      "warmup=0", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "results/default/smollm2-135m__smol-draft/tiny/twice_checked_unused2/summary.json").exists()
    missing = harness_cli("plugins=[not_there]", "method=ar", cwd=tmp_path, env=env)
    assert missing.returncode == 2 and "plugin 'not_there' cannot be imported" in missing.stderr


def test_the_public_surface_says_what_a_method_and_a_drafter_must_provide():
    with pytest.raises(TypeError, match="Result.stats lacks decode_s, draft_calls"):
        Result([[1]], {"prefill_s": 0.1, "target_calls": 2})
    full = Result([[1]], {"prefill_s": 0.1, "decode_s": 0.2, "target_calls": 2, "draft_calls": 0})
    assert full.stats["accepted"] == [] and full.stats["drafted"] == []

    class Half(Drafter):
        def start(self, features):
            return self

    with pytest.raises(TypeError, match="abstract methods crop, generated, step"):
        Half()

    class Chains(Half):
        generated, crop = (lambda self: 0), (lambda self, n: None)

        def step(self, tokens):
            return torch.zeros(1, 4)

    with pytest.raises(NotImplementedError, match="Chains drafts chains and fixed-width trees only"):
        Chains().draft_tree([1], 2, 3, 8)


def test_the_harness_installs_as_a_wheel_and_runs_outside_any_checkout(tmp_path):
    """`pip install .` (not editable): conf/, the bundled data and the zoo travel in the wheel, and a run from another
    directory writes its results there."""
    wheels, site, away = tmp_path / "wheels", tmp_path / "site", tmp_path / "away"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                            str(wheels), str(ROOT)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    done = subprocess.run(pip + ["--target", str(site), *map(str, wheels.glob("*.whl"))], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    away.mkdir()
    env = {"PYTHONPATH": str(site)}  # not the checkout: the installed copy is what runs
    where = subprocess.run([sys.executable, "-c", "import harness; print(harness.RESOURCES)"], cwd=away,
                           capture_output=True, text=True, env={**os.environ, **env})
    assert where.stdout.strip() == str(site / "harness"), where.stdout + where.stderr
    run = harness_cli("method=ar", "n_samples=1", "max_new_tokens=4", "warmup=0", "baseline_check=false", cwd=away,
                      env=env)
    assert run.returncode == 0, run.stderr
    assert (away / "results/default/smollm2-135m__smol-draft/tiny/ar/summary.json").exists()
