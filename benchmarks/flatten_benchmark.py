"""Benchmark: streamed flattening (clip_flant5.flatten) vs the upstream algorithm, on a synthetic mix665k.

    python benchmarks/flatten_benchmark.py                  # full size: 665K records, ~1 GB (several minutes)
    python benchmarks/flatten_benchmark.py --records 20000  # quick run

Each side runs in a fresh subprocess that reports its own peak RSS (getrusage RUSAGE_SELF); wall time is
measured around it. The outputs are then compared record by record, streaming. Results are printed and
written to benchmarks/results/flatten_benchmark[_N].txt. Work files go to benchmarks/out/ (git-ignored).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FULL = 665_000
VQA_PROMPT = "\nAnswer the question using a single word or phrase."
# (source, share of records, image path pattern or None, pair-count sampler, question chars, answer chars),
# after the LLaVA-1.5 mix665k composition (data.md "Sources"): VQA-style sources pack many short QA pairs
# about one image into one record; ShareGPT is text-only with long values.
SOURCES = [
    ("llava_158k", 158, "coco/train2017/{:012d}.jpg", lambda r: 1 if r.random() < 0.63 else r.randint(2, 12), 70, 420),
    ("sharegpt", 40, None, lambda r: min(int(r.expovariate(1 / 3.5)) + 1, 40), 450, 1000),
    ("vqav2", 83, "coco/train2017/{:012d}.jpg", lambda r: r.randint(1, 10), 45, 8),
    ("gqa", 72, "gqa/images/{}.jpg", lambda r: r.randint(1, 20), 50, 8),
    ("okvqa", 9, "coco/train2017/{:012d}.jpg", lambda r: r.randint(1, 3), 60, 10),
    ("ocr_vqa", 80, "ocr_vqa/images/{}.jpg", lambda r: r.randint(3, 7), 40, 25),
    ("aokvqa", 66, "coco/train2017/{:012d}.jpg", lambda r: 1 if r.random() < 0.7 else 2, 180, 40),
    ("textcaps", 22, "textvqa/train_images/{:016x}.jpg", lambda r: 1, 60, 90),
    ("refcoco", 48, "coco/train2017/{:012d}.jpg", lambda r: r.randint(1, 8), 70, 30),
    ("vg", 86, "vg/VG_100K/{}.jpg", lambda r: r.randint(1, 12), 70, 30),
]
WORDS = (
    "the a of to and in is on what color man woman bus train table dog cat sky left right picture image "
    "person holding wearing standing sitting street building white red blue green two three yes no "
    "function python code explain example because however therefore café naïve 東京 数据 привет 🙂"
).split()


def text_pool(rng: random.Random, size: int = 4_000_000) -> str:
    words = rng.choices(WORDS, k=size // 5)
    return " ".join(words)


def generate(path: Path, n: int, seed: int = 0) -> None:
    """Write a synthetic mix665k-like JSON array of `n` records (shuffled sources, fixed seed)."""
    rng = random.Random(seed)
    pool = text_pool(rng)
    total = sum(s[1] for s in SOURCES)
    kinds = [s for s in SOURCES for _ in range(s[1])]

    def text(mean: int) -> str:
        length = max(1, int(rng.expovariate(1 / mean)))
        start = rng.randrange(len(pool) - length)
        return pool[start : start + length].strip() or "ok"

    with open(path, "w", encoding="utf-8") as file:
        file.write("[\n")
        for i in range(n):
            source, _, image, pairs, q_len, a_len = kinds[rng.randrange(total)]
            record = {"id": f"{source}-{i}"}
            if image:
                record["image"] = image.format(rng.randrange(10**9))
            conv = []
            for p in range(pairs(rng)):
                question = text(q_len) + (VQA_PROMPT if source in ("vqav2", "gqa", "ocr_vqa") else "")
                if image and p == 0:
                    question = "<image>\n" + question if rng.random() < 0.9 else question + "\n<image>"
                conv += [{"from": "human", "value": question}, {"from": "gpt", "value": text(a_len)}]
            record["conversations"] = conv
            if source == "sharegpt" and rng.random() < 0.5:
                record["model"] = ""
            file.write(("," if i else "") + json.dumps(record, ensure_ascii=False) + "\n")
        file.write("]\n")


def run_upstream(src: str, dst: str) -> None:
    """The upstream algorithm: load everything, deep-copy per emitted pair, dump with indent=4."""
    with open(src) as file:
        samples = json.load(file)
    out = []
    for sample in samples:
        conv = sample["conversations"]
        if len(conv) == 2:
            out.append(sample)
            continue
        first = copy.deepcopy(sample)
        first["conversations"] = conv[:2]
        out.append(first)
        for i in range(2, len(conv), 2):
            later = copy.deepcopy(sample)
            pair = copy.deepcopy(later["conversations"][i : i + 2])
            pair[0]["value"] = "<image>\n" + pair[0]["value"]
            later["conversations"] = pair
            out.append(later)
    with open(dst, "w") as file:
        json.dump(out, file, indent=4)


def run_ours(src: str, dst: str) -> None:
    from clip_flant5.flatten import flatten_file

    flatten_file(src, dst, mode="faithful")


def measure(side: str, src: Path, dst: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one side in a fresh interpreter."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", side, str(src), str(dst)], check=True, capture_output=True, text=True
    )
    return time.perf_counter() - start, json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def compare(a: Path, b: Path) -> int:
    """Number of records, after checking both files hold the same records (and key order) in the same order."""
    from clip_flant5.flatten import iter_json_array

    n = 0
    left, right = iter_json_array(a), iter_json_array(b)
    for x, y in zip(left, right, strict=True):
        if x != y or list(x) != list(y):
            raise SystemExit(f"outputs differ at record {n}:\n{x}\n{y}")
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=FULL)
    parser.add_argument("--workdir", type=Path, default=HERE / "out" / "flatten")
    parser.add_argument("--keep", action="store_true", help="keep the generated and flattened files")
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, src, dst = args.child
        (run_upstream if side == "upstream" else run_ours)(src, dst)
        print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    src, ours, upstream = (args.workdir / name for name in ("mix.json", "ours.json", "upstream.json"))
    lines = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    start = time.perf_counter()
    generate(src, args.records)
    say(f"input: {args.records} synthetic records, {src.stat().st_size / 2**20:.0f} MiB "
        f"(generated in {time.perf_counter() - start:.0f} s)")  # fmt: skip
    say(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    t_ours, rss_ours = measure("ours", src, ours)
    t_up, rss_up = measure("upstream", src, upstream)
    n = compare(ours, upstream)
    say(f"outputs identical: {n} flattened records (ours {ours.stat().st_size / 2**20:.0f} MiB, "
        f"upstream indent=4 {upstream.stat().st_size / 2**20:.0f} MiB)")  # fmt: skip
    say(f"{'':10} {'wall s':>8} {'peak RSS MiB':>13}")
    say(f"{'upstream':10} {t_up:8.1f} {rss_up:13.0f}")
    say(f"{'ours':10} {t_ours:8.1f} {rss_ours:13.0f}")
    say(f"speed-up: {t_up / t_ours:.1f}x (target >= 3x); peak memory: {rss_ours / rss_up:.3f} of upstream "
        f"(target <= 0.5)")  # fmt: skip
    if not args.keep:
        for path in (src, ours, upstream):
            path.unlink()
    name = "flatten_benchmark" + ("" if args.records == FULL else f"_{args.records}")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    command = "python benchmarks/flatten_benchmark.py" + ("" if args.records == FULL else f" --records {args.records}")
    tmp = results / f".{name}.txt.tmp"
    tmp.write_text(f"$ {command}\n" + "\n".join(lines) + "\n")
    os.replace(tmp, results / f"{name}.txt")  # atomic: a killed run leaves the previous numbers intact


if __name__ == "__main__":
    main()
