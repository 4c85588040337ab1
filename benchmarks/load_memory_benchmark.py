"""Benchmark: peak memory and time to load an XL-shaped CLIP-FlanT5 checkpoint for scoring.

    python benchmarks/load_memory_benchmark.py                    # XL shapes, bf16 .bin, 10GB: one 6.3 GB file
    python benchmarks/load_memory_benchmark.py --shard-size 1GB   # the same weights in 7 shards + index
    python benchmarks/load_memory_benchmark.py --layers 2 --shard-size 200MB   # quick run (1.2 GB, 7 shards)

Writes a checkpoint of CLIP ViT-L/14-336 + FlanT5-XL widths (d_model 2048, d_ff 5120, 32 heads, d_kv 64,
gated-gelu, vocab 32128, untied lm_head; `--layers` T5 blocks per stack and CLIP layers, 24 by default) with
random weights, in the published layout: bf16 `pytorch_model.bin` or `pytorch_model-0000k-of-0000n.bin` +
`pytorch_model.bin.index.json`, the published key names (alias `embed_tokens.weight`, `vision_model.` level),
sharded as `save_model(fmt="bin", max_shard_size=...)` shards. transformers 4.31's save_pretrained (which wrote
the published files) defaulted to max_shard_size="10GB". The weights are drawn shard by shard in bf16, so no
fp32 copy of the model is ever held. Then loads it, each contender in a fresh subprocess that reports its own
peak RSS (getrusage ru_maxrss, which counts memory-mapped file pages it touched) and load time:

- ours: `clip_flant5.checkpoint.load_model(path, dtype=...)` in fp32 and in bf16 (`--device` for ours only);
- tf5: `CLIPT5ForConditionalGeneration.from_pretrained` under transformers 5, what load_model did before;
- upstream: transformers 4.49 (the venv of tests/test_transformers4_compat.py, built here if missing) loading the
  same files with the original model structure (tests/transformers4/load_checkpoint.py) in fp32.

All contenders must hold the same weights (per-tensor float64 sums compared with ours in fp32). The goal bound is
weights in the target dtype + the largest shard + 1 GB (on a GPU: host peak <= largest shard + 2 GB). A contender
whose expected peak does not fit in MemAvailable is skipped. Results go to
benchmarks/results/load_memory_benchmark[_<options>].txt; the checkpoint to benchmarks/out/ (deleted at the end).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TF4_DIR = ROOT / "tests" / "transformers4"
TF4_VENV = Path.home() / ".cache" / "clip-flant5" / "transformers-4.49-venv"
GiB = 2**30
GB = 10**9
XL = dict(
    d_model=2048, d_ff=5120, num_heads=32, d_kv=64, feed_forward_proj="gated-gelu", vocab_size=32128,
    tie_word_embeddings=False, relative_attention_num_buckets=32, relative_attention_max_distance=128,
    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, dropout_rate=0.1, layer_norm_epsilon=1e-6,
)  # fmt: skip
VISION_TOWER = "openai/clip-vit-large-patch14-336"
CONTENDERS = ("ours-fp32", "ours-bf16", "tf5-fp32", "upstream-fp32")


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"size {text!r}: give e.g. 10GB, 500MB or 2GiB")
    unit = match.group(2).upper()
    scale = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}[unit]
    return int(float(match.group(1)) * scale)


# -- the checkpoint ------------------------------------------------------------------------------------------
def write_checkpoint(out: Path, layers: int, shard_size: int, seed: int = 0) -> dict:
    """Random bf16 weights in the published layout, written one shard at a time. Returns a summary."""
    import torch
    from huggingface_hub import split_torch_state_dict_into_shards
    from transformers import CLIPVisionConfig

    from clip_flant5.checkpoint import config_for_disk, published_state_dict, vision_config_dict
    from clip_flant5.model import KNOWN_VISION_CONFIGS, CLIPT5Config, CLIPT5ForConditionalGeneration

    out.mkdir(parents=True)
    vision = CLIPVisionConfig(**{**KNOWN_VISION_CONFIGS[VISION_TOWER], "num_hidden_layers": layers})
    vision.save_pretrained(out / "vision")  # the upstream loader reads the tower's config from mm_vision_tower
    config = CLIPT5Config(
        **XL, num_layers=layers, num_decoder_layers=layers, mm_vision_tower=str(out / "vision"),
        mm_vision_config=vision_config_dict(vision), mm_hidden_size=vision.hidden_size,
    )  # fmt: skip
    with torch.device("meta"):
        meta = CLIPT5ForConditionalGeneration(config)
    shapes = published_state_dict(meta.state_dict(), torch.bfloat16)  # meta tensors: names, shapes, dtypes
    split = split_torch_state_dict_into_shards(
        {k: torch.empty_like(v) for k, v in shapes.items()},  # each key its own bytes, as write_weights unshares
        filename_pattern="pytorch_model{suffix}.bin",
        max_shard_size=shard_size,
    )
    disk = config_for_disk(
        config, model_type="t5", architectures=["CLIPT5ForConditionalGeneration"], torch_dtype="bfloat16",
        mm_vision_config=None,  # as published: the tower is named, not described
    )  # fmt: skip
    (out / "config.json").write_text(json.dumps(disk, indent=2) + "\n")
    gen = torch.Generator().manual_seed(seed)
    # The embedding and its tied copies hold one matrix (as the original model saved them): one storage within a
    # shard, equal copies across shards.
    tied = {"shared.weight", "embed_tokens.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    embedding = torch.empty(shapes["shared.weight"].shape, dtype=torch.bfloat16).normal_(0.0, 0.05, generator=gen)
    shard_bytes = []
    for filename, keys in split.filename_to_tensors.items():
        shard = {}
        for key in keys:
            if key in tied:
                shard[key] = embedding
                continue
            t = torch.empty(shapes[key].shape, dtype=torch.bfloat16)
            t.normal_(0.0, 0.05, generator=gen) if t.dim() > 1 else t.uniform_(0.5, 1.5, generator=gen)
            shard[key] = t
        torch.save(shard, out / filename)
        shard_bytes.append((out / filename).stat().st_size)
        del shard
    if split.is_sharded:
        total = sum(t.numel() * t.element_size() for t in shapes.values())
        index = {"metadata": {"total_size": total}, "weight_map": split.tensor_to_filename}
        (out / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2) + "\n")
    params = sum(t.numel() for t in [*meta.parameters(), *meta.buffers()])  # tied weights once
    return {"shards": len(shard_bytes), "largest_shard": max(shard_bytes), "total": sum(shard_bytes), "params": params}


# -- children: each loads once in a fresh interpreter and reports ------------------------------------------------
def fingerprint(named) -> dict:
    """Per-tensor float64 sums under transformers-5 names, in 1M-element chunks (temporaries of 8 MB)."""
    out = {}
    for name, tensor in named:
        name = name.replace("vision_tower.vision_tower.vision_model.", "vision_tower.vision_tower.")
        if tensor.is_floating_point() and tensor.device.type != "meta" and name not in out:
            out[name] = sum(chunk.double().sum().item() for chunk in tensor.reshape(-1).split(1 << 20))
    return out


def child(side: str, path: str, device: str) -> None:
    import torch

    cuda = device.startswith("cuda")
    imported = 0
    if side == "upstream":
        sys.path.insert(0, str(TF4_DIR))
        import load_checkpoint as original  # noqa: PLC0415  (the transformers 4.49 restatement of the original)

        imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        start = time.perf_counter()  # imports done: what follows is the load alone
        model, info = original.CLIPT5ForConditionalGeneration.from_pretrained(
            path, torch_dtype=torch.float32, output_loading_info=True
        )
        problems = {k: v for k, v in info.items() if k != "error_msgs" and v}
        assert not problems, problems
    elif side == "tf5":
        from clip_flant5.checkpoint import load_config
        from clip_flant5.model import CLIPT5ForConditionalGeneration

        imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        start = time.perf_counter()
        model = CLIPT5ForConditionalGeneration.from_pretrained(path, config=load_config(path), dtype=torch.float32)
    else:
        from clip_flant5.checkpoint import load_model

        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[side.split("-")[1]]
        imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        start = time.perf_counter()
        model = load_model(path, dtype=dtype, device=device)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    # The checksum reads every weight (no temporaries): weights used in place from the memory-mapped file (bf16
    # from bf16) are resident from here on, as they are after a first forward pass, and count in the peak.
    sums = fingerprint(model.state_dict().items())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tensors = {t.data_ptr(): t for t in [*model.parameters(), *model.buffers()]}.values()
    report = {
        "seconds": seconds,
        "peak_rss": peak,
        "imported_rss": imported,
        "weights": sum(t.numel() * t.element_size() for t in tensors),
        "dtypes": sorted({str(t.dtype) for t in model.parameters()}),
        "devices": sorted({str(t.device) for t in model.parameters()}),
        "gpu_peak": torch.cuda.max_memory_allocated() if cuda else None,
        "fingerprint": sums,
    }
    print(json.dumps(report))


def measure(side: str, python: str, path: Path, device: str) -> dict:
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run(
        [python, __file__, "--child", side, str(path), device], capture_output=True, text=True, env=env, cwd=ROOT
    )
    if done.returncode != 0:
        raise SystemExit(f"{side} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["wall"] = time.perf_counter() - start
    return report


def tf4_python() -> str:
    """The transformers 4.49 interpreter of tests/test_transformers4_compat.py, built the same way if missing."""
    if os.environ.get("CLIP_FLANT5_TF4_PYTHON"):
        return os.environ["CLIP_FLANT5_TF4_PYTHON"]
    # The test module's REQUIREMENTS, read without importing it (this process stays small: see measure()).
    tree = ast.parse((ROOT / "tests" / "test_transformers4_compat.py").read_text())
    assign = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "REQUIREMENTS")
    REQUIREMENTS = ast.literal_eval(assign.value)  # noqa: N806

    marker = TF4_VENV / "requirements.txt"
    if not marker.is_file() or marker.read_text() != "\n".join(REQUIREMENTS):
        print("building the transformers 4.49 environment (about a minute) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(TF4_VENV)], check=True)
        subprocess.run([TF4_VENV / "bin" / "python", "-m", "pip", "install", "-q", *REQUIREMENTS], check=True)
        marker.write_text("\n".join(REQUIREMENTS))
    return str(TF4_VENV / "bin" / "python")


def available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=24, help="T5 blocks per stack and CLIP layers (XL: 24)")
    parser.add_argument("--shard-size", default="10GB", help="max_shard_size of the .bin shards (default 10GB)")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--device", default="cpu", help="device for ours (cuda: host peak vs largest shard + 2 GB)")
    parser.add_argument("--workdir", type=Path, default=HERE / "out" / "load_memory")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint (and reuse one kept before)")
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "PATH", "DEVICE"), help=argparse.SUPPRESS)
    parser.add_argument("--write", nargs=3, metavar=("PATH", "LAYERS", "SHARD_BYTES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.write:
        print(json.dumps(write_checkpoint(Path(args.write[0]), int(args.write[1]), int(args.write[2]))))
        return
    shard_size = parse_size(args.shard_size)

    lines = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    ckpt, summary = args.workdir / "ckpt", args.workdir / "ckpt.json"
    wanted = {"layers": args.layers, "shard_size": shard_size}
    start = time.perf_counter()
    if args.keep and summary.is_file() and json.loads(summary.read_text())["options"] == wanted:
        info = json.loads(summary.read_text())  # kept from an earlier run with the same options
    else:
        shutil.rmtree(args.workdir, ignore_errors=True)
        # In a subprocess of its own, like the loads: this process stays small, as a child's ru_maxrss starts
        # from the RSS of the process it was forked from.
        write = [sys.executable, __file__, "--write", str(ckpt), str(args.layers), str(shard_size)]
        info = json.loads(subprocess.run(write, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        summary.write_text(json.dumps({**info, "options": wanted}))
    say(f"checkpoint: XL widths, {args.layers}+{args.layers} T5 blocks, {args.layers} CLIP layers, "
        f"{info['params'] / 1e9:.2f} B parameters; bf16 .bin, max_shard_size {args.shard_size}: {info['shards']} "
        f"file(s), {info['total'] / GiB:.2f} GiB, largest {info['largest_shard'] / GiB:.2f} GiB "
        f"(written in {time.perf_counter() - start:.0f} s)")  # fmt: skip
    say(f"machine: {os.cpu_count()} cores, {available() / GiB:.1f} GiB available at start, Python "
        f"{sys.version.split()[0]}")  # fmt: skip

    results = {}
    for side in args.contenders:
        dtype_bytes = 2 if side.endswith("bf16") else 4
        weights = info["params"] * dtype_bytes
        expected = weights + (info["total"] if side.startswith("tf5") else info["largest_shard"]) + GB
        if side.startswith("ours") and args.device != "cpu":
            expected = info["largest_shard"] + 2 * GB
        if expected > available():
            say(f"{side}: skipped, needs about {expected / GiB:.1f} GiB, {available() / GiB:.1f} GiB available")
            continue
        python = tf4_python() if side.startswith("upstream") else sys.executable
        kind = side.split("-")[0]
        results[side] = measure(side if kind == "ours" else kind, python, ckpt, args.device)

    if not results:
        raise SystemExit("nothing measured: every contender was skipped")
    reference = results.get("ours-fp32", next(iter(results.values())))
    for side, report in results.items():
        sums = report["fingerprint"]
        worst = max(abs(sums[k] - v) / (abs(v) + 1e-3) if k in sums else 1 for k, v in reference["fingerprint"].items())
        if worst > 1e-6:
            raise SystemExit(f"{side} holds other weights than the reference (relative sum difference {worst:.2e})")
    say(f"same weights in all {len(results)} loads ({len(reference['fingerprint'])} tensors compared)")

    baseline = results.get("upstream-fp32")
    say(f"{'':14} {'load s':>7} {'wall s':>7} {'imports GiB':>12} {'peak RSS GiB':>13} {'weights GiB':>12} "
        f"{'bound GiB':>10} {'of bound':>9} {'of upstream':>12}")  # fmt: skip
    for side, report in results.items():
        on_gpu = side.startswith("ours") and args.device != "cpu"
        bound = (0 if on_gpu else report["weights"]) + info["largest_shard"] + (2 * GB if on_gpu else GB)
        of_upstream = f"{report['peak_rss'] / baseline['peak_rss']:12.2f}" if baseline else f"{'-':>12}"
        say(f"{side:14} {report['seconds']:7.1f} {report['wall']:7.1f} {report['imported_rss'] / GiB:12.2f} "
            f"{report['peak_rss'] / GiB:13.2f} {report['weights'] / GiB:12.2f} {bound / GiB:10.2f} "
            f"{report['peak_rss'] / bound:9.2f} {of_upstream}")  # fmt: skip
        if report["gpu_peak"] is not None:
            say(f"{'':14} on {report['devices']}: peak GPU memory allocated {report['gpu_peak'] / GiB:.2f} GiB")
    say("load s: the load call; wall s: the whole subprocess (interpreter, imports, load, checksum); imports: peak "
        "RSS before loading; peak RSS: ru_maxrss after a pass over all weights; bound: weights in the target dtype + "
        "largest shard + 1 GB (ours on a GPU: host peak vs largest shard + 2 GB)")  # fmt: skip

    if not args.keep:
        shutil.rmtree(args.workdir)
    options = []
    if args.layers != 24:
        options.append(f"--layers {args.layers}")
    if args.shard_size != "10GB":
        options.append(f"--shard-size {args.shard_size}")
    if args.contenders != list(CONTENDERS):
        options.append("--contenders " + " ".join(args.contenders))
    if args.device != "cpu":
        options.append(f"--device {args.device}")
    command = " ".join(["python benchmarks/load_memory_benchmark.py", *options])
    suffix = "".join("_" + re.sub(r"[^A-Za-z0-9.]+", "", o) for o in options if not o.startswith("--contenders"))
    name = "load_memory_benchmark" + suffix
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    tmp = out_dir / f".{name}.txt.tmp"
    tmp.write_text(f"$ {command}\n" + "\n".join(lines) + "\n")
    os.replace(tmp, out_dir / f"{name}.txt")  # atomic: a killed run leaves the previous numbers intact


if __name__ == "__main__":
    main()
