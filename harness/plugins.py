"""Methods (and configs) from outside this repository, without forking it (docs/extending.md).

A plugin is a Python module that registers its methods with `methods.method` when imported. The harness imports,
before it composes a config: every module named by an installed package's entry point in the group
`spec_harness.plugins`, and the modules named on the command line with `plugins=[mod1,mod2]` (any module on
PYTHONPATH). A registered method with no conf/method/NAME.yaml composes from its schema alone (`method=NAME`, its tag
derived by `methods.registry.method_tag`). A plugin package may also ship a `conf/` folder beside its module (method,
pair, dataset or sweep YAMLs), which joins Hydra's search path.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path

from hydra.core.config_store import ConfigStore

from harness import CONF, HarnessError

GROUP = "spec_harness.plugins"


def named_on(argv: list[str]) -> list[str]:
    """The modules a command line's `plugins=...` override names (`plugins=a`, `plugins=[a,b]`)."""
    names = []
    for arg in argv:
        if arg.startswith("plugins="):
            names += [n.strip() for n in arg.split("=", 1)[1].strip("[]").split(",") if n.strip()]
    return names


def load(extra: list[str] = ()) -> list[str]:
    """Import the entry-point plugins and `extra`; store a config for each registered method without a YAML; the
    plugins' conf/ folders (as Hydra search-path entries, `file://...`)."""
    import methods  # noqa: F401 - the built-in methods first: a plugin may import from them
    from methods.registry import METHODS

    names = [ep.value for ep in entry_points(group=GROUP)] + [n for n in extra if n]
    folders = []
    for name in dict.fromkeys(names):
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            raise HarnessError(f"plugin {name!r} cannot be imported ({err}); install its package, or put it on "
                               "PYTHONPATH (plugins=[...] names importable modules)") from None
        conf = Path(module.__file__).parent / "conf"
        if conf.is_dir():
            folders.append(f"file://{conf}")
    yamls = {p.stem for folder in [CONF, *(Path(f.removeprefix("file://")) for f in folders)]
             for p in (folder / "method").glob("*.yaml")}
    for name, registered in METHODS.items():
        if name not in yamls:
            ConfigStore.instance().store(group="method", name=name, node=registered.schema("${method_tag:}"))
    return folders


def with_search_path(argv: list[str], folders: list[str]) -> list[str]:
    """`argv` with the plugins' conf/ folders added to Hydra's search path (after any the user gave)."""
    if not folders:
        return argv
    given = [a for a in argv if a.startswith("hydra.searchpath=")]
    entries = [e for a in given for e in a.split("=", 1)[1].strip("[]").split(",") if e] + folders
    return [a for a in argv if a not in given] + [f"hydra.searchpath=[{','.join(entries)}]"]
