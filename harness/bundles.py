"""Write the offline bundles: a few samples per dataset, so every dataset config also runs with no hub.

Everything here is written for this project: the questions, texts and code stubs below, and the images,
drawn by `harness.scenes` (reference answers come from the scenes' ground truth). Nothing is copied
from the real datasets; the samples only imitate each task's style. Output is deterministic:

    python -m harness.bundles              # rewrite datasets/bundled/<name>.jsonl and images/<name>/*.png
    python -m harness.bundles --out DIR    # write elsewhere (the tests compare that with the committed files)

Each line is Spec-Bench's question format (read by `harness.data.load_jsonl`): `turns` holds the raw
question exactly as the real dataset's question column would; the loader adds any task prompt.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from harness import RESOURCES
from harness import scenes

OUT_DIR = RESOURCES / "datasets" / "bundled"
BUILDERS = {}  # name -> function(Bundle), in output order


def bundle(fn):
    BUILDERS[fn.__name__] = fn
    return fn


def save_png(img: Image.Image, path: Path) -> None:
    """Small PNG: palette mode, losslessly when the image has <= 256 colours, else 64 colours (anti-aliased text)."""
    rgb = np.asarray(img.convert("RGB")).astype(np.uint32)
    colors, index = np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2], return_inverse=True)
    if len(colors) <= 256:
        pal = Image.frombytes("P", img.size, index.astype(np.uint8).tobytes())
        pal.putpalette(np.stack([colors >> 16, colors >> 8 & 255, colors & 255], 1).astype(np.uint8).tobytes())
    else:
        pal = img.convert("RGB").quantize(64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    pal.save(path, optimize=True)


class Bundle:
    """The rows of one dataset, and the folder for its images."""

    def __init__(self, out_dir: Path, name: str):
        self.out_dir, self.name, self.rows = out_dir, name, []
        self.image_dir = out_dir / "images" / name

    def image(self, img: Image.Image, stem: str) -> str:
        self.image_dir.mkdir(parents=True, exist_ok=True)
        save_png(img, self.image_dir / f"{stem}.png")
        return f"images/{self.name}/{stem}.png"

    def images(self, imgs, stem: str) -> list[str]:
        return [self.image(img, f"{stem}_{j}") for j, img in enumerate(imgs)]

    def add(self, turns, category: str, images=(), reference: str | None = None) -> None:
        row = {"question_id": f"{self.name}-{len(self.rows) + 1:02d}", "category": category,
               "turns": [turns] if isinstance(turns, str) else list(turns)}
        if images:
            row["images"] = [images] if isinstance(images, str) else list(images)
        if reference is not None:
            row["reference"] = reference
        self.rows.append(row)

    @property
    def next_stem(self) -> str:
        return f"{len(self.rows) + 1:02d}"


# --- image sets ----------------------------------------------------------------------------------------------

@bundle
def llava_w(b: Bundle):
    """LLaVA-Bench (in the wild) style: open questions about varied scenes; categories conv/detail/complex."""
    img, m = scenes.landscape(101, time="day", ground="grass", unusual=None)
    b.add("Describe this image in detail.", "detail", b.image(img, b.next_stem), scenes.describe(m))
    img, m = scenes.landscape(102, time="day", unusual="fish")
    b.add("What is unusual about this image?", "complex", b.image(img, b.next_stem), m["unusual"])
    img, m = scenes.shapes_scene(103, n=5, unique=True)
    b.add("What shapes can you see in this picture, and what color is each one?", "conv", b.image(img, b.next_stem),
          scenes.describe(m))
    img, m = scenes.landscape(104, time="dusk", ground="sand")
    b.add("What time of day does this picture show, and how can you tell?", "complex", b.image(img, b.next_stem),
          "It is sunset or early evening: the sky is orange and the sun is still out.")
    img, m = scenes.chart(105, kind="line", theme=1)
    cats, vals = m["categories"], m["values"]
    top = cats[vals.index(max(vals))]
    b.add("What does this chart show? Summarize the main trend.", "detail", b.image(img, b.next_stem),
          f"A line chart titled '{m['title']}' ({m['y_label']} per {m['x_label'].lower()}): it starts at {vals[0]} "
          f"in {cats[0]}, peaks at {max(vals)} in {top} and ends at {vals[-1]} in {cats[-1]}.")


@bundle
def docvqa(b: Bundle):
    """DocVQA style: reading questions about a document page, with short extractive answers."""
    img, m = scenes.document(201, kind="notice")
    b.add("What is the title of this page?", "layout", b.image(img, b.next_stem), m["title"])
    img, m = scenes.document(202, kind="invoice")
    b.add("What is the total amount on this invoice?", "table/list", b.image(img, b.next_stem), m["total"])
    img, m = scenes.document(203, kind="memo")
    b.add("Who is the memo from?", "form", b.image(img, b.next_stem), m["fields"]["From"])
    img, m = scenes.document(204, kind="form")
    b.add("What is the phone number on the form?", "form", b.image(img, b.next_stem), m["fields"]["Phone"])
    img, m = scenes.document(205, kind="invoice")
    item, qty, _ = m["table"]["rows"][1]
    b.add(f"How many units of {item.lower()} were ordered?", "table/list", b.image(img, b.next_stem), qty)


@bundle
def pope(b: Bundle):
    """POPE style: yes/no questions on whether an object is in the image (random/popular/adversarial)."""
    img, m = scenes.shapes_scene(301, n=6, unique=True)
    b.add(f"Is there {scenes.article(scenes.noun(m['objects'][2]))} in the image?", "random", b.image(img, b.next_stem),
          "yes")
    img, m = scenes.shapes_scene(302, n=5, unique=True)
    present = {scenes.noun(o) for o in m["objects"]}
    kind = m["objects"][0]["kind"]  # adversarial: a shape that is there, in a colour that is not
    color = next(c for c in scenes.SHAPE_COLORS if f"{c} {kind}" not in present)
    b.add(f"Is there a {color} {kind} in the image?", "adversarial", b.image(img, b.next_stem), "no")
    img, m = scenes.landscape(303, time="day", kinds=["house", "car", "tree", "flower"], n=4)
    kind = next(k for k in ("car", "house", "flower") if k in m["counts"])
    b.add(f"Is there a {kind} in the image?", "popular", b.image(img, b.next_stem), "yes")
    img, m = scenes.landscape(304, time="day", kinds=["tree", "pine", "flower"], n=4)
    b.add("Is there a car in the image?", "popular", b.image(img, b.next_stem), "no")
    img, m = scenes.shapes_scene(305, n=4, kinds=["circle", "square", "triangle"])
    b.add("Is there a star in the image?", "random", b.image(img, b.next_stem), "no")


@bundle
def mmvet(b: Bundle):
    """MM-Vet style: mixed capabilities (rec, ocr, spat, math) with short answers."""
    img, m = scenes.shapes_scene(401, n=7, kinds=["circle", "triangle", "star"])
    kind = max(sorted(m["counts"]), key=m["counts"].get)
    b.add(f"How many {kind}s are there in the image?", "rec", b.image(img, b.next_stem), str(m["counts"][kind]))
    img, m = scenes.shapes_scene(402, n=4, labels="digits", unique=True)
    o = m["objects"][1]
    b.add(f"What number is written on the {scenes.noun(o)}?", "ocr,rec", b.image(img, b.next_stem), o["label"])
    img, m = scenes.chart(403, kind="bar", theme=2)
    cat = m["categories"][2]
    b.add(f"According to the chart, how many visitors came on {cat}?", "ocr", b.image(img, b.next_stem),
          str(m["values"][2]))
    img, m = scenes.chart(404, kind="bar", theme=0)
    vals = m["values"]
    b.add("How much higher is the tallest bar than the shortest bar in this chart?", "ocr,math",
          b.image(img, b.next_stem), f"{max(vals)} - {min(vals)} = {max(vals) - min(vals)}")
    img, m = scenes.shapes_scene(405, n=4, labels="words", unique=True)
    wheres = [o["where"] for o in m["objects"]]
    o = next(o for o in m["objects"] if wheres.count(o["where"]) == 1)  # the only shape in its part of the image
    b.add(f"Which word is written on the shape {o['where']}?", "ocr,spat", b.image(img, b.next_stem), o["label"])


def placed(question: str, n_images: int) -> str:
    """An Interleave-Bench question: its text carries one `<image>` marker per image (TABED passes the question as
    the whole user turn, images at the markers). Where the real rows place them is not published in any source we
    could read; the bundles put them first, one a line, where LLaVA's template would put images anyway."""
    return "<image>\n" * n_images + question


