"""Atomic outputs: everything is written beside its target under a temporary name, then renamed into place,
so a killed job never leaves a half-written file or folder that looks finished."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` (usual file permissions),
    on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data, *, indent: int | None = 2, fsync: bool = False) -> Path:
    return write_text(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n", fsync=fsync)


# One shared encoder for streamed writes: json.dumps(ensure_ascii=False) would build a new one per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


@contextlib.contextmanager
def atomic_json_array(path: str | os.PathLike) -> Iterator[Callable[[object], None]]:
    """Yield `write(element)`; the elements form a JSON array at `path`, one per line (valid JSON that the
    streaming reader of clip_flant5.flatten reads back one element at a time), written atomically."""
    with atomic_path(path) as tmp:
        # backslashreplace: a lone surrogate (valid in JSON as "\ud800", not encodable in UTF-8) is written as
        # that same escape, so ensure_ascii=False output reads back identically.
        with open(tmp, "w", encoding="utf-8", errors="backslashreplace", newline="\n", buffering=1 << 20) as file:
            separator = "\n"

            def write(element) -> None:
                nonlocal separator
                file.write(separator)
                file.write(_ENCODE(element))
                separator = ",\n"

            file.write("[")
            yield write
            file.write("\n]\n")


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; on success it replaces `target` as a whole."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
        for f in tmp.rglob("*"):
            if f.is_file():
                f.chmod(0o666 & ~_umask())
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / "previous")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
