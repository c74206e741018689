"""Load a model pair (target + draft) and turn conversations into model inputs.

A model is named in a pair config by `id`: `embedded:NAME` (the zoo), a local folder, or a Hugging Face
hub id. Hub downloads happen only when the id is a hub id, the files are not cached, and HF_HUB_OFFLINE is
unset; otherwise the error says what is missing and how to fetch it (harness.hub).
"""
from __future__ import annotations

import functools
import gc
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import (
    AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer, GenerationConfig,
)

from harness import CONF, HarnessError
from harness.captioner import load_captioner
from harness.hub import embedded_name, from_hf, snapshot
from harness.kernels import choose_packing
from harness.packing import pack_linears
from harness.zoo import EMBEDDED, WEIGHTS, eagle_weights, load_embedded
from methods import Models, Prompt
from methods.core import devices

log = logging.getLogger("harness")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Where a question's text places an image (Interleave-Bench's convention; datasets/bundled/README.md).
IMAGE_MARKER = "<image>"
# Fallback prompt for processors without a chat template (LLaVA-1.5's own format).
LLAVA_FALLBACK = "USER: {images}{text} ASSISTANT:"
# FastChat's vicuna_v1.1, as EAGLE's evaluation prompts Vicuna (whose tokenizer has no chat template).
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")


def vicuna_v11(messages: list[dict]) -> str:
    text = VICUNA_SYSTEM + " "
    for m in messages:
        text += f"USER: {m['content']} " if m["role"] == "user" else f"ASSISTANT: {m['content']}</s>"
    return text + "ASSISTANT:"


