"""`python -m harness.fetch --sweep tabed_table1`: put into the Hugging Face cache, before a reproduction runs (on a
login node, say), exactly the hub files it will read, and say plainly what cannot be had and why.

What a job reads comes from its config, composed as `python -m harness -m +sweep=NAME` composes it: the pair's
target, the draft or EAGLE drafter its method loads, the captioner when it drafts in mode C (with only --pair,
every model the pair names), and each hub dataset it reads. `embedded:` ids, local folders, bundled sets and
question files need nothing. A model is the files transformers loads (config, tokenizer and processor files,
safetensors weights, else .bin); an EAGLE drafter is its whole folder (hub.snapshot reads it so); a dataset is
its card and its config's data files, every split of them (datasets builds a config's splits together), then
built once by datasets so that HF_HUB_OFFLINE=1 runs find it.

The hub sits behind `Hub` (`HfHub` is huggingface_hub), so tests run on a folder of fake repos that can fail
mid-way. Exit codes: 0 everything is cached, 2 something is missing (the summary says what and why) or bad input.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

from tqdm import tqdm

from harness import HarnessError
from harness.data import SECOND_TURN_TEXT, dataset_config, hub_ids
from harness.hub import embedded_name, hub_endpoint, hub_offline, hub_reachable, is_local, unreachable
from harness.sweeps import job_configs

# Weights as transformers looks for them, safetensors first (one file, or an index and its shards).
WEIGHTS = (re.compile(r"model(-\d+-of-\d+)?\.safetensors|model\.safetensors\.index\.json"),
           re.compile(r"pytorch_model(-\d+-of-\d+)?\.bin|pytorch_model\.bin\.index\.json"))
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Everything else transformers reads from a model folder: configs, tokenizer, processor and chat-template files.
SUPPORT = re.compile(r"[^/]+\.(json|jinja|model|tiktoken|txt)|additional_chat_templates/[^/]+\.jinja")
CARD = "README.md"

# TABED's drafts: its code loads them by these hub ids; its README releases them in a Google Drive folder.
TABED_DRIVE = "https://drive.google.com/drive/folders/1VO5XB4piOBQH-nXk9q-nXAzVvtPjiHRY"
TABED_DRAFTS = {"mjbooo/lvlm68m": "LLaVA-1.5-68m", "mjbooo/lvlm68m-ov": "LLaVA-OV-68m",
                "mjbooo/lvlm160m-bf16": "LLaVA-1.5-160m", "mjbooo/lvlm290m": "LLaVA-1.5-290m"}


# --- the hub ------------------------------------------------------------------------------------------------


class Listing(NamedTuple):
    files: dict[str, int | None]  # path in the repo -> bytes
    card: dict  # the README's metadata (a dataset's configs)
    gated: bool  # downloads need an accepted license and a token


class Hub(Protocol):
    """The hub operations a fetch makes; kinds are huggingface_hub's repo types, "model" and "dataset"."""

    def online(self) -> bool: ...
    def listing(self, repo: str, kind: str) -> Listing: ...  # raises huggingface_hub's errors
    def cached(self, repo: str, kind: str) -> dict[str, Path]: ...  # the repo's complete files in the cache
    def download(self, repo: str, kind: str, path: str) -> Path: ...  # into the cache; a partial file resumes
    def prepare(self, repo: str, config: str | None, split: str) -> None: ...  # build it as data.py loads it


class HfHub:
    """huggingface_hub and its cache (HF_HUB_CACHE); datasets' cache for built datasets."""

    def online(self) -> bool:
        return not hub_offline() and hub_reachable()

    def listing(self, repo: str, kind: str) -> Listing:
        from huggingface_hub import HfApi

        info = HfApi().repo_info(repo, repo_type=kind, files_metadata=True)
        return Listing({s.rfilename: s.size for s in info.siblings or []},
                       info.card_data.to_dict() if info.card_data else {}, bool(info.gated))

    def cached(self, repo: str, kind: str) -> dict[str, Path]:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

        try:
            folder = Path(snapshot_download(repo, repo_type=kind, local_files_only=True))
        except IncompleteSnapshotError as err:  # huggingface_hub knows of files not cached: list those that are
            folder = Path(err.snapshot_path)
        except LocalEntryNotFoundError:
            return {}
        return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}

    def download(self, repo: str, kind: str, path: str) -> Path:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo, path, repo_type=kind))

    def prepare(self, repo: str, config: str | None, split: str) -> None:
        import datasets

        datasets.load_dataset(repo, config, split=split)


