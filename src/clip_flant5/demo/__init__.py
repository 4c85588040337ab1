"""A synthetic demo corpus in the on-disk formats of the real training data and benchmarks.

`make_demo_data(out)` renders small pictures of coloured shapes and writes, under `out/`:

- `train/`: the image root of the training JSONs, laid out like the real one: `coco/train2017/`,
  `gqa/images/`, `textvqa/train_images/`, `vg/VG_100K{,_2}/`, `ocr_vqa/images/` (some only as .gif/.png,
  so the OCR-VQA jpg fix has work to do), `LLaVA-Pretrain/` (stage 1) and `llava_v1_5_mix665k.json`;
- `benchmarks/`: winoground, seetrue, genai_bench_527, tifa160, eqben and pickapic in their real formats;
- `scenes.json`: what every image shows (image path relative to `out/` -> scene), so answers and labels can be
  re-derived; `manifest.json`: counts, seed, scale and the sha256 of every JSON/CSV/JSONL file.

Every answer and label is true of the rendering. The same seed and scale give byte-identical files. The tree is
built in a temporary folder beside `out/` and renamed into place. The formats, with their sources, are described
in `docs/benchmark_formats.md`.

The package: `scenes` (vocabulary, scene sampling, captions and facts, rendering), `questions` (questions and
answers derived from a scene), `output` (writing files and scene records), `training` (stage-1 and stage-2 JSONs),
`benchmarks` (the benchmark writers); here, the atomic write and the manifest.
"""

from __future__ import annotations

import os

from ..atomic import atomic_dir
from ..errors import UserError
from .benchmarks import GENAI_MODELS, TIFA_MODELS, Benchmarks
from .scenes import BACKGROUNDS, COLORS, SHAPES
from .training import Training

__all__ = ["BACKGROUNDS", "COLORS", "GENAI_MODELS", "SHAPES", "TIFA_MODELS", "make_demo_data"]


def make_demo_data(out_dir: str | os.PathLike, *, seed: int = 0, scale: float = 1.0, quirks: bool = True) -> dict:
    """Write the demo corpus to `out_dir` (replacing it atomically) and return its manifest.

    `scale` multiplies every count (each has a small minimum). With `quirks`, the mix also holds records as found
    in the wild, starting with a gpt turn or ending on an unanswered human turn (two of each at scale 1).
    """
    if scale <= 0:
        raise UserError(f"scale must be positive, got {scale}")
    with atomic_dir(out_dir) as tmp:
        return _Corpus(tmp, seed, scale, quirks).build()


class _Corpus(Training, Benchmarks):
    """Builds the corpus under `root`: one method per dataset, each with its own random stream."""

    def build(self) -> dict:
        self.pretrain()
        self.mix()
        self.winoground()
        self.eqben()
        self.seetrue()
        self.genai_bench()
        self.tifa160()
        self.pickapic()
        self.write_json("scenes.json", self.scenes, indent=None)
        manifest = {"seed": self.seed, "scale": self.scale, "quirks": self.quirks, "images": len(self.scenes)}
        manifest["counts"] = self.counts
        manifest["sha256"] = dict(sorted(self.sha256.items()))
        self.write_json("manifest.json", manifest)
        return manifest
