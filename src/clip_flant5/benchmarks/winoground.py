"""Two images and two captions per item, caption_i describing image_i: Winoground and EqBen (mini).

Read as t2v_metrics reads them (`dataset.py`, classes `Winoground` and `EqBen_Mini`; see docs/benchmark_formats.md):
Winoground's `metadata.csv` (id = row index, image paths relative to the folder) and EqBen's `all_select.json`
(image paths relative to `images/`). Metric: text, image and group score (`metrics.winoground_scores`), group the
headline; EqBen also per subset, the subsets grouped as t2v_metrics groups them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Benchmark, Item, metrics_module

# EqBen subsets as t2v_metrics reports them: the first path component of image0 -> the subset.
EQBEN_SUBSETS = {
    "eqbensd": "eqbensd",
    "eqbenkubric_cnt": "eqbenk",
    "eqbenkubric_loc": "eqbenk",
    "eqbenkubric_attr": "eqbenk",
    "eqbengebc": "eqbeng",
    "eqbenag": "eqbenag",
    "eqbenyoucook2": "eqbeny",
}


class TwoByTwo(Benchmark):
    """Shared scoring of the 2 images x 2 texts benchmarks: score[i][t] of image i and text t."""

    metric = "group"

    def score(self, items: list[Item], truth, matrices: list[np.ndarray]) -> dict:
        result = _winoground(matrices)
        subsets: dict[str, list[int]] = {}
        for k, subset in enumerate(truth or ()):
            subsets.setdefault(subset, []).append(k)
        if subsets:
            result["subsets"] = {
                name: _winoground([matrices[k] for k in ks]) | {"n_items": len(ks)} for name, ks in subsets.items()
            }
        return {"value": result["group"], **result}


def _winoground(matrices: list[np.ndarray]) -> dict:
    scores = metrics_module().winoground_scores(np.stack(matrices))
    return {key: float(scores[key]) for key in ("text", "image", "group")}


class Winoground(TwoByTwo):
    name = folder = "winoground"
    layout = (
        "metadata.csv with columns id,image_0,image_1,caption_0,caption_1 (id = row number from 0, image paths "
        "relative to the folder) and images/ beside it"
    )
    description = "Winoground (400 items of 2 images x 2 captions); group score"
    columns = ("id", "image_0", "image_1", "caption_0", "caption_1")

    def read(self, root: Path):
        path, rows = self.read_csv(root, "metadata.csv", self.columns)
        items = []
        for index, row in enumerate(rows):
            if row["id"].strip() != str(index):
                raise self.error(path, f"line {index + 2}: id is {row['id']!r}, not the row number {index}")
            images = (row["image_0"], row["image_1"])
            items.append(Item(str(index), images, (row["caption_0"], row["caption_1"])))
        if not items:
            raise self.error(path, "has no rows")
        return items, None


class EqBen(TwoByTwo):
    name = folder = "eqben"
    layout = (
        "all_select.json, a list of {image0, image1, caption0, caption1} with image paths relative to images/, "
        "and images/<subset>/... beside it"
    )
    description = "EqBen (mini) from eqben_vllm.zip (2 images x 2 captions); group score, also per subset"

    def read(self, root: Path):
        data = self.read_json(root, "all_select.json", list)
        path = root / "all_select.json"
        items, subsets = [], []
        for index, record in enumerate(data):
            where = f"record {index}"
            image0, image1, caption0, caption1 = (
                self.field(path, record, key, where) for key in ("image0", "image1", "caption0", "caption1")
            )
            items.append(Item(str(index), (f"images/{image0}", f"images/{image1}"), (caption0, caption1)))
            first = image0.split("/")[0]
            subsets.append(EQBEN_SUBSETS.get(first, first))
        if not items:
            raise self.error(path, "is an empty list")
        return items, subsets
