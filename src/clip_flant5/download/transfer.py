"""Resumable, verified HTTP(S) downloads: `download_url` and the `.part` file it resumes with a Range request.

The retries and their waits are urllib3's Retry (`retry.py`); what this module adds is what Retry cannot do:
resuming a body that broke off where it ended (Range, If-Range), restarting when the server ignores the range or
the file changed, and a fresh retry budget after every attempt that made progress. An HTML page where a file was
expected (a Google Drive quota or virus-scan page, a login page) is refused."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import urllib3
from tqdm import tqdm
from urllib3.exceptions import MaxRetryError

from ..sources import LockEntry
from .errors import (
    _CHECKSUM_HINT,
    ChecksumError,
    DownloadError,
    DownloadTimeout,
    HTTPStatusError,
    NotAFileError,
    SizeMismatchError,
)
from .files import _move_aside
from .retry import RETRIED_STATUS, Backoff, BrokenBody, Connections, attempts_made, describe, failures
from .retry import retry_policy as _retry_policy

log = logging.getLogger(__name__)


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

    def retry_policy(self, label: str, sleeper=time.sleep, log_level: int = logging.WARNING) -> Backoff:
        return _retry_policy(self.retries, self.backoff, self.max_backoff, sleeper=sleeper, label=label,
                             log_level=log_level)  # fmt: skip


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


class _Transient(BrokenBody):
    """A failure worth retrying (with a Range request for what is missing), and the retry state it happened in."""

    def __init__(self, message: str, retry: Backoff | None):
        super().__init__(message)
        self.retry = retry


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
        self.connections = Connections()
        fresh = opts.retry_policy(label, sleeper=self._wait)
        retry = fresh
        bar_args = dict(unit="B", unit_scale=True, unit_divisor=1024, desc=label, leave=False)
        with tqdm(total=self.expected_size, initial=part.size, disable=not opts.progress, **bar_args) as self.bar:
            try:
                while self.expected_size is None or part.size < self.expected_size:  # (complete: no request)
                    before = part.size
                    try:
                        self._attempt(retry)
                        return
                    except _Transient as err:
                        # Retry counts failed attempts per request; here an attempt that received bytes earns a
                        # fresh budget, so a large file over a flaky link is not given up on while it advances.
                        retry = fresh if part.size > before else err.retry
                        try:
                            retry = retry.increment("GET", self.url, error=err)
                        except MaxRetryError:
                            raise self._give_up(failures(retry) + 1, str(err)) from err
                        retry.sleep()
                    except MaxRetryError as err:  # urllib3 gave up before any response
                        raise self._give_up(attempts_made(retry), describe(err.reason)) from err
            finally:
                self.connections.close()

    def _attempt(self, retry: Backoff) -> None:
        """One request (urllib3 retries what fails before the response). Appends the body to the part."""
        part = self.part
        headers = {}
        if part.size:
            headers["Range"] = f"bytes={part.size}-"
            if validator := part.if_range():
                headers["If-Range"] = validator  # changed upstream since? then a 200 with the whole new file
        resp = self.connections.get(self.url, retry, timeout=self.options.read_timeout, headers=headers)
        with resp:
            if resp.status == 416 and part.size:
                _range_not_satisfiable(part, resp.headers.get("Content-Range"), resp.retries)
                return
            if resp.status in RETRIED_STATUS:  # urllib3 retried it as often as allowed
                raise _Transient(f"HTTP {resp.status} {resp.reason}", resp.retries)
            if resp.status >= 400:
                raise HTTPStatusError(self.url, resp.status, resp.reason or "", self.manual_hint)
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
                    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as err:
                        raise _Transient(f"{type(err).__name__} while reading: {err}", resp.retries) from err
                    if not chunk:
                        if total is not None and part.size < total:
                            raise _Transient(f"connection closed after {part.size} of {total} bytes", resp.retries)
                        return
                    if part.size == 0 and chunk.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
                        _refuse_html("text/html", self.url, self.manual_hint)  # whatever the Content-Type said
                    part.append(fh, chunk)
                    self.bar.update(len(chunk))

    def _check_response(self, resp) -> int | None:
        """Decide, from the status and headers, where the body goes; returns the full size if known."""
        part = self.part
        _refuse_html(resp.headers.get("Content-Type", ""), self.url, self.manual_hint)
        if resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"), resp.retries)
            if start != part.size:  # not the range asked for: start over rather than splice
                part.reset()
                raise _Transient(f"server sent bytes from {start} instead of {part.size}; restarting", resp.retries)
        elif resp.status == 200:
            if part.size:
                log.info("%s ignored the Range request (or the file changed): restarting from zero", self.url)
                part.reset()  # never append a full body to a prefix
            length = resp.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
        else:
            raise DownloadError(
                f"unexpected HTTP status {resp.status} {resp.reason} from {self.url}. {self.manual_hint}".rstrip()
            )
        if total is not None and self.expected_size is not None and total != self.expected_size:
            raise SizeMismatchError(
                f"{self.url} reports {total} bytes but {self.expected_size} are expected (lock or manifest): the file "
                "changed upstream or the link is wrong; nothing more was downloaded"
            )
        if total is not None and part.meta.get("total") not in (None, total):
            part.reset()  # the file changed size upstream since the part was started
            raise _Transient("the remote file changed size since the download started; restarting", resp.retries)
        return total

    def _wait(self, seconds: float) -> None:
        """Retry's sleep: a wait that would end past the total timeout ends the download instead."""
        if self.deadline is not None and time.monotonic() + seconds > self.deadline:
            raise self._timeout()
        time.sleep(seconds)

    def _give_up(self, attempts: int, last_error: str) -> DownloadError:
        return DownloadError(
            f"giving up on {self.url} after {attempts} failed attempts; last error: {last_error}. "
            f"Rerun to resume from byte {self.part.size}. {self.manual_hint}".rstrip()
        )

    def _timeout(self) -> DownloadTimeout:
        return DownloadTimeout(
            f"total timeout reached while downloading {self.url}; {self.part.size} bytes are kept in "
            f"{self.part.path}, rerun to resume"
        )


def _range_not_satisfiable(part: _Partial, content_range: str | None, retry: Backoff | None) -> None:
    """416 on resume: the part already holds everything (done) or more than the file (start over)."""
    total = None
    if content_range and content_range.startswith("bytes */") and content_range[8:].isdigit():
        total = int(content_range[8:])
    if total is not None and part.size == total:
        return
    part.reset()
    raise _Transient(f"HTTP 416 for a part of {part.size} bytes (remote size {total}); restarting from zero", retry)


def _content_range(value: str | None, retry: Backoff | None) -> tuple[int, int | None]:
    try:
        unit, spec = value.split(" ", 1)
        span, total = spec.split("/", 1)
        if unit == "bytes":
            return int(span.split("-", 1)[0]), None if total == "*" else int(total)
    except (AttributeError, ValueError):
        pass
    raise _Transient(f"invalid Content-Range {value!r}", retry)


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