def _pair(b: Bundle, seed: int, base: str, change: str):
    (before, after), m = scenes.diff_pair(seed, base=base, change=change)
    return b.images([before, after], b.next_stem), m


@bundle
def iedit(b: Bundle):
    """Image editing (Interleave-Bench style): an original and its edit; describe the edit."""
    q = "The second image is an edited version of the first image. Describe the edit that was made."
    for j, change in enumerate(["sky", "added", "removed", "recolored", "moved"]):
        paths, m = _pair(b, 501 + j, "landscape", change)
        b.add(placed(q, len(paths)), "iedit", paths, m["description"])


@bundle
def magicbrush(b: Bundle):
    """MagicBrush style: a source image and its edited result; write the edit instruction."""
    q = "Write the editing instruction that turns the first image into the second image."
    for j, change in enumerate(["recolored", "added", "removed", "moved", "recolored"]):
        paths, m = _pair(b, 601 + j, "shapes" if j % 2 == 0 else "landscape", change)
        b.add(placed(q, len(paths)), "magicbrush", paths, m["instruction"])


@bundle
def spot_the_diff(b: Bundle):
    """Spot-the-Diff style: two nearly identical scenes; say what differs."""
    for j, change in enumerate(["added", "moved", "removed", "recolored", "added"]):
        paths, m = _pair(b, 701 + j, "landscape" if j != 3 else "shapes", change)
        b.add(placed("What is the difference between the two images?", len(paths)), "spot_the_diff", paths,
              m["description"])


