"""A multirun's jobs as Hydra's basic sweeper makes them, and a sweep preset (conf/sweep/NAME.yaml) composed into
the configs of its cells: what `python -m harness -m +sweep=NAME OVERRIDES` would run, known before it runs (for
status, prefetching and time estimates)."""
from __future__ import annotations

import itertools

from omegaconf import DictConfig

from harness import CONF, HarnessError



def presets() -> list[str]:
    return sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs of a multirun over `overrides`, as Hydra's basic sweeper makes them: each override parsed by
    Hydra's public override grammar (hydra.core), a sweep (`a,b`, `choice(...)`, `range(...)`, `glob(...)`)
    expanded into its values, a later override of the same key replacing an earlier one in its place, then the
    cartesian product in the keys' order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices: dict[str, list[str]] = {}
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        choices[key] = [f"{key}={v}" for v in values]
    return [list(job) for job in itertools.product(*choices.values())]


def not_hydra(overrides: list[str]) -> list[str]:
    """The overrides a job's config is composed with (hydra.* ones steer the launcher, not the cell)."""
    return [o for o in overrides if not o.lstrip("+~").startswith("hydra")]


def job_configs(sweep: str | None, overrides: list[str] = ()) -> list[DictConfig]:
    """The composed config of every job of `python -m harness -m [+sweep=NAME] OVERRIDES`, in its order: the
    preset's sweeper params, then the command line's overrides (a sweep there replaces the preset's for its key)."""
    from hydra import compose, initialize_config_dir
    from tqdm import tqdm

    from harness import plugins
    from harness.models import settle_pair

    if sweep is not None and sweep not in presets():
        raise HarnessError(f"sweep preset {sweep!r}; valid choices: {', '.join(presets())}")
    preset = [f"+sweep={sweep}"] if sweep else []
    search = plugins.with_search_path([], plugins.load(plugins.named_on(list(overrides))))  # methods registered too
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        params = compose("config", overrides=preset + search, return_hydra_config=True).hydra.sweeper.get("params") or {}
        jobs = sweep_jobs([f"{k}={v}" for k, v in params.items()] + preset + not_hydra(list(overrides)))
        configs = [compose("config", overrides=not_hydra(job) + search)
                   for job in tqdm(jobs, desc="composing jobs", leave=False, disable=len(jobs) < 20)]
    for cfg in configs:
        settle_pair(cfg.pair)
    return configs
