"""Stage 1 (projector) and stage 2 (T5 + projector) training with the Hugging Face Trainer.

One entry point for both stages; they differ by settings. The global batch is the configured
quantity: gradient accumulation follows from the number of processes. Resumable: trainer
checkpoints go to `work_dir` (not a declared workflow output), by wall-clock time (`save_every_minutes`: an
XXL stage-2 checkpoint under ZeRO-3 is ~150 GB, so a fixed step count would write terabytes over days) and
optionally every `save_steps`; only the newest `save_total_limit` are kept. SIGTERM (what slurm sends before
preemption or the time limit) saves a checkpoint at the next step boundary and exits with `EXIT_PREEMPTED`; a
rerun resumes from the newest checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.trainer import SCHEDULER_NAME

from .checkpoint import load_model, load_projector, save_model, save_projector
from .data import Collator, ConversationDataset
from .inference import load_tokenizer
from .sampler import ModalityLengthGroupedSampler, SeededRandomSampler

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: a checkpoint was saved, run the job again to resume
CLOCK = time.monotonic  # what time-based checkpoints are timed by (tests drive it)

STAGE_DEFAULTS = {  # the published recipe (training.md)
    1: dict(template="t5_plain_split_text", image_aspect_ratio="square", global_batch_size=256,
            per_device_batch_size=32, learning_rate=1e-2, group_by_modality_length=False, deepspeed="zero2"),
    2: dict(template="t5_v1", image_aspect_ratio="pad", global_batch_size=96, per_device_batch_size=6,
            learning_rate=2e-5, group_by_modality_length=True, deepspeed="zero3"),
}  # fmt: skip


@dataclass
class TrainSettings:
    """Hyperparameters; `None` means the stage's published value (STAGE_DEFAULTS)."""

    template: str | None = None
    image_aspect_ratio: str | None = None
    global_batch_size: int | None = None
    per_device_batch_size: int | None = None
    learning_rate: float | None = None
    group_by_modality_length: bool | None = None
    deepspeed: str | None = None  # zero2, zero3, a JSON file, or "none" (plain DDP)
    epochs: float = 1.0
    max_steps: int = -1  # > 0 stops early (demo, tests)
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    model_max_length: int = 2048
    gradient_checkpointing: bool = True
    dropout: float | None = None  # replaces T5's dropout_rate (FlanT5: 0.1, kept by the recipe)
    seed: int = 42
    save_every_minutes: float | None = 60.0  # resumable checkpoint by wall-clock time (None: off)
    save_steps: int | None = None  # also every N optimizer steps (None: off)
    save_total_limit: int = 1  # checkpoints kept (the newest); the previous one is deleted once the next is complete
    dataloader_workers: int = 4
    dtype: str = "auto"  # auto: bf16 + tf32 on a GPU that has them, fp32 on CPU
    extra: dict = field(default_factory=dict)  # passed to TrainingArguments as is

    @classmethod
    def from_dict(cls, stage: int, values: dict) -> TrainSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; valid: {', '.join(sorted(names))}")
        settings = cls(**values)
        for key in ("save_every_minutes", "save_steps"):
            value = getattr(settings, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                raise ValueError(f"training setting {key} must be a positive number or null (off), got {value!r}")
        for key, value in STAGE_DEFAULTS[stage].items():
            if getattr(settings, key) is None:
                setattr(settings, key, value)
        return settings


def batch_layout(global_batch: int, per_device_max: int, world_size: int) -> tuple[int, int]:
    """(per-device batch, gradient accumulation) whose product with world_size is exactly global_batch."""
    if global_batch % world_size:
        raise ValueError(f"global batch {global_batch} is not divisible by {world_size} processes")
    per_process = global_batch // world_size
    accum = math.ceil(per_process / per_device_max)
    while per_process % accum:
        accum += 1
    return per_process // accum, accum


DEEPSPEED_DIR = Path(__file__).parent / "deepspeed"


def deepspeed_config(name: str | None, on_gpu: bool = True) -> dict | None:
    """The DeepSpeed config for TrainingArguments: `zero2`/`zero3` (shipped), a JSON file, or None for "none".

    The shipped configs are written for GPUs. On CPU (gloo: tests, laptops) DeepSpeed gets the same config in
    fp32, fp16 and bf16 disabled, and without an `optimizer` block, so that the trainer's torch AdamW is used
    instead of DeepSpeed's CPU Adam (a C++ op compiled on first use). Training then differs from plain DDP only
    by DeepSpeed's partitioning.
    """
    if name in (None, "none"):
        return None
    path = DEEPSPEED_DIR / f"{name}.json" if name in ("zero2", "zero3") else Path(name)
    if not path.is_file():
        raise ValueError(f"deepspeed config {name!r} not found: use zero2, zero3, none or a JSON file")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"deepspeed config {path} is not valid JSON: {err}") from err
    if on_gpu:
        return config
    if config.pop("optimizer", None) is not None:
        print(f"[clip-flant5] {path}: optimizer block ignored on CPU; the trainer's AdamW is used", flush=True)
    for key in ("fp16", "bf16"):
        config[key] = {**config.get(key, {}), "enabled": False}
    return config