# Conversation formats for tokenizers without a chat template (`pair.target.chat_format`).
CHAT_FORMATS = {"vicuna_v1.1": vicuna_v11}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise HarnessError(f"device={name!r}; valid choices: auto, cpu, cuda, cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"device={name!r} but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The dtype to load every model in; None (dtype=auto on CUDA) lets each checkpoint keep its own (`shipped_dtype`).
    On a CPU, auto is float32: half-precision matmuls there are slow or emulated."""
    if name == "auto":
        return None if device.type == "cuda" else torch.float32
    try:
        return DTYPES[name]
    except KeyError:
        raise HarnessError(f"dtype={name!r}; valid choices: auto, {', '.join(DTYPES)}") from None


# accelerate's ways to split a model over the visible devices (`pair.target.device_map`), for targets larger than one GPU.
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def placement(target_cfg) -> str | None:
    """`pair.target.device_map` (+ `max_memory`) as load_model's hashable key: None loads the whole target on the run's
    device; a DEVICE_MAPS name or a {module: device} mapping splits it, and the draft then sits on its first device."""
    device_map = target_cfg.get("device_map")
    if device_map is None:
        return None
    device_map = OmegaConf.to_container(device_map) if OmegaConf.is_config(device_map) else device_map
    if not (device_map in DEVICE_MAPS or isinstance(device_map, dict) and device_map):
        raise HarnessError(f"pair.target.device_map={device_map!r}; valid choices: null (the whole target on `device`), "
                           f"{', '.join(DEVICE_MAPS)}, or a mapping of module names to devices")
    memory = target_cfg.get("max_memory")
    memory = OmegaConf.to_container(memory) if OmegaConf.is_config(memory) else memory
    memory = {str(k): v for k, v in memory.items()} if memory else None  # GPU 0 and "cpu": keys of one type
    offload = target_cfg.get("offload_folder")
    if isinstance(device_map, dict) and "disk" in device_map.values() and not offload:
        raise HarnessError("pair.target.device_map offloads modules to disk: set pair.target.offload_folder to a folder "
                           "with room for their weights")
    return json.dumps({"device_map": device_map, "max_memory": memory, "offload_folder": offload}, sort_keys=True)


def placed(placement_key: str) -> dict:
    """from_pretrained's keywords for a `placement` key (max_memory's GPU keys back to ints, as accelerate wants)."""
    load = {k: v for k, v in json.loads(placement_key).items() if v is not None}
    if "max_memory" in load:
        load["max_memory"] = {int(k) if str(k).isdigit() else k: v for k, v in load["max_memory"].items()}
    return load


def shipped_dtype(config) -> torch.dtype:
    """The half-precision dtype a checkpoint ships in (its config's dtype, formerly torch_dtype): bfloat16 for
    Llama-3.1, Qwen3 or lvlm160m-bf16, float16 for LLaVA-1.5; float16 when it names none or float32 (a training
    export: every anchor decodes on GPU in half precision)."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    dtype = DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    return torch.bfloat16 if dtype == torch.bfloat16 else torch.float16


@functools.lru_cache(maxsize=None)  # emptied when a run switches targets (`load_pair`)
def load_model(model_id: str, dtype: torch.dtype | None, device: torch.device, pack: bool = False,
               placement_key: str | None = None):
    """(model, tokenizer, processor or None), cached so multirun jobs in one process load each model once;
    dtype None is the checkpoint's own (`shipped_dtype`); with `pack`, its linear layers use prepacked CPU
    weights (harness.packing; for decoding, not training); `placement_key` (`placement`) splits it over devices
    instead of putting it on `device`. Any failure is one line naming the model."""
    try:
        model, tokenizer, processor = _load_model(model_id, dtype, device, placement_key)
    except HarnessError:
        raise
    except Exception as err:  # noqa: BLE001 - a tokenizer probe, a missing package, a bad config: one clear line
        raise HarnessError(f"model {model_id!r} could not be loaded: {type(err).__name__}: "
                           f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}") from err
    if pack:
        pack_linears(model)
    return model, tokenizer, processor


def _load_model(model_id: str, dtype: torch.dtype | None, device: torch.device, placement_key: str | None):
    if (name := embedded_name(model_id)) is not None:
        if placement_key is not None:
            raise HarnessError(f"pair.target.device_map is for hub or local checkpoints; {model_id} fits one device")
        model, tok_or_processor = load_embedded(name, dtype or torch.float16)  # CUDA: fp16
        processor = tok_or_processor if hasattr(tok_or_processor, "image_processor") else None  # vision pairs
        tokenizer = processor.tokenizer if processor is not None else tok_or_processor
        return model.to(device).eval(), tokenizer, processor
    config = from_hf(AutoConfig, model_id)
    # Straight to the device: building a 13B model in host RAM first costs 26 GB of it.
    load = dict(dtype=dtype or shipped_dtype(config), device_map=str(device))
    load.update(placed(placement_key) if placement_key is not None else {})
    if hasattr(config, "vision_config"):
        model = from_hf(AutoModelForImageTextToText, model_id, **load)
        processor = complete_geometry(from_hf(AutoProcessor, model_id), config)
        return model.eval(), processor.tokenizer, processor
    model = from_hf(AutoModelForCausalLM, model_id, **load)
    return model.eval(), from_hf(AutoTokenizer, model_id), None


def complete_geometry(processor, config):
    """A LLaVA processor from the older hub layout (no processor_config.json) knows no patch size and cannot expand
    `<image>` into the 576 tokens the model expects; it gets the geometry from the model's own config (CLIP's class
    token is the one extra token, dropped again by the "default" feature strategy)."""
    if hasattr(processor, "patch_size") and processor.patch_size is None:
        processor.patch_size = config.vision_config.patch_size
        processor.vision_feature_select_strategy = getattr(config, "vision_feature_select_strategy", "default")
        processor.num_additional_image_tokens = 1 if config.vision_config.model_type == "clip_vision_model" else 0
    return processor


def eagle_folder(model_id: str) -> Path:
    """The folder of an EAGLE-3 drafter: `embedded:NAME` (harness/zoo/weights/NAME, or for `TARGET-eagle3[-rN]` of
    another embedded target the cache folder harness.train.eagle builds it into, never committed), a local folder,
    or a hub id (its cached snapshot; downloaded only when online)."""
    if (name := embedded_name(model_id)) is not None:
        folder, build = WEIGHTS / name, "python -m harness.train.eagle"
        local = re.fullmatch(r"(.+)-eagle3(?:-r(\d+))?", name)
        if local and local[1] in EMBEDDED:
            folder, build = eagle_weights(local[1], name), f"{build} --target embedded:{local[1]}"
            if local[2]:
                build += f" --head reduced --vocab {local[2]} --init-from {eagle_weights(local[1], f'{local[1]}-eagle3')} --steps 300"
        elif reduced := re.fullmatch(r"smol-eagle3-r(\d+)", name):
            build += f" --head reduced --vocab {reduced[1]} --init-from {WEIGHTS / 'smol-eagle3'} --steps 600"
        if not (folder / "config.json").exists():
            raise HarnessError(f"embedded EAGLE drafter {model_id!r} has no weights in {folder}; build them with:\n"
                               f"    {build}")
        return folder
    return snapshot(model_id)


def load_eagle(model_id: str, target, dtype: torch.dtype | None, pack: bool = False, speculator: str | None = None,
               frequent: str | None = None):
    """The EAGLE-3 drafter `model_id` for `target` (in its dtype unless told), with a separate SpecVocab `speculator`
    file and FR-Spec `frequent` tokens file when given; with `pack`, its linear layers use prepacked CPU weights."""
    from methods.eagle3 import load_eagle3

    folder = eagle_folder(model_id)
    try:
        drafter = load_eagle3(folder, target, dtype, speculator, frequent)
    except (ValueError, FileNotFoundError, KeyError) as err:
        raise HarnessError(f"EAGLE-3 drafter {model_id!r} ({folder}): {err}") from None
    if pack:
        pack_linears(drafter)
    return drafter


@dataclass
class Pair:
    """A loaded pair: the models methods run, and the target's tokenizer/processor that builds prompts."""

    name: str
    models: Models
    tokenizer: object
    processor: object | None
    eos_token_ids: tuple[int, ...]
    kernels: dict = field(default_factory=dict)  # per model role: packed or not, and the timings that decided it
    chat_format: str | None = None  # a CHAT_FORMATS name, for tokenizers without a chat template
    system_prompt: str | None = None  # a system message before every conversation (as the anchor prompted the model)
    context: int | None = None  # the target's positions (max_position_embeddings): prompt + new tokens must fit

    @property
    def device(self) -> torch.device:
        """Where inputs go: the target's first device (the only one unless `pair.target.device_map` split it); the
        CPU for a pair without loaded weights (`prompt_pair`)."""
        return devices(self.models.target)[0] if self.models.target is not None else torch.device("cpu")

    def check_fits(self, prompt: Prompt, max_new_tokens: int) -> None:
        """Refuse a prompt the target cannot decode max_new_tokens after: past its positions the output is noise
        that would still count in tau, speedup and the lossless check."""
        n = prompt.target["input_ids"].shape[1]
        if self.context and n + max_new_tokens > self.context:
            raise HarnessError(f"prompt of {n} tokens + max_new_tokens {max_new_tokens} = {n + max_new_tokens} "
                               f"exceeds the target's context of {self.context} positions (max_position_embeddings)")

    def encode(self, messages: list[dict], images: list | None = None) -> Prompt:
        """Chat-format `messages` ([{role, content, n_images}], content as text) with the target's own template;
        a user message's `n_images` placeholders come before its text, and `images` fill them in order."""
        images = images or []
        if self.processor is None:
            if images:
                raise HarnessError(f"pair {self.name!r} is text-only but the sample has {len(images)} image(s)")
            if self.chat_format:
                ids = self.tokenizer(CHAT_FORMATS[self.chat_format](messages), return_tensors="pt")["input_ids"]
                return Prompt(target={"input_ids": ids.to(self.device)})
            chat = [{"role": m["role"], "content": m["content"]} for m in messages]
            if self.system_prompt:
                chat.insert(0, {"role": "system", "content": self.system_prompt})
            ids = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True,
                                                     return_tensors="pt")["input_ids"]
            return Prompt(target={"input_ids": ids.to(self.device)})
        if sum(m.get("n_images", 0) for m in messages) != len(images):
            raise ValueError(f"{len(images)} images for {sum(m.get('n_images', 0) for m in messages)} placeholders")
        text = self._vlm_text(messages)
        enc = self.processor(text=text, images=images or None, return_tensors="pt")
        inputs = {"input_ids": enc["input_ids"].to(self.device)}
        if "pixel_values" in enc:
            inputs["pixel_values"] = enc["pixel_values"].to(self.device, self.models.target.dtype)
        return Prompt(target=inputs, images=images)

    def _vlm_text(self, messages: list[dict]) -> str:
        """A user turn whose text already carries one IMAGE_MARKER per image (Interleave-Bench questions) keeps
        them where they are, as the processor's image token, and is the whole turn (as TABED feeds it); otherwise
        its images come first, as the chat template places them."""
        turns = [(m, interleaved(m, getattr(self.processor, "image_token", IMAGE_MARKER))) for m in messages]
        if getattr(self.processor, "chat_template", None):
            chat = [{"role": m["role"], "content": ([] if text is not None else [{"type": "image"}] * m.get("n_images", 0))
                     + [{"type": "text", "text": m["content"] if text is None else text}]} for m, text in turns]
            return self.processor.apply_chat_template(chat, add_generation_prompt=True)
        out = ""
        for m, text in turns:  # LLaVA-1.5's own format, for processors without a chat template
            if m["role"] == "user":
                images = "" if text is not None else "<image>\n" * m.get("n_images", 0)
                out += LLAVA_FALLBACK.format(images=images, text=m["content"] if text is None else text)
            else:
                out += f" {m['content']}</s>"
        return out


