"""Correlation with human Likert ratings: TIFA160 and GenAI-Bench (527 and 1600 prompts).

Items are prompts: one text and the images the generators made for it. The human score of an image is the mean of
all its ratings; the metrics run over ALL images at once (no grouping by prompt): pairwise accuracy with tie
calibration (the headline), Pearson and Kendall tau-b, as in t2v_metrics' `evaluate_scores` of `TIFA160_DSG` and
`GenAIBench_Image` (`dataset.py`).

TIFA160 (`tifa160.json`, `dsg_tifa160_anns.csv`): each CSV row is one worker's 1-5 answer for one image, the image
being `<source_id>_<generator>` with the CSV's `model_type` mapped to the generator name of the JSON keys; an
image's human score is the mean over all its rows (all workers; one question per image in the file). The images are
the JSON's entries in file order, grouped by `text_id` into items; every entry must have ratings and every rating
an entry, as upstream requires.

GenAI-Bench (`genai_image.json`): `{key: {"prompt", "models": {model: [3 ratings]}}}`, images `<model>/<key>.jpeg`
for the six generators t2v_metrics evaluates (other model names in the file are ignored, as upstream does). The
1600-prompt set is read the same way: t2v_metrics' `GenAIBench_Image(num_prompts=1600)` (Baiqi-Li/t2v_metrics,
`dataset.py`) reads `GenAI-Image-1600/genai_image.json` and `<model>/<key>.jpeg` from the per-generator zips of the
Hugging Face dataset BaiqiL/GenAI-Bench-1600, exactly as for 527.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Benchmark, Item, correlation_metrics, number

GENAI_MODELS = ("DALLE_3", "SDXL_Turbo", "DeepFloyd_I_XL_v1", "Midjourney_6", "SDXL_2_1", "SDXL_Base")
# dsg_tifa160_anns.csv's model_type -> the generator name in tifa160.json keys and image files.
TIFA_MODELS = {
    "mini-dalle": "mini_dalle",
    "vq-diffusion": "vq_diffusion",
    "sd1dot1": "stable_diffusion_v1_1",
    "sd1dot5": "stable_diffusion_v1_5",
    "sd2dot1": "stable_diffusion_v2_1",
}
TIFA_COLUMNS = ("model_type", "source_id", "answer")


class Correlation(Benchmark):
    metric = "pairwise_accuracy"
    human_ratings = True

    def score(self, items: list[Item], human: np.ndarray, matrices: list[np.ndarray]) -> dict:
        return correlation_metrics(human, _per_image(matrices))

    def human_and_scores(self, root: Path | str, scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(mean human rating, score) per image, for the score-vs-human plot."""
        items, human = self.read(Path(root))
        return human, _per_image(self.check_scores(items, scores))


def _per_image(matrices: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([m[:, 0] for m in matrices])


class TIFA160(Correlation):
    name = folder = "tifa160"
    layout = (
        "tifa160.json ({<source_id>_<generator>: {text_id, image_path, text}}), dsg_tifa160_anns.csv with columns "
        "data_type,model_type,item_id,source_id,worker_id,question,answer (answer 1-5, model_type one of "
        f"{', '.join(TIFA_MODELS)}) and the images <source_id>_<generator>.jpg beside them"
    )
    description = "TIFA160 with the DSG Likert ratings (160 prompts x 5 generators); pairwise accuracy"

    def read(self, root: Path):
        data = self.read_json(root, "tifa160.json", dict)
        json_path = root / "tifa160.json"
        csv_path, rows = self.read_csv(root, "dsg_tifa160_anns.csv", TIFA_COLUMNS)
        ratings: dict[str, list[float]] = {}
        for line, row in enumerate(rows, start=2):
            generator = TIFA_MODELS.get(row["model_type"])
            if generator is None:
                raise self.error(csv_path, f"line {line}: unknown model_type {row['model_type']!r}")
            answer = number(row["answer"])
            if answer is None:
                raise self.error(csv_path, f"line {line}: answer {row['answer']!r} is not a number")
            key = f"{row['source_id']}_{generator}"
            if key not in data:
                raise self.error(csv_path, f"line {line}: image {key!r} is not in tifa160.json")
            ratings.setdefault(key, []).append(answer)

        groups: dict[tuple[str, str], list[tuple[str, float]]] = {}
        for key, entry in data.items():
            where = f"entry {key!r}"
            text_id = self.field(json_path, entry, "text_id", where)
            image = self.field(json_path, entry, "image_path", where)
            text = self.field(json_path, entry, "text", where)
            if key not in ratings:
                raise self.error(csv_path, f"has no ratings for image {key!r} of tifa160.json")
            groups.setdefault((text_id, text), []).append((image, _mean(ratings[key])))
        if not groups:
            raise self.error(json_path, "is empty")
        return _items(groups)


class GenAIBench(Correlation):
    layout = (
        "genai_image.json ({<5-digit key>: {id, prompt, models: {<model>: [ratings 1-5]}}}) and the images "
        f"<model>/<key>.jpeg for {', '.join(GENAI_MODELS)}"
    )

    column = "genai_bench"  # the 1600-prompt set where both are scored (tables.py)

    def __init__(self, name: str, description: str):
        self.name = self.folder = name
        self.description = description

    def read(self, root: Path):
        data = self.read_json(root, "genai_image.json", dict)
        path = root / "genai_image.json"
        groups: dict[tuple[str, str], list[tuple[str, float]]] = {}
        for key, entry in data.items():
            where = f"entry {key!r}"
            prompt = self.field(path, entry, "prompt", where)
            models = self.field(path, entry, "models", where, dict)
            images = []
            for model in GENAI_MODELS:
                if model not in models:
                    continue
                values = models[model]
                scores = [number(v) for v in values] if isinstance(values, list) else [None]
                if not scores or None in scores:
                    raise self.error(path, f"{where}: ratings of {model} are {values!r}, not a list of numbers")
                images.append((f"{model}/{key}.jpeg", _mean(scores)))
            if not images:
                raise self.error(path, f"{where} has ratings for none of {', '.join(GENAI_MODELS)}")
            groups[(key, prompt)] = images
        if not groups:
            raise self.error(path, "is empty")
        return _items(groups)


def _mean(values: list[float]) -> float:
    """The mean of ratings; sum/len gives equal averages exactly equal floats (human ties are exact equality)."""
    return sum(values) / len(values)


def _items(groups: dict[tuple[str, str], list[tuple[str, float]]]) -> tuple[list[Item], np.ndarray]:
    items, human, seen = [], [], set()
    for (item_id, text), images in groups.items():
        unique, n = item_id, 1
        while unique in seen:  # one id with two texts: keep the items apart, their ids distinct
            unique, n = f"{item_id}#{n}", n + 1
        seen.add(unique)
        items.append(Item(unique, tuple(image for image, _ in images), (text,)))
        human.extend(score for _, score in images)
    return items, np.array(human, dtype=np.float64)
