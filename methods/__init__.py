"""Decoding methods behind one interface:

    generate(models: Models, prompt: Prompt, settings: DecodeSettings, generator, **options) -> Result

`options` are the method's own config keys (e.g. `gamma`); each method registers itself (`methods.registry`).
Shared primitives live in `methods.core` (model calls, cache crop, token choice), `methods.drafting` (the
drafter contract), `methods.speculative` (the loop) and `methods.verify` (verification)."""
from methods import ar, eagle, hf_assisted, sd, tabed  # noqa: F401 - importing registers them
from methods.core import DecodeSettings, Models, Prompt, Result
from methods.registry import METHODS, find, get_method

__all__ = ["METHODS", "DecodeSettings", "Models", "Prompt", "Result", "find", "get_method"]
