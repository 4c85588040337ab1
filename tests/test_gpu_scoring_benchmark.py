"""benchmarks/gpu_scoring_benchmark.py: runs on CPU at tiny shapes with both algorithms agreeing, builds the XXL and
XL shapes it claims, and its FLOP formula agrees with torch's FLOP counter."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_scoring_benchmark.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))  # it imports gpu_stage2_benchmark beside it, as `python benchmarks/...` does
    try:
        spec = importlib.util.spec_from_file_location("gpu_scoring_benchmark", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_tiny_run_on_cpu_writes_the_result(tiny_base, tmp_path):
    out = tmp_path / "result.json"
    run = subprocess.run(
        [sys.executable, SCRIPT, "--tiny", "--items", "3", "--images-per-chunk", "4", "--batch-size", "4",
         "--repeat", "2", "--warmup", "1", "--peak-tflops", "1", "--tokenizer", tiny_base / "language", "--out", out],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "pairs/s" in run.stdout and "MFU" in run.stdout and "T5 sdpa, CLIP sdpa" in run.stdout
    report = json.loads(out.read_text())
    assert report["peak_tflops"] == 1 and "flop_formula" in report
    (r,) = report["results"]
    assert (r["size"], r["dtype"], r["items"], r["images"], r["pairs"]) == ("tiny", "fp32", 3, 6, 12)
    assert r["attention_used"] == r["attention_requested"] == {"language": "sdpa", "vision": "sdpa"}
    assert r["answer_tokens"] == 2 and r["image_patches"] == 64
    # Captions of 10-15 words in the t5_chat prompt: ~70-80 text tokens (about 650 encoder tokens with 576 patches).
    assert 65 <= r["prompt_tokens"]["min"] <= r["prompt_tokens"]["max"] <= 90
    assert r["encoder_tokens_per_pair"]["mean"] == pytest.approx(r["prompt_tokens"]["mean"] + 63)
    engine, published = r["engine"], r["published"]
    assert (engine["batch_size"], published["batch_size"]) == (4, 1)
    assert (engine["clip_runs"], published["clip_runs"]) == (6, 12)
    for a in (engine, published):
        assert len(a["wall_s_all"]) == 2 and a["pairs_per_s"] == pytest.approx(12 / a["wall_s_median"])
        assert a["mfu"] == pytest.approx(a["model_flops"] / a["wall_s_median"] / 1e12)
        assert a["model_flops"] == sum(a["flops_terms"].values())
        assert a["memory"]["process_peak_rss_gib"] > 0
    # The published algorithm runs CLIP and the projector once per pair, everything else is the same work.
    extra = {k: published["flops_terms"][k] - engine["flops_terms"][k] for k in engine["flops_terms"]}
    assert extra["clip"] == engine["flops_terms"]["clip"] and extra["projector"] == engine["flops_terms"]["projector"]
    assert all(v == 0 for k, v in extra.items() if k not in ("clip", "projector"))
    assert r["speedup"] == pytest.approx(published["wall_s_median"] / engine["wall_s_median"])
    assert r["scores_agree"] and r["max_log_score_diff"] <= r["log_tolerance"] == 1e-4
    assert 0 <= r["max_abs_score_diff"] <= r["score_max"] and 0 < r["score_min"] <= r["score_max"] < 1


def t5_parameters(d_model: int, d_ff: int, heads: int, vocab=32128, layers=24, d_kv=64, buckets=32) -> int:
    """FlanT5's parameter count from its config: embedding + lm_head, blocks, final norms, relative biases."""
    attn = 4 * d_model * heads * d_kv
    ff = 3 * d_model * d_ff  # gated-gelu: wi_0, wi_1, wo
    encoder = layers * (attn + ff + 2 * d_model) + d_model
    decoder = layers * (2 * attn + ff + 3 * d_model) + d_model
    return 2 * vocab * d_model + encoder + decoder + 2 * buckets * heads


