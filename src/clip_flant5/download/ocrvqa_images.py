"""The OCR-VQA images, downloaded from the URLs of the dataset's own `dataset.json` (spec data.md "Sources").

OCR-VQA has no image archive: its `loadDataset.py` reads `dataset.json` (a JSON object: image id -> record with an
`imageURL`) and saves each image as `images/<id><extension of the URL>` (.jpg, .gif, .png); the jpg fix
(clip_flant5.ocrvqa) later writes the `.jpg` copies of the .gif/.png files that mix665k refers to.

Many of those URLs are dead by now. A dead URL is definitive (404, 410, 403 or another 4xx; an HTML page or an empty
body instead of an image): it is not retried, only reported, and never fatal, because the training-data check drops
the records whose image is missing and reports them. A transient failure (5xx/408/429, a refused or reset
connection, a read timeout, fewer bytes than Content-Length) is retried with exponential backoff; what still fails
after the retries is reported and raises ImageDownloadsFailed, unless allowed.

Each image is written to a temporary name and renamed, so a file present is complete: a rerun keeps it and fetches
only the missing ones, and does not ask again for the dead URLs of the previous report (unless `recheck_dead`).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import posixpath
import re
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import urllib3
from tqdm import tqdm
from urllib3.exceptions import MaxRetryError

from ..atomic import write_json
from .errors import DatasetFileError, ImageDownloadsFailed
from .retry import RETRIED_STATUS, Backoff, BrokenBody, Connections, attempts_made, describe, failures, retry_policy

log = logging.getLogger(__name__)

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # ids become file names: nothing that could leave the folder
EXT_RE = re.compile(r"^\.[A-Za-z0-9]{1,5}$")
CHUNK = 64 << 10
NAMED = 5  # ids named in a log line or an error message


@dataclass(frozen=True)
class _Job:
    id: str
    url: str
    path: Path


@dataclass(frozen=True)
class _Outcome:
    job: _Job
    result: str  # downloaded | dead | failed
    retries: int
    status: int | None = None  # dead: the HTTP status, if there was one
    reason: str = ""  # dead: why; failed: the last error


class _Dead(Exception):
    def __init__(self, status: int | None, reason: str, retries: int):
        super().__init__(reason)
        self.status, self.reason, self.retries = status, reason, retries


class _Transient(BrokenBody):
    """A failure while the body streamed (or a retried status urllib3 gave back), in retry state `retry`."""

    def __init__(self, message: str, retry: Backoff):
        super().__init__(message)
        self.retry = retry


class _GaveUp(Exception):
    def __init__(self, reason: str, retries: int):
        super().__init__(reason)
        self.reason, self.retries = reason, retries


def download_ocrvqa_images(
    dataset_json: str | os.PathLike,
    images_dir: str | os.PathLike,
    *,
    connections: int = 16,
    retries: int = 4,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    read_timeout: float = 30.0,
    allow_failures: bool = False,
    report_path: str | os.PathLike | None = None,
    recheck_dead: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    progress: bool = True,
) -> dict:
    """Download every image of `dataset_json` into `images_dir` as `<id><extension of the URL path>`, over
    `connections` parallel connections, keeping the files already there. Transient failures are retried `retries`
    times, waiting `backoff * 2**k` seconds (at most `max_backoff`, or longer up to it if the server says
    Retry-After); `read_timeout` is the most seconds without a byte. Returns the report (also written atomically to
    `report_path`): `counts` (total = downloaded + already_present + dead + failed + bad_records), and the lists
    `dead` [{id, url, status, reason}], `failed` [{id, url, error}] and `bad_records` [{id, url, reason}].

    Raises DatasetFileError (dataset.json missing or not a JSON object) and, after writing the report,
    ImageDownloadsFailed if some images still failed after the retries (a rerun resumes), unless `allow_failures`.
    Dead URLs and bad records (no usable `imageURL`, or an id that is no plain file name) never raise."""
    dataset_json, images_dir = Path(dataset_json), Path(images_dir)
    records, bad = _read_records(dataset_json, images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    known_dead = {} if recheck_dead or report_path is None else _previous_dead(Path(report_path))
    present, dead, todo = 0, [], []
    for job in records:
        if _complete(job.path):
            present += 1
        elif (entry := known_dead.get(job.id)) is not None and entry.get("url") == job.url:
            dead.append(entry)
        else:
            todo.append(job)
    carried = len(dead)
    pools = Connections(maxsize=max(1, connections))  # kept-alive connections, one per thread and host
    fetch = _Fetcher(retry_policy(retries, backoff, max_backoff, sleeper=sleep, log_level=logging.DEBUG), read_timeout,
                     pools)  # fmt: skip
    try:
        outcomes = _run_parallel(todo, fetch, max(1, connections), progress)
    finally:
        pools.close()
    failed = []
    for o in outcomes:
        if o.result == "dead":
            dead.append({"id": o.job.id, "url": o.job.url, "status": o.status, "reason": o.reason})
        elif o.result == "failed":
            failed.append({"id": o.job.id, "url": o.job.url, "error": o.reason})
    downloaded = sum(o.result == "downloaded" for o in outcomes)
    report = {
        "dataset": str(dataset_json),
        "images_dir": str(images_dir),
        "counts": {
            "total": len(records) + len(bad),
            "downloaded": downloaded,
            "already_present": present,
            "dead": len(dead),
            "failed": len(failed),
            "bad_records": len(bad),
        },
        "retries": sum(o.retries for o in outcomes),  # retried requests, all images together
        "dead_from_previous_report": carried,  # not asked again (recheck_dead=True does)
        "dead": sorted(dead, key=lambda e: e["id"]),
        "failed": sorted(failed, key=lambda e: e["id"]),
        "bad_records": bad,
    }
    if report_path is not None:
        write_json(report_path, report)
    c = report["counts"]
    log.info(
        "OCR-VQA images in %s: %d records, %d downloaded, %d already present, %d dead (%d known from the last report), "
        "%d failed, %d bad records; %d retries",
        images_dir, c["total"], downloaded, present, len(dead), carried, len(failed), len(bad), report["retries"],
    )  # fmt: skip
    if failed and not allow_failures:
        where = f"; every one is listed in {report_path}" if report_path is not None else ""
        first = failed[0]
        raise ImageDownloadsFailed(
            f"{len(failed)} of {c['total']} OCR-VQA images could not be downloaded after {retries} retries (transient "
            f"errors, e.g. {first['id']} from {first['url']}: {first['error']}){where}. Rerun to resume: the "
            f"{present + downloaded} images in {images_dir} are kept and only the missing ones are fetched; or allow "
            "failures (allow_failures) to go on with the images present (the training-data check drops the records "
            "without an image and reports them).",
            report,
        )
    return report


def _read_records(path: Path, images_dir: Path) -> tuple[list[_Job], list[dict]]:
    """The images to have, in file order, and the records that name none ({id, url, reason}), as loadDataset.py
    reads the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetFileError(
            f"{path} does not exist: fetch the OCR-VQA dataset.json first (`clip-flant5 fetch ocr_vqa`)"
        ) from None
    except (OSError, ValueError) as err:
        raise DatasetFileError(
            f"cannot read {path} as JSON ({err}); delete it and fetch it again (`clip-flant5 fetch ocr_vqa`)"
        ) from err
    if not isinstance(data, dict):
        raise DatasetFileError(
            f"{path}: expected a JSON object of image id -> record with an 'imageURL' (OCR-VQA's dataset.json), "
            f"got a JSON {type(data).__name__}; is it the right file?"
        )
    jobs, bad = [], []
    for image_id, record in data.items():
        url = record.get("imageURL") if isinstance(record, dict) else None
        reason, ext = None, ""
        if not isinstance(record, dict):
            reason = f"the record is a JSON {type(record).__name__}, not an object"
        elif not ID_RE.match(image_id):
            reason = "the id is not a plain file name"
        elif not isinstance(url, str) or not url.strip():
            reason = "no 'imageURL' string"
        else:
            parts = urllib.parse.urlsplit(url.strip())
            ext = posixpath.splitext(parts.path)[1]
            if parts.scheme not in ("http", "https") or not parts.netloc:
                reason = "'imageURL' is not an http(s) URL"
            elif not EXT_RE.match(ext):
                reason = "the path of 'imageURL' has no file extension to name the image by"
        if reason:
            bad.append({"id": image_id, "url": url if isinstance(url, str) else None, "reason": reason})
        else:
            jobs.append(_Job(image_id, url.strip(), images_dir / f"{image_id}{ext}"))
    if bad:
        names = ", ".join(f"{b['id']!r} ({b['reason']})" for b in bad[:NAMED])
        log.warning("%s: %d records name no image to download and are skipped: %s%s", path, len(bad), names,
                    ", ..." if len(bad) > NAMED else "")  # fmt: skip
    return jobs, bad


