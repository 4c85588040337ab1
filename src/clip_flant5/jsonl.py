"""JSON Lines: the one reader (errors name the file and line) and the one writer (atomic) of the package."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .atomic import atomic_path
from .errors import UserError


def iter_jsonl(path: str | os.PathLike, *, keys: Iterable[str] = (), what: str = "record",
               check: Callable[[dict], str | None] | None = None) -> Iterator[dict]:  # fmt: skip
    """The JSON objects of a file holding one per line (blank lines skipped), each with `keys`.

    A line that is not a JSON object, lacks a key, or for which `check(row)` returns a problem, is a UserError
    naming the file, the line and what was expected; a file that is one JSON array is told apart (a common
    mistake: JSON instead of JSON Lines).
    """
    keys = tuple(keys)
    expected = f"one JSON object per line{' with ' + ', '.join(keys) if keys else ''} ({what}s)"
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (expected {expected})") from None
    with f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{number}: not JSON ({err.msg}); expected {expected}") from None
            if isinstance(row, list):
                raise UserError(f"{path}:{number}: a JSON array; expected {expected} (JSON Lines, not one JSON array)")
            if not isinstance(row, dict):
                raise UserError(f"{path}:{number}: {type(row).__name__} {row!r}; expected {expected}")
            missing = [k for k in keys if k not in row]
            if missing:
                raise UserError(f"{path}:{number}: {what} without {', '.join(missing)}; expected {expected}")
            problem = check(row) if check is not None else None
            if problem:
                raise UserError(f"{path}:{number}: {problem}")
            yield row


def read_jsonl(path: str | os.PathLike, **options) -> list[dict]:
    """`iter_jsonl` as a list."""
    return list(iter_jsonl(path, **options))


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """One JSON object per line, atomically (temp file + rename)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)
