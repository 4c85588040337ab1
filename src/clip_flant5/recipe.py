"""The training recipe as data: the two stages, and the settings a run may change (`TrainSettings`).

A stage is what differs between stage 1 and stage 2 (spec training.md): its template, image aspect ratio and
published hyperparameters, whether T5 trains beside the projector (CLIP never does), and hence what a checkpoint
of it holds. The trainer asks the stage; nothing branches on a stage number.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import UserError
from .images import ASPECT_RATIOS
from .prompts import MODEL_MAX_LENGTH, TEMPLATES
from .settings import check, from_dict, setting


@dataclass(frozen=True)
class Stage:
    number: int
    trains_language: bool  # T5 trains with the projector (stage 2); else the projector alone (stage 1)
    template: str
    image_aspect_ratio: str
    global_batch_size: int
    per_device_batch_size: int
    learning_rate: float
    group_by_modality_length: bool
    deepspeed: str

    @property
    def name(self) -> str:
        """`stage1`, `stage2`: what the workflow's paths and targets call it."""
        return f"stage{self.number}"

    @property
    def starts_from_projector(self) -> bool:
        """Stage 2 starts from a trained stage-1 projector."""
        return self.trains_language

    @property
    def saves_projector_only(self) -> bool:
        """What a checkpoint and the final artefact hold: the projector (mm_projector.bin), or the whole model.
        Under DeepSpeed a projector-only stage also leaves the frozen weights out of its resumable checkpoints."""
        return not self.trains_language

    def defaults(self) -> dict:
        """The stage's published values of the settings it fixes (TrainSettings' None fields)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainSettings)
                if f.default is None and hasattr(self, f.name)}  # fmt: skip


STAGES = {
    1: Stage(1, trains_language=False, template="t5_plain_split_text", image_aspect_ratio="square",
             global_batch_size=256, per_device_batch_size=32, learning_rate=1e-2, group_by_modality_length=False,
             deepspeed="zero2"),
    2: Stage(2, trains_language=True, template="t5_v1", image_aspect_ratio="pad", global_batch_size=96,
             per_device_batch_size=6, learning_rate=2e-5, group_by_modality_length=True, deepspeed="zero3"),
}  # fmt: skip


def get_stage(number: int | str) -> Stage:
    """Stage 1 or 2, by number or name (`stage1`)."""
    for stage in STAGES.values():
        if number in (stage.number, stage.name, str(stage.number)):
            return stage
    raise UserError(f"unknown training stage {number!r}; valid: {', '.join(str(n) for n in STAGES)}")


_STAGE = "the stage's published value"


@dataclass(frozen=True)
class TrainSettings:
    """Hyperparameters of one training run; `None` means the stage's published value (STAGES)."""

    template: str | None = setting(None, f"training template ({_STAGE})", choices=TEMPLATES)
    image_aspect_ratio: str | None = setting(None, f"pad or square ({_STAGE})", choices=ASPECT_RATIOS)
    global_batch_size: int | None = setting(None, f"samples per optimizer step, all processes ({_STAGE})",
                                            minimum=1)  # fmt: skip
    per_device_batch_size: int | None = setting(None, f"largest micro-batch per process ({_STAGE})", minimum=1)
    learning_rate: float | None = setting(None, f"peak learning rate ({_STAGE})", exclusive_minimum=0)
    group_by_modality_length: bool | None = setting(None, f"batches of one modality, by length ({_STAGE})")
    deepspeed: str | None = setting(None, f"zero2, zero3, a JSON file, or none: plain DDP ({_STAGE})")
    epochs: float = setting(1.0, "passes over the data", exclusive_minimum=0)
    max_steps: int = setting(-1, "stop after this many optimizer steps (-1: the epochs decide)", minimum=-1)
    warmup_ratio: float = setting(0.03, "share of the steps spent warming the learning rate up", minimum=0, maximum=1)
    weight_decay: float = setting(0.0, "AdamW weight decay", minimum=0)
    lr_scheduler: str = setting("cosine", "transformers scheduler name")
    model_max_length: int = setting(MODEL_MAX_LENGTH, "tokens kept per sequence (image patches included)", minimum=1)
    gradient_checkpointing: bool = setting(True, "recompute activations in the backward pass (saves memory)")
    dropout: float | None = setting(None, "T5 dropout_rate (null: the base model's; FlanT5 0.1, kept by the recipe)",
                                    minimum=0, maximum=1)  # fmt: skip
    seed: int = setting(42, "seed of the model's random state and the data order")
    save_every_minutes: float | None = setting(60.0, "resumable checkpoint every N minutes of wall-clock time "
                                               "(null: off; an XXL stage-2 checkpoint is ~150 GB)",
                                               exclusive_minimum=0)  # fmt: skip
    save_steps: int | None = setting(None, "also a checkpoint every N optimizer steps (null: off)", minimum=1)
    save_total_limit: int = setting(1, "checkpoints kept, the newest (the previous is deleted once the next is "
                                    "complete)", minimum=1)  # fmt: skip
    dataloader_workers: int = setting(4, "processes loading data per training process", minimum=0)
    dtype: str = setting("auto", "auto: bf16 + tf32 on a GPU that has them, fp32 on CPU",
                         choices=("auto", "bf16", "fp32"))  # fmt: skip
    extra: dict = setting({}, "passed to transformers' TrainingArguments as is", flag=False)

    def __post_init__(self):
        check(self, "training setting")

    @classmethod
    def from_dict(cls, stage: int | Stage, values: dict) -> TrainSettings:
        """The configured values over the stage's published ones."""
        stage = stage if isinstance(stage, Stage) else get_stage(stage)
        settings = from_dict(cls, values, "training settings")
        unset = {k: v for k, v in stage.defaults().items() if getattr(settings, k) is None}
        return dataclasses.replace(settings, **unset)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
