"""Fetch the sources of `config/sources.yaml`: resumable, verified downloads and safe unpacking.

Nothing unverified is ever used. A download goes to `<file>.part` (resumed with an HTTP Range request after an
interruption) and is renamed to `<file>` only once its size and sha256 check out: against the lock file when it
has an entry, otherwise the hash is recorded there. A file that fails the check is moved to `<file>.bad`. An
archive is unpacked into `<dest>.unpack-tmp` beside its destination, its members are counted and sized and the
`provides` paths checked, and only then is it renamed into place.

Per source, `R/downloads/<source>/.state.json` remembers the sha256 of each verified file (with its size and
mtime, so a 20 GB archive is not rehashed on every run) and whether it was unpacked; `complete.json` is written
last, when the whole source is in place, and makes a later `fetch_source` return without any network or disk work.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import lzma
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from .sources import (
    DEFAULT_DATA_ROOT,
    DEFAULT_LOCK,
    DEFAULT_SOURCES,
    GDRIVE_URL,
    FileSpec,
    LockEntry,
    Source,
    SourceError,
    folder_lock,
    get_source,
    join_rel,
    load_sources,
    lock_key,
    read_lock,
    update_lock,
    write_json_atomic,
)

try:  # imported here so that tests can replace it
    from huggingface_hub import hf_hub_download
except ImportError:  # pragma: no cover - a dependency of the package
    hf_hub_download = None

log = logging.getLogger(__name__)

USER_AGENT = "clip-flant5-downloader/1 (+https://github.com/linzhiqiu/CLIP-FlanT5)"
STATE_NAME = ".state.json"
COMPLETE_NAME = "complete.json"
UNPACK_STAMP = ".clip_flant5-unpack.json"  # inside <dest>.unpack-tmp: which archive (sha256) it is extracting
TAR_MODES = {"tar": "r:", "tar.gz": "r:gz", "tgz": "r:gz", "tar.bz2": "r:bz2", "tar.xz": "r:xz"}
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class DownloadError(SourceError):
    pass


class HTTPStatusError(DownloadError):
    def __init__(self, url: str, status: int, reason: str = "", hint: str = ""):
        super().__init__(f"HTTP {status} {reason} for {url} (a dead link, or it needs a login). {hint}".rstrip())
        self.url, self.status = url, status


class ChecksumError(DownloadError):
    def __init__(self, label: str, expected: str, actual: str, bad: Path | None, hint: str = ""):
        where = f"; the rejected file was moved to {bad}" if bad else ""
        super().__init__(f"sha256 mismatch for {label}: expected {expected}, got {actual}{where}. {hint}".rstrip())
        self.expected, self.actual, self.bad = expected, actual, bad


class SizeMismatchError(DownloadError):
    pass


class DownloadTimeout(DownloadError):
    pass


class NotAFileError(DownloadError):
    """The server answered an HTML page (Google Drive quota / virus-scan page, a login page) instead of the file."""


class ManualDownloadRequired(DownloadError):
    pass


class UnpackError(DownloadError):
    pass


class UnsafeArchiveError(UnpackError):
    pass


class CorruptArchiveError(UnpackError):
    pass


@dataclass(frozen=True)
class FetchOptions:
    read_timeout: float = 60.0  # seconds without any byte before a connection counts as dead (then: retry)
    total_timeout: float | None = 24 * 3600.0  # per file; the .part is kept, so a rerun resumes
    retries: int = 8  # consecutive failed attempts; an attempt that received bytes resets the count
    backoff: float = 2.0  # first wait in seconds, doubled after every failed attempt
    max_backoff: float = 120.0
    chunk_size: int = 1 << 20
    progress: bool = True
    hf_cache_dir: str | os.PathLike | None = None  # None: R/downloads/.hf-cache (same disk: hard links, no quota)


# ================================================================ HTTP(S)


class _Partial:
    """The `.part` file being written, its running sha256, and the validators (ETag, Last-Modified, total size)
    of the response it came from, kept in `<part>.json` so that a resumed request can ask `If-Range`: a file
    changed upstream between two attempts is then restarted from zero instead of being spliced."""

    def __init__(self, part: Path):
        self.path, self.meta_path = part, part.with_name(part.name + ".json")
        self.hasher, self.size = hashlib.sha256(), 0
        if part.exists():
            with part.open("rb") as fh:  # rehash what an earlier run left, once, so it can be extended
                for block in iter(lambda: fh.read(1 << 20), b""):
                    self.hasher.update(block)
                    self.size += len(block)
        try:
            self.meta = json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            self.meta = {}

    def reset(self) -> None:
        self.path.write_bytes(b"")
        self.hasher, self.size, self.meta = hashlib.sha256(), 0, {}
        self.meta_path.unlink(missing_ok=True)

    def remember(self, headers, total: int | None) -> None:
        etag = headers.get("ETag")
        self.meta = {
            "etag": etag if etag and not etag.startswith("W/") else None,
            "last_modified": headers.get("Last-Modified"),
            "total": total,
        }
        self.meta_path.write_text(json.dumps(self.meta))

    def if_range(self) -> str | None:
        return self.meta.get("etag") or self.meta.get("last_modified")

    def append(self, fh, chunk: bytes) -> None:
        fh.write(chunk)
        self.hasher.update(chunk)
        self.size += len(chunk)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)


class _Transient(Exception):
    """A failure worth retrying (with a Range request for what is missing)."""


def download_url(
    url: str,
    dest: str | os.PathLike,
    *,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    options: FetchOptions = FetchOptions(),
    label: str | None = None,
    manual_hint: str = "",
) -> LockEntry:
    """Download `url` to `dest` through `dest.part`, resuming a partial file, retrying transient failures.

    `dest` appears only if the size (Content-Length, `expected_size`) and the sha256 (`expected_sha256`) match;
    returns its sha256 and size. Raises HTTPStatusError (4xx), DownloadError (gave up after the retries: 5xx,
    connection errors, read timeouts), DownloadTimeout (`total_timeout`; the .part is kept for a rerun),
    NotAFileError (an HTML page instead of the file), SizeMismatchError or ChecksumError (the bytes go to
    `dest.bad`)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    job = _Download(url, _Partial(dest.with_name(dest.name + ".part")), expected_size, options, manual_hint)
    job.run(label or dest.name)
    return _finish(job.part, dest, label or dest.name, expected_sha256, expected_size, url)


