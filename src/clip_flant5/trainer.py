"""The Hugging Face Trainer for CLIP-FlanT5: the seeded sampler, token counting, and what a checkpoint holds.

What a checkpoint holds is the stage's (`Stage.saves_projector_only`): a stage that trains the projector alone
saves and resumes the projector alone, and under DeepSpeed leaves the frozen CLIP and T5 out of its checkpoints.
"""

from __future__ import annotations

import os

import torch
from transformers import Trainer
from transformers.trainer import SCHEDULER_NAME

from .checkpoint import load_projector, save_projector
from .distributed import gathered
from .errors import UserError
from .recipe import Stage
from .sampler import ModalityLengthGroupedSampler, SeededRandomSampler


class CLIPT5Trainer(Trainer):
    def __init__(self, *args, stage: Stage, group_by_modality_length: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.stage = stage
        self.group_by_modality_length = group_by_modality_length
        self._tokens = 0

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset or self.train_dataset
        if self.group_by_modality_length:
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
        if not self.stage.saves_projector_only:
            return super().save_model(output_dir, _internal_call)
        self._save(output_dir)  # the projector alone: no full state dict (under ZeRO-3 a gather of the whole model)

    def _save(self, output_dir=None, state_dict=None):
        if not self.stage.saves_projector_only:
            return super()._save(output_dir, state_dict)
        # The projector alone (the rest is frozen), in its training dtype so that a resumed run continues from
        # the exact weights. Every rank calls _save (the gather is collective).
        model = self.accelerator.unwrap_model(self.model)
        with gathered(model.mm_projector):
            if self.args.should_save:
                dtype = next(model.mm_projector.parameters()).dtype
                save_projector(model, output_dir or self.args.output_dir, dtype=dtype)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if not self.stage.saves_projector_only:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_projector(model or self.model, resume_from_checkpoint)

    # Under DeepSpeed the trainer checkpoint is DeepSpeed's own (global_stepN/: module and optimizer partitions).
    # By default it holds every parameter, frozen ones included: for a projector-only stage that is all of CLIP
    # and T5 (23 GB for XXL) at every save. Such a stage leaves the frozen ones out and resumes with them from
    # --model.
    def _save_optimizer_and_scheduler(self, output_dir):
        if not (self.is_deepspeed_enabled and self.stage.saves_projector_only):
            return super()._save_optimizer_and_scheduler(output_dir)
        from accelerate.utils import DeepSpeedSchedulerWrapper

        self.model_wrapped.save_checkpoint(output_dir, exclude_frozen_parameters=True)
        if self.args.should_save and not isinstance(self.lr_scheduler, DeepSpeedSchedulerWrapper):
            torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))

    def _prepare_for_training(self, max_steps, train_dataloader, resume_from_checkpoint):
        if not (self.is_deepspeed_enabled and self.stage.saves_projector_only and resume_from_checkpoint):
            return super()._prepare_for_training(max_steps, train_dataloader, resume_from_checkpoint)
        model, train_dataloader = super()._prepare_for_training(max_steps, train_dataloader, None)
        # Not strict: the checkpoint lacks the frozen parameters by design (_save_optimizer_and_scheduler).
        loaded, _ = self.model_wrapped.load_checkpoint(
            resume_from_checkpoint, load_module_strict=False, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if loaded is None:
            raise UserError(
                f"no DeepSpeed checkpoint (global_step*/) in {resume_from_checkpoint}: it was written without "
                "DeepSpeed; resume with the deepspeed setting it was written with, or empty the work dir"
            )
        self._load_optimizer_and_scheduler(resume_from_checkpoint)
        self._load_scaler(resume_from_checkpoint)
        return model, train_dataloader