# --- what a reproduction reads ------------------------------------------------------------------------------


class Missing(Exception):
    """The repo is there but lacks what a run reads (weights, the dataset's config)."""


@dataclass
class Artefact:
    """A model repo or a dataset config, and the files of it a run reads."""

    kind: str  # model | dataset
    ids: tuple[str, ...]  # hub ids in the order to try (a dataset may name several)
    config: str | None = None  # a dataset's config name
    whole: bool = False  # every file of the repo (an EAGLE drafter, read as a folder)
    roles: set[str] = field(default_factory=set)  # target, draft, ... (models)
    splits: set[str] = field(default_factory=set)  # (datasets)
    users: set[str] = field(default_factory=set)  # the pairs and datasets that read it
    repo: str = ""  # the id that serves it
    files: dict[str, int | None] = field(default_factory=dict)  # what a run reads -> bytes (None: unknown)
    have: set[str] = field(default_factory=set)  # of those, the files in the cache
    gated: bool = False
    problem: str | None = None  # why it cannot be had

    @property
    def name(self) -> str:
        return (self.repo or self.ids[0]) + (f" {self.config}" if self.config else "") + \
            (f" [{','.join(sorted(self.splits))}]" if self.splits else "")

    @property
    def todo(self) -> list[str]:
        return [p for p in self.files if p not in self.have]

    @property
    def cached(self) -> bool:
        return bool(self.files) and not self.todo

    def size(self, paths=None) -> int | None:
        sizes = [self.files[p] for p in (self.files if paths is None else paths)]
        return None if None in sizes else sum(sizes)


def job_needs(cfg, every_model: bool) -> list[Artefact]:
    """What one job reads from the hub: the models its method loads (`every_model`: all the pair names), its
    dataset and the dataset its second turn asks from (nq, gsm8k)."""
    from methods import find

    pair, method = cfg.pair, cfg.method
    needs = find(method.name).needs
    caption = "C" in f"{method.get('drafting', '')}{method.get('drafts', '')}"
    models = [("target", pair.target.id)]
    if pair.get("draft") and (every_model or "draft" in needs):
        models.append(("draft", pair.draft.id))
    if pair.get("eagle") and (every_model or "eagle" in needs):
        models.append(("eagle", pair.eagle.id))
    if pair.get("captioner") and pair.captioner.id != "draft" and (every_model or ("draft" in needs and caption)):
        models.append(("captioner", pair.captioner.id))
    out = [Artefact("model", (model_id,), whole=role == "eagle", roles={role}, users={pair.name},
                    problem="no such local folder" if model_id.startswith(("/", ".", "~")) else None)
           for role, model_id in models if embedded_name(model_id) is None and not is_local(model_id)]
    return out + dataset_needs(cfg.dataset)


def dataset_needs(ds, user: str | None = None) -> list[Artefact]:
    """A hub dataset's config; a bundled set or a question file needs nothing, nor does a second turn built on
    one (data.add_second_turn takes its questions from the first turn's kind of source)."""
    if ds.get("loader") != "hf" or (ds.get("source") or "auto") == "bundled":
        return []
    user = user or ds.name
    out = [Artefact("dataset", tuple(hub_ids(ds.hub)), ds.hub.get("name"), splits={ds.hub.split}, users={user})]
    task = ds.get("second_turn")
    if task and task != "qaorg" and task not in SECOND_TURN_TEXT:
        out += dataset_needs(dataset_config(task), f"{ds.name} (second turn)")
    return out