def lone_process_rendezvous() -> None:
    """Outside a launcher DeepSpeed would look for MPI to set up torch.distributed: give a lone process the
    environment torchrun gives it (rank 0 of 1, a free local port), so `clip-flant5 train` runs without one."""
    if "RANK" in os.environ or "WORLD_SIZE" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


@contextlib.contextmanager
def gathered(module: torch.nn.Module):
    """The module's full parameters inside the block on every rank (ZeRO-3 partitions them; otherwise a no-op).

    Collective under ZeRO-3: every rank must enter it.
    """
    if not is_deepspeed_zero3_enabled():
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters())):
        yield


class CheckpointPolicy(TrainerCallback):
    """Save a resumable checkpoint when `every_minutes` of wall-clock time have passed since the last one, and on
    SIGTERM (any rank), then stop. Both are decided at a step boundary by all ranks together (an all-reduce of
    the two flags): saving is collective under DeepSpeed, and the ranks' clocks differ."""

    def __init__(self, every_minutes: float | None = None, clock=CLOCK):
        self.interval = every_minutes * 60 if every_minutes else None
        self.clock = clock
        self.stop_requested = False
        self.last_save = clock()
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.stop_requested = True

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_save = self.clock()  # model loading and start-up do not count

    def on_step_end(self, args, state, control, **kwargs):
        due = self.interval is not None and self.clock() - self.last_save >= self.interval
        flags = torch.tensor([float(self.stop_requested), float(due)])
        if dist.is_available() and dist.is_initialized():
            if dist.get_backend() == "nccl":
                flags = flags.cuda()
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)  # every rank saves (and stops) together
        stop, due = (bool(x) for x in flags.tolist())
        if stop:
            self.stop_requested = True
            control.should_training_stop = True
        if stop or due:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        self.last_save = self.clock()


class MetricsCallback(TrainerCallback):
    """One JSON line per logged step: loss, lr, grad norm, tokens/s and samples/s (global)."""

    def __init__(self, path: Path, trainer: CLIPT5Trainer):
        self.path, self.trainer = path, trainer
        self.last_time, self.last_step = None, 0

    def on_step_begin(self, args, state, control, **kwargs):
        if self.last_time is None:
            self.last_time, self.last_step = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        tokens = self.trainer.take_token_count()
        if not state.is_world_process_zero or logs is None or "loss" not in logs:
            return
        now = time.perf_counter()
        elapsed = max(now - (self.last_time or now), 1e-9)
        steps = state.global_step - self.last_step
        row = {"step": state.global_step, "epoch": state.epoch, "loss": logs["loss"],
               "learning_rate": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
               "tokens_per_s": tokens / elapsed, "samples_per_s": steps * args.train_batch_size
               * args.gradient_accumulation_steps * args.world_size / elapsed}  # fmt: skip
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        self.last_time, self.last_step = now, state.global_step