@pytest.mark.parametrize("size, d_model, d_ff, heads", [("xxl", 4096, 10240, 64), ("xl", 2048, 5120, 32)])
def test_shapes_are_flan_t5_and_clip_l14_336(bench, size, d_model, d_ff, heads):
    vision = bench.KNOWN_VISION_CONFIGS[bench.DEFAULT_VISION_TOWER]
    model = bench.build_model(bench.SIZES[size], vision, torch.device("meta"), torch.bfloat16)  # shapes only
    t5 = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("vision_tower.", "mm_projector.")))
    assert t5 == t5_parameters(d_model, d_ff, heads) == {"xxl": 11_135_332_352, "xl": 2_849_757_184}[size]
    assert sum(p.numel() for p in model.vision_tower.parameters()) == 303_507_456  # CLIP ViT-L/14-336 vision
    assert model.vision_tower.num_patches == 576 and model.vision_tower.image_size == 336
    assert model.lm_head.weight is not model.shared.weight and model.lm_head.weight.dtype == torch.bfloat16
    per_pair = bench.scoring_flops(model, [73], answer=2, clip_runs=0)["total"]  # 648 encoder tokens
    assert per_pair == pytest.approx({"xxl": 7.23e12, "xl": 1.85e12}[size], rel=0.01)
    clip_run = bench.scoring_flops(model, [], answer=2, clip_runs=1)["total"]
    assert 0.38e12 < clip_run < 0.42e12


@pytest.fixture(scope="module")
def tiny(bench, tiny_tokenizer):
    vocab = -(-len(tiny_tokenizer) // 128) * 128
    model = bench.build_model(dict(bench.TINY_T5, vocab_size=vocab), bench.TINY_VISION, torch.device("cpu"),
                              torch.float32)  # fmt: skip
    # Eager attention: on CPU the counter sees no SDPA kernel (T5's masked one nor CLIP's), only plain matmuls.
    model.set_attention({"language": "eager", "vision": "eager"})
    pairs = bench.workload(2)[:6]  # one item and half of the next: 3 images
    pixels = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return model, pairs, pixels


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_flop_formula_matches_torchs_counter(bench, tiny, tiny_tokenizer):
    model, pairs, pixels = tiny
    lengths = [len(bench.tokenize_with_image(bench.scoring_prompt(text), tiny_tokenizer)) for _, text in pairs]
    settings = bench.ScoreSettings(batch_size=1, full_vocab=True)
    vocab = model.config.vocab_size
    few = pairs[:3]  # the per-pair algorithm is linear in pairs
    published = counted(lambda: bench.published_algorithm(model, tiny_tokenizer, pixels, few, vocab))
    ours = bench.scoring_flops(model, lengths[:3], answer=2, clip_runs=3)["total"]
    assert ours == pytest.approx(published, rel=0.02)
    chunks = bench.chunked(pixels, pairs, 2)
    engine = counted(lambda: bench.run_engine(model, tiny_tokenizer, settings, chunks))
    ours = bench.scoring_flops(model, lengths, answer=2, clip_runs=3)["total"]
    assert ours == pytest.approx(engine, rel=0.02)
    # Batched, the engine also computes its right padding, which model FLOPs leave out.
    padded = counted(lambda: bench.run_engine(model, tiny_tokenizer, bench.ScoreSettings(batch_size=8), chunks))
    assert engine <= padded <= 1.05 * engine


def test_both_algorithms_agree_in_fp32(bench, tiny, tiny_tokenizer):
    model, pairs, pixels = tiny
    engine = bench.run_engine(model, tiny_tokenizer, bench.ScoreSettings(batch_size=3, full_vocab=True),
                              bench.chunked(pixels, pairs, 2))  # fmt: skip
    published = bench.published_algorithm(model, tiny_tokenizer, pixels, pairs, model.config.vocab_size)
    assert engine == pytest.approx(published, rel=1e-4)


def test_captions_are_winoground_shaped(bench):
    pairs = bench.workload(50)
    assert len(pairs) == 200 and [i for i, _ in pairs[:8]] == [0, 0, 1, 1, 2, 2, 3, 3]
    for k in range(0, len(pairs), 4):
        (_, a), (_, b), (_, c), (_, d) = pairs[k : k + 4]
        assert a != b and (a, b) == (c, d) and sorted(a.split()) == sorted(b.split())
        assert 10 <= len(a.split()) <= 15


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_xxl_shapes_refuse_a_cpu(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--size", "xl"])
    assert "no GPU visible to torch" in capsys.readouterr().err
