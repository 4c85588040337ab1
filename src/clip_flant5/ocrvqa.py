"""The OCR-VQA jpg fix (spec: data.md "OCR-VQA jpg fix").

mix665k names every OCR-VQA image `<id>.jpg`, but the download yields some `.gif`/`.png` files: each one
without a `<stem>.jpg` sibling is converted to RGB and saved as that jpg (JPEG at PIL's default quality, as
upstream's fix_ocrvqa.py did). Originals are kept. Converting only missing jpgs makes reruns cheap and
idempotent; writing to a temp name then renaming means a killed run never leaves a half-written jpg (only
a stray `.<stem>.jpg.<pid>.part`, which nothing reads).
"""

from __future__ import annotations

import contextlib
import functools
import os

from .errors import UserError
from .images import open_image
from .parallel import process_map

SOURCE_SUFFIXES = (".gif", ".png")
MESSAGE_LIMIT = 20


class OcrVqaFixError(UserError):
    """Some images failed to convert; `.summary` holds the summary dict."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


def _plan(folder: str) -> tuple[list[str], int, int]:
    """(names to convert, sources whose jpg exists, sources skipped because another one has the same stem)."""
    names = sorted(entry.name for entry in os.scandir(folder) if entry.is_file())
    present = set(names)
    todo, already, same_stem, stems = [], 0, 0, set()
    for name in names:
        stem, suffix = os.path.splitext(name)
        if suffix.lower() not in SOURCE_SUFFIXES:
            continue
        if stem + ".jpg" in present:
            already += 1
        elif stem in stems:  # e.g. x.gif and x.png: the first in name order makes x.jpg, as a serial run would
            same_stem += 1
        else:
            stems.add(stem)
            todo.append(name)
    return todo, already, same_stem


def _convert(folder: str, name: str) -> tuple[str, str] | None:
    """Convert one file; (name, error) if it failed."""
    stem = os.path.splitext(name)[0]
    tmp = os.path.join(folder, f".{stem}.jpg.{os.getpid()}.part")
    try:
        # upstream's plain convert("RGB") (not images.to_rgb): the published models were trained on these bytes
        open_image(os.path.join(folder, name)).convert("RGB").save(tmp, format="JPEG")
        os.replace(tmp, os.path.join(folder, stem + ".jpg"))
    except Exception as err:  # PIL raises many types for bad data; reported by name, never silently
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        return name, f"{type(err).__name__}: {err}"
    return None


def fix_ocrvqa(folder: str | os.PathLike, *, jobs: int | None = None, keep_going: bool = False) -> dict:
    """Convert each `.gif`/`.png` in `folder` lacking a `<stem>.jpg` sibling into that jpg, over `jobs` processes.

    Returns {"folder", "converted", "already_present", "same_stem_skipped", "failed", "failed_files"}
    ("failed_files": [{"file", "error"}]). Raises OcrVqaFixError naming the files that failed to decode
    (the others are converted anyway) unless `keep_going=True`. `jobs` defaults to the number of cores.
    """
    folder = os.fspath(folder)
    jobs = max(1, jobs or os.cpu_count() or 1)
    todo, already, same_stem = _plan(folder)
    convert = functools.partial(_convert, folder)
    # Small chunks: a conversion takes milliseconds, so a round trip per 16 is negligible, and the workers
    # finish within a chunk of each other (larger chunks left one core idle at the end).
    chunk = max(1, min(16, len(todo) // (jobs * 8)))
    results = list(process_map(convert, todo, max(1, min(jobs, len(todo))), chunk))
    failed = sorted(r for r in results if r is not None)
    summary = {
        "folder": folder,
        "converted": len(todo) - len(failed),
        "already_present": already,
        "same_stem_skipped": same_stem,
        "failed": len(failed),
        "failed_files": [{"file": name, "error": error} for name, error in failed],
    }
    if failed and not keep_going:
        lines = [f"{folder}: {len(failed)} image(s) failed to convert to jpg (the others were converted):"]
        lines += [f"  {name}: {error}" for name, error in failed[:MESSAGE_LIMIT]]
        if len(failed) > MESSAGE_LIMIT:
            lines.append(f"  ... and {len(failed) - MESSAGE_LIMIT} more")
        lines.append(
            "Re-download these files, or continue without them: fix-ocrvqa --keep-going (the workflow's "
            "data.skip_bad_images)."
        )
        raise OcrVqaFixError("\n".join(lines), summary)
    return summary
