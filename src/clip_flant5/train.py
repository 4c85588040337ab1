"""Training one stage of CLIP-FlanT5 (`recipe.Stage`: stage 1, the projector; stage 2, T5 and the projector).

One entry point for both stages: a stage is data (its template, what trains, what a checkpoint holds), and the
settings start from its published values. The global batch is the configured quantity: gradient accumulation
follows from the number of processes. Resumable: trainer checkpoints go to `work_dir` (not a declared workflow
output), by wall-clock time (`save_every_minutes`: an XXL stage-2 checkpoint under ZeRO-3 is ~150 GB, so a fixed
step count would write terabytes over days) and optionally every `save_steps`; only the newest
`save_total_limit` are kept. SIGTERM (what slurm sends before preemption or the time limit) saves a checkpoint at
the next step boundary and exits with `EXIT_PREEMPTED`; a rerun resumes from the newest checkpoint.

The parts: recipe.py (stages, settings), trainer.py (the Trainer subclass, what a checkpoint holds),
callbacks.py (when to checkpoint, the metrics log, the dataset's epoch), distributed.py (DeepSpeed, rendezvous).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import torch
from transformers import TrainingArguments

from .atomic import write_json, write_text
from .callbacks import CheckpointPolicy, DatasetEpoch, MetricsCallback
from .checkpoint import load_model, load_projector, save_model, save_projector
from .data import Collator, ConversationDataset
from .distributed import deepspeed_config, gathered, lone_process_rendezvous
from .errors import UserError
from .inference import load_tokenizer
from .provenance import claim, file_identity, model_identity, tokenizer_identity
from .recipe import Stage, TrainSettings, get_stage
from .trainer import CLIPT5Trainer

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: a checkpoint was saved, run the job again to resume
# What time-based checkpoints are timed by, read when train() starts: tests replace it here (monkeypatch
# clip_flant5.train.CLOCK) to make minutes pass at will.
CLOCK = time.monotonic


def batch_layout(global_batch: int, per_device_max: int, world_size: int) -> tuple[int, int]:
    """(per-device batch, gradient accumulation) whose product with world_size is exactly global_batch."""
    if global_batch % world_size:
        raise UserError(f"global batch {global_batch} is not divisible by {world_size} processes")
    per_process = global_batch // world_size
    accum = math.ceil(per_process / per_device_max)
    while per_process % accum:
        accum += 1
    return per_process // accum, accum


def resumable_settings(settings: TrainSettings) -> dict:
    """The settings a resumed run must share with the run that saved the checkpoint: all but when to checkpoint
    and how many processes load data (they change neither the data order nor the updates)."""
    cadence = ("save_every_minutes", "save_steps", "save_total_limit", "dataloader_workers")
    return {k: v for k, v in settings.to_dict().items() if k not in cadence}


def latest_checkpoint(work_dir: Path) -> str | None:
    """The newest complete `checkpoint-N` folder (one being written when a job died is skipped)."""
    done = [p for p in work_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(re.sub(r"\D", "", p.name)))) if done else None


def train(
    stage: int | Stage,
    *,
    model: str,
    data: str,
    image_root: str,
    output: str,
    work_dir: str,
    projector: str | None = None,
    tokenizer: str | None = None,
    settings: TrainSettings,
    restart: bool = False,
) -> int:
    """Train one stage; returns the process exit code (0, or EXIT_PREEMPTED after a SIGTERM).

    Resumes from the newest checkpoint in `work_dir` if the same model, data and settings made it; checkpoints of
    other inputs are a UserError, or deleted with `restart`.
    """
    # First: a SIGTERM during start-up is honoured too.
    with CheckpointPolicy(settings.save_every_minutes, clock=CLOCK) as checkpoints:
        return _train(stage, checkpoints, model=model, data=data, image_root=image_root, output=output,
                      work_dir=work_dir, projector=projector, tokenizer=tokenizer, settings=settings,
                      restart=restart)  # fmt: skip


def _train(stage: int | Stage, checkpoints: CheckpointPolicy, *, model, data, image_root, output, work_dir,
           projector, tokenizer, settings: TrainSettings, restart: bool) -> int:  # fmt: skip
    stage = stage if isinstance(stage, Stage) else get_stage(stage)
    if stage.starts_from_projector and projector is None:
        raise UserError(f"{stage.name} starts from a trained projector: pass the stage-1 output as --projector")
    if not stage.starts_from_projector and projector is not None:
        raise UserError(f"{stage.name} trains the projector from its initialisation: drop --projector")
    if settings.extra.get("dataloader_persistent_workers"):
        raise UserError("dataloader_persistent_workers is not supported: the workers would keep the first epoch's "
                        "copy of the dataset and draw the same split-text cuts in every epoch")  # fmt: skip
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    per_device, accum = batch_layout(settings.global_batch_size, settings.per_device_batch_size, world_size)
    on_gpu = torch.cuda.is_available()
    bf16 = settings.dtype == "bf16" or (settings.dtype == "auto" and on_gpu and torch.cuda.is_bf16_supported())
    ds_config = deepspeed_config(settings.deepspeed, on_gpu)
    if ds_config is not None:
        lone_process_rendezvous()
        if not on_gpu and bf16:
            raise UserError("DeepSpeed on CPU trains in fp32: set dtype to fp32 or auto, or deepspeed to none")
        if not on_gpu:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed would guess it, with a warning

    overrides = {} if settings.dropout is None else {"dropout_rate": settings.dropout}
    clip_t5 = load_model(model, **overrides)
    clip_t5.config.image_aspect_ratio = settings.image_aspect_ratio
    if stage.starts_from_projector:
        load_projector(clip_t5, projector)
    clip_t5.config.tune_mm_mlp_adapter = stage.saves_projector_only
    clip_t5.set_trainable(train_language=stage.trains_language)
    clip_t5.config.use_cache = False
    tok = load_tokenizer(tokenizer or model, settings.model_max_length)
    dataset = ConversationDataset(
        data, image_root, tok, template=settings.template, image_size=clip_t5.vision_tower.image_size,
        aspect_ratio=settings.image_aspect_ratio, model_max_length=settings.model_max_length, seed=settings.seed,
    )  # fmt: skip

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    args = TrainingArguments(
        output_dir=str(work), per_device_train_batch_size=per_device, gradient_accumulation_steps=accum,
        num_train_epochs=settings.epochs, max_steps=settings.max_steps, learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler, warmup_steps=settings.warmup_ratio,
        weight_decay=settings.weight_decay, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        bf16=bf16, tf32=bf16 or None, activation_checkpointing=settings.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False}, seed=settings.seed, data_seed=settings.seed,
        logging_steps=1, save_strategy="steps" if settings.save_steps else "no", save_steps=settings.save_steps or 500,
        save_total_limit=settings.save_total_limit, dataloader_num_workers=settings.dataloader_workers,
        remove_unused_columns=False, report_to=[], deepspeed=ds_config,
        use_cpu=not on_gpu, ddp_backend="gloo" if world_size > 1 and not on_gpu else None,
        average_tokens_across_devices=True,
        disable_tqdm=True, **settings.extra,
    )  # fmt: skip
    trainer = CLIPT5Trainer(
        model=clip_t5, args=args, train_dataset=dataset, data_collator=Collator(0, settings.model_max_length),
        stage=stage, group_by_modality_length=settings.group_by_modality_length,
    )  # fmt: skip
    trainer.add_callback(checkpoints)
    trainer.add_callback(MetricsCallback(work / "metrics.jsonl", trainer.take_token_count))
    trainer.add_callback(DatasetEpoch(dataset))
    inputs = {"stage": stage.number, "model": model_identity(clip_t5), "tokenizer": tokenizer_identity(tok),
              "data": file_identity(data), "settings": resumable_settings(settings)}  # fmt: skip
    with args.main_process_first(local=False, desc="checking the work folder"):  # rank 0 clears it, if at all
        claim(work, inputs, restart=restart, what="trainer checkpoints", restart_hint="rerun with --restart")
    resume = latest_checkpoint(work)
    if resume is not None and args.should_save:
        step = json.loads((Path(resume) / "trainer_state.json").read_text())["global_step"]
        print(f"[clip-flant5] resuming from {resume} at step {step}", flush=True)
    trainer.train(resume_from_checkpoint=resume)
    if checkpoints.stop_requested:
        return EXIT_PREEMPTED

    save_artefact(trainer, stage, Path(output), settings, tokenizer_dir=tokenizer or model)
    if trainer.args.should_save:
        write_training_record(work, Path(output), stage, settings, per_device, accum, world_size)
    return 0


def save_artefact(trainer: CLIPT5Trainer, stage: Stage, output: Path, settings: TrainSettings, tokenizer_dir) -> None:
    """The stage's published output: mm_projector.bin (bf16) for a projector-only stage, else a whole checkpoint.

    Collective under ZeRO-3 (every rank gathers); rank 0 writes.
    """
    final = trainer.accelerator.unwrap_model(trainer.model)
    if stage.saves_projector_only:
        with gathered(final.mm_projector):  # the projector alone is gathered
            if trainer.args.should_save:
                save_projector(final, output, image_aspect_ratio=settings.image_aspect_ratio, tune_mm_mlp_adapter=True)
        return
    state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped)  # gathers ZeRO-3 shards
    if trainer.args.should_save:
        save_model(final, output, state_dict=state_dict, tokenizer_dir=tokenizer_dir)


def write_training_record(work: Path, output: Path, stage: Stage, settings, per_device, accum, world_size) -> None:
    """Settings, batch layout and the metrics log beside the artefact (and a loss-curve plot)."""
    record = {"stage": stage.number, "settings": settings.to_dict(), "world_size": world_size,
              "per_device_batch_size": per_device, "gradient_accumulation_steps": accum}  # fmt: skip
    write_json(output / "training.json", record)
    metrics = work / "metrics.jsonl"
    if metrics.is_file():
        write_text(output / "metrics.jsonl", metrics.read_text())
        from .plots import plot_loss_curve  # matplotlib: imported only when a run has finished

        plot_loss_curve(metrics, f"stage {stage.number} ({output.parent.name})", output / "loss.png")
