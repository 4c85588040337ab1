"""Pick-a-Pic (v1 subset): one caption, two images, the human preferring one of them.

`test_captions.json`: a list of {id, caption, label_0, label_1, image_0, image_1} with id = list index and image
paths relative to the folder. The published numbers use a FIXED subset of 100 indices, `SUBSET` below, the list
`selected_idxs` of class `Pickapic_v1` in t2v_metrics' `dataset.py` (Baiqi-Li/t2v_metrics at commit
02587b609bbc7d212e36f75740381a2ce0889462; the same list in later copies of linzhiqiu/t2v_metrics' `dataset.py`),
taken in that order. A file with fewer rows (the demo's) gives the indices of the subset that exist; the result
then says how many were missing.

Label: image 0 when label_0 == 1, else image 1. Prediction: image 0 when score_0 >= score_1 (ties go to image 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Benchmark, Item, metrics_module, number

# fmt: off
SUBSET = (
    1, 9, 385, 14, 138, 5, 31, 33, 39, 352, 21, 417, 399, 17, 82, 412, 78, 53, 54, 59, 60, 308, 76, 142, 98, 259,
    317, 110, 113, 118, 112, 119, 144, 148, 149, 153, 159, 162, 172, 111, 124, 196, 197, 220, 35, 141, 252, 475, 368,
    214, 150, 43, 221, 163, 228, 236, 57, 326, 257, 266, 268, 62, 274, 277, 278, 281, 105, 285, 286, 301, 419, 91,
    312, 316, 318, 319, 334, 335, 339, 340, 347, 350, 367, 374, 375, 382, 376, 387, 345, 405, 411, 478, 441, 444, 99,
    384, 472, 479, 490, 493,
)
# fmt: on


class PickAPic(Benchmark):
    name = "pickapic"
    folder = "pickapic"
    metric = "binary_accuracy"
    layout = (
        "test_captions.json, a list of {id, caption, label_0, label_1, image_0, image_1} (id = list index, image "
        "paths relative to the folder), with the fixed subset's 100 indices up to 493, and the images it names"
    )
    description = "Pick-a-Pic v1, the fixed 100-item subset (2 images x 1 caption); binary accuracy"

    def __init__(self, indices: tuple[int, ...] | None = SUBSET):
        """`indices`: the rows evaluated, in this order; None: every row of the file."""
        self.indices = indices

    def read(self, root: Path):
        data = self.read_json(root, "test_captions.json", list)
        path = root / "test_captions.json"
        indices = range(len(data)) if self.indices is None else [i for i in self.indices if i < len(data)]
        items, label_0s = [], []
        for index in indices:
            record = data[index]
            where = f"record {index}"
            caption = self.field(path, record, "caption", where)
            images = tuple(self.field(path, record, key, where) for key in ("image_0", "image_1"))
            if self.field(path, record, "id", where, (int, str)) not in (index, str(index)):
                raise self.error(path, f"{where} has id {record['id']!r}, not its index {index}")
            label_0 = number(self.field(path, record, "label_0", where, (int, float)))
            self.field(path, record, "label_1", where, (int, float))
            items.append(Item(str(index), images, (caption,)))
            label_0s.append(label_0)
        if not items:
            raise self.error(path, f"has {len(data)} records, none of them at an index of the fixed subset")
        return items, np.array(label_0s)

    def score(self, items: list[Item], label_0: np.ndarray, matrices: list[np.ndarray]) -> dict:
        score_0, score_1 = np.array([m[0, 0] for m in matrices]), np.array([m[1, 0] for m in matrices])
        result = {"value": float(metrics_module().binary_accuracy(label_0, score_0, score_1))}
        if self.indices is not None:
            result["n_subset"] = len(self.indices)
            missing = len(self.indices) - len(items)
            if missing:
                result["n_missing"] = missing
                result["note"] = (
                    f"test_captions.json holds only {len(items)} of the {len(self.indices)} fixed indices (a "
                    f"smaller file than upstream's): the accuracy is over those {len(items)} items, not the subset"
                )
        return result