@dataclass
class _Download:
    url: str
    part: _Partial
    expected_size: int | None
    options: FetchOptions
    manual_hint: str

    def run(self, label: str) -> None:
        part, opts = self.part, self.options
        if self.expected_size is not None and part.size > self.expected_size:
            part.reset()  # longer than the file can be: not a prefix of it
        self.deadline = time.monotonic() + opts.total_timeout if opts.total_timeout else None
        bar_args = dict(unit="B", unit_scale=True, unit_divisor=1024, desc=label, leave=False)
        failures = 0
        with tqdm(total=self.expected_size, initial=part.size, disable=not opts.progress, **bar_args) as self.bar:
            while self.expected_size is None or part.size < self.expected_size:  # (a complete part needs no request)
                before = part.size
                try:
                    total = self._attempt()
                    if total is not None and part.size < total:
                        raise _Transient(f"connection closed after {part.size} of {total} bytes")
                    return
                except _Transient as err:
                    failures = 1 if part.size > before else failures + 1  # progress earns a fresh retry budget
                    if failures > opts.retries:
                        raise DownloadError(
                            f"giving up on {self.url} after {failures} failed attempts; last error: {err}. "
                            f"Rerun to resume from byte {part.size}. {self.manual_hint}".rstrip()
                        ) from err
                    wait = min(opts.backoff * 2 ** (failures - 1), opts.max_backoff)
                    if self.deadline is not None and time.monotonic() + wait > self.deadline:
                        raise self._timeout() from err
                    log.warning("%s: %s; retry %d of %d in %.1f s", label, err, failures, opts.retries, wait)
                    time.sleep(wait)

    def _attempt(self) -> int | None:
        """One request. Appends to the part; returns the full size if the server told it."""
        part = self.part
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if part.size:
            headers["Range"] = f"bytes={part.size}-"
            if validator := part.if_range():
                headers["If-Range"] = validator  # changed upstream since? then a 200 with the whole new file
        request = urllib.request.Request(self.url, headers=headers)
        try:
            resp = urllib.request.urlopen(request, timeout=self.options.read_timeout)
        except urllib.error.HTTPError as err:
            with err:
                if err.code == 416 and part.size:
                    return _range_not_satisfiable(part, err.headers.get("Content-Range"))
                if err.code in RETRY_STATUS or err.code >= 500:
                    raise _Transient(f"HTTP {err.code} {err.reason}") from err
                raise HTTPStatusError(self.url, err.code, str(err.reason), self.manual_hint) from err
        except (OSError, http.client.HTTPException) as err:  # URLError, refused, reset, timeout, bad status line
            raise _Transient(f"{type(err).__name__}: {getattr(err, 'reason', err)}") from err
        with resp:
            total = self._check_response(resp)
            part.remember(resp.headers, total)
            self.bar.total, self.bar.n = total, part.size
            self.bar.refresh()
            with part.path.open("ab") as fh:
                while True:
                    if self.deadline is not None and time.monotonic() > self.deadline:
                        raise self._timeout()
                    try:
                        chunk = resp.read1(self.options.chunk_size)  # what has arrived: frequent deadline checks
                    except (OSError, http.client.HTTPException) as err:
                        raise _Transient(f"{type(err).__name__} while reading: {err}") from err
                    if not chunk:
                        return total
                    if part.size == 0 and chunk.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
                        _refuse_html("text/html", self.url, self.manual_hint)  # whatever the Content-Type said
                    part.append(fh, chunk)
                    self.bar.update(len(chunk))

    def _check_response(self, resp) -> int | None:
        """Decide, from the status and headers, where the body goes; returns the full size if known."""
        part = self.part
        _refuse_html(resp.headers.get("Content-Type", ""), self.url, self.manual_hint)
        if resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != part.size:  # not the range asked for: start over rather than splice
                part.reset()
                raise _Transient(f"server sent bytes from {start} instead of {part.size}; restarting")
        elif resp.status == 200:
            if part.size:
                log.info("%s ignored the Range request (or the file changed): restarting from zero", self.url)
                part.reset()  # never append a full body to a prefix
            length = resp.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
        else:
            raise DownloadError(f"unexpected HTTP status {resp.status} from {self.url}")
        if total is not None and self.expected_size is not None and total != self.expected_size:
            raise SizeMismatchError(
                f"{self.url} reports {total} bytes but {self.expected_size} are expected (lock or manifest): the file "
                "changed upstream or the link is wrong; nothing more was downloaded"
            )
        if total is not None and part.meta.get("total") not in (None, total):
            part.reset()  # the file changed size upstream since the part was started
            raise _Transient("the remote file changed size since the download started; restarting")
        return total

    def _timeout(self) -> DownloadTimeout:
        return DownloadTimeout(
            f"total timeout reached while downloading {self.url}; {self.part.size} bytes are kept in "
            f"{self.part.path}, rerun to resume"
        )


