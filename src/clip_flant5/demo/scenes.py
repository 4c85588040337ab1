"""Scenes of coloured shapes: the vocabulary, what a caption claims (Spec), what a picture shows (Scene), and
rendering a scene to an image file.

Every answer and label of the demo corpus is derived from these: `holds(spec, scene)` says whether a picture shows
what a description says, `violate` makes chosen facts of a description false.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
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
    "purple": (140, 60, 190),
    "black": (30, 30, 30),
}
# A small, plain world on purpose: the demo's tiny model is trained from scratch on 2 CPU cores in minutes,
# and learns to ground colour and shape words only when they are few and the pictures clean.
NOISY_FRACTION = 0.1
BACKGROUNDS = {
    "white": (250, 250, 250),
    "gray": (200, 200, 200),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
NUMBERS = ("zero", "one", "two", "three", "four")
RADIUS = {"small": 0.12, "large": 0.24}  # fraction of the image's shorter side
SQUARE_HALF_SIDE = 0.85  # a square's half side, as a fraction of its radius
SLOT_PHRASE = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
RELATION_WORDS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}


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


def swatch(color: str, rng: random.Random) -> Scene:
    """A square picture filled by one square of `color` (size "fill", never named in a caption): a colour swatch."""
    side = rng.randint(96, 160)
    r = round(side / 2 / SQUARE_HALF_SIDE + 0.1, 1)  # edges on (or just past) the picture's borders
    square = Obj(color, "square", "fill", "center", 0, 0, side / 2, side / 2, r)
    return Scene(side, side, rng.choice(list(BACKGROUNDS)), 0, [square])


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
    noise_seed = rng.randrange(1, 2**31) if rng.random() < NOISY_FRACTION else 0
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


def claim(spec: Spec, sizes: bool = False) -> Spec:
    """What a caption of `spec` claims: sizes count only when the caption names them (a count never does)."""
    named = sizes and spec.kind != "count"
    return spec if named else replace(spec, refs=tuple(replace(r, size="") for r in spec.refs))


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
        s = SQUARE_HALF_SIDE * r
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
