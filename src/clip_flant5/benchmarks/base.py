"""The one interface every benchmark adapter implements, its error type, and the file readers they share.

An adapter knows three things about its benchmark: how to read its files into `Item`s (lists of images and texts
whose [images x texts] VQAScore matrix the scorer fills), what ground truth those files hold, and which metric of
`clip_flant5.metrics` turns the score matrices into the published number. Everything else (which pairs to score,
how to put scores back into matrices) is generic and lives in `clip_flant5.benchmarks`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..errors import UserError


@dataclass(frozen=True)
class Item:
    """One unit of a benchmark: every image is scored against every text.

    `images` are paths relative to the benchmark's folder (POSIX separators), `texts` the captions or prompts.
    """

    id: str
    images: tuple[str, ...]
    texts: tuple[str, ...]


class BenchmarkFormatError(UserError):
    """A benchmark file is missing or does not have the expected layout. The message names the benchmark, the file
    and the layout expected, e.g. `winoground: /data/benchmarks/winoground/metadata.csv not found; expected ...`."""

    def __init__(self, benchmark: str, path: Path | str, problem: str, expected: str, hint: str = ""):
        self.benchmark, self.path, self.problem, self.expected = benchmark, Path(path), problem, expected
        message = f"{benchmark}: {path} {problem}; expected {expected}"
        super().__init__(f"{message} ({hint})" if hint else message)


def metrics_module():
    """`clip_flant5.metrics`, imported on first use so that reading a benchmark never depends on it."""
    from .. import metrics

    return metrics


class Benchmark:
    """Base class of the adapters. Subclasses set the class attributes and implement `read` and `score`.

    - `read(root)` returns (items, truth): the items in file order and whatever ground truth `score` needs;
    - `score(items, truth, matrices)` returns {"value": <headline metric as a fraction>, ...other metrics}.
    """

    name: str  # registry key
    folder: str  # its folder under the benchmarks root (clip_flant5/sources.yaml)
    version: str = "1"  # bump when reading or the metric changes
    metric: str  # "group" | "auroc" | "pairwise_accuracy" | "binary_accuracy"
    layout: str  # the expected on-disk layout, for error messages
    description: str = ""
    column: str | None = None  # its column of the paper's main table (published.yaml); None: its name
    human_ratings: bool = False  # ratings per image (correlation benchmarks): the score-vs-human plot applies

    # ------------------------------------------------------------------ the interface

    def items(self, root: Path | str, *, check_folders: bool = True) -> list[Item]:
        """The items of the benchmark whose folder is `root`, in file order.

        With `check_folders`, every folder the items' images live in must exist (a cheap check that catches an
        archive not unpacked or unpacked one level too deep); single missing images are left to the scorer.
        """
        root = Path(root)
        items, _ = self.read(root)
        if check_folders:
            self.check_folders(root, items)
        return items

    def evaluate(self, root: Path | str, scores: list[np.ndarray]) -> dict:
        """Metrics of `scores` (scores[k]: the [len(items[k].images), len(items[k].texts)] matrix of item k).

        Returns {"benchmark", "version", "metric", "value" (a fraction), "n_items", ...other metrics}.
        """
        items, truth = self.read(Path(root))
        matrices = self.check_scores(items, scores)
        result = self.score(items, truth, matrices)
        head = {"benchmark": self.name, "version": self.version, "metric": self.metric}
        return head | {"value": float(result.pop("value")), "n_items": len(items)} | result

    def read(self, root: Path) -> tuple[list[Item], Any]:
        raise NotImplementedError

    def score(self, items: list[Item], truth: Any, matrices: list[np.ndarray]) -> dict:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} folder={self.folder!r} version={self.version!r}>"

    # ------------------------------------------------------------------ helpers for the adapters

    @property
    def table_column(self) -> str:
        return self.column or self.name

    @property
    def hint(self) -> str:
        return f"clip-flant5 fetch {self.folder}"

    def error(self, path: Path | str, problem: str) -> BenchmarkFormatError:
        return BenchmarkFormatError(self.name, path, problem, self.layout, self.hint)

    def require_file(self, root: Path, name: str) -> Path:
        path = root / name
        if not path.is_file():
            raise self.error(path, "is not a file" if path.exists() else "not found")
        return path

    def read_json(self, root: Path, name: str, kind: type) -> Any:
        path = self.require_file(root, name)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise self.error(path, f"is not valid JSON ({e})") from e
        if not isinstance(data, kind):
            raise self.error(path, f"holds a JSON {type(data).__name__}, not a {kind.__name__}")
        return data

    def read_csv(self, root: Path, name: str, columns: tuple[str, ...]) -> tuple[Path, list[dict[str, str]]]:
        """The rows of a CSV file as dicts of strings (no type guessing: a caption "NaN" stays "NaN")."""
        path = self.require_file(root, name)
        try:
            with open(path, encoding="utf-8-sig", newline="") as f:
                reader = csv.DictReader(f)
                header = reader.fieldnames or []
                missing = [c for c in columns if c not in header]
                if missing:
                    found = ",".join(header) if header else "nothing (empty file)"
                    raise self.error(path, f"lacks column(s) {','.join(missing)} (header: {found})")
                rows = list(reader)
        except (UnicodeDecodeError, csv.Error) as e:
            raise self.error(path, f"is not a readable CSV file ({e})") from e
        for line, row in enumerate(rows, start=2):
            if any(row.get(c) is None for c in columns):
                raise self.error(path, f"line {line} has fewer fields than the header")
        return path, rows

    def field(self, path: Path, record: Any, key: str, where: str, kind: type | tuple = str) -> Any:
        """record[key], which must exist and be of `kind`."""
        if not isinstance(record, dict):
            raise self.error(path, f"{where} is a JSON {type(record).__name__}, not an object")
        if key not in record:
            raise self.error(path, f"{where} lacks key {key!r} (has {', '.join(map(repr, record)) or 'none'})")
        value = record[key]
        if not isinstance(value, kind) or isinstance(value, bool) and bool not in _as_tuple(kind):
            raise self.error(path, f"{where}: {key!r} is {value!r}, not {_kind_name(kind)}")
        return value

    def check_folders(self, root: Path, items: list[Item]) -> None:
        parents: dict[PurePosixPath, str] = {}
        for item in items:
            for image in item.images:
                parents.setdefault(PurePosixPath(image).parent, image)
        for parent, example in parents.items():
            if not (root / parent).is_dir():
                raise self.error(root / parent, f"not found (a folder of images, e.g. {example})")

    def check_scores(self, items: list[Item], scores: list[np.ndarray]) -> list[np.ndarray]:
        """The score matrices as float arrays; their number, shapes and finiteness checked against the items."""
        if len(scores) != len(items):
            raise ValueError(f"{self.name}: {len(scores)} score matrices for {len(items)} items")
        matrices = []
        for item, score in zip(items, scores, strict=True):
            matrix = np.asarray(score, dtype=np.float64)
            shape = (len(item.images), len(item.texts))
            if matrix.shape != shape:
                raise ValueError(
                    f"{self.name}: item {item.id!r} has a score matrix of shape {matrix.shape}, not {shape}"
                )
            if not np.isfinite(matrix).all():
                raise UserError(f"{self.name}: item {item.id!r} has a non-finite score: {matrix.tolist()}")
            matrices.append(matrix)
        return matrices


def _as_tuple(kind: type | tuple) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def number(value: Any) -> float | None:
    """A rating or label as a float (from a JSON number or a CSV string); None if it is not a finite number."""
    if isinstance(value, bool):
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if np.isfinite(result) else None


def correlation_metrics(human: np.ndarray, metric: np.ndarray) -> dict:
    """Pairwise accuracy with tie calibration (the headline), Pearson and Kendall tau-b over all images."""
    m = metrics_module()
    accuracy, epsilon = m.pairwise_accuracy(human, metric, tie_calibration=True)
    return {
        "value": float(accuracy),
        "pairwise_accuracy": float(accuracy),
        "epsilon": float(epsilon),
        "pearson": float(m.pearson(human, metric)),
        "kendall_tau_b": float(m.kendall_tau_b(human, metric)),
        "n_images": int(len(human)),
    }
