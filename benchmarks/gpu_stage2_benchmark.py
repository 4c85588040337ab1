"""Benchmark: stage-2 training steps of CLIP-FlanT5-XL on one GPU (throughput, step time, peak memory, MFU).

    python benchmarks/gpu_stage2_benchmark.py                       # XL shapes, 20 timed steps, one GPU
    python benchmarks/gpu_stage2_benchmark.py --micro-batch 4 --no-gradient-checkpointing
    python benchmarks/gpu_stage2_benchmark.py --tiny --steps 2      # tiny shapes, runs on CPU (tested)

The model is built from configs only (random init, no downloads): CLIP ViT-L/14-336 (clip_flant5.model's
KNOWN_VISION_CONFIGS) and google/flan-t5-xl's T5 config (written out below), projector mlp2x_gelu. Stage 2 as
the trainer runs it on one GPU without DeepSpeed: T5 and projector trainable, CLIP frozen; fp32 weights with
bf16 autocast (the trainer's `bf16=True`), tf32, gradient checkpointing (non-reentrant), AdamW (fused on GPU)
at lr 2e-5, gradient clipping at 1.0, loss = token sum / label tokens (the trainer's num_items_in_batch path).
Each step is one micro-batch of synthetic samples on the device: one image (576 patches at 336 px) and
`--text-tokens` prompt tokens (the image token among them) for the encoder, `--answer-tokens` label tokens for
the decoder; no padding. Data loading and image preprocessing are not measured. `--warmup` steps run first and
are not timed; each timed step ends with a device synchronisation.

FLOPs per step (model FLOPs: no recomputation; matmuls only, 2 FLOPs per multiply-add), with B the micro-batch,
P image patches, Lt prompt tokens, La answer tokens, Le = P + Lt - 1 encoder tokens per sample:
    T5 encoder      6 * (N_enc + N_xkv) * B*Le         (N_xkv: the decoder's cross-attention K/V projections,
                                                         which run over the encoder tokens)
    T5 decoder      6 * (N_dec + N_lm_head) * B*La     (N_dec without N_xkv)
    projector       6 * N_proj * B*P
    T5 attention    3 * 4*d_attn * B * (layers_enc * Le^2 + layers_dec * (La^2 + La*Le))
                    (scores and weighted values, full matrices, forward x 3 for forward + backward)
    CLIP (frozen)   2 * N_clip * B*(P+1) + 4*d_clip * B * layers_clip * (P+1)^2   (forward only)
N_* are parameter counts taken from the built model: the weights (and biases) a token is multiplied with;
embedding lookups, relative-position biases, position embeddings and layer norms are left out. N_enc: encoder
blocks; N_dec: decoder blocks minus N_xkv; N_clip: the CLIP tower incl. its patch convolution. Against
torch.utils.flop_counter on the tiny model this is within 2% (tests/test_gpu_benchmark_script.py): the counter
counts no bias additions and no SDPA attention on CPU, and the projector's first layer needs no input gradient.
MFU = model FLOPs per step / median step time / peak. HFU (hardware FLOPs) adds the forward that gradient
checkpointing recomputes, the T5 blocks once more: 2*(N_enc + N_xkv)*B*Le + 2*N_dec*B*La + the attention
forward. Peak: bf16 dense tensor-core peak, 989 TFLOP/s for H100 SXM and H200, 756 for H100 PCIe, 312 for A100
(`--peak-tflops` overrides; other devices report no MFU).

Tokens per step count as the trainer's metrics log counts them: prompt tokens except the image token, image
patches, label tokens. Prints a table and writes benchmarks/results/gpu_stage2_benchmark_<device>.json
(`--out` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from clip_flant5.model import KNOWN_VISION_CONFIGS, CLIPT5Config, CLIPT5ForConditionalGeneration
from clip_flant5.prompts import IMAGE_TOKEN_INDEX
from clip_flant5.variants import DEFAULT_VISION_TOWER

# google/flan-t5-xl config.json (the fields that shape the model; spec/model.md lists the same shapes).
FLAN_T5_XL = dict(
    vocab_size=32128, d_model=2048, d_ff=5120, d_kv=64, num_heads=32, num_layers=24, num_decoder_layers=24,
    feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, relative_attention_max_distance=128,
    dropout_rate=0.1, layer_norm_epsilon=1e-6, initializer_factor=1.0, tie_word_embeddings=False,
    decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
)  # fmt: skip
TINY_T5 = dict(FLAN_T5_XL, vocab_size=896, d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2,
               num_decoder_layers=2)  # fmt: skip
TINY_VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, image_size=64,
                   patch_size=8, projection_dim=64, hidden_act="quick_gelu", layer_norm_eps=1e-5)  # fmt: skip
PEAK_BF16_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4), ("A100", 312.0)]
LR, MAX_GRAD_NORM = 2e-5, 1.0


def build_model(tiny: bool, device: torch.device) -> CLIPT5ForConditionalGeneration:
    vision = TINY_VISION if tiny else KNOWN_VISION_CONFIGS[DEFAULT_VISION_TOWER]
    config = CLIPT5Config(
        **(TINY_T5 if tiny else FLAN_T5_XL), mm_vision_tower="tiny-vision" if tiny else DEFAULT_VISION_TOWER,
        mm_vision_config=dict(vision), mm_hidden_size=vision["hidden_size"], mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2, mm_vision_select_feature="patch", use_cache=False,
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: seconds for 3B parameters instead of minutes on CPU
        model = CLIPT5ForConditionalGeneration(config)
    if model.lm_head.weight is model.shared.weight:
        raise RuntimeError("lm_head is tied to the embedding: FlanT5 has its own lm_head")
    model.set_trainable(train_language=True)  # stage 2
    return model.train()


def parameter_counts(model: CLIPT5ForConditionalGeneration) -> dict[str, int]:
    """Parameters of the matmuls per token group (see the FLOP formula in the module docstring)."""
    not_matmuls = ("relative_attention_bias", "position_embedding", "class_embedding", "layer_norm", "layrnorm")
    counts = dict.fromkeys(("enc", "xkv", "dec", "lm_head", "proj", "clip"), 0)
    for name, p in model.named_parameters():  # tied parameters appear once (shared.weight: a lookup)
        if any(k in name for k in not_matmuls) or name == "shared.weight":
            continue
        if name.startswith("encoder."):
            counts["enc"] += p.numel()
        elif re.search(r"EncDecAttention\.[kv]\.", name):
            counts["xkv"] += p.numel()
        elif name.startswith("decoder."):
            counts["dec"] += p.numel()
        elif name.startswith("lm_head."):
            counts["lm_head"] += p.numel()
        elif name.startswith("mm_projector."):
            counts["proj"] += p.numel()
        elif name.startswith("vision_tower."):
            counts["clip"] += p.numel()
        else:
            raise RuntimeError(f"parameter {name} is not assigned to a FLOP term")
    return counts


def flops_per_step(model, batch: int, patches: int, text: int, answer: int) -> dict[str, float]:
    n = parameter_counts(model)
    t5, clip = model.config, model.vision_tower.vision_tower.config
    enc_len = patches + text - 1
    d_attn = t5.num_heads * t5.d_kv
    attn_fwd = (
        4 * d_attn * batch * (t5.num_layers * enc_len**2 + t5.num_decoder_layers * (answer**2 + answer * enc_len))
    )
    enc, dec = (n["enc"] + n["xkv"]) * batch * enc_len, n["dec"] * batch * answer
    terms = {
        "t5_encoder": 6 * enc,
        "t5_decoder": 6 * dec + 6 * n["lm_head"] * batch * answer,
        "projector": 6 * n["proj"] * batch * patches,
        "t5_attention": 3 * attn_fwd,
        "clip_forward": 2 * n["clip"] * batch * (patches + 1)
        + 4 * clip.hidden_size * batch * clip.num_hidden_layers * (patches + 1) ** 2,
    }
    model_flops = sum(terms.values())
    recompute = 2 * enc + 2 * dec + attn_fwd  # the T5 blocks' forward, again, under gradient checkpointing
    return {"terms": terms, "model": model_flops, "recompute": recompute, "params": n}


def synthetic_batch(model, batch: int, text: int, answer: int, device, generator) -> dict[str, torch.Tensor]:
    vocab, size = model.config.vocab_size, model.vision_tower.image_size
    ids = torch.randint(2, vocab, (batch, text), generator=generator)
    ids[:, min(text // 2, 40)] = IMAGE_TOKEN_INDEX  # where the t5_v1 template puts it: after the system prompt
    ids[:, -1] = 1  # </s>
    labels = torch.randint(2, vocab, (batch, answer), generator=generator)
    labels[:, -1] = 1
    images = torch.randn(batch, 3, size, size, generator=generator)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "images": images}
    return {k: v.to(device) for k, v in out.items()}


def peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override is not None:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "no peak known for this device (give --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_TFLOPS:
        if key in name:
            return value, f"bf16 dense peak of {key}"
    return None, f"no peak known for {name} (give --peak-tflops)"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def default_result_path(stem: str, tiny: bool, name: str) -> Path:
    """benchmarks/results/<stem>[_tiny]_<device name as a slug>.json"""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    return Path(__file__).parent / "results" / f"{stem}{'_tiny' if tiny else ''}_{slug}.json"


def percent(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random model and images (CPU test)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (allocator, kernels)")
    parser.add_argument("--micro-batch", type=int, default=6)
    parser.add_argument("--text-tokens", type=int, default=100, help="prompt tokens per sample, image token included")
    parser.add_argument("--answer-tokens", type=int, default=32, help="label tokens per sample (decoder)")
    parser.add_argument("--no-gradient-checkpointing", dest="checkpointing", action="store_false")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16", help="autocast dtype (weights fp32)")
    parser.add_argument("--device", default=None, help="default: cuda if available (XL needs it), else cpu")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU")
    parser.add_argument("--out", type=Path, default=None, help="JSON result (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.micro_batch < 1 or args.text_tokens < 3 or args.answer_tokens < 1:
        parser.error("need --steps >= 1, --warmup >= 0, --micro-batch >= 1, --text-tokens >= 3, --answer-tokens >= 1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU")
    if not args.tiny and device.type != "cuda":
        parser.error("the XL shapes need a GPU (about 50 GB of training state); use --tiny on a CPU")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)

    started = time.perf_counter()
    model = build_model(args.tiny, device)
    if args.checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                                  fused=device.type == "cuda")  # fmt: skip
    patches = model.vision_tower.num_patches
    batch = synthetic_batch(model, args.micro_batch, args.text_tokens, args.answer_tokens, device,
                            torch.Generator().manual_seed(0))  # fmt: skip
    label_tokens = int((batch["labels"] >= 0).sum())
    sync(device)
    build_s = time.perf_counter() - started
    static_mem = torch.cuda.memory_allocated(device) if device.type == "cuda" else None

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    times, losses = [], []
    for step in range(args.warmup + args.steps):
        sync(device)
        t0 = time.perf_counter()
        with autocast:
            loss = model(**batch, num_items_in_batch=label_tokens).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
            losses.append(loss.item())
    if not all(math.isfinite(x) for x in losses):
        raise RuntimeError(f"non-finite loss: {losses}")

    flops = flops_per_step(model, args.micro_batch, patches, args.text_tokens, args.answer_tokens)
    step_s = statistics.median(times)
    tokens = args.micro_batch * (args.text_tokens - 1 + patches + args.answer_tokens)
    peak, peak_source = peak_tflops(device, args.peak_tflops)
    mfu = flops["model"] / step_s / (peak * 1e12) if peak else None
    hfu = (
        (flops["model"] + (flops["recompute"] if args.checkpointing else 0)) / step_s / (peak * 1e12) if peak else None
    )
    device_label = device_name(device)
    if device.type == "cuda":
        memory = {"peak_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30,
                  "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30,
                  "after_build_gib": static_mem / 2**30}  # fmt: skip
    else:
        memory = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    result = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "shapes": "tiny" if args.tiny else "clip-flant5-xl (CLIP ViT-L/14-336 + flan-t5-xl)",
        "device": device_label, "torch": torch.__version__, "dtype": args.dtype,
        "gradient_checkpointing": args.checkpointing, "micro_batch": args.micro_batch, "image_patches": patches,
        "text_tokens": args.text_tokens, "answer_tokens": args.answer_tokens, "encoder_tokens_per_sample":
        patches + args.text_tokens - 1, "warmup_steps": args.warmup, "timed_steps": args.steps,
        "build_s": build_s, "step_s_median": step_s, "step_s_mean": statistics.fmean(times),
        "step_s_min": min(times), "step_s_max": max(times), "samples_per_s": args.micro_batch / step_s,
        "tokens_per_step": tokens, "tokens_per_s": tokens / step_s, "loss_first": losses[0], "loss_last": losses[-1],
        "trainable_params": sum(p.numel() for p in trainable),
        "total_params": sum(p.numel() for p in model.parameters()), "flop_params": flops["params"],
        "model_flops_per_step": flops["model"], "flops_terms": flops["terms"],
        "recompute_flops_per_step": flops["recompute"] if args.checkpointing else 0,
        "achieved_tflops": flops["model"] / step_s / 1e12, "peak_tflops": peak, "peak_source": peak_source,
        "mfu": mfu, "hfu": hfu, "memory": memory, "step_times_s": times,
        "flop_formula": "model FLOPs = 6*(N_enc+N_xkv)*B*Le + 6*(N_dec+N_lm_head)*B*La + 6*N_proj*B*P "
        "+ 3*4*d_attn*B*(layers_enc*Le^2 + layers_dec*(La^2+La*Le)) + 2*N_clip*B*(P+1) "
        "+ 4*d_clip*B*layers_clip*(P+1)^2; MFU = model FLOPs / step time / peak; HFU adds the "
        "checkpointing recompute 2*(N_enc+N_xkv)*B*Le + 2*N_dec*B*La + T5 attention forward",
    }  # fmt: skip
    mem = ", ".join(f"{k} {v:.2f}" for k, v in memory.items())
    print(f"{result['shapes']} on {device_label}: micro-batch {args.micro_batch}, {patches} image patches + "
          f"{args.text_tokens} prompt + {args.answer_tokens} answer tokens, {args.dtype}, gradient checkpointing "
          f"{'on' if args.checkpointing else 'off'}; trainable {result['trainable_params'] / 1e6:.1f} M of "
          f"{result['total_params'] / 1e6:.1f} M parameters (built in {build_s:.1f} s)")  # fmt: skip
    print(f"step time        median {step_s * 1e3:.1f} ms (min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}) "
          f"over {args.steps} steps after {args.warmup} warm-up")  # fmt: skip
    print(f"throughput       {result['samples_per_s']:.2f} samples/s, {result['tokens_per_s']:.0f} tokens/s")
    print(f"model FLOPs      {flops['model'] / 1e12:.4g} TFLOP/step -> {result['achieved_tflops']:.4g} TFLOP/s; "
          f"MFU {percent(mfu)}, HFU {percent(hfu)} (peak {peak} TFLOP/s: {peak_source})")  # fmt: skip
    print(f"memory (GiB)     {mem}")
    print(f"loss             {losses[0]:.4f} -> {losses[-1]:.4f}")
    out = args.out or default_result_path("gpu_stage2_benchmark", args.tiny, device_label)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
