"""DeepSpeed and process-group plumbing of training: the config, a rendezvous for a lone process, ZeRO-3 gathers.

The model knows nothing of these; the trainer and `train()` use them.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

import torch
from transformers.integrations import is_deepspeed_zero3_enabled

from .errors import UserError

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
        raise UserError(f"deepspeed config {name!r} not found: use zero2, zero3, none or a JSON file")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"deepspeed config {path} is not valid JSON: {err}") from err
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
