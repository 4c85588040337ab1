"""Benchmark: training throughput of the tiny model on CPU, and padding with and without length grouping.

    python benchmarks/training_benchmark.py            # demo corpus at scale 0.5, 40 steps of 64 per run
    python benchmarks/training_benchmark.py --steps 20

1. Padding fraction of the encoder inputs (text tokens; image patches are never padding) over one epoch of
   stage-2 batches: the modality-length grouped sampler vs a plain shuffle, same batch size.
2. Stage-2 training samples/s and tokens/s (padding excluded, image patches and labels included) of the tiny
   CLIP-FlanT5, fp32 on the CPU, grouped vs shuffled, measured in the same run from the trainer's metrics log.
Prints the numbers and ratios and writes benchmarks/results/training_benchmark.txt.
"""

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

import torch

from clip_flant5.checkpoint import init_model, save_model, save_projector
from clip_flant5.data import ConversationDataset
from clip_flant5.demo import make_demo_data
from clip_flant5.flatten import flatten_file
from clip_flant5.inference import load_tokenizer
from clip_flant5.ocrvqa import fix_ocrvqa
from clip_flant5.prompts import tokenize_record
from clip_flant5.recipe import TrainSettings
from clip_flant5.sampler import SeededRandomSampler, modality_grouped_indices
from clip_flant5.tiny import make_tiny_base
from clip_flant5.train import train


def padding_fraction(dataset, order: list[int], batch: int) -> float:
    records = dataset.records
    lengths = [len(tokenize_record(records[i], "t5_v1", dataset.tokenizer)["input_ids"]) for i in range(len(records))]
    padded = real = 0
    for start in range(0, len(order), batch):
        group = [lengths[i] for i in order[start : start + batch]]
        padded += max(group) * len(group)
        real += sum(group)
    return 1 - real / padded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8, help="per-device (micro) batch")
    parser.add_argument("--global-batch", type=int, default=64)
    args = parser.parse_args()
    work = Path("benchmarks/out/training")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    make_demo_data(work / "demo", scale=args.scale)
    fix_ocrvqa(work / "demo/train/ocr_vqa/images")
    flatten_file(work / "demo/train/llava_v1_5_mix665k.json", work / "stage2.json", skip_malformed=True)
    base = make_tiny_base(work / "base")
    model = init_model(str(base / "vision"), str(base / "language"))
    save_model(model, work / "untrained", tokenizer_dir=base / "language", dtype=torch.float32)
    save_projector(model, work / "projector")

    tok = load_tokenizer(base / "language")
    ds = ConversationDataset(work / "stage2.json", work / "demo/train", tok, template="t5_v1", image_size=64,
                             aspect_ratio="pad")  # fmt: skip
    accum = args.global_batch // args.batch  # the grouped sampler sorts each global batch (megabatch) by length
    grouped = modality_grouped_indices(ds.modality_lengths, args.batch, accum, 1, seed=0)
    shuffled = list(SeededRandomSampler(len(ds), seed=0))
    pad_grouped, pad_shuffled = padding_fraction(ds, grouped, args.batch), padding_fraction(ds, shuffled, args.batch)

    rates = {}
    for name, grouping in (("shuffled", False), ("grouped", True)):
        settings = TrainSettings.from_dict(2, {
            "global_batch_size": args.global_batch, "per_device_batch_size": args.batch, "learning_rate": 1e-3,
            "max_steps": args.steps, "deepspeed": "none", "gradient_checkpointing": False, "dataloader_workers": 0,
            "save_steps": 10**6, "dtype": "fp32", "group_by_modality_length": grouping})  # fmt: skip
        train(2, model=str(work / "untrained"), data=str(work / "stage2.json"), image_root=str(work / "demo/train"),
              output=str(work / f"out-{name}"), work_dir=str(work / f"work-{name}"), projector=str(work / "projector"),
              settings=settings)  # fmt: skip
        rows = [json.loads(line) for line in (work / f"work-{name}/metrics.jsonl").read_text().splitlines()][5:]
        rates[name] = (statistics.median(r["samples_per_s"] for r in rows),
                       statistics.median(r["tokens_per_s"] for r in rows))  # fmt: skip

    lines = [
        f"$ python {' '.join(sys.argv)}",
        f"stage-2 data: {len(ds)} flattened demo records (scale {args.scale}); micro-batch {args.batch}, global "
        f"{args.global_batch}; tiny CLIP-FlanT5, "
        f"fp32, CPU ({torch.get_num_threads()} threads); medians over steps 6..{args.steps}",
        f"{'':12}{'padding':>10}{'samples/s':>12}{'tokens/s':>12}",
        f"{'shuffled':12}{pad_shuffled:10.1%}{rates['shuffled'][0]:12.1f}{rates['shuffled'][1]:12.0f}",
        f"{'grouped':12}{pad_grouped:10.1%}{rates['grouped'][0]:12.1f}{rates['grouped'][1]:12.0f}",
        f"grouping: padding {pad_shuffled:.1%} -> {pad_grouped:.1%}; "
        f"samples/s x{rates['grouped'][0] / rates['shuffled'][0]:.2f}, "
        f"tokens/s x{rates['grouped'][1] / rates['shuffled'][1]:.2f}",
    ]
    print("\n".join(lines))
    Path("benchmarks/results/training_benchmark.txt").write_text("\n".join(lines) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
