"""The training data: the stage-1 caption JSON (LLaVA-Pretrain) and the stage-2 mix (llava_v1_5_mix665k) with
its COCO, GQA, Visual Genome, TextCaps, OCR-VQA-like, VQAScore-form, text-only and quirky records."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from .output import Output
from .questions import (
    SHORT_SUFFIX,
    conversation_pairs,
    cover_pairs,
    region_pairs,
    short_question,
    text_pair,
    turns,
    yes_no_question,
)
from .scenes import (
    COLORS,
    SHAPES,
    Ref,
    Scene,
    Spec,
    article,
    caption,
    claim,
    facts,
    holds,
    make_scene,
    random_spec,
    sentence,
    swatch,
    violate,
)

VQASCORE_QUESTION = 'Does this figure show "{}"? Please answer yes or no.'
# Pictures at scale 1 for the VQAScore-form part of the mix, most of the demo mix: "swatches" (two records each) and
# "asked" (a caption and a presence question each). The tiny model, trained from scratch in CPU minutes, learns to
# ground colour and shape words only from many such questions.
MIX = {"swatches": 1500, "asked": 3000}
# How often each fact of a caption is the one made false in a "No" record: colours and shapes, which a picture
# shows plainly, most often.
BROKEN_FACT_WEIGHT = {"color": 3, "shape": 3, "relation": 1, "count": 1, "slot": 1}
CAPTION_REQUEST = "Provide a one-sentence caption for the provided image."  # TextCaps in the mix
CAPTION_REQUESTS = (
    "Render a clear and concise summary of the photo.",
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Write a terse but informative summary of the picture.",
)


def broken_facts(spec: Spec, rng: random.Random) -> list[str]:
    """One or two facts of `spec` to make false, drawn by `BROKEN_FACT_WEIGHT`."""
    chosen, candidates = [], facts(spec)
    for _ in range(rng.choice((1, 1, 2))):
        rest = [f for f in candidates if f not in chosen]
        chosen.append(rng.choices(rest, [BROKEN_FACT_WEIGHT[f.rstrip("0123456789")] for f in rest])[0])
    return chosen


class Training(Output):
    """Writes `train/`: one method per dataset of the mix, sharing the mix state below."""

    def __init__(self, root: Path, seed: int, scale: float, quirks: bool):
        super().__init__(root, seed, scale, quirks)
        self.yes_no = itertools.cycle((True, False))  # balances yes and no answers over the training mix
        self.records: list[dict] = []  # the stage-2 mix
        self.sources: dict[str, int] = {}  # mix records per source

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
        n_coco, n_swatches = self.n(600, 8), self.n(MIX["swatches"], 4)
        coco_ids = [f"{i:012d}" for i in rng.sample(range(1, 581_930), n_coco + n_swatches)]
        coco = self.pictures(rng, "coco/train2017", coco_ids[:n_coco])
        for i, (ident, image, spec, scene) in enumerate(coco):
            if i % 2:  # LLaVA-Instruct-style conversation
                pairs = conversation_pairs(scene, spec, rng, next(self.yes_no))
                self.add("llava_instruct", ident, pairs, image, rng.choice(("before", "after")))
            else:  # VQAv2-style: several short-answer questions
                self.add("vqav2", ident, self.short_pairs(rng, scene, rng.randint(2, 5)), image)
        n_gqa, n_asked = self.n(300, 4), self.n(MIX["asked"], 8)
        gqa_ids = [str(i) for i in rng.sample(range(2_300_000, 2_420_000), n_gqa + n_asked)]
        gqa = self.pictures(rng, "gqa/images", gqa_ids[:n_gqa])
        for ident, image, _, scene in gqa:
            self.add("gqa", ident, self.short_pairs(rng, scene, rng.randint(1, 4)), image)
        vg = [f"VG_100K/{i}" for i in rng.sample(range(1, 150_000), self.n(100, 2))]
        vg += [f"VG_100K_2/{i}" for i in rng.sample(range(2_400_000, 2_420_000), self.n(100, 2))]
        for ident, image, _, scene in self.pictures(rng, "vg", vg, ("single", "pair", "row")):
            self.add("vg", ident.split("/")[1], region_pairs(scene, rng), image)
        textcaps = sorted({f"{rng.getrandbits(64):016x}" for _ in range(self.n(150, 2))})
        for ident, image, spec, _ in self.pictures(rng, "textvqa/train_images", textcaps):
            self.add("textcaps", ident, [(CAPTION_REQUEST, sentence(caption(spec, flip=rng.random() < 0.5)))], image)
        self.swatch_records(rng, coco_ids[n_coco:])
        # Pictures of their own for the VQAScore-form records: asked about a few thousand pictures once or twice
        # each rather than a few hundred many times, the model learns what the words mean, not the pictures.
        asked = self.pictures(rng, "gqa/images", gqa_ids[n_gqa:])
        self.vqascore_records(rng, asked)
        self.presence_records(rng, asked)
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

    def swatch_records(self, rng: random.Random, ids: list[str]) -> None:
        """Colour swatches (a picture filled by one colour), each asked VQAScore's question twice: "Yes" for a
        phrase naming its colour ("a red object", "a red square"), "No" for the same phrase with another colour.
        A model trained from scratch ties colour words to what it sees here first, where the colour is all there
        is to see; the same words about small objects among others come after (`presence_records`)."""
        for ident in ids:
            scene = swatch(rng.choice(list(COLORS)), rng)
            obj = scene.objects[0]
            image = f"coco/train2017/{ident}.jpg"
            self.image(f"train/{image}", scene, Spec("single", (Ref(obj.color, obj.shape, obj.size),), slot="center"))
            shape = "object" if rng.random() < 0.75 else obj.shape
            other = rng.choice([c for c in COLORS if c != obj.color])
            questions = [(Ref(obj.color, shape), "Yes"), (Ref(other, shape), "No")]
            for ref, answer in rng.sample(questions, 2):
                self.add("swatch", ident, [(VQASCORE_QUESTION.format(ref.phrase()), answer)], image)

    def vqascore_records(self, rng: random.Random, pictures: list) -> None:
        """Single-turn records in the VQAScore question form: "Yes" for a caption of the picture, "No" for a
        wrong one (mostly the picture's caption with one or two facts changed, colours and shapes most often;
        sometimes another picture's caption). One per picture."""
        for ident, image, spec, scene in pictures:
            want, sizes = next(self.yes_no), rng.random() < 0.3
            text_spec = spec
            while not want and holds(claim(text_spec, sizes), scene):
                text_spec = violate(spec, broken_facts(spec, rng), rng) if rng.random() < 0.8 else random_spec(rng)
            text = caption(text_spec, sizes=sizes, flip=rng.random() < 0.5)
            question = VQASCORE_QUESTION.format(text if rng.random() < 0.5 else sentence(text))
            self.add("vqascore", ident, [(question, "Yes" if want else "No")], image)

    def presence_records(self, rng: random.Random, pictures: list) -> None:
        """VQAScore-form questions about one object ("a red star", "a red object"), one per picture: half are "No"
        (an absent colour/shape pair, or a colour no object has)."""
        for k, (ident, image, _, scene) in enumerate(pictures):
            by_colour = k % 2 == 0  # half ask for a colour only ("a red object"), the easier half
            present = {(o.color, "object" if by_colour else o.shape) for o in scene.objects}
            if next(self.yes_no):
                color, shape = rng.choice(sorted(present))
            else:
                shapes = ("object",) if by_colour else SHAPES
                color, shape = rng.choice([(c, s) for c in COLORS for s in shapes if (c, s) not in present])
            answer = "Yes" if (color, shape) in present else "No"
            question = VQASCORE_QUESTION.format(Ref(color, shape).phrase())
            self.add("presence", ident, [(question, answer)], image)

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
