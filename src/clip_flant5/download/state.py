"""What is recorded per source under `R/downloads/<source>/`: `.state.json` (the verified and installed files)
and `complete.json` (the source is in place)."""

from __future__ import annotations

import os
from pathlib import Path

from ..atomic import write_json
from ..sources import DEFAULT_DATA_ROOT, LockEntry, Source, lock_key
from .files import _read_json

STATE_NAME = ".state.json"
COMPLETE_NAME = "complete.json"


class _State:
    """R/downloads/<source>/.state.json. Per file: `download` = sha256, size and mtime of the verified download (so
    it is not rehashed while unchanged); `installed` = sha256 and size of what is unpacked/placed under the group
    root (so it is replaced, not refused, when a new version comes, and kept when the download is deleted)."""

    def __init__(self, path: Path):
        self.path = path
        data = _read_json(path)
        self.files: dict = data.get("files", {}) if isinstance(data, dict) else {}

    def _set(self, name: str, key: str, value) -> None:
        rec = self.files.setdefault(name, {})
        if value is None:
            rec.pop(key, None)
        else:
            rec[key] = value
        write_json(self.path, {"files": self.files}, fsync=True)  # must survive a crash

    def verified(self, name: str, path: Path) -> LockEntry | None:
        rec, stat = self.files.get(name, {}).get("download") or {}, path.stat()
        if rec.get("size") == stat.st_size and rec.get("mtime_ns") == stat.st_mtime_ns:
            return LockEntry(rec["sha256"], rec["size"])
        return None

    def set_verified(self, name: str, path: Path, entry: LockEntry | None) -> None:
        value = entry and {"sha256": entry.sha256, "size": entry.size, "mtime_ns": path.stat().st_mtime_ns}
        self._set(name, "download", value)

    def installed(self, name: str) -> LockEntry | None:
        rec = self.files.get(name, {}).get("installed")
        return LockEntry(rec["sha256"], rec["size"]) if rec else None

    def set_installed(self, name: str, entry: LockEntry) -> None:
        self._set(name, "installed", {"sha256": entry.sha256, "size": entry.size})


def marker_path(name: str, data_root: str | os.PathLike = DEFAULT_DATA_ROOT) -> Path:
    """`complete.json` of a source: written last, once everything is verified and in place (a good Snakemake
    output; the data folders themselves should not be outputs, Snakemake deletes outputs before a rerun)."""
    return Path(data_root) / "downloads" / name / COMPLETE_NAME


def _complete_entries(source: Source, root: Path, lock: dict) -> dict[str, LockEntry] | None:
    """The files' entries from `complete.json` if the source is in place and agrees with the lock, else None."""
    data = _read_json(marker_path(source.name, root))
    try:
        done = {f.name: LockEntry(**data["files"][f.name]) for f in source.files}
    except (KeyError, TypeError):
        return None
    if any(lock.get(lock_key(source.name, n), e) != e for n, e in done.items()):
        return None
    return done if all(p.exists() for p in source.provided_paths(root)) else None