@bundle
def pororo_sv(b: Bundle):
    """PororoSV style: frames of a cartoon story, in order; tell and continue the story."""
    q = ("These frames show a short cartoon story in order. Describe what happens in each frame, "
         "then write one more sentence to continue the story.")
    plots = [("find", "penguin", 4), ("weather", "cat", 5), ("build", "robot", 3), ("weather", "penguin", 4),
             ("find", "cat", 5)]
    for j, (plot, character, n) in enumerate(plots):
        frames, m = scenes.story(801 + j, n_frames=n, plot=plot, character=character)
        b.add(placed(q, len(frames)), "pororo_sv", b.images(frames, b.next_stem), " ".join(m["events"]))


@bundle
def vist(b: Bundle):
    """VIST style: a sequence of photos from one outing; write a story, one sentence per image."""
    q = "Write a short story based on this sequence of images, with one sentence for each image."
    for j, (plot, n) in enumerate([("find", 5), ("build", 4), ("weather", 3), ("find", 3), ("build", 5)]):
        frames, m = scenes.story(901 + j, n_frames=n, plot=plot, character="kid")
        b.add(placed(q, len(frames)), "vist", b.images(frames, b.next_stem), " ".join(m["events"]))


# --- text sets -----------------------------------------------------------------------------------------------

