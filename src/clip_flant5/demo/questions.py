"""Questions and answers for the training mix, all derived from the scene, and LLaVA conversation turns."""

from __future__ import annotations

import random

from .scenes import (
    COLORS,
    NUMBERS,
    OPPOSITE,
    RELATION_WORDS,
    SHAPES,
    SLOT_PHRASE,
    Obj,
    Ref,
    Scene,
    Spec,
    article,
    caption,
    matches,
    plural,
)

SHORT_SUFFIX = "\nAnswer the question using a single word or phrase."
LONG_SLOT = {s: f"{p} of the image" for s, p in SLOT_PHRASE.items()} | {"left": "on the left side of the image"}
LONG_SLOT["right"] = "on the right side of the image"


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
