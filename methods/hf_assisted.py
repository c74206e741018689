"""transformers' own decoding as peers to ours: the same pair decoded by `target.generate()`.

`hf_generate`: plain greedy/sampled `generate()`, no draft: what a user gets today, the baseline our `ar` must not
lose to (harness.baseline times the two against each other in every `ar` cell);
`hf_assisted`: assisted generation with the pair's draft (`assistant_model`, `num_assistant_tokens=gamma`,
schedule "constant", confidence threshold 0 by default, so every block drafts exactly `gamma` tokens as `sd` does;
`gamma=20 confidence=0.4` are transformers' own defaults);
`hf_pld`: prompt-lookup decoding (`prompt_lookup_num_tokens=gamma`), no draft model.

transformers 5.x reads the assistant knobs from the *assistant's* generation config, and fills every knob a
caller leaves unset from the models' own generation configs (top_k 50, repetition penalty, EOS, ...). So
for the call both models get a fresh config holding only what `DecodeSettings` and `gamma` say; the models'
configs are restored afterwards. The pad id is the EOS id (or none): with any other id HF's assistant infers
an attention mask that hides every generated copy of the pad token, and drafts from the wrong context.

Statistics are counted from outside with forward hooks (public torch API) on the target and the draft,
never by patching transformers. HF keeps the target's KV cache one short of the committed sequence (the
last token is fed with the next block), so a target call that sees `start` cached positions and feeds
`length` tokens was preceded by `start + 1` committed tokens (the prompt, for the first call), drafted
`start + length - committed_before` tokens, and accepted `committed_after - committed_before - 1`. Unlike
`sd`, whose prefill call verifies nothing, every HF target call verifies a block: target_calls equals the
number of blocks, and new tokens = sum(accepted) + target_calls.

Timing: HF has no separate prefill; its first target forward scores the prompt together with the first
draft block. prefill_s is the time to the first token (the end of that first target forward, clocked by
its forward hook with `methods.core.now`), decode_s the rest, so prefill_s + decode_s is the whole call.

Greedy decoding gives `ar`'s tokens; sampling uses HF's own speculative sampling with HF's global RNG,
seeded from `generator`, so it has the same distribution as `ar` but not the same draws.

Image prompts: transformers (5.23) never lets the assistant see the image. The target's `generate()` encodes
`pixel_values` itself and drops them from what it hands the assistant, and the assistant's every call counts as
"not the first iteration", which drops image inputs again; no public argument changes that. A LLaVA draft then
drafts from the placeholder tokens alone, so its tau is not the draft's (about 1 where `sd` M reaches 1.6 on the
same replica pair). Such records carry `assistant_sees_images: false` and the report marks the row; `hf_pld`
refuses image prompts.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import GenerationConfig, GenerationMixin

from methods.core import DecodeSettings, Models, Prompt, Result, check_prompt, devices, extend, now
from methods.registry import method

SCHEDULES = ("constant", "heuristic", "heuristic_transient")  # transformers' num_assistant_tokens_schedule values


@contextmanager
def generation_configs(configs: dict):
    """Give each model in `configs` (model -> GenerationConfig) that config for the duration of the block."""
    saved = {model: model.generation_config for model in configs}
    try:
        for model, config in configs.items():
            model.generation_config = config
        yield
    finally:
        for model, config in saved.items():
            model.generation_config = config


def n_tokens(kwargs: dict) -> int:
    """Tokens fed to a forward call, from its keyword inputs (`input_ids` or `inputs_embeds`)."""
    x = kwargs.get("input_ids")
    return (x if x is not None else kwargs["inputs_embeds"]).shape[1]


@contextmanager
def counted(target, draft):
    """Hooks recording every target call as (cached positions, fed tokens), the end time of the first one,
    and the number of draft calls."""
    rec = {"calls": [], "first_end": None, "draft_calls": 0}

    def before(module, args, kwargs):
        rec["calls"].append((int(kwargs["past_key_values"].get_seq_length()), n_tokens(kwargs)))  # a static cache: a tensor

    def after(module, args, kwargs, output):
        if rec["first_end"] is None:
            rec["first_end"] = now(*devices(target))

    def drafted(module, args, kwargs):
        rec["draft_calls"] += 1

    handles = [target.register_forward_pre_hook(before, with_kwargs=True),
               target.register_forward_hook(after, with_kwargs=True)]
    if draft is not None:
        handles.append(draft.register_forward_pre_hook(drafted, with_kwargs=True))
    try:
        yield rec
    finally:
        for h in handles:
            h.remove()


def blocks(calls: list[tuple[int, int]], n_prompt: int, n_final: int) -> tuple[list[int], list[int]]:
    """Per target call: (accepted, drafted), from the calls' (cached, fed) and the final sequence length."""
    committed = [n_prompt] + [start + 1 for start, _ in calls[1:]] + [n_final]
    drafted = [start + fed - committed[i] for i, (start, fed) in enumerate(calls)]
    accepted = [committed[i + 1] - committed[i] - 1 for i in range(len(calls))]
    return accepted, drafted