@bundle
def nq(b: Bundle):
    """Natural Questions (open) style: lowercase factoid questions, no question mark, short answers."""
    for q, a in [("which river flows through the city of vienna", "the Danube"),
                 ("who painted the ceiling of the sistine chapel", "Michelangelo"),
                 ("what is the boiling point of water in fahrenheit", "212 degrees"),
                 ("how many players does a volleyball team have on the court", "six"),
                 ("what is the longest bone in the human body", "the femur")]:
        b.add(q, "nq", reference=a)


GSM8K = [
    ("Mara bakes 4 trays of muffins with 12 muffins on each tray. She sells 30 muffins at the market and gives "
     "6 to her neighbors. How many muffins does she have left?",
     "Mara bakes 4 * 12 = 48 muffins.\nShe sells or gives away 30 + 6 = 36 muffins.\n"
     "She has 48 - 36 = 12 muffins left.\n#### 12"),
    ("A bus ticket costs $3 and a train ticket costs $5. Leo takes the bus 6 times and the train 4 times in one "
     "week. How much does he spend on tickets that week?",
     "The bus costs 6 * 3 = $18.\nThe train costs 4 * 5 = $20.\nHe spends 18 + 20 = $38.\n#### 38"),
    ("A garden has 5 rows of tomato plants with 8 plants in each row. Each plant gives 3 tomatoes. Half of the "
     "tomatoes are used for sauce. How many tomatoes are used for sauce?",
     "There are 5 * 8 = 40 plants.\nThey give 40 * 3 = 120 tomatoes.\nHalf of them is 120 / 2 = 60.\n#### 60"),
    ("Jonas reads 15 pages on Monday, twice as many pages on Tuesday, and 10 fewer pages than Tuesday on "
     "Wednesday. How many pages does he read in the three days?",
     "On Tuesday he reads 15 * 2 = 30 pages.\nOn Wednesday he reads 30 - 10 = 20 pages.\n"
     "In total he reads 15 + 30 + 20 = 65 pages.\n#### 65"),
    ("A water tank holds 240 liters when full. It is three quarters full, and then a family uses 50 liters. "
     "How many liters are left in the tank?",
     "The tank has 240 * 3 / 4 = 180 liters.\nAfter using 50 liters, 180 - 50 = 130 liters are left.\n#### 130"),
]


@bundle
def gsm8k(b: Bundle):
    """GSM8K style: grade-school word problems; the reference is a worked answer ending in '#### N'."""
    for q, a in GSM8K:
        b.add(q, "gsm8k", reference=a)


@bundle
def mt_bench(b: Bundle):
    """MT-Bench style: two turns, the second a follow-up on the first answer."""
    for category, turns in [
        ("writing", ["Write a short blog post about a weekend trip to a mountain lake, with tips for first-time "
                     "visitors.", "Rewrite your post as a poem of exactly four lines."]),
        ("roleplay", ["Pretend you are a ship's captain in the 1800s. Describe your morning routine at sea.",
                      "A young sailor asks you how to get through their first storm. What do you tell them?"]),
        ("reasoning", ["Ana, Ben and Cleo sit in a row of three chairs. Ana is not at either end, and Ben sits "
                       "to the left of Ana. Who sits on the right end?",
                       "If Cleo and Ben swap chairs, who sits in the middle?"]),
        ("math", ["What is the sum of all even numbers from 1 to 50?",
                  "Now find the sum of all odd numbers from 1 to 50, and explain the shortcut you used."]),
        ("coding", ["Write a Python function that checks whether a string is a palindrome, ignoring spaces "
                    "and letter case.", "Change it so that it also ignores punctuation, and add two test cases."]),
    ]:
        b.add(turns, category)


