"""The synthetic benchmarks in their real on-disk formats: winoground, eqben, seetrue, genai_bench_527, tifa160 and
pickapic. Labels and ratings follow from which facts of a prompt each picture gets wrong."""

from __future__ import annotations

import json
import random
from dataclasses import replace

from ..benchmarks.correlation import GENAI_MODELS, TIFA_MODELS
from .output import Output
from .scenes import BACKGROUNDS, Spec, caption, claim, facts, holds, make_scene, random_spec, sentence, violate

# Chance that a generator gets each fact of a prompt wrong (its human ratings follow).
GENAI_ERROR = dict(zip(GENAI_MODELS, (0.05, 0.3, 0.28, 0.12, 0.35, 0.22), strict=True))
TIFA_ERROR = {"mini-dalle": 0.4, "vq-diffusion": 0.3, "sd1dot1": 0.25, "sd1dot5": 0.15, "sd2dot1": 0.1}
TIFA_QUESTION = "How consistent is the image with the text description?"


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


class Benchmarks(Output):
    """Writes `benchmarks/`: one method per benchmark, each with its own random stream."""

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

    def render_prompt(self, rng: random.Random, spec: Spec, broken: list[str], rel: str, background: str = "") -> float:
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
            for t in range(self.n(30, 2)):
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
        for index in range(self.n(50, 3)):
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
        n = self.n(30, 2)
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
        for index in range(self.n(50, 2)):
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
