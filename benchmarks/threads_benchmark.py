"""Benchmark: CPU threads of a training job, and how they are set (the demo's tiny stage 2, fp32 on the CPU).

    python benchmarks/threads_benchmark.py              # 150 steps per run, 3 rounds, interleaved
    python benchmarks/threads_benchmark.py --steps 60 --rounds 2

Each run is `clip-flant5 train --stage 2` in a fresh process on the demo corpus (scale 0.25, built here), micro-batch
8, as the workflow runs it; steps/s is taken from the trainer's metrics log after the first 20 steps (start-up and
warm-up excluded). The job gets `--threads 1` (what Snakemake gives a job without `threads:`) or `--threads 2` (the
demo's training jobs: the cores given to Snakemake), each alone and beside a process that keeps one core busy (what
other work on a laptop, or another job, does to it).

Prints the medians with ratios against `1 thread` and writes benchmarks/results/threads_benchmark.txt.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "threads"
RESULTS = Path(__file__).resolve().parent / "results" / "threads_benchmark.txt"
BUSY = "import time\nend = time.time() + 3600\nwhile time.time() < end: pass"  # one core, until killed


def prepare() -> dict[str, Path]:
    """The demo corpus, flattened and validated stage-2 data, an untrained tiny model and a projector."""
    from clip_flant5.checkpoint import init_model, save_model, save_projector
    from clip_flant5.demo import make_demo_data
    from clip_flant5.flatten import flatten_file
    from clip_flant5.ocrvqa import fix_ocrvqa
    from clip_flant5.tiny import make_tiny_base
    from clip_flant5.validate import validate_data

    shutil.rmtree(OUT, ignore_errors=True)
    data = OUT / "demo"
    make_demo_data(data, seed=0, scale=0.25)
    fix_ocrvqa(data / "train/ocr_vqa/images")
    flatten_file(data / "train/llava_v1_5_mix665k.json", OUT / "flat.json", mode="faithful", skip_malformed=True)
    validate_data(OUT / "flat.json", data / "train", clean_path=OUT / "stage2.json", drop_bad=True)
    base = make_tiny_base(OUT / "base", seed=0)
    model = init_model(str(base / "vision"), str(base / "language"))
    save_model(model, OUT / "untrained", tokenizer_dir=base / "language")
    save_projector(model, OUT / "projector")
    return {"model": OUT / "untrained", "projector": OUT / "projector", "data": OUT / "stage2.json",
            "root": data / "train"}  # fmt: skip


def run(threads: int, busy: bool, paths: dict[str, Path], steps: int, index: int) -> float:
    work = OUT / f"run-{index}"
    shutil.rmtree(work, ignore_errors=True)
    settings = {"global_batch_size": 8, "per_device_batch_size": 8, "deepspeed": "none", "dtype": "fp32",
                "gradient_checkpointing": False, "dataloader_workers": 0, "dropout": 0.0, "max_steps": steps,
                "group_by_modality_length": False}  # fmt: skip
    settings_file = OUT / f"settings-{index}.json"
    settings_file.write_text(json.dumps(settings))
    args = ["train", "--stage", "2", "--model", paths["model"], "--projector", paths["projector"], "--data",
            paths["data"], "--image-root", paths["root"], "--output", work / "out", "--work-dir", work / "work",
            "--settings", settings_file]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # as Snakemake sets it
    command = [sys.executable, "-m", "clip_flant5", *args, "--threads", str(threads)]
    other = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        done = subprocess.run([*map(str, command)], env=env, capture_output=True, text=True)
    finally:
        if other is not None:
            other.kill()
            other.wait()
    if done.returncode:
        raise SystemExit(f"{threads} threads: training failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (work / "work/metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if r["step"] > 20]
    return len(timed) / sum(8 / r["samples_per_s"] for r in timed)  # steps/s over the timed steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    paths = prepare()
    ways = {"1 thread": (1, False), "2 threads": (2, False), "1 thread, a core busy": (1, True),
            "2 threads, a core busy": (2, True)}  # fmt: skip
    rates: dict[str, list[float]] = {way: [] for way in ways}
    index = 0
    for _ in range(args.rounds):  # interleaved: drift on a shared machine hits every way alike
        for way, (threads, busy) in ways.items():
            rates[way].append(run(threads, busy, paths, args.steps, index))
            index += 1
    base = statistics.median(rates["1 thread"])
    lines = [f"$ python benchmarks/threads_benchmark.py --steps {args.steps} --rounds {args.rounds}",
             f"tiny stage 2, micro-batch 8, fp32, CPU ({os.cpu_count()} cores); steps/s after step 20, median of "
             f"{args.rounds} interleaved runs", f"{'':30}{'steps/s':>10}{'vs 1 thread':>14}"]  # fmt: skip
    for way in ways:
        rate = statistics.median(rates[way])
        lines.append(f"{way:30}{rate:10.2f}{rate / base:13.2f}x")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    RESULTS.write_text(text)
    shutil.rmtree(OUT, ignore_errors=True)


if __name__ == "__main__":
    main()
