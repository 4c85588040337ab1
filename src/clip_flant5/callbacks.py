"""Trainer callbacks: when to checkpoint (wall-clock time, SIGTERM), the metrics log, the dataset's epoch."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import TrainerCallback


class CheckpointPolicy(TrainerCallback):
    """Save a resumable checkpoint when `every_minutes` of wall-clock time have passed since the last one, and on
    SIGTERM (any rank, while the policy is entered as a context manager), then stop. Both are decided at a step
    boundary by all ranks together (an all-reduce of the two flags): saving is collective under DeepSpeed, and the
    ranks' clocks differ.

    `clock` returns seconds; `train()` passes `clip_flant5.train.CLOCK`, which is where tests put a fake one.
    """

    def __init__(self, every_minutes: float | None, *, clock: Callable[[], float]):
        self.interval = every_minutes * 60 if every_minutes else None
        self.clock = clock
        self.stop_requested = False
        self.last_save = clock()
        self._previous = None

    def __enter__(self) -> CheckpointPolicy:
        """Listen for SIGTERM until the block ends; then the process's own handler is back (a child forked later,
        e.g. by a multiprocessing pool, would otherwise inherit ours, ignore pool.terminate() and hang its parent)."""
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGTERM, self._previous)

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
    """One JSON line per logged step: loss, lr, grad norm, tokens/s and samples/s (global).

    `token_count` returns the tokens trained on since its last call, all ranks (CLIPT5Trainer.take_token_count).
    """

    def __init__(self, path: Path, token_count: Callable[[], int]):
        self.path, self.token_count = path, token_count
        self.last_time, self.last_step = None, 0

    def on_step_begin(self, args, state, control, **kwargs):
        if self.last_time is None:
            self.last_time, self.last_step = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        tokens = self.token_count()  # collective: every rank takes part
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


class DatasetEpoch(TrainerCallback):
    """Tell the dataset which epoch begins, so that what it draws per epoch (the split-text cut) is drawn anew.

    The Trainer calls this before it starts the epoch's dataloader iterator, and starts one per epoch: the
    dataloader workers, which copy the dataset when the iterator starts, see the new value (not with persistent
    workers, which keep their first copy: `train()` refuses them). When a run resumes mid-epoch, `state.epoch`
    is the checkpoint's (e.g. 1.5), so the resumed epoch draws what the interrupted one drew. (The dataset has no
    `set_epoch`: accelerate calls one on some dataloader layouts only, and one path is easier to trust.)
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.epoch = int(state.epoch)