def _range_not_satisfiable(part: _Partial, content_range: str | None) -> int | None:
    """416 on resume: the part already holds everything (done) or more than the file (start over)."""
    total = None
    if content_range and content_range.startswith("bytes */") and content_range[8:].isdigit():
        total = int(content_range[8:])
    if total is not None and part.size == total:
        return total
    part.reset()
    raise _Transient(f"HTTP 416 for a part of {part.size} bytes (remote size {total}); restarting from zero")


def _content_range(value: str | None) -> tuple[int, int | None]:
    try:
        unit, spec = value.split(" ", 1)
        span, total = spec.split("/", 1)
        if unit == "bytes":
            return int(span.split("-", 1)[0]), None if total == "*" else int(total)
    except (AttributeError, ValueError):
        pass
    raise _Transient(f"invalid Content-Range {value!r}")


def _refuse_html(content_type: str, url: str, manual_hint: str) -> None:
    if content_type.split(";")[0].strip().lower() == "text/html":
        raise NotAFileError(
            f"{url} answered an HTML page instead of the file (a quota, virus-scan or login page, "
            f"or a dead link). {manual_hint}".rstrip()
        )


def _finish(part: _Partial, dest: Path, label: str, sha256: str | None, size: int | None, src: str) -> LockEntry:
    actual = LockEntry(part.hasher.hexdigest(), part.size)
    if size is not None and actual.size != size:
        bad = _move_aside(part.path, dest)
        part.discard()
        raise SizeMismatchError(
            f"size mismatch for {label} from {src}: expected {size} bytes, got {actual.size}; "
            f"the rejected file was moved to {bad}"
        )
    if sha256 is not None and actual.sha256 != sha256:
        bad = _move_aside(part.path, dest)
        part.discard()
        raise ChecksumError(label, sha256, actual.sha256, bad, _CHECKSUM_HINT)
    os.replace(part.path, dest)
    part.discard()
    return actual


