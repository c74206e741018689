"""Synthetic visual-world instruction data for tiny-llava, deterministic from a seed.

Images come from `harness.scenes` (shapes, landscapes, charts, documents, image pairs, story frames),
drawn at RENDER pixels (the processor scales them to the model's input size). Every image-grounded
question is answered from the scene's ground truth in a fixed plain style, which is what the target learns
to say. Image-independent prompts (arithmetic word problems, general questions) carry no answer here:
their answer is the frozen language model's own (see harness.train.vlm).

A sample is a plain dict: id, kind, split, images (scene specs, drawn by `scenes.render`), question,
answer (None for text prompts) and, for counting/colour questions, `truth` (the word the answer must
contain) and `options` (the answer space; chance accuracy = 1 / len(options)).

    samples = make_samples("train", 5000, seed=0)    # target training
    python -m harness.train.vlm_data                   # write the held-out eval sets to datasets/vlm-eval/
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from harness import PROJECT_ROOT, scenes
from harness.scenes import article, noun

RENDER = 192
EVAL_DIR = PROJECT_ROOT / "datasets" / "vlm-eval"
NUMBERS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "diamond": "diamonds",
          "hexagon": "hexagons", "tree": "trees", "house": "houses", "car": "cars", "flower": "flowers"}

DESCRIBE = ["Describe this image.", "What do you see in this picture?", "What is in this image?",
            "Describe the image briefly."]
CAPTION = "Describe the image in one sentence."  # the caption prompt of drafting mode C (harness/captioner.py)


def _count(n: int, thing: str, where: str = " in the image") -> str:
    if n == 0:
        return f"There are no {PLURAL.get(thing, thing + 's')}{where}."
    if n == 1:
        return f"There is one {thing}{where}."
    return f"There are {NUMBERS[n]} {PLURAL.get(thing, thing + 's')}{where}."


def _sample(kind, images, question, answer, **extra) -> dict:
    return {"kind": kind, "images": images, "question": question, "answer": answer, **extra}


# --- single images --------------------------------------------------------------------------------------

def _shapes(rng, **kw):
    return scenes.shapes_scene(rng.randrange(1 << 30), RENDER, **kw)[1]


def describe(rng):
    if rng.random() < 0.65:
        spec = _shapes(rng, n=rng.randint(1, 6))
    else:
        spec = scenes.landscape(rng.randrange(1 << 30), RENDER, unusual=rng.random() < 0.2)[1]
    text = scenes.describe(spec).replace("One shapes on", "One shape on")
    return _sample("describe", [spec], rng.choice(DESCRIBE + [CAPTION] * 2), text)


def count(rng):
    spec = _shapes(rng, n=rng.randint(1, 6), colors=rng.choice([None, scenes.SHAPE_COLORS[:5]]))
    objs, mode = spec["objects"], rng.choice(["all", "all", "color", "kind"])
    if mode == "all":
        n = len(objs)
        q = rng.choice(["How many shapes are there in the image?", "How many shapes are in this picture?",
                        "Count the shapes in the image."])
        return _sample("count", [spec], q, _count(n, "shape"), truth=NUMBERS[n], options=NUMBERS[1:7])
    if mode == "color":
        color = rng.choice([o["color"] for o in objs] * 3 + scenes.SHAPE_COLORS[:5])
        n = sum(o["color"] == color for o in objs)
        return _sample("count", [spec], f"How many {color} shapes are there?", _count(n, f"{color} shape", ""),
                       truth=NUMBERS[n], options=NUMBERS[:7])
    kind = rng.choice([o["kind"] for o in objs] * 3 + scenes.SHAPES)
    n = sum(o["kind"] == kind for o in objs)
    return _sample("count", [spec], f"How many {PLURAL[kind]} are in the picture?", _count(n, kind, " in the picture"),
                   truth=NUMBERS[n], options=NUMBERS[:7])


def color(rng):
    if rng.random() < 0.2:
        spec = _shapes(rng, n=rng.randint(1, 4))
        bg = spec["background"]
        return _sample("color", [spec], "What color is the background?", f"The background is {bg}.", truth=bg,
                       options=sorted(scenes.BACKGROUNDS))
    spec = _shapes(rng, n=rng.randint(1, 4), unique=True)
    kinds = [o["kind"] for o in spec["objects"]]
    o = rng.choice([o for o in spec["objects"] if kinds.count(o["kind"]) == 1] or spec["objects"][:1])
    if kinds.count(o["kind"]) > 1:  # no shape kind is unique: ask about one by position instead
        return _sample("color", [spec], f"What color is the {o['kind']} {o['where']}?",
                       f"The {o['kind']} {o['where']} is {o['color']}.", truth=o["color"], options=scenes.SHAPE_COLORS)
    q = rng.choice([f"What color is the {o['kind']}?", f"What is the color of the {o['kind']} in the image?"])
    return _sample("color", [spec], q, f"The {o['kind']} is {o['color']}.", truth=o["color"], options=scenes.SHAPE_COLORS)


def position(rng):
    spec = _shapes(rng, n=rng.randint(1, 4), unique=True)
    o = rng.choice(spec["objects"])
    return _sample("position", [spec], f"Where is the {noun(o)} in the image?", f"The {noun(o)} is {o['where']}.")


def exists(rng):
    spec = _shapes(rng, n=rng.randint(2, 5))
    if rng.random() < 0.5:
        o = rng.choice(spec["objects"])
        thing, yes = noun(o), True
    else:
        thing = f"{rng.choice(scenes.SHAPE_COLORS)} {rng.choice(scenes.SHAPES)}"
        yes = thing in {noun(o) for o in spec["objects"]}
    answer = f"Yes, there is {article(thing)} in the image." if yes else f"No, there is no {thing} in the image."
    return _sample("exists", [spec], f"Is there {article(thing)} in the image?", answer,
                   truth="yes" if yes else "no", options=["yes", "no"])


def read(rng):
    labels = rng.choice(["words", "digits"])
    spec = _shapes(rng, n=rng.randint(1, 3), unique=True, labels=labels)
    o = rng.choice(spec["objects"])
    what = "word" if labels == "words" else "number"
    return _sample("read", [spec], f"What {what} is written on the {noun(o)}?",
                   f"The {what} on the {noun(o)} is {o['label']}.")


def chart(rng):
    spec = scenes.chart(rng.randrange(1 << 30), RENDER)[1]
    k = rng.randrange(4)
    if k == 0:
        return _sample("chart", [spec], "What is the title of this chart?", f"The title of the chart is \"{spec['title']}\".")
    if k == 1:
        q, a = (("What color are the bars in this chart?", "The bars are") if spec["chart"] == "bar" else
                ("What color is the line in this chart?", "The line is"))
        return _sample("chart", [spec], q, f"{a} {spec['color']}.", truth=spec["color"],
                       options=["blue", "green", "orange", "purple", "red"])
    if k == 2:
        return _sample("chart", [spec], "What kind of chart is this?",
                       f"This is a {spec['chart']} chart titled \"{spec['title']}\".", truth=spec["chart"], options=["bar", "line"])
    return _sample("chart", [spec], "Describe this chart.",
                   f"This is a {spec['chart']} chart titled \"{spec['title']}\". It shows {spec['y_label'].lower()} "
                   f"by {spec['x_label'].lower()}, from {spec['categories'][0]} to {spec['categories'][-1]}.")


DOC_NAMES = {"invoice": "an invoice", "memo": "a memo", "notice": "an event notice", "form": "a filled-in form"}


def document(rng):
    spec = scenes.document(rng.randrange(1 << 30), RENDER)[1]
    if rng.random() < 0.5:
        return _sample("document", [spec], "What kind of document is this?", f"This is {DOC_NAMES[spec['doc']]}.",
                       truth=spec["doc"], options=sorted(DOC_NAMES))
    return _sample("document", [spec], "What is the title of this page?", f"The title of this page is \"{spec['title']}\".")


TIMES = {"day": "It is daytime, with a blue sky.", "dusk": "It is sunset, with an orange sky.",
         "night": "It is night, with a dark sky."}


def landscape(rng):
    spec = scenes.landscape(rng.randrange(1 << 30), RENDER, unusual=rng.random() < 0.5)[1]
    k = rng.randrange(4)
    if k == 0:
        return _sample("landscape", [spec], "What time of day is it in this picture?", TIMES[spec["time"]],
                       truth={"day": "daytime", "dusk": "sunset", "night": "night"}[spec["time"]],
                       options=["daytime", "sunset", "night"])
    if k == 1:
        return _sample("landscape", [spec], "What is unusual about this image?",
                       spec["unusual"] or "Nothing is unusual: it is an ordinary outdoor scene.")
    if k == 2:
        return _sample("landscape", [spec], "What covers the ground in this picture?",
                       f"The ground is covered with {spec['ground']}.", truth=spec["ground"], options=["grass", "sand", "snow"])
    thing = rng.choice(["tree", "house", "car", "flower"])
    n = sum(o["kind"] == thing or (thing == "tree" and o["kind"] == "pine") for o in spec["objects"])
    return _sample("count", [spec], f"How many {PLURAL[thing]} are there?", _count(n, thing),
                   truth=NUMBERS[n], options=NUMBERS[:7])


# --- several images -------------------------------------------------------------------------------------

DIFF_Q = {"description": ["What is the difference between the two images?",
                          "The second image is an edited version of the first image. Describe the edit that was made."],
          "instruction": ["Write the editing instruction that turns the first image into the second image."]}


def diff(rng):
    _, meta = scenes.diff_pair(rng.randrange(1 << 30), RENDER, base=rng.choice(["shapes", "shapes", "landscape"]))
    field = rng.choice(["description", "description", "instruction"])
    return _sample("diff", [meta["before"], meta["after"]], rng.choice(DIFF_Q[field]), meta[field])


STORY_Q = ["Write a short story based on this sequence of images, with one sentence for each image.",
           "These frames show a short cartoon story in order. Describe what happens in each frame."]
ORDINAL = ["first", "second", "third", "fourth", "fifth"]


def _unnamed(meta, event: str) -> str:
    """Story names are not in the pictures: say 'the penguin' instead of 'Pip the penguin' / 'Pip'."""
    who = "the kid" if meta["character"] == "kid" else f"the {meta['character']}"
    event = event.replace(f"{meta['name']} the {meta['character']}", who).replace(meta["name"], who)
    return event[0].upper() + event[1:]


def story(rng, n_frames: int | None = None):
    _, meta = scenes.story(rng.randrange(1 << 30), RENDER, n_frames=n_frames or rng.randint(3, 5))
    events = [_unnamed(meta, e) for e in meta["events"]]
    k = rng.randrange(2)
    if k == 0:
        answer = " ".join(events)
    else:
        answer = " ".join(f"In the {ORDINAL[i]} frame, {e[0].lower() + e[1:]}" for i, e in enumerate(events))
    return _sample("story", meta["frames"], STORY_Q[k], answer)


# --- text prompts ---------------------------------------------------------------------------------------

NAMES = ["Mara", "Leo", "Ines", "Tomas", "Aiko", "Ravi", "Greta", "Omar", "Lena", "Sam", "Priya", "Noah", "Zoe", "Kofi"]
ITEMS = [("apples", "basket"), ("pencils", "box"), ("cookies", "jar"), ("marbles", "bag"), ("stickers", "sheet"),
         ("eggs", "carton"), ("books", "shelf"), ("cards", "pack")]
MATH = [
    "{n} has {a} {item}. {n} buys {b} more and then gives {c} to a friend. How many {item} does {n} have now?",
    "Each {box} holds {a} {item}. How many {item} are there in {b} {box}s?",
    "{n} reads {a} pages every day. How many pages does {n} read in {b} days?",
    "A shop sells {item} for ${a} each. {n} buys {b} of them and pays with a ${note} note. How much change does {n} get?",
    "{n} had {total} {item} and shared them equally among {b} friends. How many {item} did each friend get, and how many were left over?",
    "What is {a} times {b}, plus {c}?",
]
# General questions: a subject is asked about in one template; the last quarter of each list is held out.
SUBJECTS = ["volcanoes", "honey bees", "the moon", "rainbows", "the water cycle", "photosynthesis", "magnets",
            "penguins", "the heart", "gravity", "bicycles", "bread", "libraries", "electricity", "deserts",
            "whales", "clouds", "compasses", "trains", "seeds", "coral reefs", "lighthouses", "glaciers", "owls",
            "maps", "thunderstorms", "the alphabet", "soap", "chess", "mushrooms", "tides", "kites"]
GENERAL = ["Explain {s} in simple words.", "Tell me three interesting facts about {s}.",
           "Why do people care about {s}? Answer in a few sentences.", "Write a short poem about {s}.",
           "What would a child find surprising about {s}?", "Give a short explanation of {s} for a school newsletter."]


def math_question(rng) -> str:
    item, box = rng.choice(ITEMS)
    a, b = rng.randint(3, 15), rng.randint(2, 9)
    note = next(v for v in (20, 50, 100, 200) if v >= a * b)
    return rng.choice(MATH).format(n=rng.choice(NAMES), item=item, box=box, a=a, b=b, c=rng.randint(1, a), note=note,
                                   total=a * b + rng.randrange(b))


def general_question(rng, held_out: bool) -> str:
    cut = len(SUBJECTS) * 3 // 4
    subjects = SUBJECTS[cut:] if held_out else SUBJECTS[:cut]
    return rng.choice(GENERAL).format(s=rng.choice(subjects))


def text_prompt(rng, held_out: bool = False) -> dict:
    q = math_question(rng) if rng.random() < 0.4 else general_question(rng, held_out)
    return _sample("text", [], q, None)


def text_image(rng, held_out: bool = False) -> dict:
    """A text question with an unrelated picture attached: the answer is the language model's own."""
    spec = _shapes(rng, n=rng.randint(1, 5)) if rng.random() < 0.6 else scenes.landscape(rng.randrange(1 << 30), RENDER)[1]
    s = text_prompt(rng, held_out)
    return {**s, "kind": "text_image", "images": [spec]}


