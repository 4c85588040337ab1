"""`fetch_source`: fetch every file of a source, verify it against the lock, unpack or place it, mark it done."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path, PurePosixPath

from ..atomic import write_json
from ..sources import (
    DEFAULT_DATA_ROOT,
    DEFAULT_LOCK,
    DEFAULT_SOURCES,
    GDRIVE_URL,
    FileSpec,
    LockEntry,
    Source,
    folder_lock,
    get_source,
    join_rel,
    load_sources,
    lock_key,
    read_lock,
    update_lock,
)
from .archive import unpack_archive
from .errors import (
    _CHECKSUM_HINT,
    ChecksumError,
    CorruptArchiveError,
    DownloadError,
    ManualDownloadRequired,
    SizeMismatchError,
)
from .files import _move_aside, sha256_file
from .gdrive import resolve_gdrive_file
from .hub import download_hf
from .state import STATE_NAME, _complete_entries, _State, marker_path
from .status import _instructions
from .transfer import FetchOptions, download_url

log = logging.getLogger(__name__)


def fetch_source(
    name: str,
    data_root: str | os.PathLike = DEFAULT_DATA_ROOT,
    *,
    sources_path: str | os.PathLike = DEFAULT_SOURCES,
    lock_path: str | os.PathLike = DEFAULT_LOCK,
    refresh_lock: bool = False,
    unpack: bool = True,
    options: FetchOptions | None = None,
) -> list[Path]:
    """Fetch every file of source `name`, verify it against the lock (recording it on first fetch, or rewriting it
    with `refresh_lock`), unpack or place it under the group root and return the `provides` paths (with
    `unpack=False`: the downloaded files). A source already complete and matching the lock returns at once.

    Raises UnknownSourceError, ManualDownloadRequired (a manual source whose `provides` are missing: the message
    says what to fetch and where to put it), DownloadError if another process is fetching the same source, and the
    errors of `download_url`, `download_hf` and `unpack_archive`; all are SourceError."""
    source = get_source(load_sources(sources_path), name)
    root = Path(data_root)
    if source.kind == "manual":
        return _manual(source, root)
    dl_dir = source.download_dir(root)
    try:
        with folder_lock(dl_dir, blocking=False):
            return _fetch_locked(source, root, Path(lock_path), refresh_lock, unpack, options or FetchOptions())
    except BlockingIOError:
        raise DownloadError(f"another process is already fetching {name!r} (it holds the lock on {dl_dir})") from None


def _fetch_locked(
    source: Source, root: Path, lock_path: Path, refresh: bool, unpack: bool, options: FetchOptions
) -> list[Path]:
    lock = read_lock(lock_path)
    marker = marker_path(source.name, root)
    if unpack and not refresh and (done := _complete_entries(source, root, lock)) is not None:
        if new := {lock_key(source.name, n): e for n, e in done.items() if lock_key(source.name, n) not in lock}:
            update_lock(lock_path, new)  # e.g. a lock file reset by git: the marker has the hashes
        return source.provided_paths(root)
    marker.unlink(missing_ok=True)
    state = _State(source.download_dir(root) / STATE_NAME)
    entries = {}
    for f in sorted(source.files, key=lambda f: not f.unpack):  # archives first: plain files may go inside them
        key = lock_key(source.name, f.name)
        locked = None if refresh else lock.get(key)
        entry = _fetch_file(source, f, root, locked, state, options)
        if unpack:
            _install(source, f, root, entry, state, verified=locked is not None)
        if locked is None:  # first fetch (or refresh): recorded once the file proved usable
            update_lock(lock_path, {key: entry})
        entries[f.name] = entry
    if not unpack:
        return [source.download_dir(root) / f.name for f in source.files]
    if missing := [str(p) for p in source.provided_paths(root) if not p.exists()]:
        raise DownloadError(f"{source.name}: every file was fetched but these paths are missing: {missing}")
    write_json(
        marker,
        {
            "source": source.name,
            "provides": list(source.provides),
            "files": {n: {"sha256": e.sha256, "size": e.size} for n, e in entries.items()},
        },
        fsync=True,
    )
    return source.provided_paths(root)


def _fetch_file(
    source: Source, f: FileSpec, root: Path, locked: LockEntry | None, state: _State, options: FetchOptions
) -> LockEntry:
    """A verified download of `f` in R/downloads/<source>/ (or the record of its installed copy, if the download
    was deleted after unpacking to save space)."""
    path = source.download_dir(root) / f.name
    label = f"{source.name}/{f.name}"
    expected_size = locked.size if locked else f.size
    if path.is_file():  # downloaded earlier, or put there by hand
        entry = state.verified(f.name, path) or sha256_file(path)
        if (locked and entry.sha256 != locked.sha256) or (expected_size and entry.size != expected_size):
            bad = _move_aside(path, path)
            state.set_verified(f.name, bad, None)
            if locked and entry.sha256 != locked.sha256:
                raise ChecksumError(label, locked.sha256, entry.sha256, bad, _CHECKSUM_HINT)
            raise SizeMismatchError(
                f"size mismatch for {label}: expected {expected_size} bytes, got {entry.size}; "
                f"the rejected file was moved to {bad}"
            )
        state.set_verified(f.name, path, entry)
        return entry
    installed = state.installed(f.name)
    if installed and locked in (None, installed) and join_rel(source.root(root), f.dest).exists():
        return installed
    what = f" (the file {f.filename!r} in that folder)" if f.folder else ""
    hint = (
        f"Fetch it by hand from {f.remote}{what} and put it at {path}, then rerun: it is verified (or recorded in "
        "the lock) like a download."
    )
    log.info("fetching %s from %s", label, f.remote)
    expected_sha = locked.sha256 if locked else None
    if f.kind == "huggingface":
        cache = options.hf_cache_dir if options.hf_cache_dir is not None else root / "downloads" / ".hf-cache"
        entry = download_hf(f, path, expected_sha256=expected_sha, cache_dir=cache, label=label)
        if expected_size is not None and entry.size != expected_size:
            bad = _move_aside(path, path)
            raise SizeMismatchError(
                f"size mismatch for {label}: expected {expected_size} bytes, got {entry.size}; "
                f"the rejected file was moved to {bad}"
            )
    else:
        url = f.url
        if f.kind == "gdrive":  # a file given by its folder: its id is looked up by name only when it is needed
            file_id = f.id or resolve_gdrive_file(f.folder, f.filename, options=options, hint=hint)
            url = GDRIVE_URL.format(id=file_id)
        entry = download_url(
            url,
            path,
            expected_sha256=expected_sha,
            expected_size=expected_size,
            options=options,
            label=label,
            manual_hint=hint,
        )
    state.set_verified(f.name, path, entry)
    return entry


def _provides_under(source: Source, f: FileSpec) -> tuple[str, ...]:
    """The source's `provides` that archive `f` must deliver, relative to its folder (those of the source's plain
    files placed inside that folder are not the archive's)."""
    folder, out = PurePosixPath(f.dest), []
    plain = [PurePosixPath(o.dest) for o in source.files if not o.unpack]
    for p in map(PurePosixPath, source.provides):
        inside = f.dest == "." or p == folder or folder in p.parents
        if inside and not any(p == d or d in p.parents for d in plain):
            out.append(str(p.relative_to(folder)) if f.dest != "." else str(p))
    return tuple(out)


