"""A synthetic demo corpus in the on-disk formats of the real training data and benchmarks.

`make_demo_data(out)` renders small pictures of coloured shapes and writes, under `out/`:

- `train/`: the image root of the training JSONs, laid out like the real one: `coco/train2017/`,
  `gqa/images/`, `textvqa/train_images/`, `vg/VG_100K{,_2}/`, `ocr_vqa/images/` (some only as .gif/.png,
  so the OCR-VQA jpg fix has work to do), `LLaVA-Pretrain/` (stage 1) and `llava_v1_5_mix665k.json`;
- `benchmarks/`: winoground, seetrue, genai_bench_527, tifa160, eqben and pickapic in their real formats;
- `scenes.json`: what every image shows (image path relative to `out/` -> scene), so answers and labels can be
  re-derived; `manifest.json`: counts, seed, scale and the sha256 of every JSON/CSV/JSONL file.

Every answer and label is true of the rendering. The same seed and scale give byte-identical files. The tree is
built in a temporary folder beside `out/` and renamed into place. The formats, with their sources, are described
in `docs/benchmark_formats.md`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# ---------------------------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------------------------

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "orange": (240, 130, 30),
    "purple": (140, 60, 190),
    "black": (30, 30, 30),
}
BACKGROUNDS = {
    "white": (250, 250, 250),
    "gray": (200, 200, 200),
    "beige": (238, 226, 200),
    "light blue": (205, 222, 240),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
NUMBERS = ("zero", "one", "two", "three", "four")
RADIUS = {"small": 0.12, "large": 0.2}  # fraction of the image's shorter side
SLOT_PHRASE = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
RELATION_WORDS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
SHORT_SUFFIX = "\nAnswer the question using a single word or phrase."
VQASCORE_QUESTION = 'Does this figure show "{}"? Please answer yes or no.'
CAPTION_REQUEST = "Provide a one-sentence caption for the provided image."  # TextCaps in the mix
CAPTION_REQUESTS = (
    "Render a clear and concise summary of the photo.",
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Write a terse but informative summary of the picture.",
)
GENAI_MODELS = ("DALLE_3", "SDXL_Turbo", "DeepFloyd_I_XL_v1", "Midjourney_6", "SDXL_2_1", "SDXL_Base")
# Chance that a generator gets each fact of a prompt wrong (its human ratings follow).
GENAI_ERROR = dict(zip(GENAI_MODELS, (0.05, 0.3, 0.28, 0.12, 0.35, 0.22), strict=True))
# TIFA160 generators: the name in dsg_tifa160_anns.csv -> the name in tifa160.json keys and image files.
TIFA_MODELS = {
    "mini-dalle": "mini_dalle",
    "vq-diffusion": "vq_diffusion",
    "sd1dot1": "stable_diffusion_v1_1",
    "sd1dot5": "stable_diffusion_v1_5",
    "sd2dot1": "stable_diffusion_v2_1",
}
TIFA_ERROR = {"mini-dalle": 0.4, "vq-diffusion": 0.3, "sd1dot1": 0.25, "sd1dot5": 0.15, "sd2dot1": 0.1}
TIFA_QUESTION = "How consistent is the image with the text description?"


def article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def plural(shape: str, n: int = 2) -> str:
    return shape if n == 1 else shape + ("es" if shape.endswith("s") else "s")


def sentence(text: str) -> str:
    return f"{text[0].upper()}{text[1:]}."


# ---------------------------------------------------------------------------------------------------------------
# Scenes: what a caption claims (Spec) and what a picture shows (Scene)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    color: str
    shape: str
    size: str = ""  # "small", "large" or "" (unspecified)

    def phrase(self, sizes: bool = False) -> str:
        words = " ".join(w for w in (self.size if sizes else "", self.color, self.shape) if w)
        return f"{article(words)} {words}"


@dataclass(frozen=True)
class Spec:
    """A description: kind "single" (one object, at `slot` if set), "pair" (refs[0] `relation` refs[1], relation
    "left" or "above"), "row" (three objects from left to right) or "count" (`count` copies of refs[0])."""

    kind: str
    refs: tuple[Ref, ...]
    relation: str = ""
    count: int = 1
    slot: str = ""


@dataclass
class Obj:
    color: str
    shape: str
    size: str
    slot: str  # left/right/top/bottom/center, "" inside a counted row
    gx: int  # grid column and row: relations compare these
    gy: int
    cx: float  # centre and radius in pixels
    cy: float
    r: float


@dataclass
class Scene:
    width: int
    height: int
    background: str
    noise_seed: int  # 0: a plain background
    objects: list[Obj]
    band: str = ""  # book covers: the colour of the title band at the top


def cells(spec: Spec) -> list[tuple[Ref, str, int, int, int, int]]:
    """(ref, slot, gx, gy, columns, rows) for every object of `spec`."""
    refs = spec.refs
    if spec.kind == "single":
        where = {"center": (0, 0, 1, 1), "left": (0, 0, 2, 1), "right": (1, 0, 2, 1), "top": (0, 0, 1, 2)}
        return [(refs[0], spec.slot, *where.get(spec.slot, (0, 1, 1, 2)))]
    if spec.kind == "pair" and spec.relation == "left":
        return [(refs[0], "left", 0, 0, 2, 1), (refs[1], "right", 1, 0, 2, 1)]
    if spec.kind == "pair":
        return [(refs[0], "top", 0, 0, 1, 2), (refs[1], "bottom", 0, 1, 1, 2)]
    if spec.kind == "row":
        return [(refs[i], slot, i, 0, 3, 1) for i, slot in enumerate(("left", "center", "right"))]
    return [(refs[0], "", i, 0, spec.count, 1) for i in range(spec.count)]


def make_scene(spec: Spec, rng: random.Random, *, background: str = "", band: str = "") -> Scene:
    """A picture of `spec` with a random size, jitter and background; unspecified sizes are drawn."""
    width, height = rng.randint(96, 160), rng.randint(96, 160)
    side = min(width, height)
    crowded = spec.kind == "row" or (spec.kind == "count" and spec.count >= 3)
    sizes = {ref: ref.size or ("small" if crowded else rng.choice(("small", "large"))) for ref in spec.refs}
    objects, layout = [], cells(spec)
    for ref, slot, gx, gy, cols, rows in layout:
        r = RADIUS[sizes[ref]] * side
        cw, ch = width / cols, height / rows
        # Each object stays inside its cell; objects side by side overlap vertically (one above another:
        # horizontally), so "left of" and "above" never both hold.
        jx, jy = max(0.0, cw / 2 - r - 2) / 2, max(0.0, ch / 2 - r - 2) / 2
        if len(layout) > 1:
            jx, jy = (jx, min(jy, r / 3)) if rows == 1 else (min(jx, r / 3), jy)
        cx = (gx + 0.5) * cw + rng.uniform(-jx, jx)
        cy = (gy + 0.5) * ch + rng.uniform(-jy, jy)
        objects.append(Obj(ref.color, ref.shape, sizes[ref], slot, gx, gy, round(cx, 1), round(cy, 1), round(r, 1)))
    noise_seed = rng.randrange(1, 2**31) if rng.random() < 0.3 else 0
    return Scene(width, height, background or rng.choice(list(BACKGROUNDS)), noise_seed, objects, band)


def random_spec(rng: random.Random, kinds: tuple[str, ...] = ("single", "pair", "row", "count")) -> Spec:
    weights = {"single": 3, "pair": 5, "row": 1, "count": 3}
    kind = rng.choices(kinds, [weights[k] for k in kinds])[0]
    colors, shapes = rng.sample(list(COLORS), 3), rng.sample(SHAPES, 3)
    refs = [Ref(c, s, rng.choice(("small", "large"))) for c, s in zip(colors, shapes, strict=True)]
    if kind == "single":
        return Spec("single", (refs[0],), slot=rng.choice(list(SLOT_PHRASE)))
    if kind == "pair":
        return Spec("pair", (refs[0], refs[1]), relation=rng.choice(("left", "above")))
    if kind == "row":
        return Spec("row", tuple(replace(ref, size="small") for ref in refs))
    count = rng.randint(1, 4)
    return Spec("count", (replace(refs[0], size="small") if count >= 3 else refs[0],), count=count)


def caption(spec: Spec, *, sizes: bool = False, flip: bool = False, where: bool = True) -> str:
    """The text of `spec`. `flip` states a pair the other way round ("b to the right of a")."""
    p = [ref.phrase(sizes) for ref in spec.refs]
    if spec.kind == "single":
        return f"{p[0]} {SLOT_PHRASE[spec.slot]}" if where and spec.slot else p[0]
    if spec.kind == "pair":
        rel = "left" if spec.relation == "left" else "above"
        return f"{p[1]} {RELATION_WORDS[OPPOSITE[rel]]} {p[0]}" if flip else f"{p[0]} {RELATION_WORDS[rel]} {p[1]}"
    if spec.kind == "row":
        return f"{p[0]}, {p[1]} and {p[2]} from left to right"
    ref = spec.refs[0]
    return f"{NUMBERS[spec.count]} {ref.color} {plural(ref.shape, spec.count)}"


def matches(obj: Obj, ref: Ref) -> bool:
    return obj.color == ref.color and obj.shape == ref.shape and ref.size in ("", obj.size)


def related(a: Obj, b: Obj, relation: str) -> bool:
    """Whether `a` is `relation` ("left", "right", "above", "below") of `b`."""
    if relation in ("left", "right"):
        return a.gy == b.gy and (a.gx < b.gx if relation == "left" else a.gx > b.gx)
    return a.gx == b.gx and (a.gy < b.gy if relation == "above" else a.gy > b.gy)


def holds(spec: Spec, scene: Scene) -> bool:
    """Whether the picture `scene` shows what `spec` says."""
    objs, refs = scene.objects, spec.refs
    if spec.kind == "single":
        return any(matches(o, refs[0]) and spec.slot in ("", o.slot) for o in objs)
    if spec.kind == "count":
        return sum(matches(o, refs[0]) for o in objs) == spec.count
    if spec.kind == "row":
        ordered = sorted(objs, key=lambda o: o.gx)
        same_row = len({o.gy for o in objs}) == 1
        return len(objs) == 3 and same_row and all(matches(o, ref) for o, ref in zip(ordered, refs, strict=True))
    return any(
        matches(a, refs[0]) and matches(b, refs[1]) and related(a, b, spec.relation)
        for a in objs
        for b in objs
        if a is not b
    )


def facts(spec: Spec) -> list[str]:
    """The atomic claims of `spec`, each of which a picture may get wrong."""
    per_ref = [f"{attr}{i}" for i in range(len(spec.refs)) for attr in ("color", "shape")]
    extra = {"pair": ["relation"], "count": ["count"], "single": ["slot"] if spec.slot else []}.get(spec.kind, [])
    return per_ref + extra


def violate(spec: Spec, broken: list[str], rng: random.Random) -> Spec:
    """`spec` with the claims in `broken` made false (new colours/shapes are ones `spec` does not use)."""
    refs, count, slot = list(spec.refs), spec.count, spec.slot
    used_colors, used_shapes = {r.color for r in refs}, {r.shape for r in refs}
    for fact in sorted(broken, key=lambda f: f == "relation"):  # reorder the objects last
        if fact.startswith(("color", "shape")):
            attr, i = fact[:5], int(fact[5:])
            used = used_colors if attr == "color" else used_shapes
            new = rng.choice(sorted(set(COLORS if attr == "color" else SHAPES) - used))
            used.add(new)
            refs[i] = replace(refs[i], **{attr: new})
        elif fact == "relation":
            refs.reverse()
        elif fact == "count":
            count = rng.choice([k for k in range(1, 5) if k != spec.count])
        elif fact == "slot":
            slot = rng.choice([s for s in SLOT_PHRASE if s != spec.slot])
    if spec.kind == "count" and count >= 3:
        refs = [replace(refs[0], size="small")]
    return Spec(spec.kind, tuple(refs), spec.relation, count, slot)


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------


def shape_polygons(obj: Obj) -> list[list[tuple[float, float]]]:
    """The shape as polygons (a circle as its bounding box: two corners)."""
    x, y, r = obj.cx, obj.cy, obj.r

    def ring(radii: list[float]) -> list[tuple[float, float]]:
        n = len(radii)
        return [
            (x + rad * np.cos(np.pi * (2 * i / n - 0.5)), y + rad * np.sin(np.pi * (2 * i / n - 0.5)))
            for i, rad in enumerate(radii)
        ]

    if obj.shape == "circle":
        return [[(x - r, y - r), (x + r, y + r)]]
    if obj.shape == "square":
        s = 0.85 * r
        return [[(x - s, y - s), (x + s, y - s), (x + s, y + s), (x - s, y + s)]]
    if obj.shape == "triangle":
        return [ring([r, r, r])]
    if obj.shape == "star":
        return [ring([r, 0.45 * r] * 5)]
    if obj.shape == "diamond":
        return [[(x, y - r), (x + 0.75 * r, y), (x, y + r), (x - 0.75 * r, y)]]
    t = 0.33 * r  # cross: a horizontal and a vertical bar
    return [
        [(x - r, y - t), (x + r, y - t), (x + r, y + t), (x - r, y + t)],
        [(x - t, y - r), (x + t, y - r), (x + t, y + r), (x - t, y + r)],
    ]


def render(scene: Scene) -> Image.Image:
    size = (scene.width, scene.height)
    image = Image.new("RGB", size, BACKGROUNDS[scene.background])
    if scene.noise_seed:
        noise = np.random.default_rng(scene.noise_seed).normal(0.0, 6.0, (scene.height, scene.width, 1))
        image = Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    if scene.band:
        draw.rectangle((0, 0, scene.width, round(0.18 * scene.height)), fill=COLORS[scene.band])
    for obj in scene.objects:
        fill = COLORS[obj.color]
        polygons = shape_polygons(obj)
        if obj.shape == "circle":
            draw.ellipse(polygons[0], fill=fill)
        else:
            for polygon in polygons:
                draw.polygon(polygon, fill=fill)
    return image


def save_image(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        image.convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(path, "GIF")
    elif suffix == ".png":
        image.save(path, "PNG")
    else:
        image.save(path, "JPEG", quality=90)


# ---------------------------------------------------------------------------------------------------------------
# Questions and answers, all derived from the scene
# ---------------------------------------------------------------------------------------------------------------

LONG_SLOT = {s: f"{p} of the image" for s, p in SLOT_PHRASE.items()} | {"left": "on the left side of the image"}
LONG_SLOT["right"] = "on the right side of the image"


def claim(spec: Spec, sizes: bool = False) -> Spec:
    """What a caption of `spec` claims: sizes count only when the caption names them."""
    return spec if sizes else replace(spec, refs=tuple(replace(r, size="") for r in spec.refs))


def unique(objs: list[Obj], attr: str) -> list[Obj]:
    """The objects that `attr` alone names unambiguously."""
    values = [getattr(o, attr) for o in objs]
    return [o for o in objs if values.count(getattr(o, attr)) == 1]


def absent_ref(scene: Scene, rng: random.Random) -> Ref:
    while True:
        ref = Ref(rng.choice(list(COLORS)), rng.choice(SHAPES))
        if not any(matches(o, ref) for o in scene.objects):
            return ref


def relation_of(a: Obj, b: Obj) -> str:
    if a.gy == b.gy:
        return "left" if a.gx < b.gx else "right"
    return "above" if a.gy < b.gy else "below"


def yes_no_question(scene: Scene, rng: random.Random, want: bool) -> tuple[str, str]:
    """A yes/no question about `scene` whose answer is `want`."""
    objs, answer = scene.objects, "Yes" if want else "No"
    named = [o for o in objs if o in unique(objs, "shape") or o in unique(objs, "color")]
    pairs = [(a, b) for a in named for b in named if a is not b and (a.gx == b.gx or a.gy == b.gy)]
    family = rng.choice(["presence", "count"] + ["color"] * bool(unique(objs, "shape")) + ["relation"] * bool(pairs))
    if family == "presence":
        obj = rng.choice(objs)
        ref = Ref(obj.color, obj.shape) if want else absent_ref(scene, rng)
        return f"Is there {ref.phrase()} in the image?", answer
    if family == "color":
        obj = rng.choice(unique(objs, "shape"))
        color = obj.color if want else rng.choice([c for c in COLORS if c != obj.color])
        return f"Is the {obj.shape} {color}?", answer
    if family == "count":
        obj = rng.choice(objs)
        n = sum(matches(o, Ref(obj.color, obj.shape)) for o in objs)
        k = n if want else rng.choice([k for k in range(1, 5) if k != n])
        return f"Does the image contain {NUMBERS[k]} {obj.color} {plural(obj.shape, k)}?", answer
    a, b = rng.choice(pairs)
    relation = relation_of(a, b) if want else OPPOSITE[relation_of(a, b)]
    return f"Is the {a.color} {a.shape} {RELATION_WORDS[relation]} the {b.color} {b.shape}?", answer


def short_question(scene: Scene, rng: random.Random) -> tuple[str, str]:
    """A VQAv2/GQA-style question with a one-word answer."""
    objs = scene.objects
    where = [o for o in unique(objs, "shape") if o.slot]
    families = ["count_all", "count_shape", "background"] + ["color_of"] * bool(unique(objs, "shape"))
    families += ["shape_of"] * bool(unique(objs, "color")) + ["where"] * bool(where)
    family = rng.choice(families)
    if family == "count_all":
        return "How many shapes are there in the image?", str(len(objs))
    if family == "count_shape":
        shape = rng.choice([o.shape for o in objs] + list(SHAPES))
        return f"How many {plural(shape)} are there?", str(sum(o.shape == shape for o in objs))
    if family == "background":
        return "What color is the background?", scene.background.capitalize()
    if family == "color_of":
        obj = rng.choice(unique(objs, "shape"))
        return f"What color is the {obj.shape}?", obj.color.capitalize()
    if family == "shape_of":
        obj = rng.choice(unique(objs, "color"))
        return f"What shape is the {obj.color} object?", obj.shape.capitalize()
    obj = rng.choice(where)
    return f"Where is the {obj.color} {obj.shape}?", obj.slot.capitalize()


def conversation_pairs(scene: Scene, spec: Spec, rng: random.Random, want: bool) -> list[tuple[str, str]]:
    """2-5 LLaVA-Instruct-style question/answer pairs with sentence answers."""
    objs, bg, n = scene.objects, scene.background, len(scene.objects)
    names = [Ref(o.color, o.shape).phrase() for o in objs]
    listing = (
        caption(spec) if spec.kind == "count" else " and ".join([", ".join(names[:-1]), names[-1]] if n > 1 else names)
    )
    ref = Ref(objs[0].color, objs[0].shape) if want else absent_ref(scene, rng)
    description = caption(spec, sizes=rng.random() < 0.5, flip=rng.random() < 0.5)
    noise = " with a little noise" if scene.noise_seed else ""
    there_are = "There is one object" if n == 1 else f"There are {NUMBERS[n]} objects"
    presence = f"Yes, there is {ref.phrase()}" if want else f"No, there is no {ref.color} {ref.shape}"
    pool = [
        ("What shapes can you see in this image?", f"I can see {listing}."),
        ("Describe the image briefly.", f"The image shows {description} on {article(bg)} {bg} background."),
        ("What does the background look like?", f"The background is {bg}{noise}."),
        ("How many objects are in the image?", f"{there_are} in the image."),
        (f"Is there {ref.phrase()} in this picture?", f"{presence} in the picture."),
    ]
    for obj in unique(objs, "shape"):
        name = f"{obj.color} {obj.shape}"
        pool.append((f"What is the color of the {obj.shape}?", f"The {obj.shape} is {obj.color}."))
        if obj.slot:
            pool.append((f"Where is the {name} located?", f"The {name} is {LONG_SLOT[obj.slot]}."))
    return rng.sample(pool, rng.randint(2, min(5, len(pool))))


def region_pairs(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    """Visual Genome / RefCOCO-style region tasks: boxes are [x1, y1, x2, y2] as fractions of the image."""
    pairs = []
    for obj in rng.sample(scene.objects, len(scene.objects)):
        coords = ((obj.cx - obj.r) / scene.width, (obj.cy - obj.r) / scene.height)
        coords += ((obj.cx + obj.r) / scene.width, (obj.cy + obj.r) / scene.height)
        box = "[" + ", ".join(f"{min(1.0, max(0.0, v)):.2f}" for v in coords) + "]"
        phrase = Ref(obj.color, obj.shape).phrase()
        if rng.random() < 0.5:
            pairs.append((f"Please provide a short description for this region: {box}.", f"{phrase.capitalize()}."))
        else:
            pairs.append(
                (f"Please provide the bounding box coordinate of the region this sentence describes: {phrase}.", box)
            )
    return pairs


def cover_pairs(scene: Scene, rng: random.Random, want: bool) -> list[tuple[str, str]]:
    """OCR-VQA-style questions about a book cover (a title band and one emblem)."""
    obj = scene.objects[0]
    shape = obj.shape if want else rng.choice([s for s in SHAPES if s != obj.shape])
    pool = [
        ("What color is the band at the top of this book cover?", scene.band.capitalize()),
        ("What shape is on the cover of this book?", obj.shape.capitalize()),
        ("What color is the shape on this book cover?", obj.color.capitalize()),
        ("What is the background color of this book cover?", scene.background.capitalize()),
        (f"Is there {article(shape)} {shape} on this book cover?", "Yes" if want else "No"),
    ]
    return [(q + SHORT_SUFFIX, a) for q, a in rng.sample(pool, rng.randint(2, 4))]


SIDES = {"triangle": "three", "square": "four", "diamond": "four", "star": "ten", "cross": "twelve"}
MIXES = {
    ("blue", "yellow"): "green",
    ("red", "yellow"): "orange",
    ("blue", "red"): "purple",
    ("black", "white"): "gray",
}
WORDS = ("circle", "square", "yellow", "purple", "picture", "answer", "window", "garden", "pencil", "shape")


def text_pair(rng: random.Random) -> tuple[str, str]:
    """A ShareGPT-like text-only question with a true answer."""
    family = rng.randrange(5)
    if family == 0:
        shape = rng.choice(list(SIDES))
        return (
            f"How many sides does {article(shape)} {shape} outline have?",
            f"{article(shape).capitalize()} {shape} outline has {SIDES[shape]} sides.",
        )
    if family == 1:
        (a, b), mixed = rng.choice(list(MIXES.items()))
        return f"What color do you get when you mix {a} and {b} paint?", f"Mixing {a} and {b} paint gives {mixed}."
    if family == 2:
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
    word = rng.choice(WORDS)
    if family == 3:
        return f'Write the word "{word}" backwards.', f'"{word}" backwards is "{word[::-1]}".'
    return f'How many letters are in the word "{word}"?', f'The word "{word}" has {len(word)} letters.'


def turns(pairs: list[tuple[str, str]], image: str = "") -> list[dict[str, str]]:
    """LLaVA conversation turns; with an image, `image` is "before" or "after" the first question."""
    out = []
    for i, (question, answer) in enumerate(pairs):
        if i == 0 and image:
            question = f"<image>\n{question}" if image == "before" else f"{question}\n<image>"
        out += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Writing the corpus
# ---------------------------------------------------------------------------------------------------------------


def make_demo_data(out_dir: str | os.PathLike, *, seed: int = 0, scale: float = 1.0, quirks: bool = True) -> dict:
    """Write the demo corpus to `out_dir` (replacing it atomically) and return its manifest.

    `scale` multiplies every count (each has a small minimum). With `quirks`, the mix also holds records as found
    in the wild, starting with a gpt turn or ending on an unanswered human turn (two of each at scale 1).
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        manifest = _Corpus(tmp, seed, scale, quirks).build()
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _replace_dir(tmp: Path, target: Path) -> None:
    tmp.chmod(0o755)
    if not target.exists():
        os.replace(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / "x")
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def likert(correct_fraction: float, rng: random.Random, raters: int) -> list[int]:
    """Ratings 1-5 that follow the fraction of facts a picture gets right, with a little rater noise."""
    base = round(1 + 4 * correct_fraction)
    return [min(5, max(1, base + rng.choice((-1, 0, 0, 0, 0, 0, 1)))) for _ in range(raters)]


