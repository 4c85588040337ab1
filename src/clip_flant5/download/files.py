"""Small file helpers shared by the download steps: hashing a file, moving a rejected one aside, reading a record."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..sources import LockEntry


def sha256_file(path: Path) -> LockEntry:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return LockEntry(h.hexdigest(), size)


def _move_aside(path: Path, dest: Path) -> Path:
    bad = dest.with_name(dest.name + ".bad")
    os.replace(path, bad)
    return bad


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
