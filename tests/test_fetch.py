"""harness.fetch: the artefacts a sweep reads, the size table, dry runs, resuming, and the reasons a thing is
missing, against a hub made of local folders (FakeHub) that can fail mid-way; offline, the real command."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import metadata_load
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from harness.fetch import Listing, collect, human, main
from harness.sweeps import job_configs
from tests.conftest import ROOT

TARGET, DRAFT = "llava-hf/llava-1.5-7b-hf", "mjbooo/lvlm68m"
ARGS = ["--pair", "llava-1.5-7b__lvlm68m", "--dataset", "docvqa,nq", "method=sd"]  # 4 artefacts
SHARDS = {"model-00001-of-00002.safetensors": 30_000, "model-00002-of-00002.safetensors": 20_000}
TARGET_FILES = {"config.json": 120, "generation_config.json": 60, "tokenizer.json": 2_000, "tokenizer.model": 500,
                "tokenizer_config.json": 300, "special_tokens_map.json": 80, "chat_template.json": 200,
                "preprocessor_config.json": 150, "processor_config.json": 40, **SHARDS}
DRAFT_FILES = {"config.json": 100, "pytorch_model.bin": 8_000, "tokenizer.json": 2_000, "tokenizer_config.json": 300}
DOCVQA_FILES = {"docvqa_val/lite-00000-of-00001.parquet": 4_000}
NQ_FILES = {"nq_open/train-00000-of-00001.parquet": 6_000, "nq_open/validation-00000-of-00001.parquet": 1_000}


def card(configs: str) -> str:
    return f"---\nconfigs:\n{configs}---\n# A dataset\n"


def make_repo(folder: Path, files: dict[str, int | str]) -> None:
    for path, content in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(content if isinstance(content, str) else "x" * content)


def http_error(cls, status: int, repo: str):
    request = httpx2.Request("GET", f"https://huggingface.co/{repo}")
    return cls(f"{status} Client Error for {repo}", response=httpx2.Response(status, request=request))


class FakeHub:
    """The `Hub` operations over folders: remote/KIND/ORG/NAME holds the repos, cache/KIND/ORG/NAME what was
    downloaded. Repos in `gated` list but refuse downloads; after `fail_after` downloads the network drops,
    leaving the file in flight half written."""

    def __init__(self, root: Path, online: bool = True, gated=(), fail_after: int | None = None):
        self.remote, self.cache = root / "remote", root / "cache"
        self.up, self.gated, self.fail_after = online, set(gated), fail_after
        self.downloads: list[tuple[str, str]] = []
        self.prepared: list[tuple[str, str | None, str]] = []

    def online(self) -> bool:
        return self.up

    def listing(self, repo: str, kind: str) -> Listing:
        folder = self.remote / kind / repo
        if not folder.is_dir():
            raise http_error(RepositoryNotFoundError, 404, repo)
        files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
        card = metadata_load(folder / "README.md") if (folder / "README.md").exists() else None
        return Listing(files, card or {}, repo in self.gated)

    def cached(self, repo: str, kind: str) -> dict[str, Path]:
        folder = self.cache / kind / repo
        return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*")
                if p.is_file() and p.suffix != ".incomplete"} if folder.is_dir() else {}

    def download(self, repo: str, kind: str, path: str) -> Path:
        if repo in self.gated:
            raise http_error(GatedRepoError, 403, repo)
        source, target = self.remote / kind / repo / path, self.cache / kind / repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.fail_after is not None and len(self.downloads) >= self.fail_after:
            target.with_suffix(".incomplete").write_bytes(source.read_bytes()[: source.stat().st_size // 2])
            raise ConnectionError("Connection reset by peer")
        self.downloads.append((repo, path))
        shutil.copyfile(source, target)
        return target

    def prepare(self, repo: str, config: str | None, split: str) -> None:
        self.prepared.append((repo, config, split))


@pytest.fixture
def remote(tmp_path) -> Path:
    """The fake hub's repos for ARGS: docvqa only under its older id (lmms-lab), extra files nothing reads."""
    models, datasets = tmp_path / "remote" / "model", tmp_path / "remote" / "dataset"
    index = '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}'
    make_repo(models / TARGET, {**TARGET_FILES, "model.safetensors.index.json": index, "pytorch_model.bin": 50_000,
                                "README.md": 900, ".gitattributes": 50})
    make_repo(models / DRAFT, DRAFT_FILES)
    make_repo(datasets / "lmms-lab/LMMs-Eval-Lite", {
        "README.md": card("- config_name: docvqa_val\n  data_files:\n  - split: lite\n    path: docvqa_val/lite-*\n"
                          "- config_name: chartqa\n  data_files:\n  - split: lite\n    path: chartqa/lite-*\n"),
        **DOCVQA_FILES, "chartqa/lite-00000-of-00001.parquet": 9_000})
    make_repo(datasets / "google-research-datasets/nq_open", {
        "README.md": card("- config_name: nq_open\n  default: true\n  data_files:\n  - split: train\n"
                          "    path: nq_open/train-*\n  - split: validation\n    path: nq_open/validation-*\n"),
        **NQ_FILES})
    return tmp_path


