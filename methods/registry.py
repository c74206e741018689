"""The methods a config can name. Each method registers its generate() where it is defined, with what it needs
from the pair; its options are that function's keyword parameters (names, types and defaults). Registering also
stores a typed config schema with Hydra (`schema/method/NAME`), which each conf/method/NAME.yaml extends: Hydra
then rejects an unknown key or a value of the wrong type while it composes, before anything loads, and a method
config may only set the function's options, under the same names (tests/test_config.py checks it). A method without
a YAML (a plugin's: docs/extending.md) composes from `schema(tag="${method_tag:}")` alone (harness.plugins stores
it), its `tag` (the cell's directory name) derived from its name and the options set away from their defaults.""" 
from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass
from typing import Callable

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

NEEDS = ("draft", "eagle")  # the pair's draft model; the pair's EAGLE-3 drafter


@dataclass(frozen=True)
class Method:
    name: str
    generate: Callable
    needs: tuple[str, ...] = ()

    def options(self) -> dict:
        """Option name -> default, in signature order."""
        return {p.name: p.default for p in self._parameters()}

    def schema(self, tag: str = MISSING) -> type:
        """A dataclass of the method's config: `name`, `tag` (the cell's directory name: set by the YAML, or derived,
        `method_tag`, for a method without one) and each option with its annotated type and default."""
        types = typing.get_type_hints(self.generate)
        fields = [("name", str, dataclasses.field(default=self.name)), ("tag", str, dataclasses.field(default=tag))]
        fields += [(p.name, types[p.name], dataclasses.field(default=p.default)) for p in self._parameters()]
        return dataclasses.make_dataclass("".join(w.title() for w in self.name.split("_")) + "Config", fields)

    def _parameters(self) -> list[inspect.Parameter]:
        return list(inspect.signature(self.generate).parameters.values())[4:]  # after models, prompt, settings, generator


METHODS: dict[str, Method] = {}


def method(name: str, needs: tuple[str, ...] = ()):
    """Register the decorated generate(models, prompt, settings, generator, **options) as method `name`."""
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"method {name}: needs {sorted(unknown)}; valid: {', '.join(NEEDS)}")

    def register(generate):
        METHODS[name] = Method(name, generate, tuple(needs))
        ConfigStore.instance().store(group="schema/method", name=name, node=METHODS[name].schema())
        return generate
    return register


def method_tag(*, _parent_) -> str:
    """A YAML-less method's tag: its name, then each option set away from its default as `option` + value, in
    signature order (`suffix`, `suffix_gamma8`), so two settings never share a cell directory."""
    known = find(_parent_["name"])
    changed = [f"{k}{_parent_[k]}" for k, default in known.options().items() if _parent_.get(k) != default]
    return "_".join([known.name, *changed])


OmegaConf.register_new_resolver("method_tag", method_tag, replace=True)


def find(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; valid choices: {', '.join(sorted(METHODS))}") from None


def get_method(name: str):
    return find(name).generate
