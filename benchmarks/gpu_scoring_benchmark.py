"""Benchmark: VQAScore at CLIP-FlanT5-XXL and -XL shapes on one GPU, our engine vs the published per-pair algorithm.

    python benchmarks/gpu_scoring_benchmark.py                         # XXL then XL, 64 items (256 pairs) each
    python benchmarks/gpu_scoring_benchmark.py --size xl --items 128 --batch-size 32
    python benchmarks/gpu_scoring_benchmark.py --vision-attention sdpa # CLIP on SDPA even where flash-attn imports
    python benchmarks/gpu_scoring_benchmark.py --tiny --items 4        # tiny shapes, fp32 on CPU (tested)

Models are built from configs only (random init, nothing downloaded), directly on the device in bf16 (torch's
default device and dtype set while the modules are made, so no fp32 copy ever exists on the host): CLIP ViT-L/14-336
(clip_flant5.model's KNOWN_VISION_CONFIGS), projector mlp2x_gelu, and google/flan-t5-xxl's T5 config (d_model 4096,
d_ff 10240, 64 heads; xl: 2048 / 5120 / 32; both 24+24 layers, d_kv 64, gated-gelu, vocab 32128, untied lm_head).
`lm_head` is redrawn with std d_model^-0.5 so the random model's logits are of unit scale (T5's own init, std 1,
puts every score at exp(-hundreds), where comparing two algorithms' scores says nothing). `model.eval()`. Attention:
T5 on SDPA, the CLIP tower on flash-attn when `flash_attn` imports on a CUDA device, else SDPA
(clip_flant5.model.choose_attention; `--vision-attention` overrides); the implementations used are printed.

Workload: Winoground-shaped items, 2 images x 2 captions each (4 pairs per item; the captions swap two colour words),
captions of 10-15 common English words in the `t5_chat` scoring prompt (clip_flant5.prompts.scoring_prompt,
tokenize_with_image): with the 576 image patches about 650 encoder tokens per pair, the answer "Yes" + </s> (2
decoder tokens). Token ids come from a real SentencePiece tokenizer: the tiny one of clip_flant5.tiny (trained here
in a few seconds on English-like text with FlanT5's special ids; common words are one piece each as in FlanT5's
own, so the counts are close to the real ones; all its ids are below 32128, so none needs capping), or the FlanT5
tokenizer folder given with `--tokenizer`. Images are random preprocessed pixel tensors [3, 336, 336] already on
the device: image loading and preprocessing are NOT measured (the CPU benchmark scoring_benchmark.py measures them).

Measured in the same run, interleaved `--repeat` times after `--warmup` untimed passes over the first chunk
(torch.cuda.synchronize before and after each timed pass; medians reported):
  engine     clip_flant5.score.VQAScorer.score_chunk on chunks of `--images-per-chunk` images (given as completed
             Futures of pixel tensors): each image CLIP-encoded once, pairs sorted by length and batched at
             `--batch-size`, the decoder over the 2 answer tokens, softmax over all 32128 rows (full_vocab; the
             published scorer uses 32100, the same cost);
  published  the published algorithm, as scoring_benchmark.py re-implements it: one model call per (image, text)
             pair, batch 1, CLIP re-run for every pair, labels passed to the model, CE over the same vocabulary.
Scores must agree: max |log score difference| <= `--log-tolerance` (bf16 default 0.1, i.e. about 10% relative, for
48 bf16 layers run with different batch shapes and kernels: a 24+24-layer d_model-256 model of the same kind in bf16
on a CPU gave 0.024 between the two algorithms; fp32 default 1e-4); the max absolute difference is reported too.
The JSON is written before the check, so a failing run keeps its numbers.

Model FLOPs (forward only, matmuls, 2 FLOPs per multiply-add, real tokens only: the engine's right padding is not
counted), with Le_i = P + Lt_i - 1 encoder tokens of pair i (P = 576 image patches, Lt_i prompt tokens incl. the
image token), La = 2 answer tokens, n pairs, m CLIP runs (m = images for the engine, m = n for the published):
    T5 encoder        2 * N_enc * sum_i Le_i
    cross-attn K/V    2 * N_xkv * sum_i Le_i                (the decoder's EncDecAttention k, v over encoder tokens)
    T5 decoder        2 * (N_dec + N_lm_head) * n * La      (N_dec without N_xkv; lm_head over all 32128 rows)
    T5 attention      4 * d_attn * (layers_enc * sum_i Le_i^2 + layers_dec * (n * La^2 + La * sum_i Le_i))
                      (scores and weighted values, full matrices; d_attn = heads * d_kv)
    projector         2 * N_proj * m * P
    CLIP              m * (2 * N_clip * (P+1) + 4 * d_clip * layers_clip * (P+1)^2)
                      (all 24 layers run although layer -2 is selected)
N_* are parameter counts of the built model (gpu_stage2_benchmark.parameter_counts: weights and biases a token is
multiplied with; embedding lookups, relative-position biases, position embeddings, layer norms left out). With
648 encoder tokens a pair's T5 work is 7.23 TFLOP at XXL (encoder 2 x 4.63 B x 648 = 6.00, cross-attention K/V
1.04, attention 0.17) and 1.85 TFLOP at XL; one CLIP + projector run is 0.39-0.41 TFLOP. Checked against
torch.utils.flop_counter on the tiny model with eager attention (tests/test_gpu_scoring_benchmark.py: within 0.5%;
the counter sees no SDPA kernel on CPU). MFU = model FLOPs / median wall time / bf16 dense peak (the table of
gpu_stage2_benchmark.py: 989 TFLOP/s for H100 SXM and H200; `--peak-tflops` overrides).

Prints a table and writes benchmarks/results/gpu_scoring_benchmark_<device>.json (`--out` elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import random
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

import torch
import transformers
from gpu_stage2_benchmark import (
    FLAN_T5_XL,
    TINY_T5,
    TINY_VISION,
    default_result_path,
    device_name,
    parameter_counts,
    peak_tflops,
    percent,
    sync,
)

from clip_flant5.inference import load_tokenizer
from clip_flant5.model import KNOWN_VISION_CONFIGS, CLIPT5Config, CLIPT5ForConditionalGeneration, choose_attention
from clip_flant5.prompts import scoring_prompt, tokenize_with_image
from clip_flant5.score import ScoreSettings, VQAScorer
from clip_flant5.tiny import VOCAB_MULTIPLE, build_tokenizer
from clip_flant5.variants import DEFAULT_VISION_TOWER

# google/flan-t5-xxl config.json: flan-t5-xl's fields with the XXL widths (spec/model.md lists the same shapes).
FLAN_T5_XXL = dict(FLAN_T5_XL, d_model=4096, d_ff=10240, num_heads=64)
SIZES = {"xxl": FLAN_T5_XXL, "xl": FLAN_T5_XL}
SHAPES = {"xxl": "clip-flant5-xxl (CLIP ViT-L/14-336 + flan-t5-xxl)",
          "xl": "clip-flant5-xl (CLIP ViT-L/14-336 + flan-t5-xl)", "tiny": "tiny"}  # fmt: skip
ANSWER = "Yes"
LOG_TOLERANCE = {"bf16": 0.1, "fp32": 1e-4}
VISION_ATTENTION = ("auto", "sdpa", "flash_attention_2", "eager")

# Caption words: each one piece in FlanT5's tokenizer and in the tiny one.
COLOURS = "red green blue yellow white black brown pink orange purple gray".split()
THINGS = "dog cat bird horse car bus truck boat chair table cup bottle book tree flower box".split()
POSES = "sitting standing lying parked".split()
RELATIONS = ["left of", "right of", "behind", "in front of", "next to", "above", "below", "near"]
SIZE_WORDS = "small big large tiny tall short little round".split()
PLACES = "street room beach road garden house".split()


def captions(rng: random.Random) -> tuple[str, str]:
    """Two Winoground-style captions of 10-15 words with the same words, two colours swapped."""
    while True:
        a, b = rng.sample(COLOURS, 2)
        x, y = rng.sample(THINGS, 2)
        size = f"{rng.choice(SIZE_WORDS)} " if rng.random() < 0.5 else ""
        place = f" in the {rng.choice(PLACES)}" if rng.random() < 0.7 else ""
        plural = rng.choice([t for t in THINGS if not t.endswith(("s", "x"))])
        tail = f" with {rng.choice(['two', 'three'])} {plural}s" if rng.random() < 0.4 else ""
        pose, relation = rng.choice(POSES), rng.choice(RELATIONS)
        first, second = (f"a {size}{c1} {x} {pose} {relation} the {c2} {y}{place}{tail}" for c1, c2 in ((a, b), (b, a)))
        if 10 <= len(first.split()) <= 15:
            return first, second


def workload(items: int, seed: int = 0) -> list[tuple[int, str]]:
    """(image index, caption) pairs: item i has images 2i, 2i+1, each paired with both of its captions."""
    rng, pairs = random.Random(seed), []
    for i in range(items):
        texts = captions(rng)
        pairs += [(2 * i + k, text) for k in range(2) for text in texts]
    return pairs


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_model(t5: dict, vision: dict, device: torch.device, dtype: torch.dtype) -> CLIPT5ForConditionalGeneration:
    """CLIP-FlanT5 from configs, random weights made on `device` in `dtype` (no host copy), eval mode."""
    config = CLIPT5Config(
        **t5, mm_vision_tower="tiny-vision" if vision is TINY_VISION else DEFAULT_VISION_TOWER,
        mm_vision_config=dict(vision), mm_hidden_size=vision["hidden_size"], mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2, mm_vision_select_feature="patch", image_aspect_ratio="pad",
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device), default_dtype(dtype):
        model = CLIPT5ForConditionalGeneration(config)
    if model.lm_head.weight is model.shared.weight:
        raise RuntimeError("lm_head is tied to the embedding: FlanT5 has its own lm_head")
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, config.d_model**-0.5)  # unit-scale logits (see the module docstring)
    for sub in (model.config, model.encoder.config, model.decoder.config, model.vision_tower.vision_tower.config):
        sub.dtype = dtype  # as from_pretrained(dtype=...) records it (flash-attn checks it)
    return model.eval()


def scoring_flops(model, prompt_lengths: list[int], answer: int, clip_runs: int) -> dict:
    """Model FLOPs of scoring pairs with these prompt lengths (see the module docstring)."""
    n, t5 = parameter_counts(model), model.config
    clip = model.vision_tower.vision_tower.config
    patches = model.vision_tower.num_patches
    clip_tokens = (clip.image_size // clip.patch_size) ** 2 + 1
    enc = [patches + length - 1 for length in prompt_lengths]
    pairs, enc_sum, enc_sq = len(enc), sum(enc), sum(e * e for e in enc)
    d_attn = t5.num_heads * t5.d_kv
    terms = {
        "t5_encoder": 2 * n["enc"] * enc_sum,
        "cross_attention_kv": 2 * n["xkv"] * enc_sum,
        "t5_decoder": 2 * n["dec"] * pairs * answer,
        "lm_head": 2 * n["lm_head"] * pairs * answer,
        "t5_attention": 4 * d_attn * (t5.num_layers * enc_sq + t5.num_decoder_layers * (pairs * answer**2
                                                                                       + answer * enc_sum)),
        "projector": 2 * n["proj"] * clip_runs * patches,
        "clip": clip_runs * (2 * n["clip"] * clip_tokens
                             + 4 * clip.hidden_size * clip.num_hidden_layers * clip_tokens**2),
    }  # fmt: skip
    return {"terms": terms, "total": sum(terms.values()), "params": n}


def chunked(pixels: torch.Tensor, pairs: list[tuple[int, str]], per_chunk: int):
    """[(pixels of `per_chunk` images, pairs with indices into them)], in image order."""
    chunks = []
    for start in range(0, pixels.shape[0], per_chunk):
        stop = min(start + per_chunk, pixels.shape[0])
        chunks.append((pixels[start:stop], [(i - start, text) for i, text in pairs if start <= i < stop]))
    return chunks


def run_engine(model, tokenizer, settings: ScoreSettings, chunks) -> list[float]:
    scorer = VQAScorer(model, tokenizer, settings)  # a fresh one: prompts are tokenized again on every pass
    scores = []
    for pixels, pairs in chunks:
        ready = Future()
        ready.set_result(pixels)
        scores += scorer.score_chunk(ready, pairs)
    return scores


@torch.inference_mode()
def published_algorithm(model, tokenizer, pixels: torch.Tensor, pairs, vocab: int) -> list[float]:
    """One model call per pair (batch 1, CLIP on that pair's image), the score exp(-mean CE of "Yes" </s>)."""
    device = pixels.device
    answer = torch.tensor([tokenizer(ANSWER).input_ids], device=device)
    scores = []
    for image, text in pairs:
        ids = torch.tensor([tokenize_with_image(scoring_prompt(text), tokenizer)], device=device)
        logits = model(input_ids=ids, images=pixels[image : image + 1], labels=answer).logits[..., :vocab]
        ce = torch.nn.functional.cross_entropy(logits[0].float(), answer[0])
        scores.append(math.exp(-ce.item()))
    return scores


class Memory:
    """Peak memory of the runs between reset() and read()."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, {}

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> dict:
        if self.device.type == "cuda":
            now = {"peak_allocated_gib": torch.cuda.max_memory_allocated(self.device) / 2**30,
                   "peak_reserved_gib": torch.cuda.max_memory_reserved(self.device) / 2**30}  # fmt: skip
        else:
            now = {"process_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
        self.peak = {k: max(v, self.peak.get(k, 0.0)) for k, v in now.items()}
        return self.peak


def stats(values: list[int]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def bench_size(size: str, args, tokenizer, device: torch.device, peak: float | None) -> dict:
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    if size == "tiny":
        vocab_size = -(-len(tokenizer) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
        t5, vision = dict(TINY_T5, vocab_size=vocab_size), TINY_VISION
    else:
        t5, vision = SIZES[size], KNOWN_VISION_CONFIGS[DEFAULT_VISION_TOWER]
    if len(tokenizer) > t5["vocab_size"]:
        raise SystemExit(f"the tokenizer has {len(tokenizer)} ids, more than the model's {t5['vocab_size']} rows")
    sync(device)
    started = time.perf_counter()
    model = build_model(t5, vision, device, dtype)
    requested = choose_attention(device, dtype)
    if args.vision_attention != "auto":
        requested["vision"] = args.vision_attention
    used = model.set_attention(requested)
    sync(device)
    build_s = time.perf_counter() - started
    after_build = torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else None

    size_px = model.vision_tower.image_size
    pairs = workload(args.items)
    n_images = 2 * args.items
    pixels = torch.randn(n_images, 3, size_px, size_px, generator=torch.Generator().manual_seed(0))
    pixels = pixels.to(device, dtype)
    chunks = chunked(pixels, pairs, args.images_per_chunk)
    settings = ScoreSettings(batch_size=args.batch_size, images_per_chunk=args.images_per_chunk, full_vocab=True)
    vocab = model.config.vocab_size
    prompt_lengths = [len(tokenize_with_image(scoring_prompt(text), tokenizer)) for _, text in pairs]
    answer_tokens = len(tokenizer(ANSWER).input_ids)

    warm_chunk = chunks[:1]
    warm_pairs = [(i, text) for i, text in pairs if i < warm_chunk[0][0].shape[0]]
    for _ in range(args.warmup):
        run_engine(model, tokenizer, settings, warm_chunk)
        published_algorithm(model, tokenizer, pixels, warm_pairs, vocab)
    sync(device)

    times = {"engine": [], "published": []}
    memory = {"engine": Memory(device), "published": Memory(device)}
    for _ in range(args.repeat):
        for name in ("engine", "published"):
            memory[name].reset()
            sync(device)
            t0 = time.perf_counter()
            if name == "engine":
                engine = run_engine(model, tokenizer, settings, chunks)
            else:
                published = published_algorithm(model, tokenizer, pixels, pairs, vocab)
            sync(device)
            times[name].append(time.perf_counter() - t0)
            memory[name].read()

    flops = {"engine": scoring_flops(model, prompt_lengths, answer_tokens, clip_runs=n_images),
             "published": scoring_flops(model, prompt_lengths, answer_tokens, clip_runs=len(pairs))}  # fmt: skip
    algorithms = {}
    for name, batch in (("engine", args.batch_size), ("published", 1)):
        wall = statistics.median(times[name])
        achieved = flops[name]["total"] / wall
        algorithms[name] = {
            "batch_size": batch, "wall_s_median": wall, "wall_s_all": times[name], "pairs_per_s": len(pairs) / wall,
            "clip_runs": n_images if name == "engine" else len(pairs), "model_flops": flops[name]["total"],
            "model_flops_per_pair": flops[name]["total"] / len(pairs), "flops_terms": flops[name]["terms"],
            "achieved_tflops": achieved / 1e12, "mfu": achieved / (peak * 1e12) if peak else None,
            "memory": memory[name].peak,
        }  # fmt: skip
    abs_diff = max(abs(a - b) for a, b in zip(engine, published, strict=True))
    log_diff = max(abs(math.log(a) - math.log(b)) for a, b in zip(engine, published, strict=True))
    tolerance = args.log_tolerance if args.log_tolerance is not None else LOG_TOLERANCE[args.dtype]
    t5_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("vision_tower.", "mm_")))
    result = {
        "size": size, "shapes": SHAPES[size], "dtype": args.dtype, "attention_requested": requested,
        "attention_used": used, "build_s": build_s, "memory_after_build_gib": after_build,
        "items": args.items, "images": n_images, "pairs": len(pairs), "images_per_chunk": args.images_per_chunk,
        "image_patches": model.vision_tower.num_patches, "prompt_tokens": stats(prompt_lengths),
        "encoder_tokens_per_pair": stats([model.vision_tower.num_patches + n - 1 for n in prompt_lengths]),
        "answer_tokens": answer_tokens, "softmax_rows": vocab, "warmup_passes": args.warmup, "repeats": args.repeat,
        "params": {"total": sum(p.numel() for p in model.parameters()), "t5": t5_params,
                   "clip": sum(p.numel() for p in model.vision_tower.parameters()),
                   "projector": sum(p.numel() for p in model.mm_projector.parameters())},
        "flop_params": flops["engine"]["params"], "engine": algorithms["engine"],
        "published": algorithms["published"],
        "speedup": algorithms["published"]["wall_s_median"] / algorithms["engine"]["wall_s_median"],
        "max_abs_score_diff": abs_diff, "max_log_score_diff": log_diff, "log_tolerance": tolerance,
        "scores_agree": log_diff <= tolerance, "score_min": min(engine), "score_max": max(engine),
    }  # fmt: skip
    print_size(result)
    del model, pixels, chunks
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def print_size(r: dict) -> None:
    used = r["attention_used"]
    enc = r["encoder_tokens_per_pair"]
    print(f"\n{r['shapes']}, {r['dtype']}: {r['params']['total'] / 1e6:,.1f} M parameters (built in "
          f"{r['build_s']:.1f} s); attention: T5 {used['language']}, CLIP {used['vision']}")  # fmt: skip
    print(f"{r['pairs']} pairs ({r['items']} items x 2 images x 2 texts), encoder tokens per pair {enc['mean']:.0f} "
          f"({enc['min']}-{enc['max']}: {r['image_patches']} patches + prompt), {r['answer_tokens']} answer tokens; "
          f"medians of {r['repeats']} interleaved passes after {r['warmup_passes']} warm-up")  # fmt: skip
    mem_key = next(iter(r["engine"]["memory"]))
    print(f"{'':24}{'wall s':>9}{'pairs/s':>10}{'TFLOP/pair':>12}{'TFLOP/s':>10}{'MFU':>8}   {mem_key}")
    rows = (("published (batch 1)", "published"), (f"engine (batch {r['engine']['batch_size']})", "engine"))
    for label, name in rows:
        a = r[name]
        print(f"{label:24}{a['wall_s_median']:9.3f}{a['pairs_per_s']:10.2f}{a['model_flops_per_pair'] / 1e12:12.4g}"
              f"{a['achieved_tflops']:10.4g}{percent(a['mfu']):>8}   {a['memory'][mem_key]:.2f}")  # fmt: skip
    print(f"speed-up {r['speedup']:.2f}x; max |score diff| {r['max_abs_score_diff']:.2e}, max |log score diff| "
          f"{r['max_log_score_diff']:.2e} (tolerance {r['log_tolerance']:g}; scores {r['score_min']:.3g}-"
          f"{r['score_max']:.3g})")  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", nargs="+", choices=list(SIZES), default=list(SIZES), help="default: xxl xl")
    parser.add_argument("--tiny", action="store_true", help="tiny random model, fp32 on the CPU (tests)")
    parser.add_argument("--items", type=int, default=64, help="Winoground-shaped items (4 pairs each)")
    parser.add_argument("--batch-size", type=int, default=ScoreSettings.batch_size, help="engine pairs per pass")
    parser.add_argument("--images-per-chunk", type=int, default=ScoreSettings.images_per_chunk)
    parser.add_argument("--repeat", type=int, default=3, help="timed passes of each algorithm (interleaved)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes over the first chunk first")
    parser.add_argument("--vision-attention", choices=VISION_ATTENTION, default="auto",
                        help="CLIP's attention (auto: clip_flant5.model.choose_attention)")  # fmt: skip
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default=None, help="default: bf16, fp32 with --tiny")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="a FlanT5 tokenizer folder (default: build the tiny SentencePiece one)")  # fmt: skip
    parser.add_argument("--device", default=None, help="default: cpu with --tiny, else cuda")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU")
    parser.add_argument("--log-tolerance", type=float, default=None, help="max |log score diff| (default by dtype)")
    parser.add_argument("--out", type=Path, default=None, help="JSON result (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    if args.items < 1 or args.batch_size < 1 or args.repeat < 1 or args.warmup < 0 or args.images_per_chunk < 2:
        parser.error("need --items >= 1, --batch-size >= 1, --repeat >= 1, --warmup >= 0, --images-per-chunk >= 2")
    if args.images_per_chunk % 2:
        parser.error("--images-per-chunk must be even (an item's two images stay in one chunk)")
    args.dtype = args.dtype or ("fp32" if args.tiny else "bf16")
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no GPU visible to torch: the XXL/XL shapes need one (about 23 GB of bf16 weights); use --tiny")
    sizes = ["tiny"] if args.tiny else list(dict.fromkeys(args.size))
    peak, peak_source = peak_tflops(device, args.peak_tflops)

    with tempfile.TemporaryDirectory() as tmp:
        if args.tokenizer is None:
            build_tokenizer(Path(tmp))
            tokenizer, tokenizer_source = load_tokenizer(tmp), "tiny SentencePiece tokenizer (clip_flant5.tiny)"
        else:
            tokenizer, tokenizer_source = load_tokenizer(args.tokenizer), str(args.tokenizer)
        label = device_name(device)
        print(f"VQAScore on {label} (torch {torch.__version__}, transformers {transformers.__version__}); "
              f"tokenizer: {tokenizer_source} ({len(tokenizer)} ids); peak {peak} TFLOP/s ({peak_source})")  # fmt: skip
        results = [bench_size(size, args, tokenizer, device, peak) for size in sizes]

    report = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "device": label, "torch": torch.__version__, "transformers": transformers.__version__,
        "tokenizer": tokenizer_source, "peak_tflops": peak, "peak_source": peak_source,
        "flop_formula": "per pair i with Le_i = P + Lt_i - 1, La answer tokens, m CLIP runs: "
        "2*(N_enc + N_xkv)*sum Le_i + 2*(N_dec + N_lm_head)*n*La + 4*d_attn*(layers_enc*sum Le_i^2 + "
        "layers_dec*(n*La^2 + La*sum Le_i)) + 2*N_proj*m*P + m*(2*N_clip*(P+1) + 4*d_clip*layers_clip*(P+1)^2); "
        "m = images (engine) or pairs (published); MFU = model FLOPs / median wall time / peak",
        "results": results,
    }  # fmt: skip
    out = args.out or default_result_path("gpu_scoring_benchmark", args.tiny, label)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    failed = [r for r in results if not r["scores_agree"]]
    if failed:
        raise SystemExit(
            "scores disagree: "
            + ", ".join(f"{r['size']} max |log diff| {r['max_log_score_diff']:.3g} > {r['log_tolerance']:g}"
                        for r in failed)
        )  # fmt: skip
    return report


if __name__ == "__main__":
    main()
