"""`lock_status`: what is present, partial or missing, without network or hashing; `iter_status_lines` reports it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..sources import (
    DEFAULT_DATA_ROOT,
    DEFAULT_LOCK,
    DEFAULT_SOURCES,
    FileSpec,
    Source,
    get_source,
    load_sources,
    lock_key,
    read_lock,
)
from .state import STATE_NAME, _complete_entries, _State


@dataclass(frozen=True)
class FileStatus:
    name: str
    locked: bool  # the lock file has its sha256
    downloaded: bool  # verified download present (or installed earlier)
    partial_bytes: int  # size of an interrupted download (.part), 0 if none
    download_path: Path  # where a file fetched by hand goes
    remote: str


@dataclass(frozen=True)
class SourceStatus:
    name: str
    group: str
    kind: str
    state: str  # present | partial | missing
    files: tuple[FileStatus, ...]
    missing: tuple[Path, ...]  # `provides` paths that do not exist
    instructions: str | None  # manual sources

    @property
    def unlocked(self) -> list[str]:
        return [f.name for f in self.files if not f.locked]


def lock_status(
    data_root: str | os.PathLike = DEFAULT_DATA_ROOT,
    *,
    sources_path=DEFAULT_SOURCES,
    lock_path=DEFAULT_LOCK,
    names: list[str] | None = None,
) -> list[SourceStatus]:
    """What is present, partial or missing, without network or hashing. A source is present when `complete.json`
    agrees with the lock and its `provides` exist (a manual source: when its `provides` exist)."""
    sources, root, lock = load_sources(sources_path), Path(data_root), read_lock(lock_path)
    out = []
    for s in [get_source(sources, n) for n in names] if names else sources.values():
        missing = tuple(p for p in s.provided_paths(root) if not p.exists())
        state = _State(s.download_dir(root) / STATE_NAME)
        files = tuple(_file_status(s, f, root, lock, state) for f in s.files)
        if s.kind == "manual":
            present = not missing
        else:
            present = _complete_entries(s, root, lock) is not None
        touched = any(f.downloaded or f.partial_bytes for f in files) or len(missing) < len(s.provides)
        state = "present" if present else "partial" if touched else "missing"
        out.append(SourceStatus(s.name, s.group, s.kind, state, files, missing, _instructions(s, root)))
    return out


def _file_status(s: Source, f: FileSpec, root: Path, lock: dict, state: _State) -> FileStatus:
    path = s.download_dir(root) / f.name
    part = path.with_name(path.name + ".part")
    downloaded = path.is_file() or bool(state.installed(f.name))
    return FileStatus(
        f.name,
        lock_key(s.name, f.name) in lock,
        downloaded,
        part.stat().st_size if part.exists() else 0,
        path,
        f.remote,
    )


def _instructions(source: Source, root: Path) -> str | None:
    if source.instructions is None:
        return None
    return source.instructions.replace("{group_root}", str(source.root(root))).replace("{data_root}", str(root))


def iter_status_lines(statuses: list[SourceStatus]) -> Iterator[str]:
    """A plain-text report: one line per source, then what is missing and how to provide it."""
    for s in statuses:
        extra = f" (not locked: {', '.join(s.unlocked)})" if s.unlocked and s.kind != "manual" else ""
        yield f"{s.name:<26} {s.group:<10} {s.state}{extra}"
        if s.state == "present":
            continue
        for f in s.files:
            if not f.downloaded:
                partial = f" ({f.partial_bytes} bytes so far)" if f.partial_bytes else ""
                yield f"    missing {f.name}{partial}: {f.remote} -> {f.download_path}"
        if s.kind == "manual":
            yield f"    to be fetched by hand; missing {', '.join(map(str, s.missing))}:"
            yield from ("      " + line for line in (s.instructions or "").splitlines())