class CLIPT5Trainer(Trainer):
    def __init__(self, *args, stage: int, sampler_settings: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.stage = stage
        self.sampler_settings = sampler_settings
        self._tokens = 0

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset or self.train_dataset
        if self.sampler_settings["group_by_modality_length"]:
            return ModalityLengthGroupedSampler(
                dataset.modality_lengths,
                self.args.per_device_train_batch_size,
                self.args.gradient_accumulation_steps,
                self.args.world_size,
                seed=self.args.seed,
            )
        return SeededRandomSampler(len(dataset), seed=self.args.seed)

    def compute_loss(self, model, inputs, *args, **kwargs):
        ids, labels = inputs["input_ids"], inputs["labels"]
        patches = self.accelerator.unwrap_model(model).vision_tower.num_patches
        self._tokens += int((ids > 0).sum() + (ids < 0).sum() * patches + (labels >= 0).sum())
        return super().compute_loss(model, inputs, *args, **kwargs)

    def take_token_count(self) -> int:
        """Tokens (image patches and labels included, padding excluded) since the last call, all ranks."""
        count = torch.tensor(float(self._tokens), device=self.args.device)
        self._tokens = 0
        if self.args.world_size > 1:
            count = self.accelerator.reduce(count, reduction="sum")
        return int(count.item())

    def save_model(self, output_dir=None, _internal_call=False):
        if self.stage == 2:
            return super().save_model(output_dir, _internal_call)
        self._save(output_dir)  # the projector alone: no full state dict (under ZeRO-3 a gather of the whole model)

    def _save(self, output_dir=None, state_dict=None):
        if self.stage == 2:
            return super()._save(output_dir, state_dict)
        # Stage 1 checkpoints hold the projector only (the rest is frozen), in its training dtype so that a
        # resumed run continues from the exact weights. Every rank calls _save (the gather is collective).
        model = self.accelerator.unwrap_model(self.model)
        with gathered(model.mm_projector):
            if self.args.should_save:
                dtype = next(model.mm_projector.parameters()).dtype
                save_projector(model, output_dir or self.args.output_dir, dtype=dtype)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if self.stage == 2:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_projector(model or self.model, resume_from_checkpoint)

    # Under DeepSpeed the trainer checkpoint is DeepSpeed's own (global_stepN/: module and optimizer partitions).
    # By default it holds every parameter, frozen ones included: for stage 1 that is all of CLIP and T5 (23 GB
    # for XXL) at every save. Stage 1 leaves the frozen ones out and resumes with them from --model.
    def _save_optimizer_and_scheduler(self, output_dir):
        if not (self.is_deepspeed_enabled and self.stage == 1):
            return super()._save_optimizer_and_scheduler(output_dir)
        from accelerate.utils import DeepSpeedSchedulerWrapper

        self.model_wrapped.save_checkpoint(output_dir, exclude_frozen_parameters=True)
        if self.args.should_save and not isinstance(self.lr_scheduler, DeepSpeedSchedulerWrapper):
            torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))

    def _prepare_for_training(self, max_steps, train_dataloader, resume_from_checkpoint):
        if not (self.is_deepspeed_enabled and self.stage == 1 and resume_from_checkpoint):
            return super()._prepare_for_training(max_steps, train_dataloader, resume_from_checkpoint)
        model, train_dataloader = super()._prepare_for_training(max_steps, train_dataloader, None)
        # Not strict: the checkpoint lacks the frozen parameters by design (_save_optimizer_and_scheduler).
        loaded, _ = self.model_wrapped.load_checkpoint(
            resume_from_checkpoint, load_module_strict=False, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if loaded is None:
            raise ValueError(f"no DeepSpeed checkpoint (global_step*/) in {resume_from_checkpoint}")
        self._load_optimizer_and_scheduler(resume_from_checkpoint)
        self._load_scaler(resume_from_checkpoint)
        return model, train_dataloader


def latest_checkpoint(work_dir: Path) -> str | None:
    """The newest complete `checkpoint-N` folder (one being written when a job died is skipped)."""
    done = [p for p in work_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(re.sub(r"\D", "", p.name)))) if done else None