def seetrue_image_name(source: str, spec: Spec, text: int, k: int, counter: int, background: str) -> str:
    """File names in the style of each SeeTRUE source (picture `k` of text number `text`)."""
    if source == "editbench":  # one picture edited four ways: <n>_a=<attribute>_o=<object>_s=<scene>.png
        ref = spec.refs[0]
        return f"{counter}_a={ref.color}_o={ref.shape}_s={background.replace(' ', '~')}.png"
    generator = ("sd_1_4_0", "sd_1_4_1", "sd_2_1_0", "sd_2_1_1")[k]
    if source == "drawbench":
        category = {"pair": "Positional", "count": "Counting", "single": "Colors"}[spec.kind]
        return f"id_{text}_{category}_{generator}.png"
    return f"id_{text}_coco_val_0.png" if k == 0 else f"id_{text}_{generator}.png"  # coco_t2i


class _Corpus:
    """Builds the corpus under `root`: one method per dataset, each with its own random stream."""

    def __init__(self, root: Path, seed: int, scale: float, quirks: bool):
        self.root, self.seed, self.scale, self.quirks = root, seed, scale, quirks
        self.scenes: dict[str, dict] = {}
        self.sha256: dict[str, str] = {}
        self.counts: dict[str, dict] = {}
        self.yes_no = itertools.cycle((True, False))  # balances yes and no answers over the training mix
        self.records: list[dict] = []  # the stage-2 mix
        self.sources: dict[str, int] = {}  # mix records per source

    def rng(self, section: str) -> random.Random:
        return random.Random(f"{self.seed}:{section}")  # one stream per section: sections stay independent

    def n(self, base: int, minimum: int) -> int:
        return max(minimum, round(base * self.scale))

    def image(self, rel: str, scene: Scene, spec: Spec | None, stored_as: str = "", **extra) -> None:
        """Render `scene` to `rel` (relative to the output root; written as `stored_as` there if given)."""
        path = self.root / rel
        save_image(render(scene), path.with_name(stored_as) if stored_as else path)
        entry = {**asdict(scene), "spec": asdict(spec) if spec else None, **extra}
        self.scenes[rel] = entry | ({"stored_as": stored_as} if stored_as else {})

    def write(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode())
        self.sha256[rel] = hashlib.sha256(text.encode()).hexdigest()

    def write_json(self, rel: str, data, indent: int | None = 2) -> None:
        self.write(rel, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")

    def write_csv(self, rel: str, header: list[str], rows: list[list]) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerows([header, *rows])
        self.write(rel, buffer.getvalue())

    def build(self) -> dict:
        self.pretrain()
        self.mix()
        self.winoground()
        self.eqben()
        self.seetrue()
        self.genai_bench()
        self.tifa160()
        self.pickapic()
        self.write_json("scenes.json", self.scenes, indent=None)
        manifest = {"seed": self.seed, "scale": self.scale, "quirks": self.quirks, "images": len(self.scenes)}
        manifest["counts"] = self.counts
        manifest["sha256"] = dict(sorted(self.sha256.items()))
        self.write_json("manifest.json", manifest)
        return manifest

    # -- stage 1 ---------------------------------------------------------------------------------------------

    def pretrain(self) -> None:
        rng, records = self.rng("pretrain"), []
        for number in sorted(rng.sample(range(700_000), self.n(1000, 20))):
            ident = f"{number:09d}"
            image = f"{ident[:5]}/{ident}.jpg"
            spec = random_spec(rng)
            scene = make_scene(spec, rng)
            self.image(f"train/LLaVA-Pretrain/images/{image}", scene, spec)
            text = caption(spec, sizes=rng.random() < 0.3, flip=rng.random() < 0.5, where=rng.random() < 0.7)
            if rng.random() < 0.3:
                text += f" on {article(scene.background)} {scene.background} background"
            pairs = [(rng.choice(CAPTION_REQUESTS), text)]
            records.append(
                {"id": ident, "image": image, "conversations": turns(pairs, rng.choice(("before", "after")))}
            )
        self.write_json("train/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json", records, indent=None)
        self.counts["pretrain"] = {"records": len(records), "images": len(records)}

    # -- stage 2 ---------------------------------------------------------------------------------------------

    def mix(self) -> None:
        rng = self.rng("mix")
        coco = self.pictures(
            rng, "coco/train2017", [f"{i:012d}" for i in rng.sample(range(1, 581_930), self.n(600, 8))]
        )
        for i, (ident, image, spec, scene) in enumerate(coco):
            if i % 2:  # LLaVA-Instruct-style conversation
                pairs = conversation_pairs(scene, spec, rng, next(self.yes_no))
                self.add("llava_instruct", ident, pairs, image, rng.choice(("before", "after")))
            else:  # VQAv2-style: several short-answer questions
                self.add("vqav2", ident, self.short_pairs(rng, scene, rng.randint(2, 5)), image)
        gqa_ids = [str(i) for i in rng.sample(range(2_300_000, 2_420_000), self.n(300, 4))]
        gqa = self.pictures(rng, "gqa/images", gqa_ids)
        for ident, image, _, scene in gqa:
            self.add("gqa", ident, self.short_pairs(rng, scene, rng.randint(1, 4)), image)
        vg = [f"VG_100K/{i}" for i in rng.sample(range(1, 150_000), self.n(100, 2))]
        vg += [f"VG_100K_2/{i}" for i in rng.sample(range(2_400_000, 2_420_000), self.n(100, 2))]
        for ident, image, _, scene in self.pictures(rng, "vg", vg, ("single", "pair", "row")):
            self.add("vg", ident.split("/")[1], region_pairs(scene, rng), image)
        textcaps = sorted({f"{rng.getrandbits(64):016x}" for _ in range(self.n(150, 2))})
        for ident, image, spec, _ in self.pictures(rng, "textvqa/train_images", textcaps):
            self.add("textcaps", ident, [(CAPTION_REQUEST, sentence(caption(spec, flip=rng.random() < 0.5)))], image)
        self.vqascore_records(rng, coco + gqa)
        self.ocr_vqa_records(rng)
        self.text_only_records(rng)
        if self.quirks:
            self.quirk_records(rng, coco)
        records = self.records
        rng.shuffle(records)
        self.write_json("train/llava_v1_5_mix665k.json", records, indent=None)
        answers = [t["value"] for r in records for t in r["conversations"] if t["from"] == "gpt"]
        folders = ("coco", "gqa", "vg", "textvqa", "ocr_vqa")
        self.counts["mix"] = {
            "records": len(records),
            "by_source": dict(sorted(self.sources.items())),
            "image_records": sum("image" in r for r in records),
            "text_only": sum("image" not in r for r in records),
            "single_turn": sum(len(r["conversations"]) == 2 for r in records),
            "multi_turn": sum(len(r["conversations"]) > 2 for r in records),
            "qa_pairs": sum(len(r["conversations"]) // 2 for r in records),
            "yes_answers": answers.count("Yes"),
            "no_answers": answers.count("No"),
            "images": {f: sum(k.startswith(f"train/{f}/") for k in self.scenes) for f in folders},
        }

    def add(self, source: str, ident: str, pairs: list, image: str = "", place: str = "before", **keys) -> dict:
        """Append a mix record: `image` relative to the image root, `<image>` `place`d around the first question."""
        record = {"id": ident, **({"image": image} if image else keys), "conversations": turns(pairs, image and place)}
        self.records.append(record)
        self.sources[source] = self.sources.get(source, 0) + 1
        return record

    def pictures(self, rng: random.Random, folder: str, ids: list[str], kinds=("single", "pair", "row", "count")):
        """Render a random picture per id as `train/<folder>/<id>.jpg`; [(id, image path, spec, scene)]."""
        out = []
        for ident in ids:
            spec = random_spec(rng, kinds)
            scene = make_scene(spec, rng)
            self.image(f"train/{folder}/{ident}.jpg", scene, spec)
            out.append((ident, f"{folder}/{ident}.jpg", spec, scene))
        return out

    def short_pairs(self, rng: random.Random, scene: Scene, k: int) -> list[tuple[str, str]]:
        """Up to `k` distinct short-answer questions, 40% of them yes/no."""
        pairs = {}
        for _ in range(k):
            yes_no = rng.random() < 0.4
            q, a = yes_no_question(scene, rng, next(self.yes_no)) if yes_no else short_question(scene, rng)
            pairs.setdefault(q + SHORT_SUFFIX, a)
        return list(pairs.items())

    def vqascore_records(self, rng: random.Random, pictures: list) -> None:
        """Single-turn records in the VQAScore question form: "Yes" for a caption of the picture, "No" for a
        wrong one (mostly the picture's caption with one or two facts changed)."""
        for ident, image, spec, scene in rng.sample(pictures, min(len(pictures), self.n(800, 8))):
            want, sizes = next(self.yes_no), rng.random() < 0.3
            text_spec = spec
            while not want and holds(claim(text_spec, sizes), scene):
                broken = rng.sample(facts(spec), rng.choice((1, 1, 2)))
                text_spec = violate(spec, broken, rng) if rng.random() < 0.8 else random_spec(rng)
            question = VQASCORE_QUESTION.format(caption(text_spec, sizes=sizes, flip=rng.random() < 0.5))
            self.add("vqascore", ident, [(question, "Yes" if want else "No")], image)

    def ocr_vqa_records(self, rng: random.Random) -> None:
        """Book covers. The JSON names every image <id>.jpg, but a third exist only as .gif and a third as .png."""
        n = self.n(200, 3)
        formats = [("jpg", "gif", "png")[i % 3] for i in range(n)]
        rng.shuffle(formats)
        for number, fmt in zip(rng.sample(range(100_000_000, 2_000_000_000), n), formats, strict=True):
            ident = str(number)
            spec = Spec("single", (Ref(rng.choice(list(COLORS)), rng.choice(SHAPES), "large"),), slot="center")
            band = rng.choice([c for c in COLORS if c != spec.refs[0].color])
            scene = make_scene(spec, rng, band=band)
            image = f"ocr_vqa/images/{ident}.jpg"
            self.image(f"train/{image}", scene, spec, stored_as="" if fmt == "jpg" else f"{ident}.{fmt}")
            self.add("ocr_vqa", ident, cover_pairs(scene, rng, next(self.yes_no)), image)
        self.counts["ocr_vqa_stored"] = {fmt: formats.count(fmt) for fmt in ("jpg", "gif", "png")}

    def text_only_records(self, rng: random.Random) -> None:
        """ShareGPT-like records: no image key, an empty "model" as in the real mix."""
        letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        for _ in range(self.n(300, 4)):
            ident = "".join(rng.choice(letters) for _ in range(7)) + f"_{rng.randrange(3)}"
            self.add("sharegpt", ident, [text_pair(rng) for _ in range(rng.choice((1, 1, 2, 3)))], model="")

    def quirk_records(self, rng: random.Random, pictures: list) -> None:
        """Records as found in the wild: starting with a gpt turn; with an odd number of turns."""
        for _ in range(self.n(2, 1)):
            record = self.add("quirk_leading_gpt", f"quirk{rng.randrange(10**6):06d}_0", [text_pair(rng)], model="")
            record["conversations"].insert(0, {"from": "gpt", "value": "Hello! How can I help you today?"})
            ident, image, _, scene = rng.choice(pictures)
            record = self.add("quirk_odd_turns", ident, [short_question(scene, rng)], image)
            record["conversations"].append({"from": "human", "value": "How many shapes are there in the image?"})

    # -- benchmarks ------------------------------------------------------------------------------------------

    def swapped(self, rng: random.Random, swap: str) -> tuple[Spec, Spec]:
        """Two descriptions with the same words in a different order (or, for "count", a different number)."""
        if swap == "count":
            spec = random_spec(rng, ("count",))
            return spec, violate(spec, ["count"], rng)
        spec = random_spec(rng, ("pair",))
        a, b = spec.refs
        refs = {
            "color": (replace(a, color=b.color), replace(b, color=a.color)),
            "shape": (replace(a, shape=b.shape), replace(b, shape=a.shape)),
            "position": (b, a),
        }[swap]
        return spec, replace(spec, refs=refs)

    def image_pair(self, rng: random.Random, swap: str, paths: tuple[str, str]) -> list[str]:
        """Render the two pictures of a swapped pair to `paths`; returns caption_0 (of image 0), caption_1."""
        specs = self.swapped(rng, swap)
        flip = rng.random() < 0.5
        scenes = [make_scene(spec, rng) for spec in specs]
        for i, j in ((0, 0), (1, 1), (0, 1), (1, 0)):
            assert holds(claim(specs[i]), scenes[j]) == (i == j), (specs, scenes)
        for path, spec, scene in zip(paths, specs, scenes, strict=True):
            self.image(path, scene, spec)
        return [caption(spec, flip=flip) for spec in specs]

    def winoground(self) -> None:
        rng, rows, examples = self.rng("winoground"), [], []
        tags = {"color": "Relation", "shape": "Object", "position": "Object"}
        for i in range(self.n(40, 3)):
            swap = ("color", "shape", "position")[i % 3]
            images = [f"images/ex_{i}_img_{k}.png" for k in (0, 1)]
            captions = self.image_pair(rng, swap, tuple(f"benchmarks/winoground/{p}" for p in images))
            rows.append([i, *images, *captions])
            example = {"id": i, "caption_0": captions[0], "caption_1": captions[1], "tag": f"{swap} swap"}
            example |= {"secondary_tag": "", "num_main_preds": 1, "collapsed_tag": tags[swap]}
            examples.append(example | {"image_0": f"ex_{i}_img_0", "image_1": f"ex_{i}_img_1"})
        self.write_csv(
            "benchmarks/winoground/metadata.csv", ["id", "image_0", "image_1", "caption_0", "caption_1"], rows
        )
        self.write("benchmarks/winoground/examples.jsonl", "".join(json.dumps(e) + "\n" for e in examples))
        self.write_json("benchmarks/winoground/why_winoground_hard.json", {str(i): [] for i in range(len(rows))})
        self.counts["winoground"] = {"items": len(rows), "images": 2 * len(rows)}

    def eqben(self) -> None:
        rng, items = self.rng("eqben"), []
        subsets = {"color": "eqbenkubric_attr", "position": "eqbenkubric_loc", "count": "eqbenkubric_cnt"}
        for i in range(self.n(21, 3)):
            swap = ("color", "position", "count")[i % 3]
            images = [f"{subsets[swap]}/{i:04d}_{k}.png" for k in (0, 1)]
            captions = self.image_pair(rng, swap, tuple(f"benchmarks/eqben/images/{p}" for p in images))
            items.append({"image0": images[0], "image1": images[1], "caption0": captions[0], "caption1": captions[1]})
        self.write_json("benchmarks/eqben/all_select.json", items)
        self.counts["eqben"] = {"items": len(items), "images": 2 * len(items)}

    def render_prompt(self, rng: random.Random, spec: Spec, broken: list[str], rel: str, background: str = "") -> int:
        """Render `spec` with the facts in `broken` wrong; returns the fraction of its facts the picture gets right."""
        scene = make_scene(violate(spec, broken, rng), rng, background=background)
        assert holds(claim(spec), scene) == (not broken)
        total = len(facts(spec))
        self.image(rel, scene, spec, facts_right=total - len(broken), facts_total=total)
        return (total - len(broken)) / total

    def seetrue(self) -> None:
        """Four pictures per text; label 1 when a picture shows everything its text says."""
        rng, rows = self.rng("seetrue"), []
        kinds = {
            "drawbench": ("pair", "count", "single"),
            "editbench": ("single",),
            "coco_t2i": ("pair", "row", "single"),
        }
        for source, source_kinds in kinds.items():
            counter = 0
            for t in range(self.n(15, 2)):
                spec = random_spec(rng, source_kinds)
                text = caption(spec)
                background = rng.choice(list(BACKGROUNDS)) if source == "editbench" else ""
                for k in range(4):
                    name = seetrue_image_name(source, spec, t, k, counter, background)
                    correct = rng.random() < 0.5 if t or k > 1 else k == 0  # both labels in every source
                    broken = [] if correct else rng.sample(facts(spec), rng.choice((1, 1, 2)))
                    self.render_prompt(rng, spec, broken, f"benchmarks/seetrue/images/{name}", background)
                    original_id = f"{counter}.0" if source == "editbench" else f"text_{t}_image_{counter}"
                    rows.append([name, sentence(text), int(correct), original_id, source])
                    counter += 1
        rng.shuffle(rows)
        self.write_csv(
            "benchmarks/seetrue/SeeTRUE.csv", ["image", "text", "label", "original_dataset_id", "dataset_source"], rows
        )
        by_source = {s: sum(r[4] == s for r in rows) for s in kinds}
        self.counts["seetrue"] = {"rows": len(rows), "positives": sum(r[2] for r in rows), "by_source": by_source}

    def genai_bench(self) -> None:
        """Six generators per prompt, each rated by 3 raters on 1-5; weaker generators get more facts wrong."""
        rng, data = self.rng("genai_bench"), {}
        skills = {"attribute": [], "spatial relation": [], "counting": [], "basic": [], "advanced": []}
        for index in range(self.n(30, 3)):
            key = f"{index:05d}"
            spec = random_spec(rng)
            text = caption(spec)
            models = {}
            for model in GENAI_MODELS:
                broken = [fact for fact in facts(spec) if rng.random() < GENAI_ERROR[model]]
                right = self.render_prompt(rng, spec, broken, f"benchmarks/genai_bench_527/{model}/{key}.jpeg")
                models[model] = likert(right, rng, 3)
            data[key] = {"id": key, "prompt": sentence(text), "models": models}
            tags = {"pair": "spatial relation", "row": "spatial relation", "count": "counting"}
            for tag in ("attribute", tags.get(spec.kind), "advanced" if spec.kind == "count" else "basic"):
                if tag:
                    skills[tag].append(index)
        self.write_json("benchmarks/genai_bench_527/genai_image.json", data, indent=4)
        self.write_json("benchmarks/genai_bench_527/genai_skills.json", skills)
        self.counts["genai_bench_527"] = {
            "prompts": len(data),
            "images": len(data) * len(GENAI_MODELS),
            "ratings": 3 * len(data) * len(GENAI_MODELS),
        }

    def tifa160(self) -> None:
        """Five generators per prompt, 5 (sometimes 3) workers rate each image 1-5."""
        rng, dataset, groups = self.rng("tifa160"), {}, []
        workers = sorted(rng.sample(range(4_370_000_000, 4_390_000_000), 5))
        n = self.n(20, 2)
        numbers = rng.sample(range(1, 900_000), n)
        for index, number in enumerate(numbers):
            source_id = f"{('coco', 'partiprompt', 'paintskill', 'drawbench')[index % 4]}_{number}"
            spec = random_spec(rng, ("single", "pair", "count"))
            text = sentence(caption(spec))
            for dsg_name, name in sorted(TIFA_MODELS.items(), key=lambda item: item[1]):
                key = f"{source_id}_{name}"
                broken = [fact for fact in facts(spec) if rng.random() < TIFA_ERROR[dsg_name]]
                right = self.render_prompt(rng, spec, broken, f"benchmarks/tifa160/{key}.jpg")
                dataset[key] = {"text_id": source_id, "image_path": f"{key}.jpg", "text": text}
                raters = workers if rng.random() > 0.1 else sorted(rng.sample(workers, 3))
                ratings = likert(right, rng, len(raters))
                groups.append(
                    [
                        ["tifa160", dsg_name, f"tifa160_{index}", source_id, w, TIFA_QUESTION, a]
                        for w, a in zip(raters, ratings, strict=True)
                    ]
                )
        rng.shuffle(groups)
        header = ["data_type", "model_type", "item_id", "source_id", "worker_id", "question", "answer"]
        self.write_json("benchmarks/tifa160/tifa160.json", dataset, indent=4)
        self.write_csv("benchmarks/tifa160/dsg_tifa160_anns.csv", header, [row for group in groups for row in group])
        self.counts["tifa160"] = {"prompts": n, "images": len(dataset), "ratings": sum(len(g) for g in groups)}

    def pickapic(self) -> None:
        """One caption, two pictures; label_0 = 1 when picture 0 is the one that shows the caption."""
        rng, items = self.rng("pickapic"), []
        for index in range(self.n(20, 2)):
            spec = random_spec(rng)
            good = index % 2 if index < 2 else rng.randrange(2)
            images = [f"images/{index}_{k}.jpg" for k in (0, 1)]
            for k, image in enumerate(images):
                broken = [] if k == good else rng.sample(facts(spec), 1)
                self.render_prompt(rng, spec, broken, f"benchmarks/pickapic/{image}")
            item = {"id": index, "caption": caption(spec), "label_0": int(good == 0), "label_1": int(good == 1)}
            items.append(item | {"image_0": images[0], "image_1": images[1]})
        self.write_json("benchmarks/pickapic/test_captions.json", items)
        self.counts["pickapic"] = {"items": len(items), "images": 2 * len(items)}
