"""Every config file composes, and unknown names fail with Hydra's list of choices."""
import typing

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from harness import CONF  # importing harness registers the config resolvers (pair_name)
from methods import METHODS, find
from tests.conftest import harness_cli
GROUPS = {g: sorted(p.stem for p in (CONF / g).glob("*.yaml")) for g in ("method", "pair", "dataset")}


@pytest.mark.parametrize("path", sorted(CONF.glob("method/**/*.yaml")), ids=lambda p: str(p.relative_to(CONF)))
def test_method_configs_set_only_the_methods_own_options(path):
    """A method config's keys are its generate()'s keyword parameters under the same names; the top-level
    config of each method repeats the function's defaults, so YAML and code cannot drift apart."""
    raw = OmegaConf.to_container(OmegaConf.load(path))
    name = raw.get("name") or OmegaConf.to_container(OmegaConf.load(CONF / "method" / f"{_base(path)}.yaml"))["name"]
    options = find(name).options()
    assert set(raw) - {"name", "tag", "defaults"} <= set(options), f"{path}: keys outside {sorted(options)}"
    if path.parent == CONF / "method":
        assert name in METHODS
        assert {k: v for k, v in raw.items() if k in options} == options, f"{path}: defaults differ from the code's"


def _base(path):
    """The method config a grid entry extends (its defaults list names it)."""
    raw = OmegaConf.to_container(OmegaConf.load(path))
    return next(d for d in raw.get("defaults", []) if isinstance(d, str) and d != "_self_").split("@")[0].split("/")[-1]


# No config of one group interpolates another's (methods' tags read only their own keys), so every method with every
# pair, and every dataset once, compose every combination a user can type.
@pytest.mark.parametrize("method,pair", [(m, p) for m in GROUPS["method"] for p in GROUPS["pair"]])
def test_every_method_composes_with_every_pair(method, pair):
    custom = ["pair.target.id=/models/mine", "pair.draft.id=/models/small"] if pair == "custom" else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"method={method}", f"pair={pair}", *custom])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["method"]["name"] == method and resolved["method"]["tag"]
    assert resolved["pair"]["name"] == ("mine__small" if custom else pair) and resolved["pair"]["target"]["id"]
    for need in find(method).needs:  # a pair without what the method needs fails at load with a clear error
        if resolved["pair"].get(need) is not None and not custom:  # pair=custom has the roles it is given
            assert resolved["pair"][need]["id"]


@pytest.mark.parametrize("dataset", GROUPS["dataset"])
def test_every_dataset_composes(dataset):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"dataset={dataset}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["dataset"]["name"] == dataset and resolved["dataset"]["loader"]
    for key in ("max_new_tokens", "temperature", "top_p", "seed", "n_samples", "warmup", "device", "dtype",
                "output_root"):
        assert key in resolved


def test_method_tag_carries_its_parameters():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["method=sd", "method.gamma=3"])
    assert cfg.method.tag == "sd_M_g3_w1"


def test_each_method_config_is_typed_by_its_functions_signature():
    """The schema Hydra composes each method config onto: name, tag and every option with its annotated type."""
    store = ConfigStore.instance().repo["schema"]["method"]
    for name, method in METHODS.items():
        node = store[f"{name}.yaml"].node
        types = typing.get_type_hints(method.generate)
        assert OmegaConf.get_type(node).__name__ == method.schema().__name__  # a dataclass, not a plain dict
        assert list(node) == ["name", "tag", *method.options()], name
        assert node.name == name and OmegaConf.is_missing(node, "tag")
        for key, default in method.options().items():
            assert node[key] == default and type(node[key]) is types[key], (name, key)


@pytest.mark.parametrize("override, says", [
    ("method.gamma=abc", "Value 'abc' of type 'str' could not be converted to Integer"),
    ("method.confidence=high", "could not be converted to Float"),
    ("method.tree_width=1.5", "could not be converted to Integer"),
    ("method.drafting=[M,T]", "Cannot convert 'list' to string"),
    ("method.gama=3", "Could not override 'method.gama'"),
])
def test_a_method_option_of_the_wrong_type_or_name_fails_while_hydra_composes(override, says):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises(ConfigCompositionException) as err:
            compose("config", overrides=["method=sd", override])
    message = f"{err.value} {err.value.__cause__}"
    assert says in message and ("method." + override.split("=")[0].split(".")[1]) in message, message


def test_typed_options_keep_their_types_through_overrides():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["method=tabed", "method.batched=false", "method.gamma=3"])
        sd = compose("config", overrides=["method=grid/sd_dynamic", "method.confidence=1"])
    assert cfg.method.batched is False and cfg.method.gamma == 3 and cfg.method.tag == "tabed_MT_wgrid_g3_w1_batchedFalse"
    assert isinstance(sd.method.confidence, float) and sd.method.gamma == 20


@pytest.mark.parametrize("group", ["method", "pair", "dataset"])
def test_unknown_name_lists_the_choices(tmp_path, group):
    proc = harness_cli(f"{group}=no-such-thing", cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert f"Could not find '{group}/no-such-thing'" in proc.stderr
    for choice in GROUPS[group]:
        assert choice in proc.stderr


def test_every_method_has_a_pair_that_serves_it():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        pairs = [compose("config", overrides=[f"pair={p}"]).pair for p in GROUPS["pair"]]
        for method in GROUPS["method"]:
            needs = find(compose("config", overrides=[f"method={method}"]).method.name).needs
            assert any(all(k in p for k in needs) for p in pairs), method