def train(
    stage: int,
    *,
    model: str,
    data: str,
    image_root: str,
    output: str,
    work_dir: str,
    projector: str | None = None,
    tokenizer: str | None = None,
    settings: TrainSettings,
) -> int:
    """Train one stage; returns the process exit code (0, or EXIT_PREEMPTED after a SIGTERM)."""
    # First: a SIGTERM during start-up is honoured too.
    checkpoints = CheckpointPolicy(settings.save_every_minutes, clock=CLOCK)
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    per_device, accum = batch_layout(settings.global_batch_size, settings.per_device_batch_size, world_size)
    on_gpu = torch.cuda.is_available()
    bf16 = settings.dtype == "bf16" or (settings.dtype == "auto" and on_gpu and torch.cuda.is_bf16_supported())
    ds_config = deepspeed_config(settings.deepspeed, on_gpu)
    if ds_config is not None:
        lone_process_rendezvous()
        if not on_gpu and bf16:
            raise ValueError("DeepSpeed on CPU trains in fp32: set dtype to fp32 or auto, or deepspeed to none")
        if not on_gpu:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed would guess it, with a warning

    overrides = {} if settings.dropout is None else {"dropout_rate": settings.dropout}
    clip_t5 = load_model(model, **overrides)
    clip_t5.config.image_aspect_ratio = settings.image_aspect_ratio
    if stage == 2:
        if projector is None:
            raise ValueError("stage 2 needs the stage-1 projector (--projector)")
        load_projector(clip_t5, projector)
    clip_t5.config.tune_mm_mlp_adapter = stage == 1
    clip_t5.set_trainable(stage)
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
        stage=stage, sampler_settings={"group_by_modality_length": settings.group_by_modality_length},
    )  # fmt: skip
    trainer.add_callback(checkpoints)
    trainer.add_callback(MetricsCallback(work / "metrics.jsonl", trainer))
    trainer.train(resume_from_checkpoint=latest_checkpoint(work))
    if checkpoints.stop_requested:
        return EXIT_PREEMPTED

    final = trainer.accelerator.unwrap_model(trainer.model)
    if stage == 1:
        with gathered(final.mm_projector):  # collective under ZeRO-3; the projector alone is gathered
            if trainer.args.should_save:
                save_projector(final, output, image_aspect_ratio=settings.image_aspect_ratio, tune_mm_mlp_adapter=True)
    else:
        state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped)  # gathers ZeRO-3 shards
        if trainer.args.should_save:
            save_model(final, output, state_dict=state_dict, tokenizer_dir=tokenizer or model)
    if trainer.args.should_save:
        write_training_record(work, Path(output), stage, settings, per_device, accum, world_size)
    return 0


def write_training_record(work: Path, output: Path, stage, settings, per_device, accum, world_size) -> None:
    """Settings, batch layout and the metrics log beside the artefact (and a loss-curve plot)."""
    record = {"stage": stage, "settings": dataclasses.asdict(settings), "world_size": world_size,
              "per_device_batch_size": per_device, "gradient_accumulation_steps": accum}  # fmt: skip
    (output / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    metrics = work / "metrics.jsonl"
    if metrics.is_file():
        (output / "metrics.jsonl").write_text(metrics.read_text())
        from .tables import plot_loss_curve

        plot_loss_curve(metrics, f"stage {stage} ({output.parent.name})", output / "loss.png")