def _complete(path: Path) -> bool:
    """Written by a rename, so a file present is whole; an empty one (from another tool) is fetched again."""
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _previous_dead(report_path: Path) -> dict[str, dict]:
    """The dead URLs of the last report, by id (not asked again)."""
    if not report_path.exists():
        return {}
    try:
        entries = json.loads(report_path.read_text(encoding="utf-8"))["dead"]
        return {e["id"]: e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)}
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning(
            "ignoring the unreadable previous report %s (%r): every missing image is asked for", report_path, err
        )
        return {}


def _run_parallel(jobs: list[_Job], fetch: Callable[[_Job], _Outcome], connections: int, progress: bool):
    """Run `fetch` over `jobs` on `connections` threads, with a bounded number of jobs queued (not one future for
    each of 200,000 images)."""
    outcomes, queue = [], iter(jobs)
    bar = tqdm(total=len(jobs), unit="img", desc="OCR-VQA images", disable=not progress)
    with bar, ThreadPoolExecutor(max_workers=connections, thread_name_prefix="ocrvqa") as pool:
        pending = set()
        try:
            while True:
                while len(pending) < 4 * connections and (job := next(queue, None)) is not None:
                    pending.add(pool.submit(fetch, job))
                if not pending:
                    return outcomes
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    outcomes.append(future.result())  # a local error (disk full, permissions) stops the run
                    bar.update()
        finally:
            for future in pending:
                future.cancel()


