"""The hub module (harness.hub): one offline predicate for datasets and models, the one-line missing-model error,
hub logs printed once, and no import cycles through the modules that load things."""
import ast
import json
import logging
import os
import re
import socket
import subprocess
import sys

import pytest
from huggingface_hub import constants

from harness import HarnessError
from harness.hub import hub_logs_once, missing_model

from tests.conftest import ROOT


@pytest.fixture
def unreachable_hub(monkeypatch):
    """Online, with the hub endpoint on a closed port: what a machine without network access sees."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # as huggingface_hub parsed an unset HF_HUB_OFFLINE
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    for proxy in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)


def test_a_missing_model_says_the_hub_could_not_be_reached(unreachable_hub):
    import torch
    from harness.models import eagle_folder, load_model

    for load in (lambda: load_model("someorg/nonexistent-model", torch.float32, torch.device("cpu")),
                 lambda: eagle_folder("someorg/nonexistent-eagle")):
        with pytest.raises(HarnessError) as err:
            load()
        message = str(err.value)
        assert "The Hugging Face hub (127.0.0.1) could not be reached" in message
        assert "HF_HUB_OFFLINE=1" in message and "hf download someorg/nonexistent-" in message


def test_the_missing_model_cause_comes_from_the_error_chain(monkeypatch):
    """transformers raises OSError from huggingface_hub's LocalEntryNotFoundError from the socket's error."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    def chained(root: BaseException) -> OSError:
        try:
            try:
                raise LocalEntryNotFoundError("cannot find the requested files") from root
            except LocalEntryNotFoundError as hub:
                raise OSError("We couldn't connect to 'https://huggingface.co' to load the files") from hub
        except OSError as err:
            return err

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    for root in (ConnectionRefusedError(111, "Connection refused"), socket.gaierror(-2, "Name or service not known")):
        assert "hub (huggingface.co) could not be reached" in str(missing_model("org/m", chained(root)))
    other = str(missing_model("org/m", OSError("org/m is not a valid model identifier\nmore")))
    assert "could not be reached" not in other and "(OSError: org/m is not a valid model identifier)" in other
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert "HF_HUB_OFFLINE is set, so nothing was downloaded" in str(missing_model("org/m", chained(root)))


def test_hub_warnings_print_once_under_a_configured_root_logger(monkeypatch):
    """huggingface_hub has its own stderr handler and propagates to the root logger (Hydra's handler there)."""
    hub, root = logging.getLogger("huggingface_hub"), logging.getLogger()
    monkeypatch.setattr(hub, "handlers", [logging.StreamHandler()])  # as huggingface_hub installs it on import
    monkeypatch.setattr(hub, "propagate", True)
    monkeypatch.setattr(root, "handlers", [logging.NullHandler()])
    hub_logs_once()
    assert hub.handlers == [] and hub.propagate  # printed once, by the root logger's handlers


# huggingface_hub's own truth table (constants._is_true: "1", "ON", "YES", "TRUE" in any case).
OFFLINE = ("1", "on", "ON", "On", "yes", "YES", "true", "True")
ONLINE = ("", "0", "off", "no", "false", "False")

# Each spelling as a fresh process parses it (huggingface_hub and datasets read the variable once, on import; the
# reload does that again), then what the harness does with it: a dataset with source=auto probes the hub only when
# online; a model that is not cached names HF_HUB_OFFLINE only when offline (the network is closed either way).
SPELLINGS = r"""
import importlib, json, os, sys
import datasets.config
import huggingface_hub
from huggingface_hub import constants
from harness import HarnessError, data, hub

probes = []
def closed_network(timeout=3.0):
    probes.append(timeout)
    return False
hub.hub_reachable = data.hub_reachable = closed_network
def not_cached(_hub, _limit):
    raise HarnessError("not in the HF cache")
data.load_hub_rows = not_cached

class NotCached:  # a transformers Auto class whose files are not here
    @classmethod
    def from_pretrained(cls, model_id, **kwargs):
        raise OSError(f"{model_id} is not cached")

def model_says_offline(load):
    try:
        load()
    except HarnessError as err:
        return "HF_HUB_OFFLINE is set" in str(err)

cfg = data.dataset_config("mmvet")
answers = {}
for spelling in sys.argv[1:]:
    os.environ["HF_HUB_OFFLINE"] = spelling
    importlib.reload(constants)
    importlib.reload(datasets.config)
    probes.clear()
    data.load_hf(cfg, "auto")
    answers[spelling] = {
        "harness.hub": hub.hub_offline(), "huggingface_hub": huggingface_hub.is_offline_mode(),
        "datasets library": datasets.config.HF_HUB_OFFLINE, "harness.data": not probes,
        "from_hf": model_says_offline(lambda: hub.from_hf(NotCached, "someorg/no-model")),
        "snapshot": model_says_offline(lambda: hub.snapshot("someorg/no-model"))}
print(json.dumps(answers))
"""


def test_every_spelling_of_hf_hub_offline_means_the_same_for_datasets_and_models(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(PYTHONPATH=str(ROOT), HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_CACHE=str(tmp_path / "hub"))
    proc = subprocess.run([sys.executable, "-c", SPELLINGS, *OFFLINE, *ONLINE], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = json.loads(proc.stdout.strip().splitlines()[-1])
    for spelling in OFFLINE + ONLINE:
        seen = answers[spelling]
        assert set(seen.values()) == {spelling in OFFLINE}, f"HF_HUB_OFFLINE={spelling!r}: {seen}"


def test_the_offline_predicate_is_written_once():
    """Every offline check is harness.hub.hub_offline: no module reads the variable or the libraries' flag itself."""
    read = re.compile(r"environ[^\n]*HF_HUB_OFFLINE|getenv\([^\n]*HF_HUB_OFFLINE|constants\.HF_HUB_OFFLINE"
                      r"|is_offline_mode|HF_DATASETS_OFFLINE")
    files = [f for folder in ("harness", "methods") for f in sorted((ROOT / folder).rglob("*.py"))]
    found = [f"{f.relative_to(ROOT)}:{n}" for f in files if f != ROOT / "harness/hub.py"
             for n, line in enumerate(f.read_text().splitlines(), 1) if read.search(line)]
    assert found == []


def module_imports() -> dict[str, set[str]]:
    """harness and methods modules -> the project modules each imports, at top level or inside a function."""
    files = {".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): f
             for folder in ("harness", "methods") for f in (ROOT / folder).rglob("*.py")}
    graph = {}
    for name, file in files.items():
        deps = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                         for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


@pytest.mark.parametrize("module", ["harness.hub", "harness.data", "harness.models", "harness.captioner"])
def test_no_import_cycle_through_the_loaders(module):
    graph = module_imports()
    seen, todo = set(), list(graph[module])
    while todo:  # everything `module` imports, directly or not, must not import it back
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += graph[name]
    assert module not in seen
    assert graph["harness.hub"] <= {"harness"}  # the hub module builds on nothing of the project's but HarnessError
