"""Benchmark: VQAScore engine vs the published algorithm, on a Winoground-shaped workload (CPU, tiny model).

    python benchmarks/scoring_benchmark.py               # 300 items x 2 images x 2 texts = 1,200 pairs
    python benchmarks/scoring_benchmark.py --items 50
    python benchmarks/scoring_benchmark.py --min-side 200 --max-side 400   # smaller images

Baseline (a faithful re-implementation of the published scorer's algorithm): one model call per pair, the
image loaded, padded, preprocessed and CLIP-encoded again for every text. Engine: clip_flant5.score
(each image encoded once, pairs batched by length, decoder over the answer tokens only). Both in fp32 in
the same process; scores must agree to 1e-5. Prints pairs/s and writes benchmarks/results/scoring_benchmark.txt.
"""

import argparse
import math
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from clip_flant5.checkpoint import init_model
from clip_flant5.images import load_and_preprocess
from clip_flant5.inference import load_tokenizer
from clip_flant5.prompts import scoring_prompt, tokenize_with_image
from clip_flant5.score import ScoreSettings, VQAScorer, score_pairs
from clip_flant5.tiny import make_tiny_base

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 30), "blue": (30, 30, 220), "yellow": (230, 210, 30)}


def workload(folder: Path, items: int, sizes: tuple[int, int]) -> list[dict]:
    """Winoground-shaped: per item two images and two captions that swap the colours."""
    rng, pairs = random.Random(0), []
    for i in range(items):
        a, b = rng.sample(list(COLOURS), 2)
        captions = [f"a {a} circle left of a {b} square", f"a {b} circle left of a {a} square"]
        for k, (left, right) in enumerate(((a, b), (b, a))):
            image = Image.new("RGB", (rng.randint(*sizes), rng.randint(*sizes)), (245, 245, 245))
            draw = ImageDraw.Draw(image)
            draw.ellipse([10, 40, 90, 120], fill=COLOURS[left])
            draw.rectangle([110, 40, 190, 120], fill=COLOURS[right])
            image.save(folder / f"{i}_{k}.jpg")
            pairs += [{"image": f"{i}_{k}.jpg", "text": text} for text in captions]
    return pairs


@torch.inference_mode()
def published_algorithm(model, tok, pairs, root: Path) -> list[float]:
    answer = torch.tensor([tok("Yes").input_ids])
    vocab, scores = len(tok), []
    for pair in pairs:
        pixels = load_and_preprocess(root / pair["image"], model.vision_tower.image_size, "pad")[None]
        ids = torch.tensor([tokenize_with_image(scoring_prompt(pair["text"]), tok)])
        logits = model(input_ids=ids, images=pixels, labels=answer).logits[..., :vocab]
        scores.append(math.exp(-torch.nn.functional.cross_entropy(logits[0], answer[0]).item()))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    # Winoground's own images are photos of roughly 400-1000 px a side; --min-side 200 --max-side 400 for small ones
    parser.add_argument("--min-side", type=int, default=400)
    parser.add_argument("--max-side", type=int, default=800)
    args = parser.parse_args()
    work = Path("benchmarks/out/scoring")
    shutil.rmtree(work, ignore_errors=True)
    (work / "images").mkdir(parents=True)
    base = make_tiny_base(work / "base")
    model = init_model(str(base / "vision"), str(base / "language")).eval()
    tok = load_tokenizer(base / "language")
    pairs = workload(work / "images", args.items, (args.min_side, args.max_side))
    torch.set_num_threads(2)

    t_base, t_engine = [], []
    for attempt in range(args.repeat):  # interleaved, medians reported: this machine's timings are noisy
        start = time.perf_counter()
        baseline = published_algorithm(model, tok, pairs, work / "images")
        t_base.append(time.perf_counter() - start)
        scorer = VQAScorer(model, tok, ScoreSettings(batch_size=args.batch_size))
        start = time.perf_counter()
        engine = score_pairs(scorer, pairs, work / "images", work / f"parts{attempt}", progress=False)
        t_engine.append(time.perf_counter() - start)
    t_base, t_engine = statistics.median(t_base), statistics.median(t_engine)

    diff = max(abs(a - b) for a, b in zip(baseline, engine, strict=True))
    log_diff = max(abs(math.log(a) - math.log(b)) for a, b in zip(baseline, engine, strict=True))
    lines = [
        f"$ python {' '.join(sys.argv)}",
        f"workload: {args.items} items x 2 images x 2 texts = {len(pairs)} pairs, JPEG images "
        f"{args.min_side}-{args.max_side} px a side, tiny CLIP-FlanT5, fp32, CPU "
        f"({torch.get_num_threads()} threads)",
        f"{'':28}{'wall s':>8}{'pairs/s':>10}   (medians of {args.repeat} interleaved runs)",
        f"{'published algorithm':28}{t_base:8.2f}{len(pairs) / t_base:10.1f}",
        f"{f'engine (batch {args.batch_size})':28}{t_engine:8.2f}{len(pairs) / t_engine:10.1f}",
        f"speed-up: {t_base / t_engine:.1f}x (target >= 5x)",
        f"max |score diff| {diff:.2e}, max |log score diff| {log_diff:.2e}",
    ]
    print("\n".join(lines))
    assert diff <= 1e-5, diff
    Path("benchmarks/results/scoring_benchmark.txt").write_text("\n".join(lines) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
