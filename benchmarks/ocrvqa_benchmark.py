"""Benchmark: the OCR-VQA jpg fix, upstream-style serial loop vs clip_flant5.ocrvqa.fix_ocrvqa(jobs=N).

    python benchmarks/ocrvqa_benchmark.py                 # 2,000 gif/png images, jobs = 2
    python benchmarks/ocrvqa_benchmark.py --images 200 --jobs 4

Both sides convert the same generated images (200-600 px, half GIF, half PNG, fixed seed) in separate
copies of the folder; each timing is the median of --repeat interleaved runs (jpgs deleted before each); the
outputs are checked to be byte-identical. Results are printed and written to
benchmarks/results/ocrvqa_benchmark.txt. Work files go to benchmarks/out/ (git-ignored).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from clip_flant5.ocrvqa import fix_ocrvqa

HERE = Path(__file__).resolve().parent


def generate(folder: Path, n: int, seed: int = 0) -> None:
    """Book-cover-like images: a smooth colour field, blocks and noise; GIFs palettised as real ones are."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        width, height = (int(v) for v in rng.integers(200, 601, 2))
        field = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
        draw = ImageDraw.Draw(field)
        for _ in range(6):
            x, y = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
            box = (x, y, x + int(rng.integers(10, 200)), y + int(rng.integers(5, 40)))
            draw.rectangle(box, fill=tuple(rng.integers(0, 256, 3).tolist()))
        noise = rng.integers(-12, 13, (height, width, 3))
        image = Image.fromarray(np.clip(np.asarray(field, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
        if i % 2:
            image.convert("P", palette=Image.ADAPTIVE).save(folder / f"{i:06d}.gif")
        else:
            image.save(folder / f"{i:06d}.png")


def serial_baseline(folder: Path) -> None:
    """Upstream's fix_ocrvqa.py: one process, open/convert/save each gif/png lacking a jpg."""
    for name in os.listdir(folder):
        stem, suffix = os.path.splitext(name)
        jpg = folder / f"{stem}.jpg"
        if suffix.lower() in (".gif", ".png") and not jpg.exists():
            Image.open(folder / name).convert("RGB").save(jpg)


def timed(runs: list, repeat: int) -> list[float]:
    """Median wall time of each (function, folder); the runs are interleaved so that drift on a shared
    machine hits every side alike."""
    times = [[] for _ in runs]
    for _ in range(repeat):
        for (run, folder), spent in zip(runs, times, strict=True):
            for jpg in folder.glob("*.jpg"):
                jpg.unlink()
            start = time.perf_counter()
            run(folder)
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=HERE / "out" / "ocrvqa")
    args = parser.parse_args()

    shutil.rmtree(args.workdir, ignore_errors=True)
    serial, parallel = args.workdir / "serial", args.workdir / "parallel"
    serial.mkdir(parents=True)
    generate(serial, args.images)
    shutil.copytree(serial, parallel)
    lines = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    mib = sum(p.stat().st_size for p in serial.iterdir()) / 2**20
    say(f"input: {args.images} gif/png images (200-600 px), {mib:.0f} MiB; median of {args.repeat} interleaved runs")
    say(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    ours = functools.partial(fix_ocrvqa, jobs=args.jobs)
    t_serial, t_parallel = timed([(serial_baseline, serial), (ours, parallel)], args.repeat)
    names = sorted(p.name for p in serial.glob("*.jpg"))
    assert names == sorted(p.name for p in parallel.glob("*.jpg")) and len(names) == args.images
    assert all((serial / n).read_bytes() == (parallel / n).read_bytes() for n in names), "outputs differ"
    say(f"outputs identical: {len(names)} jpgs")
    say(f"{'':24} {'wall s':>7} {'images/s':>9}")
    say(f"{'serial (upstream loop)':24} {t_serial:7.2f} {args.images / t_serial:9.0f}")
    say(f"{f'fix_ocrvqa(jobs={args.jobs})':24} {t_parallel:7.2f} {args.images / t_parallel:9.0f}")
    say(f"throughput ratio: {t_serial / t_parallel:.2f}x (target >= 1.8x on 2 cores)")
    shutil.rmtree(args.workdir)

    results = HERE / "results"
    results.mkdir(exist_ok=True)
    keys = ("images", "jobs", "repeat", "workdir")
    options = [(k, getattr(args, k)) for k in keys if getattr(args, k) != parser.get_default(k)]
    command = " ".join(["python benchmarks/ocrvqa_benchmark.py", *(f"--{k} {v}" for k, v in options)])
    name = "ocrvqa_benchmark" + "".join(f"_{k}{Path(v).name if k == 'workdir' else v}" for k, v in options)
    tmp = results / f".{name}.txt.tmp"
    tmp.write_text(f"$ {command}\n" + "\n".join(lines) + "\n")
    os.replace(tmp, results / f"{name}.txt")  # atomic: a killed run leaves the previous numbers intact


if __name__ == "__main__":
    main()
