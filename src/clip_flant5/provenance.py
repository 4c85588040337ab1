"""Resumable work keyed on what produced it: a folder of partial results (scoring chunks, trainer checkpoints)
carries a record of its inputs (model, tokenizer, data, settings), and is resumed only by the same inputs.

The record is content-based: a model is identified by its config and a sample of every tensor (cheap for 11B
parameters, and the same whether it was loaded from a folder or the hub), a file by its size and sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from .atomic import write_json
from .errors import UserError

RECORD = "provenance.json"
_SAMPLE = 16  # values taken from each end of every tensor


def model_identity(model) -> str:
    """sha256 of the model's config (its location left out) and of the first and last values of each tensor."""
    import torch

    config = {k: v for k, v in model.config.to_dict().items() if k not in ("_name_or_path", "name_or_path")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            flat = tensor.detach().reshape(-1)
            sample = torch.cat([flat[:_SAMPLE], flat[-_SAMPLE:]]).cpu()
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(sample.view(torch.uint8).numpy().tobytes() if sample.numel() else b"")
    return digest.hexdigest()


def tokenizer_identity(tokenizer) -> str:
    """sha256 of the tokenizer's class, vocabulary and special tokens."""
    vocab = sorted(tokenizer.get_vocab().items())
    special = sorted(map(str, tokenizer.all_special_tokens))
    return hashlib.sha256(json.dumps([type(tokenizer).__name__, vocab, special]).encode()).hexdigest()


def file_identity(path: str | os.PathLike) -> dict:
    """Size and sha256 of a file."""
    from .download.files import sha256_file

    entry = sha256_file(Path(path))
    return {"size": entry.size, "sha256": entry.sha256}


def _flat(record: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(old: dict, new: dict) -> list[str]:
    """The keys (dotted) whose values differ between two records."""
    a, b = _flat(old), _flat(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def claim(folder: str | os.PathLike, record: dict, *, restart: bool, what: str, restart_hint: str) -> bool:
    """Make `folder` the home of work produced by `record`; returns whether earlier work there is resumed.

    Work left by other inputs (or by a version that kept no record) is never reused silently: UserError naming
    what changed, unless `restart`, which deletes it and starts over.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    work = [p for p in folder.iterdir() if p.name != RECORD]
    recorded = folder / RECORD
    try:
        previous = json.loads(recorded.read_text()) if recorded.is_file() else None
    except (OSError, json.JSONDecodeError):
        previous = None
    if work and previous != record:
        if not restart:
            changed = ", ".join(differences(previous, record)) if previous else "no record of its inputs"
            raise UserError(
                f"{folder} holds {what} made from other inputs (changed: {changed}); it is not reused: "
                f"{restart_hint} to discard it and start over, or delete {folder}"
            )
        for path in work:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        work = []
    write_json(recorded, record)
    return bool(work)
