"""The offline bundles: fresh (regenerating gives the committed jsonl), loadable, images that open,
and the scene renderer behind them: deterministic, and its metadata agrees with the drawing."""
from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from harness import bundles
from harness.data import load_jsonl
from harness import scenes

NAMES = ["llava_w", "docvqa", "pope", "mmvet", "iedit", "magicbrush", "spot_the_diff", "pororo_sv", "vist",
         "nq", "gsm8k", "mt_bench", "humaneval", "alpaca", "cnn_dm", "specbench"]
MIN_IMAGES = {"llava_w": 1, "docvqa": 1, "pope": 1, "mmvet": 1, "iedit": 2, "magicbrush": 2, "spot_the_diff": 2,
              "pororo_sv": 3, "vist": 3}
COMMITTED = bundles.OUT_DIR


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundled")
    bundles.write_bundles(out)
    return out


def test_regenerated_bundles_match_committed(fresh):
    assert list(bundles.BUILDERS) == NAMES
    for name in NAMES:
        assert (fresh / f"{name}.jsonl").read_bytes() == (COMMITTED / f"{name}.jsonl").read_bytes(), \
            f"{name}: committed bundle is stale; run `python -m harness.bundles`"
    listing = lambda root: sorted(p.relative_to(root).as_posix() for p in (root / "images").rglob("*.png"))
    assert listing(fresh) == listing(COMMITTED)


def test_cli_writes_to_out(tmp_path):
    bundles.main(["--out", str(tmp_path), "nq", "pope"])
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == ["nq.jsonl", "pope.jsonl"]
    assert (tmp_path / "nq.jsonl").read_bytes() == (COMMITTED / "nq.jsonl").read_bytes()


@pytest.mark.parametrize("name", NAMES)
def test_committed_bundle_loads(name):
    samples = load_jsonl(str(COMMITTED / f"{name}.jsonl"), name)
    assert len(samples) >= 5
    for s in samples:
        assert s.id.startswith(f"{name}-") and s.category
        if name not in MIN_IMAGES:
            assert not s.images
            continue
        assert len(s.images) >= MIN_IMAGES[name], s.id
        # Interleave-Bench sets carry one marker per image in the question (its real layout); single-image sets none
        assert s.turns[0].count("<image>") == (len(s.images) if MIN_IMAGES[name] > 1 else 0), s.id
        for path in s.images:
            with Image.open(path) as im:
                im.load()
                assert im.size == (336, 336)
    if name == "mt_bench":
        assert all(len(s.turns) == 2 for s in samples)
    if name == "gsm8k":
        assert all(re.search(r"\n#### \d+$", s.reference) for s in samples)
    if name == "nq":
        assert all(s.turns[0] == s.turns[0].lower() and not s.turns[0].endswith("?") for s in samples)
    if name == "specbench":
        assert Counter(s.category for s in samples) == {c: 2 for c in
                                                        ("translation", "summarization", "qa", "math_reasoning", "rag")}


def test_scenes_are_deterministic():
    for make in (lambda: scenes.shapes_scene(5, labels="digits"), lambda: scenes.landscape(5, unusual=True),
                 lambda: scenes.chart(5), lambda: scenes.document(5)):
        (a, meta_a), (b, meta_b) = make(), make()
        assert a.tobytes() == b.tobytes() and meta_a == meta_b
        assert scenes.render(meta_a).tobytes() == a.tobytes()  # the metadata is the recipe
    (a0, a1), m = scenes.diff_pair(5, base="landscape")
    (b0, b1), _ = scenes.diff_pair(5, base="landscape")
    assert a0.tobytes() == b0.tobytes() and a1.tobytes() == b1.tobytes() and a0.tobytes() != a1.tobytes()
    assert m["description"] and m["instruction"]
    frames, m = scenes.story(5, n_frames=3)
    assert len(frames) == len(m["events"]) == len(m["frames"]) == 3
    assert scenes.shapes_scene(5, size=224)[0].size == (224, 224)


def _components(mask: np.ndarray) -> int:
    """Number of 4-connected regions of True pixels."""
    h, w = mask.shape
    grid, seen, n = mask.tolist(), set(), 0
    for y, x in zip(*np.nonzero(mask)):
        if (y, x) in seen:
            continue
        n, stack = n + 1, [(int(y), int(x))]
        seen.add(stack[0])
        while stack:
            cy, cx = stack.pop()
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < h and 0 <= nx < w and grid[ny][nx] and (ny, nx) not in seen:
                    seen.add((ny, nx))
                    stack.append((ny, nx))
    return n


@pytest.mark.parametrize("seed", [0, 1])
def test_shapes_metadata_matches_drawing(seed):
    img, meta = scenes.shapes_scene(seed, n=5)
    assert meta["n_objects"] == len(meta["objects"]) == sum(meta["counts"].values()) == 5
    pixels = np.asarray(img)
    background = np.array(scenes.BACKGROUNDS[meta["background"]])
    assert _components((pixels != background).any(axis=2)) == 5  # five separate shapes are drawn
    for o in meta["objects"]:  # each shape's centre has its colour
        assert tuple(pixels[o["y"], o["x"]]) == scenes.COLORS[o["color"]], o
