"""Procedural images with ground truth, drawn with PIL; deterministic for a seed.

Every generator builds a *spec* (a plain JSON-able dict) and draws it with `render(spec)`, so the spec is
both the recipe and the ground truth that question/answer generators read:

    img, meta = shapes_scene(seed=3)         # coloured shapes, optionally with digits/words on them
    img, meta = landscape(seed=4)            # sky, ground, sun, trees, houses, cars ... maybe something odd
    img, meta = chart(seed=5)                # bar or line chart: title, labelled axes, values
    img, meta = document(seed=6)             # a page: title, fields, paragraphs, maybe a table
    (a, b), meta = diff_pair(seed=7)         # two scenes that differ in exactly one thing
    frames, meta = story(seed=8, n_frames=4) # a tiny story told in 3-5 frames

Nothing is read from disk: the only font is PIL's default (`ImageFont.load_default(size=...)`, Pillow >= 10.1).
The default size is 336x336 (CLIP-336); every length scales with `size`. Text layout (wrapping, what fits)
is decided by character counts, never by font metrics, so the metadata does not depend on the Pillow version.
"""
from __future__ import annotations

import copy
import math
import random
import textwrap
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

SIZE = 336

COLORS = {  # name -> RGB; every object colour is one of these
    "red": (220, 50, 47), "orange": (245, 140, 30), "yellow": (240, 205, 40), "green": (60, 160, 70),
    "blue": (45, 95, 215), "purple": (135, 70, 185), "pink": (240, 125, 180), "brown": (135, 90, 50),
    "black": (35, 35, 35), "gray": (135, 135, 140), "white": (250, 250, 250),
}
SHAPE_COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "gray"]
BACKGROUNDS = {"white": (250, 250, 250), "cream": (246, 240, 222), "light gray": (222, 224, 228),
               "light blue": (212, 230, 246)}
SHAPES = ["circle", "square", "triangle", "star", "diamond", "hexagon"]
WORDS = ["SUN", "MAP", "KEY", "JAM", "FOX", "ZIP", "OWL", "CUP", "INK", "BUS", "HAT", "PEN"]

SKY = {"day": (150, 205, 245), "dusk": (240, 165, 110), "night": (28, 32, 72)}
GROUND = {"grass": (110, 185, 90), "sand": (226, 202, 142), "snow": (238, 242, 248)}
HORIZON = 0.58  # fraction of the height where the sky ends


@lru_cache(maxsize=None)
def font(px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(6, int(px)))


def _darker(rgb, f=0.6):
    return tuple(int(c * f) for c in rgb)


def _ink_for(rgb):  # black or white, whichever reads better on rgb
    return (255, 255, 255) if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 150 else (20, 20, 20)


def _points(n, x, y, r, rot=-90.0, inner=None):
    """Corners of a regular n-gon (or, with `inner`, an n-pointed star) centred on (x, y)."""
    k = 2 * n if inner else n
    return [(x + (r if not inner or i % 2 == 0 else r * inner) * math.cos(math.radians(rot + 360 * i / k)),
             y + (r if not inner or i % 2 == 0 else r * inner) * math.sin(math.radians(rot + 360 * i / k)))
            for i in range(k)]