HUMANEVAL = [
    ('def count_vowels(text: str) -> int:\n'
     '    """Return how many vowels (a, e, i, o, u, in either case) are in text.\n'
     '    >>> count_vowels("Banana")\n    3\n    >>> count_vowels("sky")\n    0\n    """\n',
     '    return sum(ch in "aeiouAEIOU" for ch in text)\n'),
    ('from typing import List\n\n\ndef running_max(numbers: List[int]) -> List[int]:\n'
     '    """Return a list whose i-th item is the largest of numbers[0..i].\n'
     '    >>> running_max([3, 1, 4, 1, 5])\n    [3, 3, 4, 4, 5]\n    >>> running_max([])\n    []\n    """\n',
     '    out = []\n    for n in numbers:\n        out.append(n if not out else max(out[-1], n))\n    return out\n'),
    ('def is_balanced(brackets: str) -> bool:\n'
     '    """brackets is a string of "(", ")", "[" and "]". Return True if every opening bracket is closed\n'
     '    by the matching bracket in the right order.\n'
     '    >>> is_balanced("([])()")\n    True\n    >>> is_balanced("([)]")\n    False\n    """\n',
     '    pairs, stack = {")": "(", "]": "["}, []\n    for ch in brackets:\n        if ch in pairs:\n'
     '            if not stack or stack.pop() != pairs[ch]:\n                return False\n'
     '        else:\n            stack.append(ch)\n    return not stack\n'),
    ('def rotate_left(items: list, k: int) -> list:\n'
     '    """Return items rotated k places to the left; k may be larger than the list.\n'
     '    >>> rotate_left([1, 2, 3, 4], 1)\n    [2, 3, 4, 1]\n    >>> rotate_left([1, 2, 3], 5)\n    [3, 1, 2]\n'
     '    """\n',
     '    if not items:\n        return []\n    k %= len(items)\n    return items[k:] + items[:k]\n'),
    ('def digit_sum_until_single(n: int) -> int:\n'
     '    """Add up the digits of the non-negative integer n, then the digits of the result, and so on,\n'
     '    until a single digit is left; return it.\n'
     '    >>> digit_sum_until_single(9875)\n    2\n    >>> digit_sum_until_single(7)\n    7\n    """\n',
     '    while n >= 10:\n        n = sum(int(d) for d in str(n))\n    return n\n'),
]


@bundle
def humaneval(b: Bundle):
    """HumanEval style: a function signature and docstring to complete; the reference is a solution body."""
    for prompt, solution in HUMANEVAL:
        b.add(prompt, "humaneval", reference=solution)


@bundle
def alpaca(b: Bundle):
    """Alpaca style: an instruction, with its input (if any) after a blank line."""
    for prompt, ref in [
        ("Give three tips for keeping houseplants healthy.",
         "Water only when the top of the soil is dry, give each plant the light it needs, and wipe dust off the leaves."),
        ("Rewrite the sentence in the passive voice.\n\nThe committee approved the new budget on Tuesday.",
         "The new budget was approved by the committee on Tuesday."),
        ("Classify each animal as a mammal, a bird or a reptile.\n\nowl, lizard, dolphin, sparrow, tortoise",
         "Mammal: dolphin. Birds: owl, sparrow. Reptiles: lizard, tortoise."),
        ("Write a haiku about a foggy harbor.", None),
        ("Explain the difference between weather and climate in simple terms.",
         "Weather is what the air is doing today; climate is the usual weather of a place over many years."),
    ]:
        b.add(prompt, "alpaca", reference=ref)