def run(capsys, hub: FakeHub, *args: str) -> tuple[int, str]:
    code = main([*ARGS, *args], hub=hub)
    return code, capsys.readouterr().out


def row(out: str, name: str) -> list[str]:
    """The table's row for an artefact: kind, artefact, size, cached, for."""
    return next(cols for cols in (re.split(r"\s{2,}", line) for line in out.splitlines())
                if cols[1:2] and cols[1].split()[0] == name)


# --- what a sweep reads -------------------------------------------------------------------------------------


def test_tabed_table1_lists_its_target_draft_and_the_11_datasets_hub_sources():
    arts = collect(job_configs("tabed_table1", []), every_model=False)
    models = {a.ids[0]: a.roles for a in arts if a.kind == "model"}
    assert models == {TARGET: {"target"}, DRAFT: {"draft"}}  # no mode-C cell: Florence-2 is not fetched
    datasets = {(a.ids[0], a.config) for a in arts if a.kind == "dataset"}
    assert datasets == {("lmms-lab-encoder/llava-bench-in-the-wild", None), ("lmms-lab-encoder/POPE", None),
                        ("lmms-lab-encoder/LMMs-Eval-Lite", "docvqa_val"), ("lmms-lab-encoder/MMVet", None),
                        ("lmms-lab/LLaVA-NeXT-Interleave-Bench", "in_domain"),
                        ("google-research-datasets/nq_open", None), ("openai/gsm8k", "main")}
    assert set().union(*(a.users for a in arts if a.kind == "dataset")) == {
        "llava_w", "docvqa", "pope", "mmvet", "iedit", "magicbrush", "spot_the_diff", "pororo_sv", "vist", "nq",
        "gsm8k"}
    llava_w = next(a for a in arts if a.ids[0].endswith("llava-bench-in-the-wild"))
    assert llava_w.ids == ("lmms-lab-encoder/llava-bench-in-the-wild", "lmms-lab/llava-bench-in-the-wild")


@pytest.mark.parametrize("sweep, overrides, expected", [
    ("smoke", [], set()),  # embedded pair, bundled question file: nothing
    (None, ["pair=llava-1.5-7b__lvlm68m", "dataset=pope", "dataset.source=bundled", "method=sd"], {TARGET, DRAFT}),
    (None, ["pair=llava-1.5-7b__lvlm68m", "dataset=pope", "method=ar"], {TARGET, "lmms-lab-encoder/POPE"}),
    (None, ["pair=llava-1.5-7b__lvlm68m", "dataset=pope", "method=grid/sd_C",
            "pair.draft.id=embedded:tiny-llava-draft"], {TARGET, "florence-community/Florence-2-large-ft",
                                                          "lmms-lab-encoder/POPE"}),
    (None, ["pair=tiny-llava", "dataset=pope", "dataset.second_turn=nq"],
     {"lmms-lab-encoder/POPE", "google-research-datasets/nq_open"}),
])
def test_what_a_job_reads(sweep, overrides, expected):
    """Bundled and embedded need nothing, a method loads only what it needs, the caption mode its captioner, a
    second turn from nq its questions."""
    every_model = not any(o.startswith("method=") for o in overrides)
    assert {a.ids[0] for a in collect(job_configs(sweep, overrides), every_model)} == expected


