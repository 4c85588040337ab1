"""Files from the Hugging Face Hub: `download_hf` (the hub cache resumes), verified and linked into place."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from huggingface_hub import hf_hub_download  # imported here so that tests can replace it

from ..sources import FileSpec, LockEntry
from .errors import ChecksumError, DownloadError
from .files import _move_aside, sha256_file


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