_CHECKSUM_HINT = (
    "Rerun to download it again; if the file changed upstream on purpose, refresh the lock entry (refresh_lock=True)."
)


def _move_aside(path: Path, dest: Path) -> Path:
    bad = dest.with_name(dest.name + ".bad")
    os.replace(path, bad)
    return bad


def sha256_file(path: Path) -> LockEntry:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return LockEntry(h.hexdigest(), size)


# ================================================================ Hugging Face


def download_hf(
    f: FileSpec, dest: Path, *, expected_sha256: str | None = None, cache_dir=None, label: str | None = None
) -> LockEntry:
    """`hf_hub_download` (it caches and resumes), then verify and hard-link (or copy) the cached file to `dest`."""
    label = label or dest.name
    try:
        cached = Path(
            hf_hub_download(
                repo_id=f.repo, filename=f.filename, repo_type=f.repo_type, revision=f.revision, cache_dir=cache_dir
            )
        )
    except Exception as err:  # every hub failure (missing, gated, offline, HTTP) becomes one clear error
        raise DownloadError(
            f"cannot fetch {f.filename} from the Hugging Face {f.repo_type} {f.repo} "
            f"({f.remote}): {type(err).__name__}: {err}. For a gated repository, accept its terms on "
            f"the website and log in (`hf auth login`)."
        ) from err
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)
    try:
        os.link(cached.resolve(), part)
        actual = sha256_file(part)
    except OSError:  # another file system: copy, hashing on the way
        actual = _copy_hashing(cached, part)
    if expected_sha256 is not None and actual.sha256 != expected_sha256:
        bad = _move_aside(part, dest)
        raise ChecksumError(
            label,
            expected_sha256,
            actual.sha256,
            bad,
            f"The Hugging Face cache holds the same bytes at {cached}: delete it to download again, "
            "or refresh the lock entry (refresh_lock=True) if the file changed upstream.",
        )
    os.replace(part, dest)
    return actual


def _copy_hashing(src: Path, dst: Path) -> LockEntry:
    h, size = hashlib.sha256(), 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        for block in iter(lambda: fin.read(1 << 20), b""):
            fout.write(block)
            h.update(block)
            size += len(block)
    return LockEntry(h.hexdigest(), size)


# ================================================================ unpacking