def collect(cfgs, every_model: bool) -> list[Artefact]:
    """The distinct artefacts of all jobs, each with everyone who reads it."""
    found: dict[tuple, Artefact] = {}
    for cfg in cfgs:
        for a in job_needs(cfg, every_model):
            seen = found.setdefault((a.kind, a.ids, a.config), a)
            if seen is not a:
                seen.roles |= a.roles
                seen.splits |= a.splits
                seen.users |= a.users
                seen.whole |= a.whole
    return sorted(found.values(), key=lambda a: (a.kind != "model", a.name))


# --- which files ----------------------------------------------------------------------------------------------


def model_files(files: dict[str, int | None]) -> list[str]:
    """The files transformers loads from a model repo: safetensors weights when there are any, else .bin."""
    for weights in WEIGHTS:
        chosen = [p for p in files if weights.fullmatch(p)]
        if any(not p.endswith(".json") for p in chosen):
            break
    else:
        raise Missing("no weights transformers loads (model.safetensors or pytorch_model.bin)")
    return [p for p in files if SUPPORT.fullmatch(p) and not any(w.fullmatch(p) for w in WEIGHTS)] + chosen


def dataset_files(files: dict[str, int | None], card: dict, config: str | None) -> list[str]:
    """The card and the data files of a dataset's config (the card's `configs`; without them, every file)."""
    configs = card.get("configs") or []
    if config is None and not configs:
        return [p for p in files if p != ".gitattributes"]
    names = [c.get("config_name") for c in configs]
    if config is None:  # datasets' default: the one marked default, else one named so, else the only one
        marked = [c for c in configs if c.get("default")] or [c for c in configs if c.get("config_name") == "default"]
        chosen = (marked or configs)[0] if marked or len(configs) == 1 else None
    else:
        chosen = next((c for c in configs if c.get("config_name") == config), None)
    if chosen is None:
        raise Missing(f"its card has no config {config or 'default'!r} (it has {', '.join(map(str, names)) or 'none'})")
    patterns = data_patterns(chosen)
    data = [p for p in files if any(fnmatch.fnmatch(p, pattern) for pattern in patterns)]
    if not data:
        raise Missing(f"no data files match config {chosen.get('config_name')!r} ({', '.join(patterns)})")
    return [p for p in (CARD,) if p in files] + data


def data_patterns(config: dict) -> list[str]:
    """A card config's data_files (a pattern, a list of them, or per-split entries) under its data_dir."""
    spec, folder = config.get("data_files"), config.get("data_dir")
    if spec is None:
        return [f"{folder}/*" if folder else "*"]
    if isinstance(spec, dict):
        spec = [{"split": k, "path": v} for k, v in spec.items()]
    out = []
    for entry in [spec] if isinstance(spec, str) else spec:
        paths = entry.get("path") if isinstance(entry, dict) else entry
        out += [paths] if isinstance(paths, str) else list(paths)
    return [f"{folder}/{p}" if folder else p for p in out]


def needed_files(a: Artefact, files: dict[str, int | None], card: dict) -> list[str]:
    if a.kind == "dataset":
        return dataset_files(files, card, a.config)
    weights = model_files(files)  # an EAGLE folder too holds model.safetensors or pytorch_model.bin
    return list(files) if a.whole else weights


def plan(a: Artefact, hub: Hub, online: bool) -> None:
    """Which id serves `a` (the first the hub lists, or offline the first cached, as data.py then finds it),
    which of its files a run reads and which are cached. Offline only the cache is known: sizes are of what is
    there, and a model whose weights are not cached is missing."""
    if a.problem:
        return
    card = {}
    if online:
        for repo in a.ids:
            try:
                files, card, a.gated = hub.listing(repo, a.kind)
                break
            except Exception as err:  # noqa: BLE001 - a moved dataset: try its next id
                if reason(err) != "not found" or repo == a.ids[-1]:
                    a.problem = advice(a, err)
                    return
        a.repo, have = repo, hub.cached(repo, a.kind)
    else:
        a.repo = next((r for r in a.ids if hub.cached(r, a.kind)), "")
        have = hub.cached(a.repo, a.kind) if a.repo else {}
        files = {p: f.stat().st_size for p, f in have.items()}
        if CARD in have and a.kind == "dataset":
            from huggingface_hub import metadata_load

            card = metadata_load(have[CARD]) or {}
    try:
        needed = needed_files(a, files, card)
    except Missing as err:
        if online:
            a.problem = advice(a, err)
        return
    for index in (p for p in INDEXES if p in needed and p in have):  # its shards, so a missing one shows offline
        needed += [s for s in json.loads(have[index].read_text())["weight_map"].values() if s not in needed]
    a.files = {p: files.get(p) for p in needed}
    a.have = {p for p in needed if p in have}