# --- mixtures -------------------------------------------------------------------------------------------

# Target training mixture (relative weights); the draft trains on the same kinds plus text-only prompts.
MIXTURE = {describe: 16, count: 16, color: 12, position: 5, exists: 7, read: 4, chart: 6, document: 4,
           landscape: 8, diff: 8, story: 7, text_image: 7}
GROUNDED = {describe: 3, count: 4, color: 3, position: 1, exists: 2, chart: 1, document: 1, landscape: 2}


def _rng(split: str, seed: int, i: int) -> random.Random:
    return random.Random(f"tiny-llava/{split}/{seed}/{i}")


def make_samples(split: str, n: int, seed: int = 0, mixture: dict | None = None, text_share: float = 0.0) -> list[dict]:
    """`n` samples of `split` ('train', 'draft', ...): a `text_share` fraction of text-only prompts, the rest
    drawn from `mixture` (kind builder -> weight). Deterministic in (split, seed, i)."""
    mixture = mixture or MIXTURE
    builders, weights = list(mixture), list(mixture.values())
    out = []
    for i in range(n):
        rng = _rng(split, seed, i)
        s = text_prompt(rng) if rng.random() < text_share else rng.choices(builders, weights)[0](rng)
        out.append({"id": f"{split}-{i:05d}", "split": split, **s})
    return out