def _member_path(archive: Path, name: str) -> str | None:
    """The normalised relative path of an archive member; None for entries to skip. Refuses absolute paths and
    '..' (path traversal)."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or (len(raw) > 2 and raw[0].isalpha() and raw[1:3] == ":/"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to unpack")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} points outside the archive ('..'); refusing to unpack")
    if not parts or parts[0] == "__MACOSX":  # macOS resource forks: not content
        return None
    return "/".join(parts)


def _write_member(target: Path, size: int, opener: Callable) -> None:
    """Extract one file unless a resumed run already did (right size). Written under a temp name and renamed, so a
    file with its final name is always complete."""
    if target.is_file() and target.stat().st_size == size:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    with opener() as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    os.replace(tmp, target)


def _extract(archive: Path, fmt: str, into: Path | None) -> tuple[dict[str, int], set[str]]:
    """Extract into `into` (None: only list). Returns {file path: size} and the set of directory paths."""
    files, dirs = {}, set()
    try:
        if fmt == "zip":
            with zipfile.ZipFile(archive) as zf:
                infos = [(i, _member_path(archive, i.filename)) for i in zf.infolist()]  # check all before writing
                for info, rel in infos:
                    if rel is None:
                        continue
                    if info.is_dir():
                        dirs.add(rel)
                        continue
                    files[rel] = info.file_size
                    if into is not None:  # zf.open checks each member's CRC as it is read
                        _write_member(into / rel, info.file_size, lambda i=info: zf.open(i))
        else:
            with tarfile.open(archive, TAR_MODES[fmt]) as tf:
                for m in tf:
                    rel = _member_path(archive, m.name)
                    if rel is None:
                        continue
                    if m.isdir():
                        dirs.add(rel)
                        continue
                    if not m.isfile():
                        raise UnsafeArchiveError(
                            f"{archive}: member {m.name!r} is a link or a special file; refusing to unpack"
                        )
                    files[rel] = m.size
                    if into is not None:
                        _write_member(into / rel, m.size, lambda m=m: tf.extractfile(m))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise  # a real I/O error (disk full, permissions): not the archive's fault
        raise CorruptArchiveError(f"{archive} is not a valid {fmt} archive or is corrupt: {err}") from err
    for rel in list(files) + list(dirs):  # parent folders are implied by their members
        dirs.update(str(p) for p in PurePosixPath(rel).parents if str(p) != ".")
    return files, dirs


def _tree(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath, n)
            out[p.relative_to(root).as_posix()] = p.stat().st_size
    return out


def _top_level(files: dict[str, int], dirs: set[str]) -> list[str]:
    tops = {p.split("/", 1)[0] for p in files} | {d.split("/", 1)[0] for d in dirs}
    return sorted(t + "/" if t in dirs else t for t in tops)


def _strip(archive: Path, files: dict, dirs: set, strip: str | None) -> str | None:
    """The top-level folder whose content becomes the destination (None: the archive's root)."""
    tops = _top_level(files, dirs)
    if strip is None:
        return None
    if strip == "auto":
        return tops[0][:-1] if len(tops) == 1 and tops[0].endswith("/") else None
    if tops != [strip + "/"]:
        raise UnpackError(
            f"{archive} was expected to hold a single top-level folder {strip + '/'!r} but holds: "
            f"{_preview(tops)}; fix 'strip_top_level' in the manifest"
        )
    return strip


def _preview(names: list[str], limit: int = 20) -> str:
    more = f" ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def unpack_archive(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    fmt: str,
    strip_top_level: str | None = None,
    provides: tuple[str, ...] = (),
    stamp: str | None = None,
    replace_existing: bool = False,
) -> Path:
    """Unpack `archive` so that its content (without the stripped top-level folder) becomes the folder `dest`.

    Extracts into `<dest>.unpack-tmp` (a rerun after a kill reuses the members already extracted with the right
    size if the temp folder belongs to the same archive, `stamp` = its sha256, and otherwise starts it afresh),
    checks that the extracted files are exactly the archive's members with their sizes and that `provides`
    (relative to `dest`) exist, then renames it into place. An existing `dest` is replaced only with
    `replace_existing` (it was unpacked by us); otherwise it is kept if it already matches the archive, and
    refused if not. Raises UnsafeArchiveError (absolute or '..' members, links) or UnpackError."""
    archive, dest = Path(archive), Path(dest)
    tmp, old = dest.with_name(dest.name + ".unpack-tmp"), dest.with_name(dest.name + ".unpack-old")
    if old.exists():
        shutil.rmtree(old)  # a previous run died while swapping folders
    stamp_data = {"archive": archive.name, "sha256": stamp or sha256_file(archive).sha256}
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()  # an empty folder holds nothing to protect
    if dest.exists() and not replace_existing:
        _adopt_existing(archive, dest, fmt, strip_top_level, provides)
        shutil.rmtree(tmp, ignore_errors=True)
        return dest
    if tmp.exists() and _read_json(tmp / UNPACK_STAMP) != stamp_data:
        shutil.rmtree(tmp)  # left by another archive (or version): never mix
    tmp.mkdir(parents=True, exist_ok=True)
    write_json_atomic(tmp / UNPACK_STAMP, stamp_data)
    for leftover in tmp.rglob("*.partial"):
        leftover.unlink()
    try:
        files, dirs = _extract(archive, fmt, tmp)
    except UnsafeArchiveError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    found = _tree(tmp)
    found.pop(UNPACK_STAMP, None)
    _verify_members(archive, files, found, tmp)
    top = _strip(archive, files, dirs, strip_top_level)
    root = tmp / top if top else tmp
    for d in dirs:  # empty folders of the archive
        (tmp / d).mkdir(parents=True, exist_ok=True)
    if missing := [p for p in provides if not join_rel(root, p).exists()]:
        raise UnpackError(
            f"after unpacking {archive}, missing {missing} (expected under {dest}). The archive holds "
            f"{len(files)} files; its top level: {_preview(_top_level(files, dirs))}. Fix 'dest', "
            f"'strip_top_level' or 'provides' in the manifest; {tmp} is kept and reused."
        )
    (tmp / UNPACK_STAMP).unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(root, dest)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _verify_members(archive: Path, files: dict[str, int], found: dict[str, int], tmp: Path) -> None:
    missing = sorted(set(files) - set(found))
    extra = sorted(set(found) - set(files))
    wrong = sorted(p for p in set(files) & set(found) if files[p] != found[p])
    if missing or extra or wrong:
        shutil.rmtree(tmp, ignore_errors=True)  # so that a rerun starts cleanly
        raise UnpackError(
            f"unpacking {archive} gave {len(found)} files for its {len(files)} members "
            f"(missing: {_preview(missing, 5) or 'none'}; not in the archive: "
            f"{_preview(extra, 5) or 'none'}; wrong size: {_preview(wrong, 5) or 'none'}); "
            "the temp folder was removed, rerun to unpack again"
        )


