"""The corpus being written: images with a record of what each shows, text files with their sha256, counts."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from dataclasses import asdict
from pathlib import Path

from .scenes import Scene, Spec, render, save_image


class Output:
    """Writes under `root` and keeps what goes into `scenes.json` and the manifest; `rng` and `n` give each dataset
    its random stream and its size at this scale."""

    def __init__(self, root: Path, seed: int, scale: float, quirks: bool):
        self.root, self.seed, self.scale, self.quirks = root, seed, scale, quirks
        self.scenes: dict[str, dict] = {}
        self.sha256: dict[str, str] = {}
        self.counts: dict[str, dict] = {}

    def rng(self, section: str) -> random.Random:
        return random.Random(f"{self.seed}:{section}")  # one stream per section: sections stay independent

    def n(self, base: int, minimum: int) -> int:
        return max(minimum, round(base * self.scale))

    def image(self, rel: str, scene: Scene, spec: Spec, stored_as: str = "", **extra) -> None:
        """Render `scene` to `rel` (relative to the output root; written as `stored_as` there if given)."""
        path = self.root / rel
        save_image(render(scene), path.with_name(stored_as) if stored_as else path)
        entry = {**asdict(scene), "spec": asdict(spec), **extra}
        self.scenes[rel] = entry | ({"stored_as": stored_as} if stored_as else {})

    def write(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode())
        self.sha256[rel] = hashlib.sha256(text.encode()).hexdigest()

    def write_json(self, rel: str, data, indent: int | None = 2) -> None:
        self.write(rel, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")

    def write_csv(self, rel: str, header: list[str], rows: list[list]) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerows([header, *rows])
        self.write(rel, buffer.getvalue())
