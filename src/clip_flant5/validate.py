"""Check that every image the training records reference exists and decodes, before training starts.

A missing or corrupt image otherwise surfaces hours into a DeepSpeed run (or, with a lenient loader, as
silently skipped samples). Each unique path is checked once, in parallel; a second streamed pass attributes
the problems to records and, if asked, writes the records whose images are all fine (spec: data.md
"Sources": run on the present subset only when asked, reporting how many records were dropped and why).
"""

from __future__ import annotations

import functools
import os
from contextlib import nullcontext
from pathlib import Path

from PIL import Image

from .atomic import atomic_json_array, write_json
from .errors import UserError
from .flatten import iter_json_array
from .images import load_image
from .parallel import process_map
from .prompts import has_image

CHECKS = ("decode", "open")
LIST_LIMIT = 100  # problem images (and invalid records) listed in the report
USERS_LIMIT = 5  # records listed per problem image
MESSAGE_LIMIT = 5


class DataValidationError(UserError):
    """Images are missing or corrupt and no clean output was asked for; `.report` holds the report."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


def _image_paths(record) -> list[str] | None:
    """The image paths of a record ([] if text-only), None if its `image` field is unusable."""
    if not isinstance(record, dict):
        return None
    if not has_image(record):
        return []
    image = record["image"]
    if isinstance(image, str):
        return [image]
    if isinstance(image, list) and image and all(isinstance(path, str) for path in image):
        return image
    return None


def _check_image(root: str, check: str, path: str) -> tuple[str, str, str] | None:
    """(path, "missing" | "corrupt", error) for a bad image, None for a good one."""
    full = os.path.join(root, path)
    if not os.path.isfile(full):
        return path, "missing", f"no such file {full!r}"
    try:
        if check == "decode":
            load_image(full)
        else:
            with Image.open(full):  # reads the header only: catches empty/foreign files, not truncation
                pass
    except Exception as err:  # PIL raises many types for bad data
        return path, "corrupt", f"{type(err).__name__}: {err}"
    return None


def _check_all(root: str, check: str, paths: list[str], jobs: int) -> dict[str, tuple[str, str]]:
    worker = functools.partial(_check_image, root, check)
    # Large chunks: a check is ~1 ms, so per-task round trips would dominate.
    chunk = max(1, min(256, len(paths) // (jobs * 16)))
    results = process_map(worker, paths, max(1, min(jobs, len(paths))), chunk)
    return {r[0]: r[1:] for r in results if r is not None}


def validate_data(
    json_path: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    jobs: int | None = None,
    check: str = "decode",
    clean_path: str | os.PathLike | None = None,
    report_path: str | os.PathLike | None = None,
    drop_bad: bool | None = None,
) -> dict:
    """Check the images referenced (`image`, relative to `image_root`) by the records of the JSON array `json_path`.

    `check="decode"` fully decodes each image (what training does); `"open"` only reads its header, for
    speed on huge sets. The report (returned, and written to `report_path`) counts records, text-only
    records (always kept: they need no image) and unique images, and lists the missing and corrupt images
    with the records using them, records with an unusable `image` field, and the records affected.
    With `clean_path`, the records whose images are all fine are written there (a JSON array, one record
    per line) and the dropped count is reported. Any problem raises DataValidationError unless `drop_bad`
    (default: True when `clean_path` is given), and then no clean file is left behind.
    """
    drop_bad = clean_path is not None if drop_bad is None else drop_bad
    if check not in CHECKS:
        raise UserError(f"unknown check {check!r}; valid values: {', '.join(CHECKS)}")
    root, jobs = os.fspath(image_root), max(1, jobs or os.cpu_count() or 1)
    # Pass 1: the unique paths, in first-use order so the report is deterministic.
    unique: dict[str, None] = {}
    records = text_only = 0
    for record in iter_json_array(json_path):
        records += 1
        paths = _image_paths(record)
        text_only += paths == []
        for path in paths or ():
            unique.setdefault(path)
    if unique and not os.path.isdir(root):
        raise UserError(
            f"image root {root!r} does not exist: the records' image paths are relative to it (--image-root)"
        )
    problems = _check_all(root, check, list(unique), jobs)
    report = _attribute(json_path, problems, clean_path)
    report = {"json": os.fspath(json_path), "image_root": root, "check": check, "records": records,
              "text_only_records": text_only, "unique_images": len(unique), **report}  # fmt: skip
    if report_path is not None:
        write_json(report_path, report)
    bad = report["missing"]["count"] + report["corrupt"]["count"] + report["invalid_records"]["count"]
    if bad and not drop_bad:
        if clean_path is not None:
            Path(clean_path).unlink(missing_ok=True)
        raise DataValidationError(_message(report, report_path), report)
    return report


def _ignore(record) -> None:
    """The writer when no clean output is asked for."""


def _attribute(json_path, problems: dict[str, tuple[str, str]], clean_path) -> dict:
    """Pass 2: which records use the bad images; writes the clean records if `clean_path` is set."""
    users = {path: {"count": 0, "first": []} for path in problems}
    invalid, invalid_first, affected, kept = 0, [], 0, 0
    with atomic_json_array(clean_path) if clean_path is not None else nullcontext(_ignore) as write:
        for index, record in enumerate(iter_json_array(json_path)):
            paths = _image_paths(record)
            ident = record.get("id") if isinstance(record, dict) else None
            if paths is None:
                invalid += 1
                if len(invalid_first) < LIST_LIMIT:
                    invalid_first.append({"index": index, "id": ident, "reason": "not an object or bad 'image'"})
                continue
            bad = [path for path in paths if path in problems]
            for path in bad:
                users[path]["count"] += 1
                if len(users[path]["first"]) < USERS_LIMIT:
                    users[path]["first"].append({"index": index, "id": ident})
            affected += bool(bad)
            if not bad:
                kept += 1
                write(record)
    lists = {"missing": [], "corrupt": []}
    for path, (kind, error) in sorted(problems.items()):
        entry = {"path": path, "records": users[path]["count"], "used_by": users[path]["first"]}
        lists[kind].append(entry if kind == "missing" else {**entry, "error": error})
    cleaned = clean_path is not None
    return {
        **{kind: {"count": len(items), "first": items[:LIST_LIMIT]} for kind, items in lists.items()},
        "invalid_records": {"count": invalid, "first": invalid_first},
        "records_affected": affected,
        "clean_path": os.fspath(clean_path) if cleaned else None,
        "records_kept": kept if cleaned else None,
        "records_dropped": affected + invalid if cleaned else None,
    }


def _message(report: dict, report_path) -> str:
    first = [f"{m['path']} (missing)" for m in report["missing"]["first"][:MESSAGE_LIMIT]]
    first += [f"{c['path']} (corrupt: {c['error']})" for c in report["corrupt"]["first"][:MESSAGE_LIMIT]]
    first += [f"record {r['index']} (id={r['id']!r}): {r['reason']}" for r in report["invalid_records"]["first"][:2]]
    where = f"full report: {report_path}" if report_path is not None else "--report FILE lists them all"
    return (
        f"{report['json']}: {report['missing']['count']} missing and {report['corrupt']['count']} corrupt image(s) "
        f"under {report['image_root']!r}, {report['invalid_records']['count']} invalid record(s); "
        f"{report['records_affected']} record(s) affected; {where}. First problems:\n  "
        + "\n  ".join(first)
        + "\nProvide the missing files, or keep the valid records: validate-data --clean OUT --drop-bad (the "
        "workflow's data.skip_bad_images)."
    )