def _install(source: Source, f: FileSpec, root: Path, entry: LockEntry, state: _State, verified: bool) -> None:
    path, dest = source.download_dir(root) / f.name, join_rel(source.root(root), f.dest)
    ours = state.installed(f.name)
    if ours == entry and dest.exists():
        return
    if f.unpack:
        try:
            unpack_archive(
                path,
                dest,
                fmt=f.unpack,
                strip_top_level=f.strip_top_level,
                provides=_provides_under(source, f),
                stamp=entry.sha256,
                replace_existing=ours is not None,
            )
        except CorruptArchiveError as err:
            if verified:
                raise
            bad = _move_aside(path, path)  # an unverified download that is no archive: never reuse it
            state.set_verified(f.name, bad, None)
            raise CorruptArchiveError(f"{err}; the download was moved to {bad}, rerun to fetch it again") from err
    else:
        _place_file(path, dest, entry, replace=ours is not None)
    state.set_installed(f.name, entry)


def _place_file(src: Path, dest: Path, entry: LockEntry, replace: bool) -> None:
    """Hard-link (or copy) a verified plain file to its place; a different file already there that we did not put
    is left alone and reported."""
    if dest.exists() and not replace:
        if os.path.samefile(src, dest) or sha256_file(dest) == entry:
            return
        raise DownloadError(
            f"{dest} already exists and differs from the verified download {src}; it was not placed "
            "by this tool: move it away or delete it, then rerun"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _manual(source: Source, root: Path) -> list[Path]:
    paths = source.provided_paths(root)
    if missing := [str(p) for p in paths if not p.exists()]:
        raise ManualDownloadRequired(
            f"{source.name} must be fetched by hand.\n{_instructions(source, root)}\nMissing: {', '.join(missing)}"
        )
    return paths