def hf_generate(models: Models, prompt: Prompt, settings: DecodeSettings, generator, draft=None,
                target_knobs: dict | None = None, assistant_knobs: dict | None = None) -> Result:
    """One `target.generate()` call: plain, assisted by `draft` (`assistant_knobs` go into its generation config),
    or prompt lookup (`target_knobs`: prompt_lookup_num_tokens)."""
    n_prompt = check_prompt(prompt)
    target = models.target
    eos = list(settings.eos_token_ids) or None
    sampling = {} if settings.greedy else dict(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
    configs = {target: GenerationConfig(max_new_tokens=settings.max_new_tokens, do_sample=not settings.greedy,
                                        eos_token_id=eos, pad_token_id=eos[0] if eos else None,
                                        **sampling, **(target_knobs or {}))}
    if draft is not None:  # transformers reads the assistant's knobs from the assistant's own config
        configs[draft] = GenerationConfig(**(assistant_knobs or {}))
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device)) if generator else 0
    clock = devices(target)
    with torch.random.fork_rng(devices=[d for d in clock if d.type == "cuda"]), \
            generation_configs(configs), counted(target, draft) as rec, torch.inference_mode():
        torch.manual_seed(seed)
        t0 = now(*clock)
        seq = target.generate(**prompt.target, attention_mask=torch.ones_like(prompt.target["input_ids"]),
                              assistant_model=draft)
        t2 = now(*clock)
    out: list[int] = []
    extend(out, seq[0, n_prompt:].tolist(), settings)
    accepted, drafted = blocks(rec["calls"], n_prompt, seq.shape[1])
    stats = dict(prefill_s=rec["first_end"] - t0, decode_s=t2 - rec["first_end"], target_calls=len(rec["calls"]),
                 draft_calls=rec["draft_calls"], accepted=accepted, drafted=drafted)
    if draft is not None and prompt.target.get("pixel_values") is not None:
        stats["assistant_sees_images"] = False  # see the module docstring
    return Result([out], stats)


@method("hf_assisted", needs=("draft",))
def generate(models: Models, prompt: Prompt, settings: DecodeSettings, generator: torch.Generator | None = None,
             gamma: int = 5, schedule: str = "constant", confidence: float = 0.0) -> Result:
    """`hf_assisted`: HF assisted generation with the pair's draft drafting `gamma` tokens per block (`schedule`
    "heuristic" lets transformers grow and shrink it; `confidence` > 0 stops a block early when the draft is unsure)."""
    draft = models.draft
    if gamma < 1:
        raise ValueError(f"need gamma >= 1, got {gamma}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r}; valid choices: {', '.join(SCHEDULES)}")
    if not isinstance(draft, GenerationMixin):
        raise TypeError(f"hf_assisted: the pair's draft ({type(draft).__module__}.{type(draft).__name__}) is not a "
                        "transformers GenerationMixin model; HF assisted generation drafts by calling "
                        "draft.generate(), so it needs one (a transformers *ForCausalLM or similar)")
    sizes = [m.config.get_text_config().vocab_size for m in (models.target, draft)]
    if sizes[0] != sizes[1]:
        raise ValueError(f"hf_assisted: the target's vocabulary has {sizes[0]} rows and the draft's {sizes[1]} (a target "
                         "padded past its tokenizer, a draft that is not); transformers' assisted generation then "
                         "refuses the pair as 'different tokenizers' (its universal assisted decoding is another "
                         "algorithm), so this pair has no hf_assisted number; sd and tabed align the vocabularies")
    if draft is models.target:
        raise ValueError("hf_assisted: the draft is the target module itself; its statistics come from hooks that "
                         "tell target calls from draft calls by module, so load the draft as a separate copy")
    return hf_generate(models, prompt, settings, generator, draft, assistant_knobs=dict(
        num_assistant_tokens=gamma, num_assistant_tokens_schedule=schedule, assistant_confidence_threshold=confidence))


@method("hf_pld")
def generate_pld(models: Models, prompt: Prompt, settings: DecodeSettings, generator: torch.Generator | None = None,
                 gamma: int = 5) -> Result:
    """`hf_pld`: HF prompt-lookup decoding, drafting up to `gamma` tokens per block by n-gram match."""
    if gamma < 1:
        raise ValueError(f"need gamma >= 1, got {gamma}")
    if prompt.target.get("pixel_values") is not None:
        raise NotImplementedError(
            "hf_pld does not support image prompts: transformers' prompt lookup copies n-grams of the prompt, image "
            "placeholder tokens included, into its drafts, and LLaVA then fails with 'Image features and image "
            "tokens do not match' (e.g. after 'USER:' it drafts the '<image>' run that followed 'USER:' in the prompt)")
    return hf_generate(models, prompt, settings, generator, target_knobs=dict(prompt_lookup_num_tokens=gamma))


@method("hf_generate")
def generate_plain(models: Models, prompt: Prompt, settings: DecodeSettings,
                   generator: torch.Generator | None = None, cache: str = "dynamic") -> Result:
    """`hf_generate`: transformers' own `generate()` on the target alone, with its dynamic cache as a user calls it,
    or `cache="static"` (which transformers compiles with torch.compile on CUDA for models that allow it)."""
    if cache not in ("dynamic", "static"):
        raise ValueError(f"hf_generate: cache={cache!r}; valid choices: dynamic, static")
    knobs = {"cache_implementation": "static"} if cache == "static" else None
    return hf_generate(models, prompt, settings, generator, target_knobs=knobs)
