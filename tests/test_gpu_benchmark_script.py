"""benchmarks/gpu_stage2_benchmark.py: runs on CPU at tiny shapes, builds the XL shapes it claims, and its FLOP
formula agrees with torch's FLOP counter."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_stage2_benchmark.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_stage2_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_on_cpu_writes_the_result(tmp_path):
    out = tmp_path / "result.json"
    run = subprocess.run(
        [sys.executable, SCRIPT, "--tiny", "--steps", "2", "--warmup", "1", "--device", "cpu", "--peak-tflops", "1",
         "--out", out],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "samples/s" in run.stdout and "MFU" in run.stdout
    result = json.loads(out.read_text())
    assert result["timed_steps"] == 2 and len(result["step_times_s"]) == 2
    assert (result["micro_batch"], result["image_patches"], result["encoder_tokens_per_sample"]) == (6, 64, 163)
    assert result["tokens_per_step"] == 6 * (99 + 64 + 32)
    assert result["samples_per_s"] == pytest.approx(6 / result["step_s_median"])
    assert result["mfu"] == pytest.approx(result["model_flops_per_step"] / result["step_s_median"] / 1e12)
    assert result["hfu"] > result["mfu"]  # gradient checkpointing recomputes the T5 forward
    assert math.isfinite(result["loss_last"]) and result["memory"]["peak_rss_gib"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_xl_shapes_refuse_a_cpu(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--steps", "1"])
    assert "the XL shapes need a GPU" in capsys.readouterr().err


def test_xl_shapes_are_flan_t5_xl_and_clip_l14_336(bench):
    model = bench.build_model(False, torch.device("meta"))  # shapes only, no memory
    t5 = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("vision_tower.", "mm_projector.")))
    assert t5 == 2_849_757_184  # google/flan-t5-xl
    assert sum(p.numel() for p in model.vision_tower.parameters()) == 303_507_456  # CLIP ViT-L/14-336 vision
    assert model.vision_tower.num_patches == 576 and model.vision_tower.image_size == 336
    assert model.lm_head.weight is not model.shared.weight
    flops = bench.flops_per_step(model, 6, 576, 100, 32)
    assert 3.8e13 < flops["model"] < 4.0e13  # 6 * 2.85e9 params * 4050 encoder tokens dominates


@pytest.mark.parametrize("batch, text, answer", [(2, 20, 8), (3, 60, 24)])
def test_flop_formula_matches_torchs_counter(bench, batch, text, answer):
    model = bench.build_model(True, torch.device("cpu"))
    inputs = bench.synthetic_batch(model, batch, text, answer, "cpu", torch.Generator().manual_seed(0))
    patches = model.vision_tower.num_patches
    with FlopCounterMode(display=False) as counter:
        model(**inputs, num_items_in_batch=batch * answer).loss.backward()
    with FlopCounterMode(display=False) as clip_counter, torch.no_grad():
        model.vision_tower(inputs["images"])
    ours = bench.flops_per_step(model, batch, patches, text, answer)
    terms = ours["terms"]
    # The counter skips SDPA attention on CPU (CLIP's): add the formula's CLIP attention term to it.
    clip = model.vision_tower.vision_tower.config
    clip_attention = 4 * clip.hidden_size * batch * clip.num_hidden_layers * (patches + 1) ** 2
    assert terms["clip_forward"] == pytest.approx(clip_counter.get_total_flops() + clip_attention, rel=0.02)
    t5 = terms["t5_encoder"] + terms["t5_decoder"] + terms["projector"] + terms["t5_attention"]
    assert t5 == pytest.approx(counter.get_total_flops() - clip_counter.get_total_flops(), rel=0.02)
