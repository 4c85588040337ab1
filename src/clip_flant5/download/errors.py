"""The errors of downloading and unpacking; all are SourceError, so UserError: the CLI reports them in one line
(what failed, and what to do) instead of a traceback."""

from __future__ import annotations

from pathlib import Path

from ..sources import SourceError


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


class NotInFolderError(DownloadError):
    """A Google Drive folder's listing has no file of the wanted name (or several): the message lists what it holds."""


class DatasetFileError(DownloadError):
    """A downloaded dataset file (OCR-VQA's dataset.json) is missing or not in the expected format."""


class ImageDownloadsFailed(DownloadError):
    """Some images could not be fetched after all retries (transient errors: a rerun resumes); `.report` holds the
    report dict. Dead URLs (404, an HTML page, ...) are never this error: they are only reported."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


class UnpackError(DownloadError):
    pass


class UnsafeArchiveError(UnpackError):
    pass


class CorruptArchiveError(UnpackError):
    pass


_CHECKSUM_HINT = (
    "Rerun to download it again; if the file changed upstream on purpose, refresh the lock entry (refresh_lock=True)."
)