def _adopt_existing(archive: Path, dest: Path, fmt: str, strip: str | None, provides) -> None:
    """`dest` exists but we did not unpack it (a run killed right after the final rename, or data the user already
    had): keep it if it holds every member with its size, refuse otherwise (never delete someone's files)."""
    files, dirs = _extract(archive, fmt, None)
    top = _strip(archive, files, dirs, strip)
    prefix = top + "/" if top else ""
    bad = []
    for rel, size in files.items():
        p = dest / rel[len(prefix) :]
        if not p.is_file() or p.stat().st_size != size:
            bad.append(rel)
    bad += [p for p in provides if not join_rel(dest, p).exists()]
    if bad:
        raise UnpackError(
            f"{dest} already exists but does not match {archive} ({len(bad)} of {len(files)} members "
            f"missing or of another size, e.g. {_preview(sorted(bad), 3)}); it was not unpacked by this "
            "tool: move it away or delete it, then rerun"
        )


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ================================================================ sources


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
        write_json_atomic(self.path, {"files": self.files})

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
    write_json_atomic(
        marker,
        {
            "source": source.name,
            "provides": list(source.provides),
            "files": {n: {"sha256": e.sha256, "size": e.size} for n, e in entries.items()},
        },
    )
    return source.provided_paths(root)


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
    hint = (
        f"Fetch it by hand from {f.remote} and put it at {path}, then rerun: it is verified (or recorded in the "
        "lock) like a download."
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
        url = GDRIVE_URL.format(id=f.id) if f.kind == "gdrive" else f.url
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


def _instructions(source: Source, root: Path) -> str | None:
    if source.instructions is None:
        return None
    return source.instructions.replace("{group_root}", str(source.root(root))).replace("{data_root}", str(root))


# ================================================================ status


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
