"""The methods a config can name. Each method registers its generate() where it is defined, with what it needs
from the pair; its options are that function's keyword parameters (names, types and defaults), and a method
config (conf/method/NAME.yaml) may only set those, under the same names (tests/test_config.py checks it)."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

NEEDS = ("draft", "eagle")  # the pair's draft model; the pair's EAGLE-3 drafter


@dataclass(frozen=True)
class Method:
    name: str
    generate: Callable
    needs: tuple[str, ...] = ()

    def options(self) -> dict:
        """Option name -> default, in signature order."""
        params = list(inspect.signature(self.generate).parameters.values())[4:]  # after models, prompt, settings, generator
        return {p.name: p.default for p in params}


METHODS: dict[str, Method] = {}


def method(name: str, needs: tuple[str, ...] = ()):
    """Register the decorated generate(models, prompt, settings, generator, **options) as method `name`."""
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"method {name}: needs {sorted(unknown)}; valid: {', '.join(NEEDS)}")

    def register(generate):
        METHODS[name] = Method(name, generate, tuple(needs))
        return generate
    return register


def find(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; valid choices: {', '.join(sorted(METHODS))}") from None


def get_method(name: str):
    return find(name).generate