CNN_DM = [
    ("A small public library in the river town of Alderford has started lending tools along with books. Since "
     "March, residents with a library card can borrow drills, ladders, sewing machines and garden tools for up "
     "to a week at no cost. The idea came from a volunteer, retired carpenter Tomas Rieke, who noticed that many "
     "neighbours bought expensive tools for a single job. \"Most drills are used for about fifteen minutes in "
     "their whole life,\" Rieke said. The library now holds more than 200 tools, most of them donated. Staff say "
     "the collection has brought in visitors who had not used the library in years, and book loans rose by a "
     "tenth over the spring. The town council plans to add a repair evening each month, where volunteers will "
     "help people fix broken lamps, bicycles and toasters.",
     "Alderford library now lends more than 200 donated tools for free.\nThe idea came from retired carpenter "
     "Tomas Rieke.\nBook loans rose and a monthly repair evening is planned."),
    ("Firefighters in the hill district of Kestrel Bay rescued a family of five ducklings from a storm drain on "
     "Tuesday morning after a passer-by heard them calling under a grate. The crew lifted the heavy cover and "
     "used a small net to bring the birds up one by one while their mother waited on the pavement. \"She did "
     "not move an inch the whole time,\" said crew leader Amira Solberg. The rescue took about forty minutes "
     "and briefly closed one lane of traffic. The ducks were then walked, with a police car following slowly, "
     "to a pond in the nearby park. The city says it will fit finer grates on drains close to the park before "
     "next spring's nesting season.",
     "Firefighters rescued five ducklings from a storm drain in Kestrel Bay.\nThe family was escorted to a "
     "park pond.\nThe city will fit finer drain grates near the park."),
    ("A secondary school in Brenmoor has replaced its Friday afternoon lessons with a weekly project hour in "
     "which students repair, build or grow something for the town. In the first term, pupils fixed 80 donated "
     "bicycles for a refugee support group, built benches for two bus stops and planted a herb garden behind "
     "the community hall. Head teacher Lena Okafor said attendance on Fridays rose sharply. \"Students who "
     "struggle in class are often the ones leading these projects,\" she said. Some parents worried that "
     "exam subjects would suffer, but the school says test results held steady. Three nearby schools have "
     "asked to visit and may try the scheme next year.",
     "Brenmoor school swapped Friday lessons for a weekly community project hour.\nPupils repaired 80 bikes "
     "and built benches.\nFriday attendance rose and results held steady."),
    ("Rail services between Portwick and Hallam were suspended for most of Sunday after strong winds brought "
     "down trees across the line in three places. About 6,000 passengers were affected, and replacement buses "
     "ran every half hour from the central station. Engineers worked through the night to clear the tracks "
     "and check the overhead cables. The rail operator said trains would run to a reduced timetable on "
     "Monday morning and return to normal by the afternoon. Forecasters expect calmer weather for the rest "
     "of the week, though heavy rain is possible on Thursday.",
     "Fallen trees stopped Portwick-Hallam trains for most of Sunday.\nAbout 6,000 passengers used "
     "replacement buses.\nA reduced service runs Monday, normal by the afternoon."),
    ("A pair of amateur astronomers from the village of Stillwater have spotted a comet that was not listed "
     "in any catalogue, using a telescope they built in a garden shed. Maya Fenn and her father Owen took a "
     "series of photos over three nights in October and noticed a faint smudge moving against the stars. "
     "They sent their images to an observatory, which confirmed the find a week later. The comet is far too "
     "dim to see without a telescope and will pass its closest point to the Sun in about two years. "
     "\"We mostly wanted to photograph the Moon,\" Maya said. The observatory has invited the pair to "
     "name the object's discovery report.",
     "A father and daughter in Stillwater found a new comet with a home-built telescope.\nAn observatory "
     "confirmed the discovery a week later.\nThe comet is too faint to see with the naked eye."),
]


@bundle
def cnn_dm(b: Bundle):
    """CNN/DailyMail style: a short news article (the loader adds the summarization instruction);
    the reference is a few highlight sentences."""
    for article, highlights in CNN_DM:
        b.add(article, "cnn_dm", reference=highlights)


