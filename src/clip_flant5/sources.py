"""The data manifest (`config/sources.yaml`) and its lock file (`config/sources.lock.json`).

The manifest says where each training and benchmark file comes from and where it lands under a data root R:
downloads in `R/downloads/<source>/<file>`, training data under `R/train/`, each benchmark under
`R/benchmarks/<source>/` (a source's "group root"). Upstream publishes no checksums (spec data.md "Sources"), so
the lock records the sha256 and size of every file the first time it is fetched and later fetches are verified
against it; rewriting an entry is a deliberate act (`refresh_lock`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from .atomic import write_json

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOURCES = REPO_ROOT / "config" / "sources.yaml"
DEFAULT_LOCK = REPO_ROOT / "config" / "sources.lock.json"
DEFAULT_DATA_ROOT = Path("resources")

GROUPS = ("train", "benchmark")
FILE_KINDS = ("https", "huggingface", "gdrive")
KINDS = (*FILE_KINDS, "manual")
UNPACK_FORMATS = ("zip", "tar", "tar.gz", "tgz", "tar.bz2", "tar.xz")
REPO_TYPES = ("dataset", "model", "space")
GDRIVE_URL = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"

SOURCE_KEYS = set("group kind description note repo repo_type revision files provides instructions".split())
FILE_KEYS = set(
    "name kind url id folder repo repo_type filename revision size approx_size unpack dest strip_top_level note".split()
)
INHERITED = ("kind", "repo", "repo_type", "revision")  # file fields that default to the source's value
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")
SIZE_RE = re.compile(r"^\s*([0-9.]+)\s*(B|KB|MB|GB|TB)\s*$", re.IGNORECASE)
SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


class SourceError(RuntimeError):
    """Base of every error of the data sources (manifest, lock, download, unpacking)."""


class ManifestError(SourceError):
    pass


class UnknownSourceError(SourceError):
    pass


class LockError(SourceError):
    pass


@dataclass(frozen=True)
class FileSpec:
    name: str  # file name under R/downloads/<source>/
    kind: str  # https | huggingface | gdrive
    dest: str  # where it lands, relative to the source's group root; an archive's folder
    url: str | None = None
    id: str | None = None  # Google Drive file id
    folder: str | None = None  # or: a public Google Drive folder holding the file, looked up by `filename` when fetched
    repo: str | None = None
    repo_type: str | None = None
    filename: str | None = None  # path inside the Hugging Face repo, or title in the Drive folder (default: name)
    revision: str | None = None
    size: int | None = None  # exact size in bytes, verified
    approx_size: int | None = None  # informational only
    unpack: str | None = None  # one of UNPACK_FORMATS, or None for a plain file
    strip_top_level: str | None = None  # None | "auto" | the folder name the archive is known to hold
    note: str | None = None

    @property
    def remote(self) -> str:
        """A URL for messages (what a user would open to fetch the file by hand)."""
        if self.kind == "gdrive" and self.folder:
            return f"https://drive.google.com/drive/folders/{self.folder}"
        if self.kind == "gdrive":
            return f"https://drive.google.com/file/d/{self.id}/view"
        if self.kind == "huggingface":
            prefix = {"dataset": "datasets/", "space": "spaces/"}.get(self.repo_type or "", "")
            return f"https://huggingface.co/{prefix}{self.repo}/resolve/{self.revision or 'main'}/{self.filename}"
        return self.url or ""


@dataclass(frozen=True)
class Source:
    name: str
    group: str  # train | benchmark
    kind: str  # the default kind of its files, or manual
    files: tuple[FileSpec, ...]
    provides: tuple[str, ...]  # paths relative to the group root that must exist afterwards
    description: str = ""
    instructions: str | None = None  # manual sources: what to fetch by hand and where to put it
    note: str | None = None

    def root(self, data_root: str | os.PathLike) -> Path:
        """The group root: R/train for training data, R/benchmarks/<name> for a benchmark."""
        data_root = Path(data_root)
        return data_root / "train" if self.group == "train" else data_root / "benchmarks" / self.name

    def download_dir(self, data_root: str | os.PathLike) -> Path:
        return Path(data_root) / "downloads" / self.name

    def provided_paths(self, data_root: str | os.PathLike) -> list[Path]:
        return [join_rel(self.root(data_root), p) for p in self.provides]


def lock_key(source: str, file: str) -> str:
    return f"{source}/{file}"


def join_rel(root: Path, rel: str) -> Path:
    return root if rel == "." else root / rel


# ---------------------------------------------------------------- manifest


def load_sources(path: str | os.PathLike = DEFAULT_SOURCES) -> dict[str, Source]:
    """Read and validate the manifest. Raises ManifestError naming the source and the bad field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ManifestError(f"cannot read the data manifest {path}: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("sources"), dict) or not data["sources"]:
        raise ManifestError(f"{path}: expected a mapping with a non-empty 'sources' mapping")
    sources = {}
    for name, raw in data["sources"].items():
        sources[name] = _parse_source(path, name, raw)
    _check_overlaps(path, sources.values())
    return sources


def get_source(sources: dict[str, Source], name: str) -> Source:
    try:
        return sources[name]
    except KeyError:
        raise UnknownSourceError(f"unknown data source {name!r}; valid: {', '.join(sources)}") from None


def _parse_source(path: Path, name, raw) -> Source:
    def fail(msg: str):
        raise ManifestError(f"{path}: source {name!r}: {msg}")

    if not isinstance(name, str) or not NAME_RE.match(name):
        fail("the name must be lower-case letters, digits and '_'")
    if not isinstance(raw, dict):
        fail("expected a mapping")
    if unknown := set(raw) - SOURCE_KEYS:
        fail(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(SOURCE_KEYS)}")
    if raw.get("group") not in GROUPS:
        fail(f"field 'group' must be one of {GROUPS}, got {raw.get('group')!r}")
    kind = raw.get("kind")
    if kind is not None and kind not in KINDS:
        fail(f"field 'kind' must be one of {KINDS}, got {kind!r}")
    provides = raw.get("provides")
    if not isinstance(provides, list) or not provides:
        fail("field 'provides' must be a non-empty list of paths")
    for p in provides:
        if _bad_relpath(p):
            fail(f"field 'provides': {p!r} must be a relative path without '..'")
    files_raw = raw.get("files") or []
    if kind == "manual":
        if not isinstance(raw.get("instructions"), str) or not raw["instructions"].strip():
            fail("a manual source needs 'instructions' (what to download and where to put it)")
        if files_raw:
            fail("a manual source has no 'files'")
        files = ()
    else:
        if not isinstance(files_raw, list) or not files_raw:
            fail("field 'files' must be a non-empty list")
        files = tuple(_parse_file(fail, i, raw, f) for i, f in enumerate(files_raw))
        names = [f.name for f in files]
        if len(set(names)) != len(names):
            fail(f"file names must be unique, got {names}")
        dests = [PurePosixPath(f.dest) for f in files]
        for p in provides:
            if not any(_within(PurePosixPath(p), d) for d in dests):
                fail(f"field 'provides': {p!r} is not under any file's 'dest' {[f.dest for f in files]}")
    return Source(
        name=name,
        group=raw["group"],
        kind=kind or files[0].kind,
        files=files,
        provides=tuple(provides),
        description=str(raw.get("description") or ""),
        instructions=raw.get("instructions"),
        note=raw.get("note"),
    )


def _parse_file(fail, index: int, source_raw: dict, raw) -> FileSpec:
    if not isinstance(raw, dict):
        fail(f"files[{index}]: expected a mapping")
    label = f"files[{index}] ({raw.get('name', '?')})"
    if unknown := set(raw) - FILE_KEYS:
        fail(f"{label}: unknown field(s) {sorted(unknown)}; allowed: {sorted(FILE_KEYS)}")
    values = {k: raw.get(k, source_raw.get(k)) for k in INHERITED}
    values.update({k: v for k, v in raw.items() if k not in INHERITED})
    name = values.get("name")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        fail(f"{label}: field 'name' must be a plain file name")
    kind = values.get("kind")
    if kind not in FILE_KINDS:
        fail(f"{label}: field 'kind' must be one of {FILE_KINDS} (set on the file or the source), got {kind!r}")
    required = {"https": ("url",), "gdrive": (), "huggingface": ("repo", "repo_type")}[kind]
    for key in required:
        if not isinstance(values.get(key), str) or not values[key]:
            fail(f"{label}: a {kind} file needs the field {key!r}")
    if kind == "https" and not re.match(r"^https?://", values["url"]):
        fail(f"{label}: field 'url' must be an http(s) URL")
    if kind == "gdrive":
        _check_gdrive(fail, label, values)
    elif values.get("folder") is not None:
        fail(f"{label}: field 'folder' is only for gdrive files")
    if kind == "huggingface" and values["repo_type"] not in REPO_TYPES:
        fail(f"{label}: field 'repo_type' must be one of {REPO_TYPES}")
    unpack = values.get("unpack")
    if unpack in (None, "none"):
        unpack = None
    elif unpack not in UNPACK_FORMATS:
        fail(f"{label}: field 'unpack' must be one of {UNPACK_FORMATS} or none, got {unpack!r}")
    dest = values.get("dest")
    if not isinstance(dest, str) or _bad_relpath(dest):
        fail(f"{label}: field 'dest' must be a relative path without '..'")
    strip = values.get("strip_top_level")
    if strip is not None and (not unpack or not isinstance(strip, str) or "/" in strip or strip in ("", "..")):
        fail(f"{label}: field 'strip_top_level' is 'auto' or a folder name, and only for archives")
    if dest == "." and not unpack:
        fail(f"{label}: field 'dest' of a plain file must name the file")
    sizes = {}
    for key in ("size", "approx_size"):
        if values.get(key) is not None:
            sizes[key] = _parse_size(values[key]) if key == "approx_size" else values[key]
            if not isinstance(sizes[key], int) or isinstance(sizes[key], bool) or sizes[key] <= 0:
                fail(f"{label}: field {key!r} must be a positive number of bytes")
    if len(sizes) == 2:
        fail(f"{label}: give 'size' (exact, verified) or 'approx_size', not both")
    filename = values.get("filename") or (name if kind == "huggingface" or values.get("folder") else None)
    return FileSpec(
        name=name,
        kind=kind,
        dest=str(PurePosixPath(dest)),
        url=values.get("url"),
        id=values.get("id"),
        folder=values.get("folder"),
        repo=values.get("repo"),
        repo_type=values.get("repo_type"),
        filename=filename,
        revision=values.get("revision"),
        unpack=unpack,
        strip_top_level=strip,
        note=values.get("note"),
        **sizes,
    )


def _check_gdrive(fail, label: str, values: dict) -> None:
    """A gdrive file is given by its file id, or (where the id is not known, as for OCR-VQA's dataset.json) by the
    public folder holding it: the id is then looked up by the file's name in the folder's listing when fetched."""
    given = [key for key in ("id", "folder") if values.get(key) is not None]
    if not given:
        fail(f"{label}: a gdrive file needs the field 'id' (its file id) or 'folder' (the id of a public folder that "
             "holds it under the name 'filename', default: 'name')")  # fmt: skip
    if len(given) == 2:
        fail(f"{label}: a gdrive file takes 'id' or 'folder', not both")
    key = given[0]
    if not isinstance(values[key], str) or not re.match(r"^[A-Za-z0-9_-]+$", values[key]):
        fail(f"{label}: field {key!r} is not a Google Drive {'file' if key == 'id' else 'folder'} id")
    if key == "folder" and values.get("filename") is not None and not isinstance(values["filename"], str):
        fail(f"{label}: field 'filename' (the file's name in the folder) must be a string")


def _parse_size(value):
    if isinstance(value, str) and (m := SIZE_RE.match(value)):
        return int(float(m.group(1)) * SIZE_UNITS[m.group(2).lower()])
    return value


def _bad_relpath(p) -> bool:
    if not isinstance(p, str) or not p or "\\" in p:
        return True
    pure = PurePosixPath(p)
    return pure.is_absolute() or ".." in pure.parts


def _within(path: PurePosixPath, folder: PurePosixPath) -> bool:
    return str(folder) == "." or path == folder or folder in path.parents


def _check_overlaps(path: Path, sources) -> None:
    """No file may land on or inside another file's destination: an archive owns its folder (it is swapped in as a
    whole when re-unpacked), so anything placed inside it would be lost. The one exception: a plain file of the same
    source, which fetch_source places after unpacking the archive (as TIFA160's metadata beside its images)."""
    placed: dict[tuple, list[tuple[str, FileSpec]]] = {}
    for s in sources:
        area = ("train",) if s.group == "train" else ("benchmark", s.name)
        for f in s.files:
            dest = PurePosixPath(f.dest)
            for other, o in placed.setdefault(area, []):
                odest = PurePosixPath(o.dest)
                if not (_within(dest, odest) or _within(odest, dest)):
                    continue
                own = other.split("/")[0] == s.name and dest != odest and bool(f.unpack) != bool(o.unpack)
                if not (own and _within(*((odest, dest) if f.unpack else (dest, odest)))):
                    raise ManifestError(
                        f"{path}: source {s.name!r}: file {f.name!r}: field 'dest' {f.dest!r} "
                        f"overlaps the destination {o.dest!r} of {other}"
                    )
            placed[area].append((f"{s.name}/{f.name}", f))


# ---------------------------------------------------------------- lock file


@dataclass(frozen=True)
class LockEntry:
    sha256: str
    size: int


def read_lock(path: str | os.PathLike = DEFAULT_LOCK) -> dict[str, LockEntry]:
    """The lock's entries by `lock_key(source, file)`; a missing lock file has none."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {k: LockEntry(str(v["sha256"]), int(v["size"])) for k, v in data["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise LockError(f"the lock file {path} is unreadable or malformed ({err!r}); restore it from git") from err


def update_lock(path: str | os.PathLike, entries: dict[str, LockEntry]) -> None:
    """Add or replace `entries`, keeping every other entry. Atomic (temp file + rename), and serialised with other
    processes by a lock on the folder, so parallel downloads (e.g. Snakemake jobs) do not lose each other's
    entries."""
    path = Path(path)
    with folder_lock(path.parent):
        current = read_lock(path)
        current.update(entries)
        body = {
            "version": 1,
            "comment": "sha256 and size of each downloaded file, recorded on first fetch and verified on every later "
            "one (clip_flant5.download); refresh an entry deliberately with refresh_lock",
            "files": {k: {"sha256": e.sha256, "size": e.size} for k, e in sorted(current.items())},
        }
        write_json_atomic(path, body)


def write_json_atomic(path: Path, data) -> None:
    write_json(path, data, fsync=True)  # the lock and download state must survive a crash


@contextlib.contextmanager
def folder_lock(folder: Path, blocking: bool = True):
    """flock on the folder itself: no extra lock file to clean up or commit. Raises BlockingIOError when
    non-blocking and held. A no-op where fcntl does not exist."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        yield
    finally:
        os.close(fd)
