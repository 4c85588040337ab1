"""DeepSpeed ZeRO-2 on CPU: `clip-flant5 train` under torchrun with 2 gloo processes, both stages.

Each stage runs 4 optimizer steps (global batch 8 = 2 per device x 2 accumulation x 2 processes) under ZeRO-2
and under plain DDP on the same data; the losses and weights must agree, the outputs must be in the published
layout, and a run resumed from the step-2 DeepSpeed checkpoint must end where the uninterrupted one did.
Stage 1 also runs as one process without a launcher, stage 2 once under ZeRO-3 (its recipe's setting).

DeepSpeed compiles a C++ op (shared-memory collectives) on first use, about 45 s on 2 cores; it is cached in
~/.cache/clip-flant5/torch-extensions/ (CLIP_FLANT5_TORCH_EXTENSIONS_DIR overrides), so later runs skip it.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import deepspeed  # the dev extra installs it (pinned in pyproject.toml and constraints.txt)
import pytest
import test_train
import torch
from safetensors.torch import load_file
from test_train import metrics, run, train_command

from clip_flant5.checkpoint import load_model, load_projector
from clip_flant5.distributed import deepspeed_config

setup = test_train.setup  # the fixture: the untrained tiny model and the corpus of test_train.py

PROJECTOR_KEYS = ["mm_projector.0.bias", "mm_projector.0.weight", "mm_projector.2.bias", "mm_projector.2.weight"]
SETTINGS = {"global_batch_size": 8, "per_device_batch_size": 2, "max_steps": 4, "save_steps": 2,
            "save_total_limit": 3, "dropout": 0.0, "group_by_modality_length": False}  # fmt: skip
# fp32 on both sides; only the order of the gradient reductions differs (measured: 7e-8 and 3e-8). The weights
# are compared in the fp32 step-4 trainer checkpoints (the final outputs are bf16, which would hide differences).
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-6


def extensions_dir() -> Path:
    default = Path.home() / ".cache" / "clip-flant5" / "torch-extensions"
    base = Path(os.environ.get("CLIP_FLANT5_TORCH_EXTENSIONS_DIR", default))
    return base / f"deepspeed-{deepspeed.__version__}-torch-{torch.__version__}"  # a build per ABI


def train(setup, out: Path, stage: int, settings: dict, projector=None, resume_from: Path | None = None, nproc=2):
    """Run `clip-flant5 train` (torchrun with `nproc` processes, or none for 1); `resume_from`: a finished run whose
    step-2 checkpoint to resume."""
    if resume_from is not None:
        shutil.copytree(resume_from / "work", out / "work")
        shutil.rmtree(out / "work/checkpoint-4")  # as if the job had died after step 3
    command, env = train_command(setup, out, stage, {**SETTINGS, **settings}, nproc=nproc, projector=projector)
    env["TORCH_EXTENSIONS_DIR"] = str(extensions_dir())
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the venv's ninja, for the op build
    run(command, env)
    return metrics(out / "work/metrics.jsonl")


def assert_same_losses(a: dict, b: dict):
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert a[step]["loss"] == pytest.approx(b[step]["loss"], rel=LOSS_RTOL), step


def max_difference(a: dict, b: dict) -> float:
    assert set(a) <= set(b)  # DeepSpeed's trainer checkpoints add the embedding's tied aliases
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def stage1(setup, tmp_path_factory):
    root = tmp_path_factory.mktemp("ds1")
    settings = {"learning_rate": 1e-3}
    train(setup, root / "zero2", 1, {**settings, "deepspeed": "zero2"})
    train(setup, root / "plain", 1, {**settings, "deepspeed": "none"})
    train(setup, root / "resumed", 1, {**settings, "deepspeed": "zero2"}, resume_from=root / "zero2")
    train(setup, root / "one", 1, {**settings, "deepspeed": "zero2"}, nproc=1)  # no launcher: 4 x 2 accumulated
    return root


def test_stage1_under_zero2_matches_ddp_writes_the_projector_and_resumes(setup, stage1):
    zero2, plain = metrics(stage1 / "zero2/work/metrics.jsonl"), metrics(stage1 / "plain/work/metrics.jsonl")
    assert_same_losses(zero2, plain)
    assert_same_losses(zero2, metrics(stage1 / "one/work/metrics.jsonl"))
    assert zero2[4]["loss"] < zero2[1]["loss"]  # it trained

    step4 = {name: torch.load(stage1 / f"{name}/work/checkpoint-4/mm_projector.bin", weights_only=True)
             for name in ("zero2", "plain", "resumed", "one")}  # fmt: skip
    for name in ("zero2", "plain"):  # intermediate: the training dtype, so that plain DDP resumes exactly too
        assert {t.dtype for t in step4[name].values()} == {torch.float32}, name
    assert max_difference(step4["plain"], step4["zero2"]) <= WEIGHT_ATOL
    assert max_difference(step4["one"], step4["zero2"]) <= WEIGHT_ATOL
    one = json.loads((stage1 / "one/final/training.json").read_text())
    assert (one["world_size"], one["gradient_accumulation_steps"]) == (1, 4)

    final = torch.load(stage1 / "zero2/final/mm_projector.bin", weights_only=True)
    assert sorted(final) == PROJECTOR_KEYS
    assert all(torch.equal(final[k], step4["zero2"][k].to(torch.bfloat16)) for k in final)  # published: bf16
    model = load_model(setup / "untrained")
    load_projector(model, stage1 / "zero2/final")  # the stage-2 loader takes it
    assert torch.equal(model.mm_projector[0].weight, final["mm_projector.0.weight"].float())
    assert json.loads((stage1 / "zero2/final/config.json").read_text())["tune_mm_mlp_adapter"] is True

    # The intermediate checkpoint is DeepSpeed's (so DeepSpeed did run) and leaves the frozen CLIP and T5 out,
    # except the tied aliases of the frozen embedding (DeepSpeed drops frozen parameters by their own name only).
    checkpoint = stage1 / "zero2/work/checkpoint-2"
    module = torch.load(checkpoint / "global_step2/mp_rank_00_model_states.pt", weights_only=False)["module"]
    assert sorted(set(module) - {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}) == PROJECTOR_KEYS
    assert sorted(torch.load(checkpoint / "mm_projector.bin", weights_only=True)) == PROJECTOR_KEYS

    resumed = metrics(stage1 / "resumed/work/metrics.jsonl")  # steps 1-2 copied, 3-4 run again
    assert [resumed[step]["loss"] for step in (3, 4)] == pytest.approx([zero2[3]["loss"], zero2[4]["loss"]], rel=1e-6)
    assert max_difference(step4["resumed"], step4["zero2"]) <= 1e-7


def test_stage2_under_zero2_and_zero3_matches_ddp_writes_the_published_layout_and_resumes(setup, stage1, tmp_path):
    settings = {"learning_rate": 1e-4, "gradient_checkpointing": True}
    projector = stage1 / "zero2/final"
    zero2 = train(setup, tmp_path / "zero2", 2, {**settings, "deepspeed": "zero2"}, projector=projector)
    plain = train(setup, tmp_path / "plain", 2, {**settings, "deepspeed": "none"}, projector=projector)
    assert_same_losses(zero2, plain)
    assert (tmp_path / "zero2/work/checkpoint-2/global_step2").is_dir()  # DeepSpeed's checkpoint

    step4 = {name: load_file(tmp_path / f"{name}/work/checkpoint-4/model.safetensors") for name in ("zero2", "plain")}
    assert {t.dtype for t in step4["zero2"].values()} == {torch.float32}
    assert max_difference(step4["plain"], step4["zero2"]) <= WEIGHT_ATOL

    final = tmp_path / "zero2/final"
    weights = load_file(final / "model.safetensors")
    assert (
        "embed_tokens.weight" in weights and "vision_tower.vision_tower.vision_model.post_layernorm.weight" in weights
    )
    for key in ("lm_head.weight", "mm_projector.0.weight", "encoder.block.0.layer.0.SelfAttention.q.weight"):
        assert torch.equal(weights[key], step4["zero2"][key].to(torch.bfloat16)), key  # published: bf16
    trained, untrained = load_model(final), load_model(setup / "untrained")  # strict: every key, no extra
    assert not torch.equal(trained.lm_head.weight, untrained.lm_head.weight)  # T5 trained
    assert not torch.equal(trained.mm_projector[0].weight, untrained.mm_projector[0].weight)
    assert torch.equal(trained.vision_tower.vision_tower.post_layernorm.weight,  # CLIP frozen
                       untrained.vision_tower.vision_tower.post_layernorm.weight)  # fmt: skip
    assert (final / "spiece.model").is_file()
    record = json.loads((final / "training.json").read_text())
    assert (record["world_size"], record["gradient_accumulation_steps"], record["settings"]["deepspeed"]) == (
        2, 2, "zero2")  # fmt: skip

    resumed = train(setup, tmp_path / "resumed", 2, {**settings, "deepspeed": "zero2"}, projector=projector,
                    resume_from=tmp_path / "zero2")  # fmt: skip
    assert [resumed[step]["loss"] for step in (3, 4)] == pytest.approx([zero2[3]["loss"], zero2[4]["loss"]], rel=1e-6)
    assert max_difference(load_file(tmp_path / "resumed/work/checkpoint-4/model.safetensors"), step4["zero2"]) <= 1e-7

    # ZeRO-3 (the recipe's stage 2) on the same data: the same losses, the gathered weights in the published layout.
    zero3 = train(setup, tmp_path / "zero3", 2, {**settings, "deepspeed": "zero3"}, projector=projector)
    assert_same_losses(zero3, plain)
    assert (tmp_path / "zero3/work/checkpoint-2/global_step2/zero_pp_rank_1_mp_rank_00_model_states.pt").is_file()
    zero3_step4 = load_file(tmp_path / "zero3/work/checkpoint-4/model.safetensors")
    assert max_difference(step4["plain"], zero3_step4) <= WEIGHT_ATOL
    gathered = load_model(tmp_path / "zero3/final")
    assert torch.equal(gathered.lm_head.weight, zero3_step4["lm_head.weight"].to(torch.bfloat16).float())


def test_cpu_variant_of_the_configs(tmp_path):
    for name, stage in (("zero2", 2), ("zero3", 3)):
        gpu, cpu = deepspeed_config(name, on_gpu=True), deepspeed_config(name, on_gpu=False)
        assert gpu["bf16"]["enabled"] == "auto" and gpu["zero_optimization"]["stage"] == stage
        assert cpu["bf16"]["enabled"] is False and cpu["fp16"]["enabled"] is False
        assert cpu["zero_optimization"] == gpu["zero_optimization"]
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"optimizer": {"type": "AdamW"}, "bf16": {"enabled": True}, "zero_optimization": {}}))
    assert deepspeed_config(str(own), on_gpu=True)["optimizer"] == {"type": "AdamW"}
    assert deepspeed_config(str(own), on_gpu=False) == {"bf16": {"enabled": False}, "fp16": {"enabled": False},
                                                        "zero_optimization": {}}  # fmt: skip
    assert deepspeed_config("none") is None
    with pytest.raises(ValueError, match="use zero2, zero3, none or a JSON file"):
        deepspeed_config("zero4")
    own.write_text("{")
    with pytest.raises(ValueError, match="own.json is not valid JSON"):
        deepspeed_config(str(own))