def test_only_a_pair_fetches_all_its_models():
    arts = collect(job_configs(None, ["pair=llava-1.5-7b__lvlm68m"]), every_model=True)
    assert {a.ids[0]: a.roles for a in arts} == {TARGET: {"target"}, DRAFT: {"draft"},
                                                   "florence-community/Florence-2-large-ft": {"captioner"}}


# --- the table, dry runs ------------------------------------------------------------------------------------


def size(remote: Path, repo: str, files) -> int:
    return sum((remote / "remote" / repo / f).stat().st_size for f in files)


def test_size_table_and_total_from_the_hub_listing(remote, capsys):
    hub = FakeHub(remote)
    code, out = run(capsys, hub, "--dry-run")
    assert code == 2 and hub.downloads == [] and hub.prepared == []
    target = size(remote, f"model/{TARGET}", [*TARGET_FILES, "model.safetensors.index.json"])  # not the .bin
    draft = sum(DRAFT_FILES.values())  # only a .bin: that one
    docvqa = size(remote, "dataset/lmms-lab/LMMs-Eval-Lite", ["README.md", *DOCVQA_FILES])  # not chartqa's
    nq = size(remote, "dataset/google-research-datasets/nq_open", ["README.md", *NQ_FILES])  # train and validation
    assert row(out, TARGET)[:4] == ["model", TARGET, human(target), "no"]
    assert row(out, DRAFT)[2] == human(draft)
    assert row(out, "lmms-lab/LMMs-Eval-Lite")[1:3] == ["lmms-lab/LMMs-Eval-Lite docvqa_val [lite]", human(docvqa)]
    assert row(out, "google-research-datasets/nq_open")[1:3] == ["google-research-datasets/nq_open [validation]",
                                                                 human(nq)]
    total = human(target + draft + docvqa + nq)
    assert f"to download: {total} in {12 + 4 + 2 + 3} files (4 of 4 artefacts; 0 cached)" in out
    assert "not cached (dry run)" in out


def test_dry_run_offline_lists_cached_and_missing_from_the_cache(remote, capsys):
    online = FakeHub(remote)
    assert run(capsys, online, "--dataset", "nq")[0] == 0  # (the last --dataset wins) the models and nq, cached
    shutil.rmtree(remote / "cache/model" / DRAFT)
    (remote / "cache/model" / TARGET / "model-00002-of-00002.safetensors").unlink()  # an interrupted shard

    hub = FakeHub(remote, online=False)
    code, out = run(capsys, hub, "--dry-run")
    assert code == 2 and hub.downloads == []
    assert row(out, TARGET)[3] == "partial (11/12 files)"  # the cached index names the missing shard
    assert row(out, DRAFT)[2:4] == ["?", "no"]
    assert row(out, "google-research-datasets/nq_open")[3] == "yes"
    assert "lmms-lab-encoder/LMMs-Eval-Lite docvqa_val [lite] (dataset): not cached; the hub is not reachable " \
           "(under any of its ids: lmms-lab-encoder/LMMs-Eval-Lite, lmms-lab/LMMs-Eval-Lite)" in out
    assert "cached: 1 of 4 artefacts" in out and "missing 3 of 4" in out
    assert "not cached; the hub is not reachable" in out
    assert "pair.draft.id=/path/to/LLaVA-1.5-68m" in out  # where TABED distributes its draft besides the hub


# --- fetching ---------------------------------------------------------------------------------------------------


