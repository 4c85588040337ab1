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
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..atomic import write_json
from .errors import DatasetFileError, ImageDownloadsFailed
from .transfer import RETRY_STATUS, USER_AGENT

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
    def __init__(self, status: int | None, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


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
    fetch = _Fetcher(retries, backoff, max_backoff, read_timeout, sleep)
    outcomes = _run_parallel(todo, fetch, max(1, connections), progress)
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
    retries: int
    backoff: float
    max_backoff: float
    read_timeout: float
    sleep: Callable[[float], None]

    def __call__(self, job: _Job) -> _Outcome:
        failures = 0
        while True:
            try:
                _attempt(job, self.read_timeout)
                return _Outcome(job, "downloaded", failures)
            except _Dead as err:
                return _Outcome(job, "dead", failures, err.status, err.reason)
            except _Transient as err:
                if failures >= self.retries:
                    return _Outcome(job, "failed", failures, reason=str(err))
                wait_s = min(max(self.backoff * 2**failures, err.retry_after or 0.0), self.max_backoff)
                failures += 1
                log.debug("%s (%s): %s; retry %d of %d in %.1f s", job.id, job.url, err, failures, self.retries, wait_s)
                self.sleep(wait_s)


def _attempt(job: _Job, timeout: float) -> None:
    """One request: the image lands at `job.path` whole, or raises _Dead or _Transient."""
    request = urllib.request.Request(job.url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    try:
        resp = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        with err:
            if err.code in RETRY_STATUS or err.code >= 500:
                raise _Transient(f"HTTP {err.code} {err.reason}", _retry_after(err.headers)) from None
            raise _Dead(err.code, f"HTTP {err.code} {err.reason}") from None
    except ValueError as err:  # http.client.InvalidURL and the like: no request will ever work
        raise _Dead(None, f"invalid URL: {err}") from None
    except (OSError, http.client.HTTPException) as err:  # refused, reset, timeout, DNS, bad status line
        raise _Transient(f"{type(err).__name__}: {getattr(err, 'reason', err)}") from None
    with resp:
        if resp.headers.get("Content-Type", "").split(";")[0].strip().lower() == "text/html":
            raise _Dead(resp.status, "an HTML page instead of an image")
        length = resp.headers.get("Content-Length", "")
        expected = int(length) if length.isdigit() else None
        tmp = job.path.with_name(f".{job.path.name}.{os.getpid()}.part")  # one thread per image in a process
        try:
            size = 0
            with open(tmp, "wb") as fh:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (OSError, http.client.HTTPException) as err:
                        raise _Transient(f"{type(err).__name__} after {size} bytes: {err}") from None
                    if not chunk:
                        break
                    if size == 0 and chunk.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
                        raise _Dead(resp.status, "an HTML page instead of an image")
                    fh.write(chunk)
                    size += len(chunk)
            if expected is not None and size < expected:
                raise _Transient(f"connection closed after {size} of {expected} bytes")
            if size == 0:
                raise _Dead(resp.status, "an empty response instead of an image")
            os.replace(tmp, job.path)
        finally:
            tmp.unlink(missing_ok=True)


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After", "") if headers is not None else ""
    return float(value) if value.strip().isdigit() else None
