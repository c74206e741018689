"""Decoding methods behind one interface:

    generate(models: Models, prompt: Prompt, settings: DecodeSettings, generator, **options) -> Result

`options` are the method's own config keys (e.g. `gamma`); each method registers itself with `@method` (`methods.
registry`). This module's names are the surface a plugin imports (docs/extending.md): `method`, `Drafter` (and its
`Verdict`), `speculate`, `Models`, `Prompt`, `DecodeSettings`, `Result` and `Stats`. The built-in methods use nothing
a plugin could not. Shared primitives live in `methods.core` (model calls, cache crop, token choice),
`methods.drafting` (the drafter contract), `methods.speculative` (the loop) and `methods.verify` (verification)."""
from methods import ar, eagle, hf_assisted, sd, tabed  # noqa: F401 - importing registers them
from methods.core import DecodeSettings, Models, Prompt, Result, Stats
from methods.drafting import Drafter, Verdict
from methods.registry import METHODS, find, get_method, method
from methods.speculative import speculate

__all__ = ["METHODS", "DecodeSettings", "Drafter", "Models", "Prompt", "Result", "Stats", "Verdict", "find",
           "get_method", "method", "speculate"]
