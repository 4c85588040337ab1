"""DrawBench, EditBench and COCO-T2I: the three subsets of t2v_metrics' filtered SeeTRUE.csv.

One CSV (`image,text,label,original_dataset_id,dataset_source`) for all three, rows shuffled; a benchmark is the rows
whose `dataset_source` is its name, as the file spells it (`drawbench`, `editbench`, `coco_t2i`). Each row is an
item of 1 image x 1 text with a 0/1 label; the metric is AUROC of the scores against the labels over the subset,
as t2v_metrics' `SeeTrue.evaluate_scores` computes it per `dataset_source` (sklearn roc_auc_score semantics).
Images at `images/<image>`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import Benchmark, Item, metrics_module, number

SOURCES = ("drawbench", "editbench", "coco_t2i")
COLUMNS = ("image", "text", "label", "original_dataset_id", "dataset_source")


class SeeTrue(Benchmark):
    folder = "seetrue"
    metric = "auroc"
    layout = (
        "SeeTRUE.csv with columns image,text,label,original_dataset_id,dataset_source (label 0/1, dataset_source "
        "one of drawbench, editbench, coco_t2i) and the images at images/<image>"
    )

    def __init__(self, source: str):
        self.name = self.source = source
        self.description = f"{source} rows of SeeTRUE.csv (1 image x 1 text, label 0/1); AUROC"

    def read(self, root: Path):
        path, rows = self.read_csv(root, "SeeTRUE.csv", COLUMNS)
        items, labels = [], []
        for index, row in enumerate(rows):
            if row["dataset_source"] != self.source:
                continue
            label = number(row["label"])
            if label not in (0.0, 1.0):
                raise self.error(path, f"line {index + 2}: label is {row['label']!r}, not 0 or 1")
            items.append(Item(str(index), (f"images/{row['image']}",), (row["text"],)))
            labels.append(int(label))
        if not items:
            found = sorted({row["dataset_source"] for row in rows})
            raise self.error(path, f"has no rows with dataset_source {self.source!r} (found: {', '.join(found)})")
        return items, np.array(labels)

    def score(self, items: list[Item], labels: np.ndarray, matrices: list[np.ndarray]) -> dict:
        n_pos = int(labels.sum())
        n_neg = len(labels) - n_pos
        if not n_pos or not n_neg:
            raise UserError(f"{self.name}: AUROC needs both labels; the subset has {n_pos} positive, {n_neg} negative")
        scores = np.array([m[0, 0] for m in matrices])
        return {"value": float(metrics_module().auroc(labels, scores)), "n_pos": n_pos, "n_neg": n_neg}