def interleaved(message: dict, image_token: str) -> str | None:
    """The turn's text with its IMAGE_MARKERs as `image_token` when it carries one per image; None when it carries
    none (the images then come first)."""
    found, n = message["content"].count(IMAGE_MARKER), message.get("n_images", 0)
    if message["role"] != "user" or not found:
        return None
    if found != n:
        raise HarnessError(f"a turn's text carries {found} {IMAGE_MARKER} marker(s) for {n} image(s); a question with "
                           "markers needs exactly one per image, in order")
    return message["content"].replace(IMAGE_MARKER, image_token)


ROLES = ("target", "draft", "eagle")


def shipped_pairs() -> dict[str, Path]:
    return {p.stem: p for p in sorted((CONF / "pair").glob("*.yaml")) if p.stem != "custom"}


def settle_pair(pair_cfg) -> None:
    """Before anything loads: a role without an id (`pair=custom` names only those it is given) is no role, and a
    pair may not take the name of a shipped one for other models: `pair=custom` refuses it; a shipped pair whose
    model ids were replaced keeps its name (a local copy of the same checkpoint is the usual reason), with a warning."""
    from omegaconf import open_dict

    with open_dict(pair_cfg):
        for role in ROLES[1:]:
            if pair_cfg.get(role) is not None and not pair_cfg[role].get("id"):
                pair_cfg[role] = None
    shipped = shipped_pairs().get(pair_cfg.name)
    if shipped is None:
        return
    own = OmegaConf.load(shipped)
    changed = [f"pair.{r}.id={(pair_cfg.get(r) or {}).get('id')}" for r in ROLES
               if (own.get(r) or {}).get("id") != (pair_cfg.get(r) or {}).get("id")]
    if changed and pair_cfg.get("custom"):
        raise HarnessError(f"pair=custom named {pair_cfg.name!r}, the shipped pair {shipped}'s name: its results "
                           "would mix with that pair's; name yours with pair.name=...")
    if changed:
        log.warning("pair %s with %s: its results are filed under %r; if that is another model than the shipped "
                    "pair's, use pair=custom (named after its folders)", pair_cfg.name, " ".join(changed), pair_cfg.name)