# --- why something is missing ---------------------------------------------------------------------------------


def reason(err: BaseException) -> str:
    """gated, not found, network, or error: each has its own advice."""
    from huggingface_hub.errors import (GatedRepoError, HFValidationError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)

    if isinstance(err, GatedRepoError):
        return "gated"
    if isinstance(err, (Missing, RepositoryNotFoundError, RevisionNotFoundError, RemoteEntryNotFoundError,
                        HFValidationError)):
        return "not found"
    if isinstance(err, (LocalEntryNotFoundError, HfHubHTTPError, ConnectionError, TimeoutError)) or unreachable(err):
        return "network"
    return "error"


def page(a: Artefact) -> str:
    host = f"{hub_endpoint().scheme}://{hub_endpoint().netloc}"
    return f"{host}/{'datasets/' if a.kind == 'dataset' else ''}{a.repo or a.ids[0]}"


def advice(a: Artefact, err: BaseException) -> str:
    """What went wrong and what to do, in a line."""
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    why = reason(err)
    if why == "gated":
        return (f"gated: accept its license at {page(a)}, then log in (`hf auth login`, formerly `huggingface-cli "
                f"login`) and rerun")
    if why == "not found":
        tried = f" (tried {', '.join(a.ids)})" if len(a.ids) > 1 else ""
        return f"on the hub, but {detail}" if isinstance(err, Missing) else f"not found on the hub, or private{tried}"
    if why == "network":
        return f"network: {detail}; rerun to resume (finished files are kept)"
    return f"{type(err).__name__}: {detail}"


def elsewhere(a: Artefact) -> str | None:
    """Where a model the hub may not serve is distributed instead, and how to point the pair at it."""
    name = TABED_DRAFTS.get(a.ids[0])
    if name is None:
        return None
    role = sorted(a.roles)[0]
    return (f"TABED's README releases this draft as {name} in its Google Drive folder {TABED_DRIVE}: download "
            f"that folder and run with pair.{role}.id=/path/to/{name}")


# --- the table and the summary --------------------------------------------------------------------------------