def eval_sets(seed: int = 0) -> dict[str, list[dict]]:
    """The held-out evaluation sets: `grounded` (one image; the answer depends on it) and `texty` (3-5 image
    story sequences, and text-heavy questions with a picture attached that the answer does not need)."""
    grounded = make_samples("eval-grounded", 40, seed, GROUNDED)
    texty = []
    for i in range(40):  # 20 stories (dataset=vlm-stories) and 20 text questions
        rng = _rng("eval-texty", seed, i)
        if i % 2 == 0:
            s = story(rng, n_frames=3 + (i // 2) % 3)
        else:
            s = text_image(rng, held_out=True)
        texty.append({"id": f"eval-texty-{i:05d}", "split": "eval-texty", **s})
    return {"grounded": grounded, "texty": texty}


def write_eval(out_dir: Path = EVAL_DIR, seed: int = 0) -> None:
    """Spec-Bench question files `vlm-{grounded,texty}.jsonl` + PNG images (harness.data.load_jsonl format)."""
    from harness.bundles import save_png

    for name, samples in eval_sets(seed).items():
        rows = []
        for s in samples:
            paths = []
            for j, spec in enumerate(s["images"]):
                rel = f"images/{name}/{s['id'].rsplit('-', 1)[1]}_{j}.png"
                (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                save_png(scenes.render(spec), out_dir / rel)
                paths.append(rel)
            row = {"question_id": s["id"], "category": s["kind"], "turns": [s["question"]], "images": paths}
            if s.get("answer"):
                row["reference"] = s["answer"]
            rows.append(row)
        (out_dir / f"vlm-{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"wrote {len(rows)} samples to {out_dir / f'vlm-{name}.jsonl'}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=EVAL_DIR)
    write_eval(ap.parse_args(argv).out)


if __name__ == "__main__":
    main()