def pair_config(pair: str):
    """A pair by config name (conf/pair/NAME.yaml) or by the path of a pair yaml, for the tools outside Hydra."""
    path = Path(pair) if pair.endswith(".yaml") else CONF / f"pair/{pair}.yaml"
    if not path.is_file():
        valid = ", ".join(sorted(p.stem for p in (CONF / "pair").glob("*.yaml")))
        raise SystemExit(f"unknown pair {pair!r}: give a pair yaml path or one of: {valid}")
    return OmegaConf.load(path)


# Text a draft must tokenize exactly as its target does: words, digits, code, accents, CJK, emoji, whitespace.
TOKENIZER_PROBE = "The café's 3 naïve owls: def f(x): return x**2 \u2014 東京 😀\n\tDone."


def check_same_tokenizer(target_id: str, target_tok, draft_id: str, draft_tok) -> None:
    """Drafted ids are read as target ids: the two tokenizers must map the ids they share to the same tokens and
    tokenize text alike (same special tokens too); a vocabulary size alone does not show it."""
    n = min(len(target_tok), len(draft_tok))
    a, b = target_tok.convert_ids_to_tokens(range(n)), draft_tok.convert_ids_to_tokens(range(n))
    where = next((i for i in range(n) if a[i] != b[i]), None)
    problem = None
    if where is not None:
        problem = f"id {where} is {a[where]!r} for the target and {b[where]!r} for the draft"
    else:
        ta = target_tok(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]
        tb = draft_tok(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]
        if ta != tb:
            problem = f"the text {TOKENIZER_PROBE!r} is ids {ta} for the target and {tb} for the draft"
        for name in ("eos_token", "bos_token", "unk_token"):
            ia, ib = getattr(target_tok, name + "_id"), getattr(draft_tok, name + "_id")
            if problem is None and ia is not None and ib is not None and ia != ib:
                problem = f"{name} is id {ia} for the target and {ib} for the draft"
    if problem:
        raise HarnessError(f"draft {draft_id} and target {target_id} have different tokenizers ({problem}); a draft "
                           "must share its target's tokenizer")


