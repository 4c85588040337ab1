"""Tests for clip_flant5.demo: real formats, true answers and labels, determinism, atomic writes.

Answers are re-derived here from `scenes.json` (what each image shows) with a parser and evaluator of the caption
grammar written independently of the generator; the scene records are checked against the pixels.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clip_flant5 import demo as demo_data
from clip_flant5.demo import BACKGROUNDS, COLORS, GENAI_MODELS, SHAPES, make_demo_data

SCALE = 0.1
NUMBER = {"one": 1, "two": 2, "three": 3, "four": 4}
SINGULAR = {s + "s": s for s in SHAPES} | {"crosses": "cross"} | {s: s for s in SHAPES}
SLOTS = {"on the left": "left", "on the right": "right", "at the top": "top", "at the bottom": "bottom"}
SLOTS["in the center"] = "center"
SUFFIX = "\nAnswer the question using a single word or phrase."


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    return out, make_demo_data(out, seed=0, scale=SCALE)


@pytest.fixture(scope="module")
def out(built) -> Path:
    return built[0]


@pytest.fixture(scope="module")
def scenes(out) -> dict:
    return json.loads((out / "scenes.json").read_text())


def load(out: Path, rel: str):
    return json.loads((out / rel).read_text())


# -- an independent reading of the captions ------------------------------------------------------------------


def parse_ref(text: str) -> dict:
    m = re.fullmatch(r"an? (?:(small|large) )?(\w+) (\w+)", text)
    assert m and m[2] in COLORS and (m[3] in SHAPES or m[3] == "object"), text
    return {"size": m[1], "color": m[2], "shape": m[3]}


def fits(obj: dict, ref: dict) -> bool:
    shape = ref["shape"] in ("object", obj["shape"])  # "a red object": any shape
    return obj["color"] == ref["color"] and shape and ref.get("size") in (None, obj["size"])


def beside(a: dict, b: dict, relation: str) -> bool:
    """`a` is `relation` of `b` in pixels: fully apart along one axis, overlapping along the other."""
    ax, bx = ("cx", "cy") if relation in ("left", "right") else ("cy", "cx")
    first, second = (a, b) if relation in ("left", "above") else (b, a)
    apart = first[ax] + first["r"] <= second[ax] - second["r"]
    return apart and abs(a[bx] - b[bx]) < a["r"] + b["r"]


def truth(text: str, scene: dict) -> bool:
    """Whether `text` (a caption in the demo grammar) describes `scene`."""
    objs = scene["objects"]
    if m := re.fullmatch(r"(one|two|three|four) (\w+) (\w+)", text):
        return sum(fits(o, {"color": m[2], "shape": SINGULAR[m[3]]}) for o in objs) == NUMBER[m[1]]
    if m := re.fullmatch(r"(.+), (.+) and (.+) from left to right", text):
        ordered = sorted(objs, key=lambda o: o["cx"])
        in_row = len(objs) == 3 and beside(ordered[0], ordered[1], "left") and beside(ordered[1], ordered[2], "left")
        return in_row and all(fits(o, parse_ref(t)) for o, t in zip(ordered, m.groups(), strict=True))
    if m := re.fullmatch(r"(.+?) (to the left of|to the right of|above|below) (.+)", text):
        relation = m[2].split()[-2] if m[2].startswith("to") else m[2]
        a, b = parse_ref(m[1]), parse_ref(m[3])
        return any(fits(x, a) and fits(y, b) and beside(x, y, relation) for x in objs for y in objs if x is not y)
    m = re.fullmatch(r"(.+?)(?: (on the left|on the right|at the top|at the bottom|in the center))?", text)
    return any(fits(o, parse_ref(m[1])) and (not m[2] or o["slot"] == SLOTS[m[2]]) for o in objs)


def sentence_truth(text: str, scene: dict) -> bool:
    """A caption, or a capitalised caption with a full stop (every benchmark text, some training questions)."""
    return truth(text[0].lower() + text[1:].removesuffix("."), scene)


def yes_no(value: bool) -> str:
    return "Yes" if value else "No"


def only(objs: list[dict], **attrs) -> dict:
    found = [o for o in objs if all(o[k] == v for k, v in attrs.items())]
    assert len(found) == 1, (attrs, objs)
    return found[0]


def box_of(obj: dict, scene: dict) -> list[float]:
    w, h = scene["width"], scene["height"]
    return [
        (obj["cx"] - obj["r"]) / w,
        (obj["cy"] - obj["r"]) / h,
        (obj["cx"] + obj["r"]) / w,
        (obj["cy"] + obj["r"]) / h,
    ]


def how_many_objects(n: int) -> str:
    words = {v: k for k, v in NUMBER.items()}
    return "There is one object in the image." if n == 1 else f"There are {words[n]} objects in the image."


def background_sentence(scene: dict) -> str:
    return f"The background is {scene['background']}{' with a little noise' if scene['noise_seed'] else ''}."


def long_slot(slot: str) -> str:
    return {"left": "on the left side", "right": "on the right side"}.get(
        slot, [k for k, v in SLOTS.items() if v == slot][0]
    )


# question pattern -> expected answer, given the match and the scene (both short and sentence answers)
IMAGE_QUESTIONS = [
    (r'Does this figure show "(.+)"\? Please answer yes or no\.', lambda m, s: yes_no(sentence_truth(m[1], s))),
    (r"Is there (an? \w+ \w+) in the image\?", lambda m, s: yes_no(truth(m[1], s))),
    (r"Does the image contain (\w+ \w+ \w+)\?", lambda m, s: yes_no(truth(m[1], s))),
    (
        r"Is the (\w+ \w+) (to the left of|to the right of|above|below) the (\w+ \w+)\?",
        lambda m, s: yes_no(truth(f"a {m[1]} {m[2]} a {m[3]}", s)),
    ),
    (r"Is the (\w+) (\w+)\?", lambda m, s: yes_no(only(s["objects"], shape=m[1])["color"] == m[2])),
    (r"What color is the background\?", lambda m, s: s["background"].capitalize()),
    (r"What color is the (\w+)\?", lambda m, s: only(s["objects"], shape=m[1])["color"].capitalize()),
    (r"What shape is the (\w+) object\?", lambda m, s: only(s["objects"], color=m[1])["shape"].capitalize()),
    (r"How many shapes are there in the image\?", lambda m, s: str(len(s["objects"]))),
    (r"How many (\w+) are there\?", lambda m, s: str(sum(o["shape"] == SINGULAR[m[1]] for o in s["objects"]))),
    (r"Where is the (\w+) (\w+)\?", lambda m, s: only(s["objects"], color=m[1], shape=m[2])["slot"].capitalize()),
    (
        r"Is there (an? \w+ \w+) in this picture\?",
        lambda m, s: (
            f"Yes, there is {m[1]} in the picture."
            if truth(m[1], s)
            else f"No, there is no {m[1].split(' ', 1)[1]} in the picture."
        ),
    ),
    (r"What is the color of the (\w+)\?", lambda m, s: f"The {m[1]} is {only(s['objects'], shape=m[1])['color']}."),
    (
        r"Where is the (\w+) (\w+) located\?",
        lambda m, s: (
            f"The {m[1]} {m[2]} is {long_slot(only(s['objects'], color=m[1], shape=m[2])['slot'])} of the image."
        ),
    ),
    (r"How many objects are in the image\?", lambda m, s: how_many_objects(len(s["objects"]))),
    (r"What shapes can you see in this image\?", None),  # checked by count only: a listing
    (r"What does the background look like\?", lambda m, s: background_sentence(s)),
    (r"Describe the image briefly\.", None),  # checked below: "The image shows <caption> on a <bg> background."
    (r"Provide a one-sentence caption for the provided image\.", None),  # checked below
    (r"Please provide a short description for this region: \[(.+)\]\.", None),  # checked below
    (r"Please provide the bounding box coordinate of the region this sentence describes: (an? \w+ \w+)\.", None),
    (r"What color is the band at the top of this book cover\?", lambda m, s: s["band"].capitalize()),
    (r"What shape is on the cover of this book\?", lambda m, s: s["objects"][0]["shape"].capitalize()),
    (r"What color is the shape on this book cover\?", lambda m, s: s["objects"][0]["color"].capitalize()),
    (r"What is the background color of this book cover\?", lambda m, s: s["background"].capitalize()),
    (r"Is there an? (\w+) on this book cover\?", lambda m, s: yes_no(s["objects"][0]["shape"] == m[1])),
]


def check_free_answer(question: str, answer: str, scene: dict) -> None:
    """The answers with no fixed form: captions, descriptions, regions."""
    if question.startswith("Describe the image"):
        m = re.fullmatch(r"The image shows (.+) on an? (.+) background\.", answer)
        assert m and truth(m[1], scene) and m[2] == scene["background"], answer
    elif question.startswith("Provide a one-sentence caption"):
        assert sentence_truth(answer, scene), answer
    elif question.startswith("Please provide a short description"):
        box = [float(v) for v in re.search(r"\[(.+)\]", question)[1].split(", ")]
        obj = min(scene["objects"], key=lambda o: np.abs(np.clip(box_of(o, scene), 0, 1) - box).max())
        assert np.abs(np.clip(box_of(obj, scene), 0, 1) - box).max() <= 0.006
        assert answer.endswith(".") and fits(obj, parse_ref(answer[0].lower() + answer[1:-1])), (question, answer)
    elif question.startswith("Please provide the bounding box"):
        ref = parse_ref(re.search(r"describes: (.+)\.$", question)[1])
        obj = [o for o in scene["objects"] if fits(o, ref)]
        assert len(obj) == 1
        box = [float(v) for v in answer.strip("[]").split(", ")]
        assert np.abs(np.clip(box_of(obj[0], scene), 0, 1) - box).max() <= 0.006, (question, answer)


def strip_image(text: str) -> str:
    return text.replace("<image>\n", "").replace("\n<image>", "").removesuffix(SUFFIX)


def text_only_answer(question: str) -> str:
    if m := re.fullmatch(r"What is (\d+) plus (\d+)\?", question):
        return f"{m[1]} plus {m[2]} is {int(m[1]) + int(m[2])}."
    if m := re.fullmatch(r'Write the word "(\w+)" backwards\.', question):
        return f'"{m[1]}" backwards is "{m[1][::-1]}".'
    if m := re.fullmatch(r'How many letters are in the word "(\w+)"\?', question):
        return f'The word "{m[1]}" has {len(m[1])} letters.'
    if m := re.fullmatch(r"What color do you get when you mix (\w+) and (\w+) paint\?", question):
        mixed = {"blue yellow": "green", "red yellow": "orange", "blue red": "purple", "black white": "gray"}
        return f"Mixing {m[1]} and {m[2]} paint gives {mixed[' '.join(sorted((m[1], m[2])))]}."
    m = re.fullmatch(r"How many sides does an? (\w+) outline have\?", question)
    sides = {"triangle": "three", "square": "four", "diamond": "four", "star": "ten", "cross": "twelve"}[m[1]]
    return f"{'An' if m[1][0] in 'aeiou' else 'A'} {m[1]} outline has {sides} sides."


# -- the training data ---------------------------------------------------------------------------------------


def mix_records(out: Path) -> list[dict]:
    return load(out, "train/llava_v1_5_mix665k.json")


def test_pretrain_records_are_llava_pretrain_format_and_true(out, scenes):
    records = load(out, "train/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json")
    assert len(records) >= 20
    for r in records:
        assert set(r) == {"id", "image", "conversations"} and re.fullmatch(r"\d{9}", r["id"])
        assert r["image"] == f"{r['id'][:5]}/{r['id']}.jpg"
        human, gpt = r["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt")
        assert human["value"].count("<image>") == 1
        assert human["value"].startswith("<image>\n") or human["value"].endswith("\n<image>")
        scene = scenes[f"train/LLaVA-Pretrain/images/{r['image']}"]
        text, _, background = gpt["value"].partition(" on a")
        if background:
            assert re.fullmatch(r"n? (.+) background", background)[1] == scene["background"]
        assert truth(text, scene), (gpt["value"], scene)


def test_mix_has_every_kind_of_record(out, built):
    records = mix_records(out)
    counts = built[1]["counts"]["mix"]
    assert counts["records"] == len(records)
    image = [r for r in records if "image" in r]
    text = [r for r in records if "image" not in r]
    assert any(len(r["conversations"]) >= 8 for r in image), "multi-turn image conversations (4-10 turns)"
    assert any(len(r["conversations"]) == 2 for r in image), "single-turn image QA"
    assert any(len(r["conversations"]) > 2 for r in text) and any(len(r["conversations"]) == 2 for r in text)
    assert all(r["model"] == "" for r in text)
    prefixes = {r["image"].split("/")[0] for r in image}
    assert prefixes == {"coco", "gqa", "vg", "textvqa", "ocr_vqa"}
    assert any(r["image"].startswith("vg/VG_100K/") for r in image) and any("VG_100K_2/" in r["image"] for r in image)
    assert any(VQASCORE in r["conversations"][0]["value"] for r in image)
    assert re.fullmatch(r"coco/train2017/\d{12}\.jpg", next(r["image"] for r in image if r["image"].startswith("coco")))


VQASCORE = "Please answer yes or no."


def test_mix_turns_alternate_except_the_counted_quirks(out, built):
    quirks = 0
    for r in mix_records(out):
        roles = [t["from"] for t in r["conversations"]]
        if roles[0] == "gpt" or len(roles) % 2:
            quirks += 1
            continue
        assert roles == ["human", "gpt"] * (len(roles) // 2)
        values = [t["value"] for t in r["conversations"]]
        if "image" in r:
            assert values[0].count("<image>") == 1 and all("<image>" not in v for v in values[1:])
        else:
            assert all("<image>" not in v for v in values)
    by_source = built[1]["counts"]["mix"]["by_source"]
    assert quirks == by_source["quirk_leading_gpt"] + by_source["quirk_odd_turns"] >= 2


def test_mix_answers_are_true_of_the_rendering(out, scenes):
    checked = 0
    for r in mix_records(out):
        turns = r["conversations"]
        pairs = [
            (q["value"], a["value"])
            for q, a in zip(turns, turns[1:], strict=False)
            if (q["from"], a["from"]) == ("human", "gpt")
        ]
        for question, answer in pairs:
            question = strip_image(question)
            if "image" not in r:
                assert answer == text_only_answer(question) or answer.startswith("Hello"), (question, answer)
                continue
            scene = scenes[f"train/{r['image']}"]
            pattern, expected = next((p, e) for p, e in IMAGE_QUESTIONS if re.fullmatch(p, question))
            if expected is None:
                check_free_answer(question, answer, scene)
            else:
                assert answer == expected(re.fullmatch(pattern, question), scene), (question, answer, scene)
            checked += 1
    assert checked > 300


def test_mix_yes_no_answers_are_balanced(out):
    answers = [t["value"] for r in mix_records(out) for t in r["conversations"] if t["from"] == "gpt"]
    yes, no = answers.count("Yes"), answers.count("No")
    assert yes + no > 50 and abs(yes - no) <= 0.1 * (yes + no)
    vqascore = [r["conversations"][1]["value"] for r in mix_records(out) if VQASCORE in r["conversations"][0]["value"]]
    assert abs(vqascore.count("Yes") - vqascore.count("No")) <= 1


def test_vqascore_form_records_teach_colour_words_first(out, scenes):
    """Swatches (one colour filling the picture) are asked twice, the two phrases differing only in the colour;
    the captions and presence questions are asked of many pictures, each picture at most twice."""
    vqascore = {}
    for r in mix_records(out):
        if "image" in r and VQASCORE in r["conversations"][0]["value"]:
            vqascore.setdefault(r["image"], []).append(r["conversations"])
    swatches = {image: asked for image, asked in vqascore.items() if is_swatch(out / "train" / image)}
    assert len(swatches) >= 4
    for image, asked in swatches.items():
        assert sorted(turns[1]["value"] for turns in asked) == ["No", "Yes"], image
        phrases = [re.search(r'"an? (\w+) (\w+)"', turns[0]["value"]).groups() for turns in asked]
        assert phrases[0][0] != phrases[1][0] and phrases[0][1] == phrases[1][1], phrases
    others = [asked for image, asked in vqascore.items() if image not in swatches]
    assert max(map(len, others)) <= 2 and sum(map(len, others)) > 1.5 * len(others)


def is_swatch(path: Path) -> bool:
    """A picture of one colour (within JPEG noise)."""
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    return bool(np.abs(pixels - pixels.reshape(-1, 3).mean(0)).max() < 40)


def test_ocr_vqa_images_need_the_jpg_fix(out, built):
    referenced = [r["image"] for r in mix_records(out) if r.get("image", "").startswith("ocr_vqa/")]
    assert referenced and all(p.endswith(".jpg") for p in referenced)
    missing = [p for p in referenced if not (out / "train" / p).exists()]
    kinds = {next(s for s in (".gif", ".png") if (out / "train" / p).with_suffix(s).exists()) for p in missing}
    assert kinds == {".gif", ".png"}
    assert len(missing) < len(referenced), "some OCR-VQA images are jpgs already"
    stored = built[1]["counts"]["ocr_vqa_stored"]
    assert stored["gif"] + stored["png"] == len(missing) and sum(stored.values()) == len(referenced)


# -- every referenced image exists, decodes and shows its scene ----------------------------------------------


def referenced_images(out: Path) -> list[Path]:
    paths = [
        out / "train/LLaVA-Pretrain/images" / r["image"]
        for r in load(out, "train/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json")
    ]
    paths += [out / "train" / r["image"] for r in mix_records(out) if "image" in r]
    bench = out / "benchmarks"
    for row in pd.read_csv(bench / "winoground/metadata.csv").to_dict(orient="records"):
        paths += [bench / "winoground" / row["image_0"], bench / "winoground" / row["image_1"]]
    for item in load(out, "benchmarks/eqben/all_select.json"):
        paths += [bench / "eqben/images" / item["image0"], bench / "eqben/images" / item["image1"]]
    paths += [bench / "seetrue/images" / name for name in pd.read_csv(bench / "seetrue/SeeTRUE.csv")["image"]]
    paths += [
        bench / "genai_bench_527" / m / f"{k}.jpeg"
        for k in load(out, "benchmarks/genai_bench_527/genai_image.json")
        for m in GENAI_MODELS
    ]
    paths += [bench / "tifa160" / v["image_path"] for v in load(out, "benchmarks/tifa160/tifa160.json").values()]
    for item in load(out, "benchmarks/pickapic/test_captions.json"):
        paths += [bench / "pickapic" / item["image_0"], bench / "pickapic" / item["image_1"]]
    return paths


def test_every_referenced_image_exists_and_decodes(out, scenes):
    paths = referenced_images(out)
    assert len(paths) > 300
    for path in set(paths):
        if not path.exists():
            assert "ocr_vqa" in path.parts and path.suffix == ".jpg"
            path = next(p for p in (path.with_suffix(".gif"), path.with_suffix(".png")) if p.exists())
        with Image.open(path) as image:
            image.load()
            assert 96 <= image.width <= 160 and 96 <= image.height <= 160
    assert {p.relative_to(out).as_posix() for p in paths} <= set(scenes)


def test_scene_records_match_the_pixels(out, scenes):
    palette = {**COLORS, **{f"background {k}": v for k, v in BACKGROUNDS.items()}}
    names, values = list(palette), np.array(list(palette.values()), dtype=float)
    aspect = set()
    for rel, scene in scenes.items():
        path = out / rel
        path = path.with_name(scene["stored_as"]) if "stored_as" in scene else path
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=float)
        assert pixels.shape == (scene["height"], scene["width"], 3)
        aspect.add(round(scene["width"] / scene["height"], 1))
        for obj in scene["objects"]:
            x, y, r = round(obj["cx"]), round(obj["cy"]), obj["r"]
            extent = 0.85 * r if obj["shape"] == "square" else r  # a square's half side is 0.85 of its radius
            for centre, side in ((obj["cx"], scene["width"]), (obj["cy"], scene["height"])):
                assert extent - 0.25 <= centre <= side - extent + 0.25, (rel, obj)  # inside, to a quarter pixel
            color = pixels[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).mean(0)
            assert names[np.argmin(((values - color) ** 2).sum(1))] == obj["color"], (rel, obj)
            half = {"left": obj["cx"] + r <= scene["width"] / 2, "right": obj["cx"] - r >= scene["width"] / 2}
            half |= {"top": obj["cy"] + r <= scene["height"] / 2, "bottom": obj["cy"] - r >= scene["height"] / 2}
            assert half.get(obj["slot"], True), (rel, obj)
        for a in scene["objects"]:
            for b in scene["objects"]:
                if a is not b:
                    assert np.hypot(a["cx"] - b["cx"], a["cy"] - b["cy"]) >= a["r"] + b["r"], "objects overlap"
    assert min(aspect) < 0.8 and max(aspect) > 1.25, "varied aspect ratios"


# -- the benchmarks ------------------------------------------------------------------------------------------


def check_swapped_pairs(items: list[tuple[str, str, str, str]], scenes: dict) -> None:
    for image_0, image_1, caption_0, caption_1 in items:
        for i, image in enumerate((image_0, image_1)):
            assert truth((caption_0, caption_1)[i], scenes[image]) and not truth(
                (caption_0, caption_1)[1 - i], scenes[image]
            )


def test_winoground_format_and_ground_truth(out, scenes):
    root = out / "benchmarks/winoground"
    rows = pd.read_csv(root / "metadata.csv").to_dict(orient="records")
    assert list(rows[0]) == ["id", "image_0", "image_1", "caption_0", "caption_1"] and len(rows) >= 4
    assert [row["id"] for row in rows] == list(range(len(rows)))  # the t2v_metrics loader asserts this
    examples = [json.loads(line) for line in (root / "examples.jsonl").read_text().splitlines()]
    assert [e["id"] for e in examples] == list(range(len(rows))) and {e["num_main_preds"] for e in examples} == {1}
    assert set(load(out, "benchmarks/winoground/why_winoground_hard.json")) == {str(i) for i in range(len(rows))}
    for row in rows:
        assert sorted(row["caption_0"].split()) == sorted(row["caption_1"].split()), "same words, other order"
    prefix = "benchmarks/winoground/"
    check_swapped_pairs(
        [(prefix + r["image_0"], prefix + r["image_1"], r["caption_0"], r["caption_1"]) for r in rows], scenes
    )


def test_eqben_format_and_ground_truth(out, scenes):
    items = load(out, "benchmarks/eqben/all_select.json")
    assert items and all(set(item) == {"image0", "image1", "caption0", "caption1"} for item in items)
    subsets = {item["image0"].split("/")[0] for item in items}
    assert subsets == {"eqbenkubric_attr", "eqbenkubric_loc", "eqbenkubric_cnt"}
    prefix = "benchmarks/eqben/images/"
    check_swapped_pairs(
        [(prefix + i["image0"], prefix + i["image1"], i["caption0"], i["caption1"]) for i in items], scenes
    )


def test_seetrue_format_and_labels(out, scenes):
    frame = pd.read_csv(out / "benchmarks/seetrue/SeeTRUE.csv")
    assert list(frame.columns) == ["image", "text", "label", "original_dataset_id", "dataset_source"]
    assert set(frame["dataset_source"]) == {"drawbench", "editbench", "coco_t2i"}
    for source, group in frame.groupby("dataset_source"):
        assert set(group["label"]) == {0, 1}, source
    assert frame["image"].is_unique
    for row in frame.itertuples():
        assert row.label == int(sentence_truth(row.text, scenes[f"benchmarks/seetrue/images/{row.image}"])), row
        if row.dataset_source == "editbench":
            assert re.fullmatch(r"\d+_a=\w+_o=\w+_s=[\w~]+\.png", row.image) and row.original_dataset_id.endswith(".0")
        else:
            assert row.image.startswith("id_") and row.original_dataset_id.startswith("text_")


def test_genai_bench_format_and_ratings(out, scenes):
    data = load(out, "benchmarks/genai_bench_527/genai_image.json")
    human, right = [], []
    for key, item in data.items():
        assert re.fullmatch(r"\d{5}", key) and item["id"] == key and set(item) == {"id", "prompt", "models"}
        assert list(item["models"]) == list(GENAI_MODELS)
        for model, ratings in item["models"].items():
            assert len(ratings) == 3 and all(isinstance(x, int) and 1 <= x <= 5 for x in ratings)
            scene = scenes[f"benchmarks/genai_bench_527/{model}/{key}.jpeg"]
            assert sentence_truth(item["prompt"], scene) == (scene["facts_right"] == scene["facts_total"])
            human.append(np.mean(ratings))
            right.append(scene["facts_right"] / scene["facts_total"])
    assert np.corrcoef(human, right)[0, 1] > 0.7, "ratings follow how much of the prompt a picture gets right"
    skills = load(out, "benchmarks/genai_bench_527/genai_skills.json")
    assert set(skills["basic"]) | set(skills["advanced"]) == {int(k) for k in data}


def test_tifa160_format_follows_the_t2v_metrics_loader(out, scenes):
    dataset = load(out, "benchmarks/tifa160/tifa160.json")
    anns = pd.read_csv(out / "benchmarks/tifa160/dsg_tifa160_anns.csv")
    assert list(anns.columns) == ["data_type", "model_type", "item_id", "source_id", "worker_id", "question", "answer"]
    assert set(anns["model_type"]) == set(demo_data.TIFA_MODELS) and set(anns["answer"]) <= {1, 2, 3, 4, 5}
    keys = [f"{s}_{demo_data.TIFA_MODELS[m]}" for s, m in zip(anns["source_id"], anns["model_type"], strict=True)]
    assert set(keys) == set(dataset), "every image is rated, every rating names an image"
    for key, item in dataset.items():
        assert item["image_path"] == f"{key}.jpg" and key.startswith(item["text_id"] + "_")
        scene = scenes[f"benchmarks/tifa160/{key}.jpg"]
        assert sentence_truth(item["text"], scene) == (scene["facts_right"] == scene["facts_total"])
    means = anns.assign(key=keys).groupby("key")["answer"].mean()
    right = [
        scenes[f"benchmarks/tifa160/{k}.jpg"]["facts_right"] / scenes[f"benchmarks/tifa160/{k}.jpg"]["facts_total"]
        for k in means.index
    ]
    assert np.corrcoef(means.to_numpy(), right)[0, 1] > 0.7


def test_pickapic_format_and_labels(out, scenes):
    items = load(out, "benchmarks/pickapic/test_captions.json")
    for index, item in enumerate(items):
        assert item["id"] == index and item["label_0"] + item["label_1"] == 1
        shows = [truth(item["caption"], scenes[f"benchmarks/pickapic/{item[f'image_{k}']}"]) for k in (0, 1)]
        assert shows == [bool(item["label_0"]), bool(item["label_1"])]


# -- manifest, determinism, atomic writes --------------------------------------------------------------------


def test_manifest_lists_counts_and_hashes_of_every_text_file(out, built):
    manifest = built[1]
    assert manifest == load(out, "manifest.json")
    assert (manifest["seed"], manifest["scale"], manifest["quirks"]) == (0, SCALE, True)
    text_files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.suffix in (".json", ".csv", ".jsonl")}
    assert set(manifest["sha256"]) == text_files - {"manifest.json"}
    for rel, digest in manifest["sha256"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest
    assert manifest["images"] == sum(1 for p in out.rglob("*") if p.suffix in (".jpg", ".jpeg", ".png", ".gif"))
    with open(out / "benchmarks/seetrue/SeeTRUE.csv", newline="") as f:
        assert len(list(csv.reader(f))) - 1 == manifest["counts"]["seetrue"]["rows"]


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(out, tmp_path):
    again = tmp_path / "again"
    make_demo_data(again, seed=0, scale=SCALE)
    assert files(again) == files(out)


def test_rerun_replaces_the_folder_atomically(tmp_path, monkeypatch):
    target = tmp_path / "demo"
    make_demo_data(target, seed=1, scale=0.02)
    (target / "stale.txt").write_text("left over")
    first = (target / "train/llava_v1_5_mix665k.json").read_bytes()
    make_demo_data(target, seed=2, scale=0.02)
    assert not (target / "stale.txt").exists() and load(target, "manifest.json")["seed"] == 2
    assert (target / "train/llava_v1_5_mix665k.json").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"], "no temporary folders left"

    def fail(self):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(demo_data._Corpus, "build", fail)
    with pytest.raises(RuntimeError):
        make_demo_data(target, seed=3, scale=0.02)
    assert load(target, "manifest.json")["seed"] == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_quirk_records_can_be_left_out(tmp_path):
    manifest = make_demo_data(tmp_path / "clean", scale=0.02, quirks=False)
    assert not any(k.startswith("quirk") for k in manifest["counts"]["mix"]["by_source"]) and not manifest["quirks"]
    for r in mix_records(tmp_path / "clean"):
        roles = [t["from"] for t in r["conversations"]]
        assert roles == ["human", "gpt"] * (len(roles) // 2)


def test_scale_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        make_demo_data(tmp_path / "x", scale=0)
