"""Fetch the sources of the data manifest (`clip_flant5/sources.yaml`): resumable, verified downloads and safe
unpacking.

Nothing unverified is ever used. A download goes to `<file>.part` (resumed with an HTTP Range request after an
interruption) and is renamed to `<file>` only once its size and sha256 check out: against the lock file when it
has an entry, otherwise the hash is recorded there. A file that fails the check is moved to `<file>.bad`. An
archive is unpacked into `<dest>.unpack-tmp` beside its destination, its members are counted and sized and the
`provides` paths checked, and only then is it renamed into place.

Per source, `R/downloads/<source>/.state.json` remembers the sha256 of each verified file (with its size and
mtime, so a 20 GB archive is not rehashed on every run) and whether it was unpacked; `complete.json` is written
last, when the whole source is in place, and makes a later `fetch_source` return without any network or disk work.

Modules: `fetch` (fetch_source: download, verify, unpack or place, mark complete), `transfer` (download_url),
`retry` (the HTTP retry policy, urllib3's Retry, and the connections), `hub`
(download_hf), `gdrive` (resolve_gdrive_file: a file id from its name in a public Drive folder), `archive`
(unpack_archive), `state` (.state.json, complete.json), `status` (lock_status), `errors`, `files` (hashing and small
file helpers), `ocrvqa_images` (download_ocrvqa_images: the OCR-VQA images from the URLs of its dataset.json).
"""

from .archive import TAR_MODES, UNPACK_STAMP, unpack_archive
from .errors import (
    ChecksumError,
    CorruptArchiveError,
    DatasetFileError,
    DownloadError,
    DownloadTimeout,
    HTTPStatusError,
    ImageDownloadsFailed,
    ManualDownloadRequired,
    NotAFileError,
    NotInFolderError,
    SizeMismatchError,
    UnpackError,
    UnsafeArchiveError,
)
from .fetch import fetch_source
from .files import sha256_file
from .gdrive import FolderEntry, list_gdrive_folder, resolve_gdrive_file
from .hub import download_hf
from .ocrvqa_images import download_ocrvqa_images
from .retry import RETRY_STATUS, USER_AGENT
from .state import COMPLETE_NAME, STATE_NAME, marker_path
from .status import FileStatus, SourceStatus, iter_status_lines, lock_status
from .transfer import FetchOptions, download_url

__all__ = [
    "COMPLETE_NAME",
    "RETRY_STATUS",
    "STATE_NAME",
    "TAR_MODES",
    "UNPACK_STAMP",
    "USER_AGENT",
    "ChecksumError",
    "CorruptArchiveError",
    "DatasetFileError",
    "DownloadError",
    "DownloadTimeout",
    "FetchOptions",
    "FileStatus",
    "FolderEntry",
    "HTTPStatusError",
    "ImageDownloadsFailed",
    "ManualDownloadRequired",
    "NotAFileError",
    "NotInFolderError",
    "SizeMismatchError",
    "SourceStatus",
    "UnpackError",
    "UnsafeArchiveError",
    "download_hf",
    "download_ocrvqa_images",
    "download_url",
    "fetch_source",
    "iter_status_lines",
    "list_gdrive_folder",
    "lock_status",
    "marker_path",
    "resolve_gdrive_file",
    "sha256_file",
    "unpack_archive",
]