HELD = {"target": None}  # the target whose models load_model holds


def hold_models_of(target_id: str) -> None:
    """Cells of one target (a sweep's datasets and methods, in Hydra's order: the pair varies slowest) reuse its
    loaded models, dense and packed; the next target's cells drop them first, so a sweep over pairs never holds
    two targets in (GPU) memory."""
    if HELD["target"] not in (None, target_id):
        load_model.cache_clear()
        if torch.cuda.is_available():  # GPU memory comes back only once the cycles holding it are collected
            gc.collect()
            torch.cuda.empty_cache()
    HELD["target"] = target_id


def load_pair(pair_cfg, device: torch.device, dtype: torch.dtype | None, need_draft: bool = True,
              need_eagle: bool = False, pack: bool | None = False, block: int = 1) -> Pair:
    """The pair's target and, as asked, its draft and EAGLE-3 drafter; with `pack`, their linear layers use
    prepacked CPU weights (harness.packing). `pack` None decides per model by timing the forward it runs most
    (harness.kernels): the target's `block`-token forwards, a draft's 1-token steps."""
    kernels = {}
    split = placement(pair_cfg.target)
    hold_models_of(pair_cfg.target.id)

    def model(role: str, model_id: str, tokens: int, on: torch.device):
        if split is not None and role == "target":  # a split target keeps accelerate's dense weights
            kernels[role] = {"packed": False, "device_map": json.loads(split)["device_map"]}
            return load_model(model_id, dtype, on, False, split)
        if pack is not None:
            kernels[role] = {"packed": pack}
            return load_model(model_id, dtype, on, pack)
        dense = load_model(model_id, dtype, on, False)
        kernels[role] = choose_packing(model_id, dense[0], tokens, on)
        return load_model(model_id, dtype, on, True) if kernels[role]["packed"] else dense

    target, tokenizer, processor = model("target", pair_cfg.target.id, block, device)
    device = devices(target)[0]  # the draft, the drafter and the inputs sit on the target's first device
    if split is not None:
        kernels["target"]["devices"] = [str(d) for d in devices(target)]
    draft = eagle = None
    if need_eagle:
        if not pair_cfg.get("eagle"):
            raise HarnessError(f"pair {pair_cfg.name!r} has no EAGLE-3 drafter (pair.eagle.id), which this method needs")
        if split is not None:
            kernels["eagle"] = {"packed": False}
        elif pack is None:  # the drafter's 1-token steps pack as the target's own 1-token forward does
            kernels["eagle"] = choose_packing(pair_cfg.target.id, load_model(pair_cfg.target.id, dtype, device, False)[0],
                                              1, device)
        else:
            kernels["eagle"] = {"packed": pack}
        eagle = load_eagle(pair_cfg.eagle.id, target, dtype, kernels["eagle"]["packed"], pair_cfg.eagle.get("speculator"),
                           pair_cfg.eagle.get("frequent_tokens"))
    if need_draft:
        if not pair_cfg.get("draft"):
            raise HarnessError(f"pair {pair_cfg.name!r} has no draft model, which this method needs")
        draft, draft_tokenizer, _ = model("draft", pair_cfg.draft.id, 1, device)
        if draft.config.get_text_config().vocab_size > target.config.get_text_config().vocab_size:
            raise HarnessError(f"draft {pair_cfg.draft.id} has a larger vocabulary than target {pair_cfg.target.id}; "
                               "drafted ids must be target ids")
        check_same_tokenizer(pair_cfg.target.id, tokenizer, pair_cfg.draft.id, draft_tokenizer)
    pair = finish_pair(pair_cfg, Models(target, draft, tokenizer, eagle=eagle), tokenizer, processor,
                       target.generation_config.eos_token_id, target.config.get_text_config(), kernels)
    if draft is not None and processor is not None:
        pair.models.captioner = load_captioner(pair_cfg.get("captioner"), pair)
    return pair


