"""The image-text alignment benchmarks of the VQAScore paper, one small registered adapter each.

In the style of lm-evaluation-harness: every benchmark is a `Benchmark` with a registry name, the folder it lives
in under the benchmarks root (`<data_root>/benchmarks/<folder>/`, clip_flant5/sources.yaml), a version (bumped when
reading or the metric changes) and a headline metric. Its `items(root)` read the benchmark's files into `Item`s
(images x texts, image paths relative to the folder) and `evaluate(root, scores)` turns one [images x texts]
VQAScore matrix per item into the published metric.

    bench = get_benchmark("winoground")
    root = data_root / "benchmarks" / bench.folder
    todo = pairs(bench, root)                     # unique {"image", "text"}, to be scored once each
    scored = {(p["image"], p["text"]): vqascore(root / p["image"], p["text"]) for p in todo}
    result = bench.evaluate(root, score_matrices(bench, root, scored))
    # {"benchmark": "winoground", "version": "1", "metric": "group", "value": 0.348, "n_items": 400, ...}

| name | folder | items | metric |
|---|---|---|---|
| winoground | winoground | 2 images x 2 texts | group (also text, image) |
| eqben | eqben | 2 x 2 | group (also text, image, per subset) |
| drawbench, editbench, coco_t2i | seetrue | 1 x 1 with a 0/1 label | auroc |
| tifa160 | tifa160 | prompt: 5 generators' images x 1 | pairwise_accuracy (also pearson, kendall_tau_b) |
| pickapic | pickapic | 2 x 1, the fixed 100 items | binary_accuracy |
| genai_bench_527, genai_bench_1600 | same | prompt: 6 generators' images x 1 | pairwise_accuracy (+ pearson, kendall) |

Metrics come from `clip_flant5.metrics`. A missing or malformed file raises `BenchmarkFormatError`, naming the
benchmark, the file and the layout expected. Formats and sources: docs/benchmark_formats.md and each module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import Benchmark, BenchmarkFormatError, Item
from .correlation import TIFA160, GenAIBench
from .pickapic import SUBSET as PICKAPIC_SUBSET
from .pickapic import PickAPic
from .seetrue import SeeTrue
from .winoground import EqBen, Winoground

__all__ = [
    "PICKAPIC_SUBSET",
    "REGISTRY",
    "Benchmark",
    "BenchmarkFormatError",
    "Item",
    "get_benchmark",
    "pairs",
    "register",
    "score_matrices",
]

REGISTRY: dict[str, Benchmark] = {}


def register(benchmark: Benchmark) -> Benchmark:
    """Add `benchmark` to the registry under its name (a name can be registered once)."""
    if benchmark.name in REGISTRY:
        raise ValueError(f"benchmark {benchmark.name!r} is already registered")
    REGISTRY[benchmark.name] = benchmark
    return benchmark


for _benchmark in (
    Winoground(),
    EqBen(),
    SeeTrue("drawbench"),
    SeeTrue("editbench"),
    SeeTrue("coco_t2i"),
    TIFA160(),
    PickAPic(),
    GenAIBench("genai_bench_527", "GenAI-Bench, 527 prompts x 6 generators, 3 ratings each; pairwise accuracy"),
    GenAIBench("genai_bench_1600", "GenAI-Bench, 1600 prompts x 6 generators, 3 ratings each; pairwise accuracy"),
):
    register(_benchmark)


def get_benchmark(name: str | Benchmark) -> Benchmark:
    """The registered benchmark called `name` (a Benchmark is returned as is)."""
    if isinstance(name, Benchmark):
        return name
    try:
        return REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown benchmark {name!r}; valid names: {', '.join(REGISTRY)}") from None


def pairs(benchmark: str | Benchmark, root: Path | str) -> list[dict]:
    """Every (image, text) pair the benchmark needs scored, once: [{"image": <path relative to root>, "text"}], in
    item order (within an item, image by image, text by text)."""
    seen: dict[tuple[str, str], None] = {}
    for item in get_benchmark(benchmark).items(root):
        for image in item.images:
            for text in item.texts:
                seen.setdefault((image, text), None)
    return [{"image": image, "text": text} for image, text in seen]


def score_matrices(
    benchmark: str | Benchmark, root: Path | str, scored: dict[tuple[str, str], float]
) -> list[np.ndarray]:
    """The [images x texts] score matrix of every item, looked up in `scored`: (image, text) -> score, the image
    path relative to root as `pairs` gives it. Raises UserError naming the pairs that have no score."""
    bench = get_benchmark(benchmark)
    matrices, missing = [], []
    for item in bench.items(root, check_folders=False):
        matrix = np.empty((len(item.images), len(item.texts)), dtype=np.float64)
        for i, image in enumerate(item.images):
            for t, text in enumerate(item.texts):
                score = scored.get((image, text))
                if score is None:
                    missing.append((image, text))
                    matrix[i, t] = np.nan
                else:
                    matrix[i, t] = score
        matrices.append(matrix)
    if missing:
        unique = list(dict.fromkeys(missing))
        raise UserError(
            f"{bench.name}: {len(unique)} (image, text) pairs have no score, e.g. {unique[0]!r}: score the pairs of "
            f"`clip-flant5 benchmark-pairs {bench.name}` with `clip-flant5 score` and evaluate that output"
        )
    return matrices