def article(phrase: str) -> str:
    """'an apple', 'a red ball'."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _number_word(n: int) -> str:
    return ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"][n] if n <= 10 else str(n)


# --- sprites: one draw function per object kind; (x, y) is the centre, r the half-size ----------------------

def _shape(d, o):
    x, y, r, fill = o["x"], o["y"], o["r"], COLORS[o["color"]]
    line = dict(fill=fill, outline=_darker(fill), width=max(1, r // 12))
    kind = o["kind"]
    if kind == "circle":
        d.ellipse((x - r, y - r, x + r, y + r), **line)
    elif kind == "square":
        s = int(r * 0.85)
        d.rectangle((x - s, y - s, x + s, y + s), **line)
    elif kind == "triangle":
        d.polygon(_points(3, x, y + r * 0.2, r * 1.1), **line)
    elif kind == "star":
        d.polygon(_points(5, x, y + r * 0.08, r * 1.05, inner=0.48), **line)
    elif kind == "diamond":
        d.polygon(_points(4, x, y, r), **line)
    elif kind == "hexagon":
        d.polygon(_points(6, x, y, r, rot=0), **line)
    if o.get("label"):
        text = o["label"]
        px = r * (0.95 if len(text) == 1 else 0.6 if len(text) <= 3 else 0.45)
        if kind in ("triangle", "star"):
            px *= 0.75
        dy = r * 0.3 if kind == "triangle" else 0
        d.text((x, y + dy), text, fill=_ink_for(fill), font=font(px), anchor="mm")


def _sun(d, o):
    x, y, r, c = o["x"], o["y"], o["r"], COLORS[o["color"]]
    for i in range(12):
        a = math.radians(30 * i)
        d.line((x + r * 1.15 * math.cos(a), y + r * 1.15 * math.sin(a),
                x + r * 1.5 * math.cos(a), y + r * 1.5 * math.sin(a)), fill=c, width=max(2, r // 8))
    d.ellipse((x - r, y - r, x + r, y + r), fill=c)


def _moon(d, o):
    x, y, r = o["x"], o["y"], o["r"]
    d.ellipse((x - r, y - r, x + r, y + r), fill=(245, 240, 205) if o["color"] == "white" else COLORS[o["color"]])
    for fx, fy, fr in ((-0.35, -0.2, 0.2), (0.3, 0.25, 0.15), (0.1, -0.45, 0.1)):
        d.ellipse((x + fx * r - fr * r, y + fy * r - fr * r, x + fx * r + fr * r, y + fy * r + fr * r), fill=(215, 210, 180))


def _cloud(d, o):
    x, y, r, c = o["x"], o["y"], o["r"], COLORS[o["color"]]
    for fx, fy, fr in ((-0.55, 0.15, 0.45), (0.55, 0.15, 0.45), (0, -0.1, 0.6), (0, 0.25, 0.4)):
        d.ellipse((x + (fx - fr) * r, y + (fy - fr) * r, x + (fx + fr) * r, y + (fy + fr) * r), fill=c)


def _tree(d, o):
    x, y, r = o["x"], o["y"], o["r"]
    d.rectangle((x - r * 0.15, y, x + r * 0.15, y + r), fill=COLORS["brown"])
    if o["kind"] == "pine":
        for k in range(3):
            d.polygon(_points(3, x, y - r * 0.1 + k * r * 0.35 - r * 0.35, r * (0.55 + 0.15 * k)), fill=COLORS[o["color"]])
    else:
        d.ellipse((x - r * 0.75, y - r, x + r * 0.75, y + r * 0.3), fill=COLORS[o["color"]], outline=_darker(COLORS[o["color"]]))


def _house(d, o):
    x, y, r, c = o["x"], o["y"], o["r"], COLORS[o["color"]]
    d.rectangle((x - r * 0.8, y - r * 0.3, x + r * 0.8, y + r), fill=c, outline=_darker(c))
    d.polygon([(x - r, y - r * 0.25), (x + r, y - r * 0.25), (x, y - r)], fill=(150, 50, 45))
    d.rectangle((x - r * 0.18, y + r * 0.4, x + r * 0.18, y + r), fill=(95, 60, 35))
    for fx in (-0.5, 0.5):
        d.rectangle((x + (fx - 0.15) * r, y, x + (fx + 0.15) * r, y + r * 0.3), fill=(235, 240, 170), outline=_darker(c))


def _car(d, o):
    x, y, r, c = o["x"], o["y"], o["r"], COLORS[o["color"]]
    d.rounded_rectangle((x - r, y - r * 0.15, x + r, y + r * 0.45), radius=r * 0.15, fill=c, outline=_darker(c))
    d.polygon([(x - r * 0.55, y - r * 0.15), (x - r * 0.35, y - r * 0.55), (x + r * 0.35, y - r * 0.55),
               (x + r * 0.6, y - r * 0.15)], fill=_darker(c, 0.8))
    d.rectangle((x - r * 0.3, y - r * 0.45, x + r * 0.3, y - r * 0.2), fill=(200, 225, 240))
    for fx in (-0.55, 0.55):
        d.ellipse((x + fx * r - r * 0.25, y + r * 0.25, x + fx * r + r * 0.25, y + r * 0.75), fill=(30, 30, 30))


def _flower(d, o):
    x, y, r, c = o["x"], o["y"], o["r"], COLORS[o["color"]]
    d.line((x, y, x, y + r), fill=COLORS["green"], width=max(2, r // 6))
    for i in range(5):
        a = math.radians(72 * i - 90)
        px, py = x + r * 0.4 * math.cos(a), y + r * 0.4 * math.sin(a)
        d.ellipse((px - r * 0.3, py - r * 0.3, px + r * 0.3, py + r * 0.3), fill=c)
    d.ellipse((x - r * 0.2, y - r * 0.2, x + r * 0.2, y + r * 0.2), fill=COLORS["yellow"] if c != COLORS["yellow"] else COLORS["brown"])


def _fish(d, o):
    x, y, r, c = o["x"], o["y"], o["r"], COLORS[o["color"]]
    d.polygon([(x + r * 0.5, y), (x + r, y - r * 0.45), (x + r, y + r * 0.45)], fill=_darker(c, 0.8))
    d.ellipse((x - r, y - r * 0.45, x + r * 0.6, y + r * 0.45), fill=c)
    d.ellipse((x - r * 0.65, y - r * 0.15, x - r * 0.45, y + r * 0.05), fill=(20, 20, 20))


def _ball(d, o):
    x, y, r, c = o["x"], o["y"], o["r"], COLORS[o["color"]]
    d.ellipse((x - r, y - r, x + r, y + r), fill=c, outline=_darker(c))
    d.ellipse((x - r * 0.55, y - r * 0.55, x - r * 0.15, y - r * 0.15), fill=(255, 255, 255))


def _apple(d, o):
    x, y, r = o["x"], o["y"], o["r"]
    d.ellipse((x - r, y - r * 0.8, x + r, y + r), fill=COLORS[o["color"]])
    d.line((x, y - r * 0.7, x + r * 0.1, y - r * 1.2), fill=COLORS["brown"], width=max(2, r // 5))
    d.ellipse((x + r * 0.1, y - r * 1.15, x + r * 0.6, y - r * 0.85), fill=COLORS["green"])


def _block(d, o):
    x, y, r, c = o["x"], o["y"], o["r"], COLORS[o["color"]]
    d.rectangle((x - r, y - r, x + r, y + r), fill=c, outline=_darker(c), width=2)


def _rainbow(d, o):
    x, y, r = o["x"], o["y"], o["r"]
    for i, name in enumerate(["red", "orange", "yellow", "green", "blue", "purple"]):
        rr = r - i * r * 0.08
        d.arc((x - rr, y - rr, x + rr, y + rr), 180, 360, fill=COLORS[name], width=max(2, int(r * 0.08)))


def _eyes(d, x, y, r, gap=0.25, size=0.1, white=True):
    for fx in (-gap, gap):
        if white:
            d.ellipse((x + (fx - size * 1.6) * r, y - size * 1.6 * r, x + (fx + size * 1.6) * r, y + size * 1.6 * r), fill=(255, 255, 255))
        d.ellipse((x + (fx - size) * r, y - size * r, x + (fx + size) * r, y + size * r), fill=(15, 15, 15))


def _character(d, o):
    """A cartoon figure; `kind` is penguin, robot, cat or kid, `color` its main colour."""
    x, y, r, c, kind = o["x"], o["y"], o["r"], COLORS[o["color"]], o["kind"]
    orange = COLORS["orange"]
    if kind == "penguin":
        d.ellipse((x - r * 0.3, y + r * 0.85, x - r * 0.05, y + r), fill=orange)
        d.ellipse((x + r * 0.05, y + r * 0.85, x + r * 0.3, y + r), fill=orange)
        d.ellipse((x - r * 0.55, y - r, x + r * 0.55, y + r * 0.95), fill=c)
        d.ellipse((x - r * 0.38, y - r * 0.3, x + r * 0.38, y + r * 0.85), fill=(250, 250, 250))
        _eyes(d, x, y - r * 0.55, r, gap=0.18, size=0.07)
        d.polygon([(x - r * 0.12, y - r * 0.4), (x + r * 0.12, y - r * 0.4), (x, y - r * 0.22)], fill=orange)
    elif kind == "robot":
        d.line((x, y - r, x, y - r * 0.7), fill=(60, 60, 60), width=max(2, r // 12))
        d.ellipse((x - r * 0.08, y - r * 1.08, x + r * 0.08, y - r * 0.92), fill=COLORS["red"])
        d.rectangle((x - r * 0.35, y - r * 0.7, x + r * 0.35, y - r * 0.2), fill=c, outline=_darker(c))
        d.rectangle((x - r * 0.5, y - r * 0.15, x + r * 0.5, y + r * 0.6), fill=c, outline=_darker(c))
        d.rectangle((x - r * 0.35, y + r * 0.6, x - r * 0.15, y + r), fill=_darker(c))
        d.rectangle((x + r * 0.15, y + r * 0.6, x + r * 0.35, y + r), fill=_darker(c))
        _eyes(d, x, y - r * 0.47, r, gap=0.15, size=0.07)
    elif kind == "cat":
        d.line((x + r * 0.4, y + r * 0.6, x + r * 0.85, y + r * 0.1), fill=c, width=max(3, r // 7))
        d.ellipse((x - r * 0.45, y - r * 0.1, x + r * 0.45, y + r), fill=c)
        d.polygon([(x - r * 0.45, y - r * 0.55), (x - r * 0.35, y - r * 1.0), (x - r * 0.1, y - r * 0.7)], fill=c)
        d.polygon([(x + r * 0.45, y - r * 0.55), (x + r * 0.35, y - r * 1.0), (x + r * 0.1, y - r * 0.7)], fill=c)
        d.ellipse((x - r * 0.45, y - r * 0.85, x + r * 0.45, y - r * 0.05), fill=c)
        _eyes(d, x, y - r * 0.5, r, gap=0.18, size=0.07)
    else:  # kid
        skin = (240, 200, 160)
        d.line((x - r * 0.15, y + r * 0.4, x - r * 0.2, y + r), fill=(50, 50, 90), width=max(3, r // 8))
        d.line((x + r * 0.15, y + r * 0.4, x + r * 0.2, y + r), fill=(50, 50, 90), width=max(3, r // 8))
        d.rounded_rectangle((x - r * 0.35, y - r * 0.35, x + r * 0.35, y + r * 0.45), radius=r * 0.1, fill=c)
        d.ellipse((x - r * 0.3, y - r * 0.95, x + r * 0.3, y - r * 0.35), fill=skin)
        d.chord((x - r * 0.32, y - r * 1.0, x + r * 0.32, y - r * 0.5), 180, 360, fill=(90, 55, 30))
        _eyes(d, x, y - r * 0.62, r, gap=0.12, size=0.05, white=False)
    if o.get("holding"):  # a small item in its hand
        h = dict(kind=o["holding"]["kind"], color=o["holding"]["color"], x=x + r * 0.7, y=y + r * 0.2, r=max(4, r // 4))
        SPRITES[h["kind"]](d, h)


SPRITES = {**{k: _shape for k in SHAPES}, "sun": _sun, "moon": _moon, "cloud": _cloud, "tree": _tree, "pine": _tree,
           "house": _house, "car": _car, "flower": _flower, "fish": _fish, "ball": _ball, "apple": _apple,
           "block": _block, "rainbow": _rainbow, **{k: _character for k in ("penguin", "robot", "cat", "kid")}}
CHARACTERS = ["penguin", "robot", "cat", "kid"]
SKY_KINDS = {"sun", "moon", "cloud", "rainbow"}
DEFAULT_COLOR = {"sun": "yellow", "moon": "white", "cloud": "white", "tree": "green", "pine": "green",
                 "apple": "red", "rainbow": "red"}  # colours a noun leaves unsaid


def noun(o: dict) -> str:
    """How a description names an object: 'red circle', 'blue car', 'tree', 'Pip the penguin', 'green sun'."""
    if o.get("name"):
        return o["name"] if o["kind"] == "kid" else f"{o['name']} the {o['kind']}"
    color, kind = o.get("color"), {"pine": "pine tree"}.get(o["kind"], o["kind"])
    return kind if color is None or DEFAULT_COLOR.get(o["kind"]) == color else f"{color} {kind}"


def where(o: dict, spec: dict) -> str:
    """Position phrase: a 3x3 grid for shapes scenes, left/middle/right for landscapes."""
    s = spec["size"]
    col = min(2, int(3 * o["x"] / s))
    if spec["kind"] == "landscape":
        return ["on the left", "in the middle", "on the right"][col]
    row = min(2, int(3 * o["y"] / s))
    return [["in the top left", "at the top", "in the top right"], ["on the left", "in the center", "on the right"],
            ["in the bottom left", "at the bottom", "in the bottom right"]][row][col]


# --- charts and documents ------------------------------------------------------------------------------------

def _draw_chart(img, d, spec):
    S = spec["size"]
    k = S / SIZE
    left, right, top, bottom = 52 * k, S - 14 * k, 38 * k, S - 54 * k
    d.text((S / 2, 16 * k), spec["title"], fill=(20, 20, 20), font=font(16 * k), anchor="mm")
    ymax = spec["y_max"]
    for i in range(5):  # gridlines and y ticks
        v = ymax * i // 4
        yy = bottom - (bottom - top) * v / ymax
        d.line((left, yy, right, yy), fill=(225, 225, 225))
        d.text((left - 5 * k, yy), str(v), fill=(40, 40, 40), font=font(11 * k), anchor="rm")
    d.line((left, top, left, bottom), fill=(40, 40, 40), width=2)
    d.line((left, bottom, right, bottom), fill=(40, 40, 40), width=2)
    n = len(spec["values"])
    slot = (right - left) / n
    color = COLORS[spec["color"]]
    pts = []
    for i, (cat, v) in enumerate(zip(spec["categories"], spec["values"])):
        cx = left + slot * (i + 0.5)
        yy = bottom - (bottom - top) * v / ymax
        if spec["chart"] == "bar":
            d.rectangle((cx - slot * 0.3, yy, cx + slot * 0.3, bottom - 1), fill=color)
        pts.append((cx, yy))
        d.text((cx, bottom + 10 * k), cat, fill=(40, 40, 40), font=font(11 * k), anchor="mm")
    if spec["chart"] == "line":
        d.line(pts, fill=color, width=max(2, int(3 * k)))
        for cx, yy in pts:
            d.ellipse((cx - 4 * k, yy - 4 * k, cx + 4 * k, yy + 4 * k), fill=color)
    for (cx, yy), v in zip(pts, spec["values"]):
        d.text((cx, yy - 9 * k), str(v), fill=(20, 20, 20), font=font(11 * k), anchor="mm")
    d.text(((left + right) / 2, S - 22 * k), spec["x_label"], fill=(20, 20, 20), font=font(12 * k), anchor="mm")
    label = Image.new("RGB", (int(bottom - top), int(18 * k)), (255, 255, 255))  # rotated y-axis label
    ImageDraw.Draw(label).text((label.width / 2, label.height / 2), spec["y_label"], fill=(20, 20, 20),
                               font=font(12 * k), anchor="mm")
    img.paste(label.rotate(90, expand=True), (int(4 * k), int(top)))


def _draw_document(img, d, spec):
    """Lays the page out top to bottom: title, fields, paragraphs, table, footer; `spec['lines']` is what fits."""
    k = spec["size"] / SIZE
    ink, blue = (25, 25, 30), (30, 50, 150)
    x0, y, header_done = 18 * k, 14 * k, False
    for kind, text in spec["lines"]:
        if kind == "title":
            d.text((spec["size"] / 2, y + 10 * k), text, fill=ink, font=font(18 * k), anchor="mm")
            y += 24 * k
            d.line((x0, y, spec["size"] - x0, y), fill=(120, 120, 120), width=1)
            y += 8 * k
        elif kind == "field":
            label, value = text.split(": ", 1)
            d.text((x0, y), label + ":", fill=ink, font=font(12 * k))
            d.text((x0 + 100 * k, y), value, fill=blue, font=font(12 * k))
            y += 18 * k
        elif kind == "text":
            d.text((x0, y), text, fill=ink, font=font(12 * k))
            y += 17 * k
        elif kind == "gap":
            y += 8 * k
        elif kind == "row":  # table row, cells separated by ' | '; the first row is the header
            h, cx = 19 * k, x0
            if not header_done:
                d.rectangle((x0, y, spec["size"] - x0, y + h), fill=(225, 228, 235))
                header_done = True
            for cell, w in zip(text.split(" | "), (0.46, 0.18, 0.36)):
                w *= spec["size"] - 2 * x0
                d.rectangle((cx, y, cx + w, y + h), outline=(110, 110, 110))
                d.text((cx + 4 * k, y + h / 2), cell, fill=ink, font=font(12 * k), anchor="lm")
                cx += w
            y += h
        elif kind == "total":
            d.text((spec["size"] - x0, y + 5 * k), text, fill=ink, font=font(13 * k), anchor="ra")
            y += 20 * k


# --- rendering -----------------------------------------------------------------------------------------------

def render(spec: dict) -> Image.Image:
    """Draw a spec (as returned in any generator's metadata) into a new RGB image."""
    S = spec["size"]
    if spec["kind"] == "landscape":
        img = Image.new("RGB", (S, S), GROUND[spec["ground"]])
        d = ImageDraw.Draw(img)
        d.rectangle((0, 0, S, int(S * HORIZON)), fill=SKY[spec["time"]])
        if spec["time"] == "night":
            rng = random.Random(7)
            for _ in range(25):
                sx, sy = rng.uniform(0, S), rng.uniform(0, S * HORIZON * 0.9)
                d.point([(sx, sy), (sx + 1, sy), (sx, sy + 1)], fill=(250, 250, 210))
    elif spec["kind"] == "shapes":
        img = Image.new("RGB", (S, S), BACKGROUNDS[spec["background"]])
        d = ImageDraw.Draw(img)
    else:
        img = Image.new("RGB", (S, S), (255, 255, 255) if spec["kind"] == "chart" else (252, 251, 247))
        d = ImageDraw.Draw(img)
        (_draw_chart if spec["kind"] == "chart" else _draw_document)(img, d, spec)
        return img
    for o in sorted(spec["objects"], key=lambda o: (o["kind"] not in SKY_KINDS, o["y"] + o["r"])):  # back to front
        SPRITES[o["kind"]](d, o)
    if spec.get("rain"):
        rng = random.Random(11)
        for _ in range(70):
            rx, ry = rng.uniform(0, S), rng.uniform(S * 0.2, S)
            d.line((rx, ry, rx - 3, ry + 9), fill=(70, 110, 190), width=1)
    return img


def _place(rng, spec, r, kind, avoid=None, tries=300):
    """A free (x, y) for an object of half-size r (no overlap with the others), or None."""
    S, k = spec["size"], spec["size"] / SIZE
    for _ in range(tries):
        x = rng.uniform(r + 6 * k, S - r - 6 * k)
        if spec["kind"] == "shapes":
            y = rng.uniform(r + 6 * k, S - r - 6 * k)
        elif kind in SKY_KINDS or spec.get("flying") == kind:
            y = rng.uniform(r * 1.5 + 4 * k, S * HORIZON - r * 1.6)
        else:  # stands on the ground: its base somewhere in the lower band
            y = rng.uniform(S * HORIZON + 8 * k, S - 8 * k) - r
        if avoid and avoid(x, y):
            continue
        if all(math.hypot(x - o["x"], y - o["y"]) > r + o["r"] + 4 * k for o in spec["objects"]):
            return round(x), round(y)
    return None


def annotate(spec: dict) -> dict:
    """Fill in the derived ground truth: each object's position phrase, counts by kind and by colour."""
    spec["n_objects"] = len(spec.get("objects", []))
    spec["counts"], spec["colors"] = {}, {}
    for o in spec.get("objects", []):
        o["where"] = where(o, spec)
        spec["counts"][o["kind"]] = spec["counts"].get(o["kind"], 0) + 1
        if o.get("color"):
            spec["colors"][o["color"]] = spec["colors"].get(o["color"], 0) + 1
    return spec


def shapes_scene(seed: int, size: int = SIZE, n: int | None = None, labels: str | None = None,
                 unique: bool = False, kinds=None, colors=None):
    """Coloured shapes on a plain background. `labels`: None, 'digits' or 'words' drawn on every shape;
    `unique`: no two shapes share colour and kind (so 'the red circle' names one shape)."""
    rng = random.Random(seed)
    k = size / SIZE
    spec = {"kind": "shapes", "size": size, "background": rng.choice(sorted(BACKGROUNDS)), "objects": []}
    n = n if n is not None else rng.randint(3, 8)
    r_max = 46 if n <= 4 else 38 if n <= 7 else 30
    used = set()
    while len(spec["objects"]) < n:
        kind, color = rng.choice(kinds or SHAPES), rng.choice(colors or SHAPE_COLORS)
        if unique and (kind, color) in used:
            continue
        r = round(rng.uniform(0.6, 1.0) * r_max * k)
        if labels:
            r = max(r, round(24 * k))
        xy = _place(rng, spec, r, kind)
        if xy is None:
            r_max *= 0.9
            continue
        o = {"kind": kind, "color": color, "x": xy[0], "y": xy[1], "r": r}
        if labels == "digits":
            o["label"] = str(rng.randint(0, 9))
        elif labels == "words":
            o["label"] = rng.choice(WORDS)
        spec["objects"].append(o)
        used.add((kind, color))
    annotate(spec)
    return render(spec), spec


UNUSUAL = ["fish", "sun_color", "two_suns", "car"]  # what can be odd about a landscape
KIND_COLORS = {"house": ["red", "yellow", "blue", "white", "orange"], "car": ["red", "blue", "yellow", "black", "white"],
               "flower": ["red", "pink", "purple", "yellow", "white"], "ball": ["red", "blue", "yellow", "green"]}


def landscape(seed: int, size: int = SIZE, time: str | None = None, ground: str | None = None,
              unusual: str | bool | None = None, n: int | None = None, kinds=None):
    """Sky over ground with a sun or moon, clouds and 2-6 things (trees, houses, cars, flowers ...).
    `unusual`: True (any) or one of UNUSUAL adds one odd thing, described in meta['unusual']."""
    rng = random.Random(seed)
    k = size / SIZE
    spec = {"kind": "landscape", "size": size, "time": time or rng.choice(["day", "day", "dusk", "night"]),
            "ground": ground or rng.choice(["grass", "grass", "sand", "snow"]), "objects": [], "unusual": None}
    odd = rng.choice(UNUSUAL) if unusual is True else (unusual or None)
    sky = "moon" if spec["time"] == "night" else "sun"
    sun_color = rng.choice(["blue", "green", "purple"]) if odd == "sun_color" else ("white" if sky == "moon" else "yellow")
    for _ in range(2 if odd == "two_suns" else 1):
        xy = _place(rng, spec, round(22 * k), sky)
        spec["objects"].append({"kind": sky, "color": sun_color, "x": xy[0], "y": xy[1], "r": round(22 * k)})
    for _ in range(rng.randint(0, 2)):
        r = round(rng.uniform(20, 30) * k)
        if xy := _place(rng, spec, r, "cloud"):
            spec["objects"].append({"kind": "cloud", "color": "white", "x": xy[0], "y": xy[1], "r": r})
    pool = kinds or ["tree", "tree", "pine", "house", "car", "flower", "flower"]
    for _ in range(n if n is not None else rng.randint(2, 6)):
        kind = rng.choice(pool)
        r = round({"house": 42, "car": 32, "flower": 15}.get(kind, 38) * k * rng.uniform(0.85, 1.15))
        if xy := _place(rng, spec, r, kind):
            spec["objects"].append({"kind": kind, "color": rng.choice(KIND_COLORS.get(kind, ["green"])),
                                    "x": xy[0], "y": xy[1], "r": r})
    if odd in ("fish", "car"):
        spec["flying"] = odd
        r = round(24 * k)
        xy = _place(rng, spec, r, odd)
        spec["objects"].append({"kind": odd, "color": rng.choice(["orange", "red", "blue"]), "x": xy[0], "y": xy[1], "r": r})
    spec["unusual"] = {None: None, "fish": "A fish is floating in the sky.", "car": "A car is flying in the sky.",
                       "two_suns": f"There are two {'moons' if sky == 'moon' else 'suns'} in the sky.",
                       "sun_color": f"The {sky} is {sun_color}."}[odd]
    annotate(spec)
    return render(spec), spec


def describe(spec: dict) -> str:
    """One or two plain sentences describing a shapes scene or a landscape."""
    groups: dict[str, int] = {}
    for o in spec["objects"]:
        groups[noun(o)] = groups.get(noun(o), 0) + 1
    parts = [article(g) if c == 1 else f"{_number_word(c)} {g}s" for g, c in groups.items()]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if spec["kind"] == "shapes":
        return f"{_number_word(len(spec['objects'])).capitalize()} shapes on a {spec['background']} background: {listed}."
    when = {"day": "A sunny day", "dusk": "A sunset", "night": "A night"}[spec["time"]]
    text = f"{when} scene with {spec['ground']} on the ground, showing {listed}."
    return text + (" " + spec["unusual"] if spec.get("unusual") else "")


CHART_THEMES = [  # title, x label, y label, categories, value range
    ("Boxes of Fruit Sold", "Fruit", "Boxes", ["Apples", "Pears", "Plums", "Grapes", "Figs"], (10, 95)),
    ("Rainfall by Month", "Month", "Rain in mm", ["Jan", "Feb", "Mar", "Apr", "May", "Jun"], (15, 120)),
    ("Library Visitors", "Day", "Visitors", ["Mon", "Tue", "Wed", "Thu", "Fri"], (40, 190)),
    ("Books Read This Term", "Student", "Books", ["Ava", "Ben", "Cai", "Dina"], (2, 18)),
    ("Afternoon Temperature", "Hour", "Degrees C", ["12h", "13h", "14h", "15h", "16h", "17h"], (14, 31)),
    ("Bikes Rented", "Week", "Bikes", ["W1", "W2", "W3", "W4", "W5"], (20, 80)),
]


def chart(seed: int, size: int = SIZE, kind: str | None = None, theme: int | None = None):
    """A bar or line chart with a title, labelled axes and each value written on it.
    Bar values are distinct, so 'the highest bar' is well defined."""
    rng = random.Random(seed)
    title, x_label, y_label, cats, (lo, hi) = CHART_THEMES[theme if theme is not None else rng.randrange(len(CHART_THEMES))]
    kind = kind or rng.choice(["bar", "line"])
    if kind == "bar":
        values = rng.sample(range(lo, hi + 1), len(cats))
    else:  # a random walk reads like a trend
        values = [rng.randint(lo, (lo + hi) // 2)]
        for _ in cats[1:]:
            values.append(min(hi, max(lo, values[-1] + rng.randint(-(hi - lo) // 5, (hi - lo) // 4))))
    y_max = next(m for m in (20, 40, 60, 80, 100, 120, 160, 200, 240, 400) if m >= max(values) * 1.1)
    spec = {"kind": "chart", "size": size, "chart": kind, "title": title, "x_label": x_label, "y_label": y_label,
            "categories": cats, "values": values, "y_max": y_max,
            "color": rng.choice(["blue", "green", "orange", "purple", "red"])}
    return render(spec), spec


# --- documents -----------------------------------------------------------------------------------------------

FIRST = ["Ana", "Bruno", "Carla", "Dev", "Elif", "Femi", "Greta", "Hiro", "Ines", "Jonas", "Kira", "Luis", "Mina",
         "Nils", "Olu", "Pia", "Quinn", "Rosa", "Sami", "Tara"]
LAST = ["Alder", "Brook", "Castell", "Dunmore", "Ellery", "Fenwick", "Garrow", "Hollis", "Ivers", "Jessop",
        "Kettering", "Lowell", "Marsh", "Norcott", "Oakes", "Penrose"]
PLACES = ["Maple Lane Bakery", "Harbor Street Clinic", "Blue Finch Books", "Riverside Hardware", "Copper Kettle Cafe",
          "Hillcrest Print Shop", "Willow Garden Supply", "Lantern Bike Repair"]
STREETS = ["Elm Road", "Quarry Lane", "Mill Street", "Orchard Way", "Station Road", "Beacon Hill"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
ITEMS = [("Printer paper (box)", 24), ("Blue ink pens", 6), ("Desk lamp", 38), ("Flower seeds", 4), ("Garden gloves", 9),
         ("Bread flour (5 kg)", 12), ("Bike chain", 18), ("Notebook, lined", 3), ("Coffee beans (1 kg)", 21),
         ("Paint roller", 7), ("Extension cord", 15), ("Watering can", 11)]
EVENTS = [("Community Garden Meeting", "the garden shed", "plan the spring planting and share out the new plots"),
          ("Book Swap Evening", "the reading room", "trade used books and hear short readings by neighbours"),
          ("Bike Safety Workshop", "the school yard", "check brakes and lights and practise hand signals"),
          ("Neighbourhood Clean-up Day", "the town square", "collect litter along the river path and the park"),
          ("Winter Food Drive", "the library hall", "sort donated food into boxes for local families")]


def _person(rng):
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _date(rng):
    return f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {rng.randint(2019, 2024)}"


def document(seed: int, size: int = SIZE, kind: str | None = None):
    """A document page: 'invoice' (table and total), 'memo' (header fields and text), 'notice' (event text)
    or 'form' (filled-in fields). Ground truth: title, fields, paragraphs, table rows, total, and `lines`
    (exactly what is drawn, top to bottom)."""
    rng = random.Random(seed)
    kind = kind or rng.choice(["invoice", "memo", "notice", "form"])
    spec = {"kind": "document", "size": size, "doc": kind, "title": "", "fields": {}, "paragraphs": [], "table": None,
            "total": None}
    if kind == "invoice":
        shop = rng.choice(PLACES)
        spec["title"] = f"{shop} - Invoice"
        spec["fields"] = {"Invoice no.": str(rng.randint(1000, 9999)), "Date": _date(rng), "Bill to": _person(rng)}
        rows = []
        for name, price in rng.sample(ITEMS, rng.randint(3, 4)):
            qty = rng.randint(1, 6)
            rows.append([name, str(qty), f"${qty * price}.00"])
        spec["table"] = {"header": ["Item", "Qty", "Amount"], "rows": rows}
        spec["total"] = f"${sum(int(r[2][1:-3]) for r in rows)}.00"
        spec["paragraphs"] = [f"Thank you for shopping at {shop}. Payment is due within {rng.choice([14, 30])} days."]
    elif kind == "memo":
        topic = rng.choice(["Office move", "New opening hours", "Printer repairs", "Staff picnic", "Parking changes"])
        spec["title"] = "Memo"
        spec["fields"] = {"To": f"All staff, {rng.choice(PLACES)}", "From": _person(rng), "Date": _date(rng), "Subject": topic}
        day = rng.choice(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"])
        spec["paragraphs"] = [
            f"Please note that the {topic.lower()} will take effect from next {day}. "
            f"Questions can be sent to the front desk before noon.",
            f"The team leads will share a short update at the {rng.choice(['weekly', 'monthly'])} meeting. Thank you for your patience."]
    elif kind == "notice":
        title, place, purpose = rng.choice(EVENTS)
        time_ = rng.choice(["9:00 am", "10:30 am", "11:00 am", "1:00 pm", "2:30 pm", "4:00 pm", "6:30 pm"])
        spec["title"] = title
        spec["fields"] = {"Date": _date(rng), "Time": time_, "Place": place.capitalize()}
        spec["paragraphs"] = [f"Everyone is welcome to join us at {place} to {purpose}.",
                              f"Please bring {rng.choice(['a friend', 'a water bottle', 'warm clothes', 'a notebook'])}. "
                              f"Contact {_person(rng)} with any questions."]
    else:
        spec["title"] = rng.choice(["Library Card Application", "Sports Club Sign-up", "Volunteer Registration"])
        spec["fields"] = {"Name": _person(rng), "Address": f"{rng.randint(2, 98)} {rng.choice(STREETS)}",
                          "Phone": f"555-{rng.randint(1000, 9999)}", "Date of birth": f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {rng.randint(1950, 2005)}",
                          "Signed on": _date(rng)}
        spec["paragraphs"] = ["I confirm that the details above are correct."]
    # layout by character counts, in 336-pixel units: what does not fit is left out (and out of the metadata)
    wrap, budget = int((SIZE - 36) / (0.56 * 12)), SIZE - 28
    lines, used = [("title", spec["title"])], 32
    for key, value in spec["fields"].items():
        lines.append(("field", f"{key}: {value}"))
        used += 18
    if spec["table"]:
        lines += [("gap", "")] + [("row", " | ".join(row)) for row in [spec["table"]["header"]] + spec["table"]["rows"]]
        lines.append(("total", f"Total: {spec['total']}"))
        used += 8 + 19 * (1 + len(spec["table"]["rows"])) + 20
    kept = []
    for par in spec["paragraphs"]:
        wrapped = textwrap.wrap(par, wrap)
        if used + 8 + 17 * len(wrapped) > budget:
            break
        lines += [("gap", "")] + [("text", t) for t in wrapped]
        used += 8 + 17 * len(wrapped)
        kept.append(par)
    spec["paragraphs"], spec["lines"] = kept, lines
    spec["text"] = "\n".join(t for kind_, t in lines if kind_ != "gap")
    return render(spec), spec


# --- pairs and sequences -------------------------------------------------------------------------------------

CHANGES = ["moved", "recolored", "added", "removed"]


def diff_pair(seed: int, size: int = SIZE, base: str = "shapes", change: str | None = None):
    """Two images that differ in exactly one thing. `base`: 'shapes' or 'landscape'; `change`: one of CHANGES,
    or 'sky' (landscape only: day turns to dusk). meta: change, description ('The red circle moved from the
    top left to the bottom right.'), instruction ('Move the red circle to the bottom right.'), before, after."""
    rng = random.Random(seed)
    k = size / SIZE
    if base == "shapes":
        _, before = shapes_scene(rng.randrange(1 << 30), size, n=rng.randint(3, 6), unique=True)
    else:
        _, before = landscape(rng.randrange(1 << 30), size, time="day", n=rng.randint(3, 5))
    change = change or rng.choice(CHANGES + (["sky"] if base == "landscape" else []))
    after = copy.deepcopy(before)
    nouns = [noun(o) for o in before["objects"]]
    named = [i for i, o in enumerate(before["objects"])  # objects one noun picks out, that may change
             if nouns.count(nouns[i]) == 1 and o["kind"] not in ("sun", "moon")]
    if base == "landscape" and change == "recolored":
        named = [i for i in named if before["objects"][i]["kind"] in KIND_COLORS]
    if not named and change != "sky":
        change = "added"
    i = rng.choice(named) if named else None
    if change == "moved":
        o = after["objects"].pop(i)
        old = where(o, before)
        xy = _place(rng, after, o["r"], o["kind"], avoid=lambda x, y: where({"x": x, "y": y}, before) == old)
        if xy is None:  # no room elsewhere: fall back to removing it
            change = "removed"
        else:
            o["x"], o["y"] = xy
            after["objects"].insert(i, o)
            new = where(o, after)
            desc = f"The {noun(o)} moved from {_bare(old)} to {_bare(new)}."
            instr = f"Move the {noun(o)} to {_bare(new)}."
    if change == "recolored":
        o = after["objects"][i]
        options = KIND_COLORS.get(o["kind"], SHAPE_COLORS)
        o["color"] = rng.choice([c for c in options if c != o["color"] and
                                 all(noun(p) != noun({**o, "color": c}) for p in after["objects"])])
        old = before["objects"][i]
        desc = f"The {noun(old)} {where(old, before)} changed color from {old['color']} to {o['color']}."
        instr = f"Change the color of the {noun(old)} to {o['color']}."
    if change == "removed":
        o = before["objects"][i]
        after = copy.deepcopy(before)
        after["objects"].pop(i)
        desc = f"The {noun(o)} {where(o, before)} was removed."
        instr = f"Remove the {noun(o)}."
    if change == "added":
        for _ in range(100):
            if base == "shapes":
                o = {"kind": rng.choice(SHAPES), "color": rng.choice(SHAPE_COLORS), "r": round(rng.uniform(24, 36) * k)}
            else:
                kind = rng.choice(["car", "flower", "house", "tree", "cloud"])
                o = {"kind": kind, "color": rng.choice(KIND_COLORS.get(kind, [DEFAULT_COLOR.get(kind, "white")])),
                     "r": round({"house": 40, "car": 30, "flower": 15, "cloud": 26}.get(kind, 36) * k)}
            xy = _place(rng, after, o["r"], o["kind"])
            if xy and noun(o) not in nouns:
                break
        o["x"], o["y"] = xy
        after["objects"].append(o)
        desc = f"{article(noun(o)).capitalize()} was added {where(o, after)}."
        instr = f"Add {article(noun(o))} {where(o, after)}."
    if change == "sky":
        after["time"] = "dusk"
        desc = "The sky changed from a blue daytime sky to an orange sunset sky."
        instr = "Make it sunset."
    annotate(after)
    meta = {"kind": "diff_pair", "change": change, "description": desc, "instruction": instr,
            "before": before, "after": after}
    return (render(before), render(after)), meta


def _bare(phrase: str) -> str:  # 'in the top left' -> 'the top left', 'at the top' -> 'the top'
    return phrase.split(" ", 1)[1]


NAMES = ["Pip", "Momo", "Tiko", "Lulu", "Bo", "Nia", "Rex", "Suki"]
PLOTS = ["find", "weather", "build"]


def story(seed: int, size: int = SIZE, n_frames: int = 4, plot: str | None = None, character: str | None = None):
    """A tiny story in `n_frames` (3-5) landscape frames. Plots: 'find' (walks to a tree, finds something,
    carries it home), 'weather' (sun, clouds, rain, rainbow, night), 'build' (a tower of blocks grows).
    meta: character, name, plot, events (one sentence a frame) and frames (each frame's spec)."""
    assert 3 <= n_frames <= 5, n_frames
    rng = random.Random(seed)
    k = size / SIZE
    plot = plot or rng.choice(PLOTS)
    kind = character or rng.choice(CHARACTERS)
    name = rng.choice(NAMES)
    ccolor = {"penguin": rng.choice(["black", "blue"]), "robot": rng.choice(["gray", "blue"]),
              "cat": rng.choice(["orange", "gray", "black"]), "kid": rng.choice(["red", "green", "blue", "purple"])}[kind]
    S, ground_y = size, size * HORIZON
    hero = {"kind": kind, "color": ccolor, "name": name, "r": round(38 * k), "y": round(S * 0.78)}
    who = noun(hero)  # 'Pip the penguin', or just 'Pip' for a kid
    house = {"kind": "house", "color": rng.choice(["red", "yellow", "blue"]), "x": round(S * 0.2), "y": round(S * 0.68), "r": round(40 * k)}
    tree = {"kind": "tree", "color": "green", "x": round(S * 0.8), "y": round(S * 0.64), "r": round(44 * k)}
    sun = {"kind": "sun", "color": "yellow", "x": round(S * 0.5), "y": round(S * 0.16), "r": round(20 * k)}
    item = {"kind": rng.choice(["ball", "apple"]), "color": rng.choice(["red", "blue", "yellow"])}
    if item["kind"] == "apple":
        item["color"] = "red"
    frames, events = [], []

    def frame(objects, event, time="day", rain=False):
        spec = {"kind": "landscape", "size": size, "time": time, "ground": "grass", "rain": rain, "unusual": None,
                "objects": [dict(o) for o in objects]}
        frames.append(annotate(spec))
        events.append(event)

    if plot == "find":
        thing = noun(item)
        frame([sun, house, tree, {**hero, "x": round(S * 0.42)}], f"{who} steps out of the {noun(house)}.")
        frame([sun, house, tree, {**hero, "x": round(S * 0.6)}], f"{name} walks across the grass toward the big tree.")
        frame([sun, house, tree, {**hero, "x": round(S * 0.55)}, {**item, "x": round(S * 0.8), "y": round(S * 0.86), "r": round(10 * k)}],
              f"Under the tree, {name} finds {article(thing)}.")
        frame([sun, house, tree, {**hero, "x": round(S * 0.45), "holding": item}], f"{name} picks up the {thing} and carries it home.")
        frame([{**sun, "y": round(S * 0.5)}, house, tree, {**hero, "x": round(S * 0.42), "holding": item}],
              f"The sun sets, and {name} is back at the house with the {thing}.", time="dusk")
    elif plot == "weather":
        me = {**hero, "x": round(S * 0.5)}
        ball = {"kind": "ball", "color": item["color"], "x": round(S * 0.68), "y": round(S * 0.9), "r": round(10 * k)}
        cloud = lambda x: {"kind": "cloud", "color": "gray", "x": round(x * S), "y": round(S * 0.18), "r": round(30 * k)}
        frame([sun, house, tree, me, ball], f"On a sunny morning, {who} plays with {article(noun(ball))}.")
        frame([sun, cloud(0.25), house, tree, me, ball], "Gray clouds roll in and cover the sky.")
        frame([cloud(0.25), cloud(0.7), house, tree, me], f"It starts to rain, and {name} hurries to the house.", rain=True)
        frame([{**sun, "x": round(S * 0.15)}, {"kind": "rainbow", "color": "red", "x": round(S * 0.5), "y": round(ground_y), "r": round(S * 0.45)},
               house, tree, me], "The rain stops and a rainbow appears over the hill.")
        frame([{"kind": "moon", "color": "white", "x": round(S * 0.75), "y": round(S * 0.15), "r": round(18 * k)}, house, tree,
               {**hero, "x": round(S * 0.38)}], f"At night, {name} looks at the moon before going to bed.", time="night")
    else:  # build: a tower of blocks grows next to the hero
        colors = rng.sample(["red", "blue", "yellow", "green", "purple"], 4)
        b = round(16 * k)
        tower = lambda m: ([{"kind": "block", "color": colors[j], "x": round(S * 0.62),
                             "y": round(S * 0.93 - b - 2 * b * j), "r": b} for j in range(m)] +
                           [{"kind": "block", "color": colors[j], "x": round(S * (0.72 + 0.09 * (j - m))),
                             "y": round(S * 0.93 - b), "r": b} for j in range(m, 4)])
        me = {**hero, "x": round(S * 0.4)}
        frame([sun, tree, me, *[{"kind": "block", "color": c, "x": round(S * (0.56 + 0.09 * j)), "y": round(S * 0.93 - b), "r": b}
                                for j, c in enumerate(colors)]], f"{who} has four colorful blocks.")
        frame([sun, tree, me, *tower(2)], f"{name} puts the {colors[1]} block on top of the {colors[0]} one.")
        frame([sun, tree, me, *tower(3)], f"Now three blocks are stacked, with the {colors[2]} one on top.")
        frame([sun, tree, me, *tower(4)], f"{name} adds the {colors[3]} block on top and the tower is finished.")
        frame([{**sun, "y": round(S * 0.5)}, tree, {**me, "x": round(S * 0.3)}, *tower(4)],
              f"In the evening, {name} proudly looks at the tall tower.", time="dusk")
    keep = {3: [0, 2, 4], 4: [0, 2, 3, 4], 5: [0, 1, 2, 3, 4]}[n_frames]  # frames of the 5-frame story
    frames, events = [frames[j] for j in keep], [events[j] for j in keep]
    meta = {"kind": "story", "plot": plot, "character": kind, "color": ccolor, "name": name,
            "events": events, "frames": frames}
    return [render(f) for f in frames], meta