def test_an_interrupted_fetch_resumes_without_downloading_finished_files_again(remote, capsys):
    first = FakeHub(remote, fail_after=7)  # smallest first: docvqa (2 files), nq (3), then 2 of the draft's 4
    code, out = run(capsys, first)
    assert code == 2 and len(first.downloads) == 7
    assert f"{DRAFT} (model): network: Connection reset by peer; rerun to resume (finished files are kept)" in out

    second = FakeHub(remote)
    code, out = run(capsys, second)
    assert code == 0, out
    assert row(out, DRAFT)[3] == "partial (2/4 files)" and row(out, "google-research-datasets/nq_open")[3] == "yes"
    assert not set(first.downloads) & set(second.downloads)  # finished files are not fetched again
    assert len(first.downloads) + len(second.downloads) == 12 + 4 + 2 + 3
    assert sorted(second.prepared) == [("google-research-datasets/nq_open", None, "validation"),
                                       ("lmms-lab/LMMs-Eval-Lite", "docvqa_val", "lite")]  # built for offline runs
    assert "all 4 artefacts are in the cache" in out
    cached = remote / "cache/model" / TARGET
    assert (cached / "model-00001-of-00002.safetensors").stat().st_size == SHARDS["model-00001-of-00002.safetensors"]
    assert not (cached / "pytorch_model.bin").exists() and not (cached / "README.md").exists()

    third = FakeHub(remote)
    assert run(capsys, third)[0] == 0 and third.downloads == []


def test_a_gated_and_a_missing_repo_are_reported_at_the_end_and_the_rest_fetched(remote, capsys):
    shutil.rmtree(remote / "remote/model" / DRAFT)
    hub = FakeHub(remote, gated={TARGET})
    code, out = run(capsys, hub)
    assert code == 2
    assert row(out, TARGET)[3] == "no (gated)"
    summary = out[out.index("missing 2 of 4"):]
    assert f"{TARGET} (model): gated: accept its license at https://huggingface.co/{TARGET}, then log in " \
           "(`hf auth login`, formerly `huggingface-cli login`) and rerun" in summary
    assert f"{DRAFT} (model): not found on the hub, or private" in summary
    assert "Google Drive folder https://drive.google.com/drive/folders/" in summary
    assert "pair.draft.id=/path/to/LLaVA-1.5-68m" in summary
    assert {repo for repo, _ in hub.downloads} == {"lmms-lab/LMMs-Eval-Lite", "google-research-datasets/nq_open"}


def test_a_draft_pointed_at_a_missing_local_folder_is_named(remote, capsys, tmp_path):
    code, out = run(capsys, FakeHub(remote), f"pair.draft.id={tmp_path}/nowhere", "--dry-run")
    assert code == 2 and f"{tmp_path}/nowhere (model): no such local folder" in out


# --- offline, for real ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("offline", ["1", "0"])
def test_offline_without_dry_run_says_so_in_seconds(tmp_path, remote, offline):
    """HF_HUB_OFFLINE=1, or online with the endpoint on a closed port: one line, the table (nq is in the real
    cache, laid out as huggingface_hub lays out a snapshot), exit 2; no retries."""
    nq = remote / "remote/dataset/google-research-datasets/nq_open"
    snapshot = tmp_path / "hf/hub/datasets--google-research-datasets--nq_open"
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs/main").write_text("0" * 40)
    shutil.copytree(nq, snapshot / "snapshots" / ("0" * 40))
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(HF_HUB_OFFLINE=offline, HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"),
               PYTHONPATH=str(ROOT))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "harness.fetch", *ARGS], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("The Hugging Face hub (127.0.0.1) is not reachable")
    assert "nothing can be downloaded here" in first
    assert ("HF_HUB_OFFLINE is set" in first) == (offline == "1")
    nq_size = size(remote, "dataset/google-research-datasets/nq_open", ["README.md", *NQ_FILES])
    assert row(proc.stdout, "google-research-datasets/nq_open")[2:4] == [human(nq_size), "yes"]
    assert "missing 3 of 4" in proc.stdout and "not cached; the hub is not reachable" in proc.stdout
    assert elapsed < 60, f"took {elapsed:.0f} s"  # importing torch and composing, not ~30 s of hub retries