@dataclass(frozen=True)
class _Fetcher:
    policy: Backoff  # urllib3's Retry: what fails before a response is retried inside the request
    read_timeout: float
    connections: Connections

    def __call__(self, job: _Job) -> _Outcome:
        retry = self.policy.new(label=f"{job.id} ({job.url})")
        while True:
            try:
                retry = _attempt(job, self.connections, retry, self.read_timeout)
                return _Outcome(job, "downloaded", failures(retry))
            except _Dead as err:
                return _Outcome(job, "dead", err.retries, err.status, err.reason)
            except _GaveUp as err:
                return _Outcome(job, "failed", err.retries, reason=err.reason)
            except _Transient as err:  # the body broke off: counted on the same Retry, then asked again
                try:
                    retry = err.retry.increment("GET", job.url, error=err)
                except MaxRetryError:
                    return _Outcome(job, "failed", failures(err.retry), reason=str(err))
                retry.sleep()


def _attempt(job: _Job, connections: Connections, retry: Backoff, timeout: float) -> Backoff:
    """One request: the image lands at `job.path` whole (returns the retry state), or raises _Dead, _GaveUp or
    _Transient."""
    try:
        resp = connections.get(job.url, retry, timeout=timeout)
    except MaxRetryError as err:  # refused, reset, timeouts, DNS: urllib3 retried them as often as allowed
        raise _GaveUp(describe(err.reason), attempts_made(retry) - 1) from None
    except ValueError as err:  # an invalid URL (urllib3's LocationParseError): no request will ever work
        raise _Dead(None, f"invalid URL: {err}", failures(retry)) from None
    with resp:
        retries = failures(resp.retries)
        if resp.status in RETRIED_STATUS:  # urllib3 retried it as often as allowed
            raise _Transient(f"HTTP {resp.status} {resp.reason}", resp.retries)
        if resp.status >= 300:
            raise _Dead(resp.status, f"HTTP {resp.status} {resp.reason}", retries)
        if resp.headers.get("Content-Type", "").split(";")[0].strip().lower() == "text/html":
            raise _Dead(resp.status, "an HTML page instead of an image", retries)
        length = resp.headers.get("Content-Length", "")
        expected = int(length) if length.isdigit() else None
        tmp = job.path.with_name(f".{job.path.name}.{os.getpid()}.part")  # one thread per image in a process
        try:
            size = 0
            with open(tmp, "wb") as fh:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as err:
                        raise _Transient(f"{type(err).__name__} after {size} bytes: {err}", resp.retries) from None
                    if not chunk:
                        break
                    if size == 0 and chunk.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
                        raise _Dead(resp.status, "an HTML page instead of an image", retries)
                    fh.write(chunk)
                    size += len(chunk)
            if expected is not None and size < expected:
                raise _Transient(f"connection closed after {size} of {expected} bytes", resp.retries)
            if size == 0:
                raise _Dead(resp.status, "an empty response instead of an image", retries)
            os.replace(tmp, job.path)
        finally:
            tmp.unlink(missing_ok=True)
        return resp.retries