def finish_pair(pair_cfg, models: Models, tokenizer, processor, eos, text_config, kernels: dict) -> Pair:
    """The prompt side of a pair, checked: EOS ids (the generation config's and the tokenizer's), the conversation
    format, the system prompt and the target's context."""
    eos = tuple(eos) if isinstance(eos, (list, tuple)) else (eos,) if eos is not None else ()
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos += (tokenizer.eos_token_id,)
    template = pair_cfg.target.get("chat_template")
    if template:  # a template file for a tokenizer (or processor) that ships none
        path = Path(template).expanduser()
        if not path.is_file():
            raise HarnessError(f"pair.target.chat_template={template}: no such file (a Jinja chat template)")
        (processor if processor is not None else tokenizer).chat_template = path.read_text()
    chat_format = pair_cfg.target.get("chat_format")
    if chat_format is not None and chat_format not in CHAT_FORMATS:
        raise HarnessError(f"pair.target.chat_format={chat_format!r}; valid choices: {', '.join(CHAT_FORMATS)}")
    if chat_format is None and processor is None and not getattr(tokenizer, "chat_template", None):
        raise HarnessError(f"target {pair_cfg.target.id}'s tokenizer has no chat template; name the conversation format "
                           f"its anchor used with pair.target.chat_format (valid choices: {', '.join(CHAT_FORMATS)}), or "
                           "give a template file with pair.target.chat_template=FILE.jinja")
    system = pair_cfg.target.get("system_prompt")
    if system and (processor is not None or chat_format):
        raise HarnessError(f"pair.target.system_prompt is for text targets with a chat template ({pair_cfg.target.id} "
                           + ("is a vision-language model)" if processor is not None else f"uses chat_format {chat_format})"))
    return Pair(pair_cfg.name, models, tokenizer, processor, eos, kernels, chat_format, system,
                getattr(text_config, "max_position_embeddings", None))


def prompt_pair(pair_cfg, folder: Path) -> Pair:
    """A pair with its prompt side only (no weights loaded), read from the target's `folder`: what a cell decoded by
    a serving engine needs from us, so the engine alone holds the model in (GPU) memory."""
    config = AutoConfig.from_pretrained(folder)
    if hasattr(config, "vision_config"):
        raise HarnessError(f"target {pair_cfg.target.id} is a vision-language model; backend=vllm decodes text pairs "
                           "only so far (use backend=hf)")
    try:
        eos = GenerationConfig.from_pretrained(folder).eos_token_id
    except OSError:
        eos = config.eos_token_id
    return finish_pair(pair_cfg, Models(target=None), AutoTokenizer.from_pretrained(folder), None, eos,
                       config.get_text_config(), {})
