"""Every config file composes, and unknown names fail with Hydra's list of choices."""
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from methods import METHODS, find
from tests.conftest import ROOT, harness_cli

CONF = ROOT / "conf"
GROUPS = {g: sorted(p.stem for p in (CONF / g).glob("*.yaml")) for g in ("method", "pair", "dataset")}


def combos():
    for method in GROUPS["method"]:
        for pair in GROUPS["pair"]:
            for dataset in GROUPS["dataset"]:
                yield method, pair, dataset


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


@pytest.mark.parametrize("method,pair,dataset", list(combos()))
def test_every_combination_composes(method, pair, dataset):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"method={method}", f"pair={pair}", f"dataset={dataset}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["method"]["name"] == method and resolved["method"]["tag"]
    assert resolved["pair"]["name"] == pair and resolved["pair"]["target"]["id"]
    for need in find(method).needs:  # a pair without what the method needs fails at load with a clear error
        if need in resolved["pair"]:
            assert resolved["pair"][need]["id"]
    assert resolved["dataset"]["name"] == dataset and resolved["dataset"]["loader"]
    for key in ("max_new_tokens", "temperature", "top_p", "seed", "n_samples", "warmup", "device", "dtype",
                "output_root"):
        assert key in resolved


def test_method_tag_carries_its_parameters():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["method=sd", "method.gamma=3"])
    assert cfg.method.tag == "sd_M_g3_w1"


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
            m = compose("config", overrides=[f"method={method}"]).method
            needs = [k for k in ("draft", "eagle") if m.get(f"needs_{k}")]
            assert any(all(k in p for k in needs) for p in pairs), method