@bundle
def specbench(b: Bundle):
    """Spec-Bench style: two questions per category (translation, summarization, qa, math_reasoning, rag)."""
    for category, q, ref in [
        ("translation", "Translate German to English: Der Zug nach Hamburg hatte heute Morgen zwanzig Minuten "
         "Verspätung, weil ein Baum auf den Gleisen lag.",
         "The train to Hamburg was twenty minutes late this morning because a tree was lying on the tracks."),
        ("translation", "Translate German to English: Unsere Nachbarin hat im Garten einen kleinen Teich "
         "angelegt, und jetzt kommen jeden Abend Frösche.",
         "Our neighbor has built a small pond in her garden, and now frogs come every evening."),
        ("summarization", "Summarize the following article in two sentences.\n\n" + CNN_DM[3][0], None),
        ("summarization", "Summarize the following text in one sentence.\n\nThe town market will move from the "
         "square to the old bus depot for six weeks while the square is repaved. Stalls will keep their usual "
         "days and hours, and a free shuttle will run from the square every twenty minutes. The council says "
         "the new paving will be flatter and easier for wheelchairs and prams.",
         "The market moves to the old bus depot for six weeks during repaving, with a free shuttle."),
        ("qa", "Why do onions make people cry when they are cut?",
         "Cutting onions releases a sulfur compound that irritates the eyes, which then make tears to wash it away."),
        ("qa", "What is the difference between a lake and a pond?",
         "There is no strict rule; lakes are usually larger and deeper, deep enough that sunlight does not reach the bottom."),
        ("math_reasoning", "A rectangle is 3 times as long as it is wide, and its perimeter is 48 cm. What is its "
         "area?", "Width w, length 3w: 2(w + 3w) = 48, so w = 6 and the length is 18; area = 108 square cm."),
        ("math_reasoning", "A shop sells notebooks at 4 for $6. Ines needs 10 notebooks and has $14. Does she have "
         "enough money? Explain.", "One notebook costs $1.50, so 10 cost $15; $14 is not enough, she is $1 short."),
        ("rag", "Passage 1: The Lindholm ferry crosses the strait four times a day in summer and twice a day in "
         "winter.\nPassage 2: Tickets for the Lindholm ferry can be bought on board or at the harbor office, "
         "which opens at 7 am.\nPassage 3: Bicycles travel free on the ferry, but cars need a reservation.\n\n"
         "Question: How often does the Lindholm ferry cross in winter, and do bicycles cost extra?",
         "Twice a day in winter; bicycles travel free."),
        ("rag", "Passage 1: The Orrin Museum is closed on Mondays and open from 10 am to 5 pm on other days.\n"
         "Passage 2: Entry to the Orrin Museum is free for children under 12; adults pay 8 euros.\nPassage 3: "
         "The museum's cafe is on the top floor and looks over the river.\n\nQuestion: How much would two adults "
         "and one 9-year-old pay to enter the museum on a Tuesday?",
         "16 euros: 8 euros for each adult, and the child enters free."),
    ]:
        b.add(q, category, reference=ref)


# --- writing -------------------------------------------------------------------------------------------------

def write_bundles(out_dir: Path | str = OUT_DIR, names=None) -> dict[str, Path]:
    """Write the jsonl (and images) of each named dataset (default: all) into out_dir; returns name -> jsonl path.
    A dataset's old images are removed first, so the folder holds exactly what its jsonl references."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in names or BUILDERS:
        b = Bundle(out_dir, name)
        for old in sorted(b.image_dir.glob("*.png")) if b.image_dir.exists() else []:
            old.unlink()
        BUILDERS[name](b)
        path = out_dir / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in b.rows), encoding="utf-8")
        written[name] = path
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(OUT_DIR), help="output folder (default: datasets/bundled)")
    ap.add_argument("names", nargs="*", help=f"datasets to write (default: all): {', '.join(BUILDERS)}")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.names) - set(BUILDERS))
    if unknown:
        ap.error(f"unknown dataset(s) {', '.join(unknown)}; valid choices: {', '.join(BUILDERS)}")
    for name, path in write_bundles(args.out, args.names).items():
        print(f"{name:14s} {sum(1 for _ in open(path))} samples -> {path}")


if __name__ == "__main__":
    main()
