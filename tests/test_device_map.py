"""Targets split over devices (`pair.target.device_map`): on a CPU box the split path runs for real by offloading a
layer to disk (accelerate's hooks then move every tensor, as they do between GPUs), and must decode exactly as the
unsplit target does."""
import types

import pytest
import torch
from omegaconf import OmegaConf

from harness import HarnessError
from harness.models import load_pair, placed, placement
from methods import DecodeSettings, get_method
from methods.core import devices
from tests.conftest import pair_overrides

CPU = torch.device("cpu")


def pair_cfg(pair_dir, **target):
    overrides = dict(o.split("=", 1) for o in pair_overrides(pair_dir))
    return OmegaConf.create({"name": overrides["pair.name"], "target": {"id": overrides["pair.target.id"], **target},
                             "draft": {"id": overrides["pair.draft.id"]}})


def test_devices_lists_each_device_of_a_split_model_once_first_device_first():
    split = types.SimpleNamespace(hf_device_map={"embed": 0, "layers.0": 0, "layers.1": 1, "norm": "cpu", "head": "disk"})
    assert devices(split) == (torch.device("cuda", 0), torch.device("cuda", 1), CPU)
    assert devices(types.SimpleNamespace(device=CPU)) == (CPU,)


@pytest.mark.parametrize("device_map, says", [
    ("everywhere", "device_map='everywhere'; valid choices: null"), ({}, "device_map={}"),
    ({"model.layers.0": "disk"}, "set pair.target.offload_folder"),
])
def test_a_bad_device_map_is_one_line_naming_it(device_map, says):
    with pytest.raises(HarnessError, match="pair.target") as err:
        placement(OmegaConf.create({"id": "x", "device_map": device_map}))
    assert says in str(err.value)


def test_placement_is_a_hashable_key_that_gives_back_from_pretrained_keywords():
    key = placement(OmegaConf.create({"id": "x", "device_map": "balanced", "max_memory": {0: "20GiB", "cpu": "60GiB"}}))
    assert hash(key) and placed(key) == {"device_map": "balanced", "max_memory": {0: "20GiB", "cpu": "60GiB"}}
    assert placement(OmegaConf.create({"id": "x"})) is None


def test_a_target_split_with_a_layer_on_disk_decodes_exactly_as_the_whole_target(random_pair_dir, tmp_path):
    layers = {f"model.layers.{i}": "disk" if i == 2 else "cpu" for i in range(4)}
    device_map = {"model.embed_tokens": "cpu", **layers, "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    split = load_pair(pair_cfg(random_pair_dir, device_map=device_map, offload_folder=str(tmp_path)), CPU, torch.float32)
    whole = load_pair(pair_cfg(random_pair_dir), CPU, torch.float32)
    assert split.models.target is not whole.models.target
    assert split.models.target.hf_device_map["model.layers.2"] == "disk"  # accelerate's hooks run that layer
    assert split.kernels["target"] == {"packed": False, "device_map": device_map, "devices": ["cpu"]}
    assert split.models.draft.device == split.device == CPU
    prompt = split.encode([{"role": "user", "content": "Name three colours."}])
    settings = DecodeSettings(max_new_tokens=24, eos_token_ids=split.eos_token_ids)
    outputs = {}
    for name, pair in (("split", split), ("whole", whole)):
        for method, options in (("ar", {}), ("sd", {"gamma": 3}), ("sd", {"gamma": 2, "tree_width": 2})):
            result = get_method(method)(pair.models, prompt, settings, None, **options)
            outputs[name, method, str(options)] = result.tokens[0]
    assert len(set(map(tuple, outputs.values()))) == 1, outputs
    assert len(outputs["whole", "ar", "{}"]) == 24
