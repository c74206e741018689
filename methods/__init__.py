"""Decoding methods behind one interface:

    generate(models: Models, prompt: Prompt, settings: DecodeSettings, generator, **options) -> Result

`options` are the method's own config keys (e.g. `gamma`). Shared primitives live in `methods.core`
(model calls, cache crop, token choice) and `methods.verify` (verification)."""
from methods import ar, eagle, hf_assisted, sd, tabed
from methods.core import DecodeSettings, Models, Prompt, Result

METHODS = {"ar": ar.generate, "sd": sd.generate, "tabed": tabed.generate, "eagle": eagle.generate,
           "specvocab": eagle.generate_specvocab, "hf_assisted": hf_assisted.generate,
           "hf_pld": hf_assisted.generate_pld, "hf_generate": hf_assisted.generate_plain}


def get_method(name: str):
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; valid choices: {', '.join(sorted(METHODS))}") from None


__all__ = ["METHODS", "DecodeSettings", "Models", "Prompt", "Result", "get_method"]