def human(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def state(a: Artefact) -> str:
    if a.cached:
        return "yes"
    if a.have:
        return f"partial ({len(a.have)}/{len(a.files)} files)"
    return "no"


def table(arts: list[Artefact], online: bool) -> str:
    """One row per artefact: kind, id, size, cached, who reads it; then the total to download."""
    rows = [("kind", "artefact", "size", "cached", "for")]
    for a in arts:
        note = " (gated)" if a.gated and not a.cached else ""
        users = ", ".join(sorted(a.users)) if a.kind == "dataset" else \
            f"{'/'.join(sorted(a.roles))} of {', '.join(sorted(a.users))}"
        rows.append((a.kind, a.name, human(a.size()) if a.files else "?", state(a) + note, users))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    todo = [a for a in arts if not a.cached and not a.problem]
    if online:
        size = sum(a.size(a.todo) or 0 for a in todo)
        files = sum(len(a.todo) for a in todo)
        lines.append(f"to download: {human(size)} in {files} files ({len(todo)} of {len(arts)} artefacts; "
                     f"{sum(a.cached for a in arts)} cached)")
    else:
        lines.append(f"cached: {sum(a.cached for a in arts)} of {len(arts)} artefacts")
    return "\n".join(lines)


def fetch(arts: list[Artefact], hub: Hub) -> None:
    """Download what is not cached, smallest artefact first and one file at a time, so that an interruption loses
    at most the file in flight (which huggingface_hub resumes); one artefact's failure does not stop the others."""
    todo = sorted((a for a in arts if not a.problem), key=lambda a: a.size(a.todo) or 0)
    with tqdm(total=sum(a.size(a.todo) or 0 for a in todo), unit="B", unit_scale=True, desc="fetch") as bar:
        for a in todo:
            try:
                for path in a.todo:
                    bar.set_postfix_str(f"{a.repo}/{path}")
                    hub.download(a.repo, a.kind, path)
                    a.have.add(path)
                    bar.update(a.files[path] or 0)
                if a.kind == "dataset":
                    bar.set_postfix_str(f"building {a.name} with datasets")
                    hub.prepare(a.repo, a.config, sorted(a.splits)[0])
            except Exception as err:  # noqa: BLE001 - say why at the end, fetch the rest
                a.problem = advice(a, err)


def summary(arts: list[Artefact], why_not: str) -> str:
    """What is missing and why (`why_not`: for an artefact nothing went wrong with: the hub was not asked)."""
    missing = [a for a in arts if a.problem or not a.cached]
    if not missing:
        return f"all {len(arts)} artefacts are in the cache"
    lines = [f"missing {len(missing)} of {len(arts)}:"]
    for a in missing:
        why = a.problem or (f"{len(a.todo)} of {len(a.files)} files {why_not}" if a.have else why_not)
        if not a.repo and len(a.ids) > 1 and not a.problem:
            why += f" (under any of its ids: {', '.join(a.ids)})"
        lines.append(f"  {a.name} ({a.kind}): {why}")
        hint = elsewhere(a)
        if hint and not why.startswith("network"):
            lines.append(f"    {hint}")
    return "\n".join(lines)


# --- the command ----------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.fetch", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", help="a sweep preset, conf/sweep/NAME.yaml (e.g. tabed_table1)")
    p.add_argument("--pair", help="pair config(s), comma-separated (with no method= override: all their models)")
    p.add_argument("--dataset", help="dataset config(s), comma-separated")
    p.add_argument("--dry-run", action="store_true", help="list what is and is not cached; download nothing")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for python -m harness (pair.draft.id=...)")
    return p


def main(argv: list[str] | None = None, hub: Hub | None = None) -> int:
    args = parser().parse_args(argv)
    if not (args.sweep or args.pair or args.dataset):
        parser().error("give --sweep NAME, or --pair and/or --dataset")
    hub = hub or HfHub()
    online = hub.online()
    if not online and not args.dry_run:
        print(f"The Hugging Face hub ({hub_endpoint().hostname}) is not reachable"
              f"{' (HF_HUB_OFFLINE is set)' if hub_offline() else ''}: nothing can be downloaded here. "
              "What is cached and what is missing:", flush=True)
    overrides = [f"pair={args.pair}"] * bool(args.pair) + [f"dataset={args.dataset}"] * bool(args.dataset)
    overrides += args.overrides
    every_model = not args.sweep and not any(o.lstrip("+~").split("=")[0] == "method" for o in overrides)
    try:
        arts = collect(job_configs(args.sweep, overrides), every_model)
    except Exception as err:  # noqa: BLE001 - a bad name or override: Hydra's message (or ours) says which
        print(f"error: {err if isinstance(err, HarnessError) else f'{type(err).__name__}: {err}'}", file=sys.stderr)
        return 2
    for a in tqdm(arts, desc="listing", leave=False, disable=not online):
        plan(a, hub, online)
    print(table(arts, online), flush=True)
    if online and not args.dry_run and any(a.todo or a.kind == "dataset" for a in arts if not a.problem):
        fetch(arts, hub)
    print(summary(arts, "not cached" + (" (dry run)" if online else "; the hub is not reachable")))
    return 0 if all(a.cached and not a.problem for a in arts) else 2


if __name__ == "__main__":
    sys.exit(main())
