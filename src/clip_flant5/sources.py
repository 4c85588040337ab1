"""The data manifest (`sources.yaml`, beside this module) and its lock file (`config/sources.lock.json`).

The manifest says where each training and benchmark file comes from and where it lands under a data root R:
downloads in `R/downloads/<source>/<file>`, training data under `R/train/`, each benchmark under
`R/benchmarks/<source>/` (a source's "group root"). It is package data: where each dataset comes from is a fact
of the package, the same for every checkout and install. Upstream publishes no checksums (spec data.md
"Sources"), so the lock records the sha256 and size of every file the first time it is fetched and later fetches
are verified against it; rewriting an entry is a deliberate act (`refresh_lock`). The lock belongs to the
checkout a workflow runs from: `DEFAULT_LOCK` is relative to the working directory.

The manifest's structure (keys, types, allowed values, what each kind of file needs) is the JSON schema
`MANIFEST_SCHEMA`, checked with jsonschema; what a schema cannot say (paths that leave their folder, `provides`
under some `dest`, unique file names, destinations that overlap) is checked in code after it.
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
from .errors import UserError

DEFAULT_SOURCES = Path(__file__).with_name("sources.yaml")
DEFAULT_LOCK = Path("config/sources.lock.json")  # the checkout's, relative to where the workflow runs
DEFAULT_DATA_ROOT = Path("resources")

GROUPS = ("train", "benchmark")
FILE_KINDS = ("https", "huggingface", "gdrive")
KINDS = (*FILE_KINDS, "manual")
UNPACK_FORMATS = ("zip", "tar", "tar.gz", "tgz", "tar.bz2", "tar.xz")
REPO_TYPES = ("dataset", "model", "space")
GDRIVE_URL = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"

INHERITED = ("kind", "repo", "repo_type", "revision")  # file fields that default to the source's value
NAME_PATTERN = r"^[a-z0-9][a-z0-9_]*$"
SIZE_PATTERN = r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KkMmGgTt]?[Bb])\s*$"  # "18 GB" = 18e9 bytes
SIZE_RE = re.compile(SIZE_PATTERN)
SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_DRIVE_ID = r"^[A-Za-z0-9_-]+$"
_TEXT = {"type": "string"}


def _kind_is(*kinds: str) -> dict:
    return {"properties": {"kind": {"enum": list(kinds)}}, "required": ["kind"]}


def _has_all(*keys: str) -> dict:
    # "type": a non-mapping would pass "required" vacuously, and fail every "not" of it
    return {"type": "object", "required": list(keys)}


# Draft 2020-12. "x-message" (ignored by validators) is the text reported when a keyword of the same subschema
# fails, {value} (and {missing} for "required") filled in; "x-message-required" gives one per missing key. A file
# is checked with its source's INHERITED fields filled in, so what a file needs can depend on its kind wherever set.
_FILE_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": r"^[^./][^/]*$", "x-message": "field 'name' must be a plain file name"},
        "kind": {"enum": list(FILE_KINDS)},
        "url": {"type": "string", "pattern": r"^https?://", "x-message": "field 'url' must be an http(s) URL"},
        "id": {"type": "string", "pattern": _DRIVE_ID, "x-message": "field 'id' is not a Google Drive file id"},
        "folder": {
            "type": "string",
            "pattern": _DRIVE_ID,
            "x-message": "field 'folder' is not a Google Drive folder id",
        },
        "repo": _TEXT,
        "repo_type": {"enum": list(REPO_TYPES)},
        "filename": {
            "type": "string",
            "x-message": "field 'filename' (the file's name in the folder or the repository) must be a string",
        },
        "revision": _TEXT,
        "size": {
            "type": "integer",
            "exclusiveMinimum": 0,
            "x-message": "field 'size' must be a positive number of bytes",
        },
        "approx_size": {
            "anyOf": [{"type": "integer", "exclusiveMinimum": 0}, {"type": "string", "pattern": SIZE_PATTERN}],
            "x-message": "field 'approx_size' must be a positive number of bytes, or one like '18 GB'",
        },
        "unpack": {
            "enum": [*UNPACK_FORMATS, "none", None],
            "x-message": f"field 'unpack' must be one of {', '.join(UNPACK_FORMATS)} or none, got {{value!r}}",
        },
        "dest": _TEXT,
        "strip_top_level": {
            "type": "string",
            "pattern": r"^(?!\.\.$)[^/]+$",
            "x-message": "field 'strip_top_level' is 'auto' or a folder name, and only for archives",
        },
        "note": _TEXT,
    },
    "additionalProperties": False,
    "required": ["name", "kind", "dest"],
    "x-message-required": {"kind": "field 'kind' is missing: set it on the file or the source"},
    "allOf": [
        {
            "not": _has_all("size", "approx_size"),
            "x-message": "give 'size' (exact, verified) or 'approx_size', not both",
        },
        {
            "if": _kind_is("https"),
            "then": {"required": ["url"], "x-message": "a https file needs the field {missing!r}"},
        },
        {
            "if": _kind_is("huggingface"),
            "then": {"required": ["repo", "repo_type"], "x-message": "a huggingface file needs the field {missing!r}"},
        },
        {
            "if": _kind_is("gdrive"),
            "then": {
                "allOf": [
                    {
                        "anyOf": [{"required": ["id"]}, {"required": ["folder"]}],
                        "x-message": "a gdrive file needs the field 'id' (its file id) or 'folder' (the id of a "
                        "public folder that holds it under the name 'filename', default: 'name')",
                    },
                    {
                        "not": _has_all("id", "folder"),
                        "x-message": "a gdrive file takes 'id' or 'folder', not both",
                    },
                ]
            },
            "else": {"not": _has_all("folder"), "x-message": "field 'folder' is only for gdrive files"},
        },
        {  # a plain file (no unpack): dest names the file, and there is no archive folder to strip
            "if": {"properties": {"unpack": {"enum": ["none", None]}}},
            "then": {
                "properties": {
                    "dest": {"not": {"const": "."}, "x-message": "field 'dest' of a plain file must name the file"}
                },
                "allOf": [
                    {
                        "not": _has_all("strip_top_level"),
                        "x-message": "field 'strip_top_level' is 'auto' or a folder name, and only for archives",
                    }
                ],
            },
        },
    ],
}
_SOURCE_SCHEMA = {
    "type": "object",
    "properties": {
        "group": {"enum": list(GROUPS)},
        "kind": {"enum": list(KINDS)},
        "description": _TEXT,
        "note": _TEXT,
        "repo": _TEXT,
        "repo_type": {"enum": list(REPO_TYPES)},
        "revision": _TEXT,
        "files": {"type": "array"},
        "provides": {
            "type": "array",
            "minItems": 1,
            "items": _TEXT,
            "x-message": "field 'provides' must be a non-empty list of paths",
        },
        "instructions": {"type": "string", "pattern": r"\S"},
    },
    "additionalProperties": False,
    "required": ["group", "provides"],
    "if": _kind_is("manual"),
    "then": {
        "required": ["instructions"],
        "properties": {"files": {"maxItems": 0, "x-message": "a manual source has no 'files'"}},
        "x-message": "a manual source needs 'instructions' (what to download and where to put it)",
    },
    "else": {
        "required": ["files"],
        "properties": {
            "files": {"minItems": 1, "items": _FILE_SCHEMA, "x-message": "field 'files' must be a non-empty list"}
        },
    },
}
MANIFEST_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "clip_flant5 data manifest (sources.yaml)",
    "type": "object",
    "required": ["sources"],
    "x-message": "expected a mapping with a non-empty 'sources' mapping",
    "properties": {
        "sources": {
            "type": "object",
            "minProperties": 1,
            "x-message": "expected a mapping with a non-empty 'sources' mapping",
            "propertyNames": {
                "type": "string",
                "pattern": NAME_PATTERN,
                "x-message": "source {value!r}: the name must be lower-case letters, digits and '_'",
            },
            "additionalProperties": _SOURCE_SCHEMA,
        }
    },
}


class SourceError(UserError):
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
    """Read and validate the manifest. Raises ManifestError naming the file, the source, the field and what is
    wrong (every problem the schema finds, one per line)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ManifestError(f"cannot read the data manifest {path}: {err}") from err
    data, inherited = _with_inherited(data)
    if problems := _schema_problems(data, inherited):
        if len(problems) == 1:
            raise ManifestError(f"{path}: {problems[0]}")
        raise ManifestError(f"{path}: {len(problems)} problems:\n  " + "\n  ".join(problems))
    sources = {name: _parse_source(path, name, raw) for name, raw in data["sources"].items()}
    _check_overlaps(path, sources.values())
    return sources


def get_source(sources: dict[str, Source], name: str) -> Source:
    try:
        return sources[name]
    except KeyError:
        raise UnknownSourceError(f"unknown data source {name!r}; valid: {', '.join(sources)}") from None


def _with_inherited(data) -> tuple[object, set[tuple]]:
    """The manifest with each file's INHERITED fields filled in from its source where the file lacks them, and
    the (source, file index, field) that were, whose errors are reported once, on the source. Anything not
    shaped as expected is left as it is, for the schema to report."""
    inherited = set()
    if not isinstance(data, dict) or not isinstance(data.get("sources"), dict):
        return data, inherited
    sources = {}
    for name, source in data["sources"].items():
        if isinstance(source, dict) and isinstance(source.get("files"), list):
            files = []
            for index, file in enumerate(source["files"]):
                if isinstance(file, dict):
                    given = {key: source[key] for key in INHERITED if key in source and key not in file}
                    inherited.update((name, index, key) for key in given)
                    file = {**given, **file}
                files.append(file)
            source = {**source, "files": files}
        sources[name] = source
    return {**data, "sources": sources}, inherited


def _schema_problems(data, inherited: set[tuple]) -> list[str]:
    """The MANIFEST_SCHEMA errors of `data`, each as "source 'x': files[i] (name): what is wrong", in order."""
    from jsonschema import Draft202012Validator  # here: importing the module stays cheap for the CLI

    sources = data.get("sources") if isinstance(data, dict) else None
    order = {name: i for i, name in enumerate(sources)} if isinstance(sources, dict) else {}
    problems = []
    for error in Draft202012Validator(MANIFEST_SCHEMA).iter_errors(data):
        where = list(error.absolute_path)
        if len(where) >= 5 and where[2] == "files" and (where[1], where[3], where[4]) in inherited:
            continue  # the source's own value: reported (once) where it is set
        name = where[1] if len(where) > 1 else error.instance if isinstance(error.instance, str) else None
        rank = (order.get(name, -1), len(where), [str(k) for k in where])  # in file order, a source before its files
        for message in _messages(error):
            problems.append((rank, _location(data, where) + message))
    return list(dict.fromkeys(text for _, text in sorted(problems)))


def _location(data, where: list) -> str:
    """ "source 'a': files[0] (a.zip): " for a path into the manifest (empty for the top level)."""
    parts = []
    if len(where) >= 2:
        parts.append(f"source {where[1]!r}: ")
    if len(where) >= 4 and where[2] == "files":
        file = data["sources"][where[1]]["files"][where[3]]
        name = file.get("name", "?") if isinstance(file, dict) else "?"
        parts.append(f"files[{where[3]}] ({name}): ")
    return "".join(parts)


def _field(where: list) -> str:
    """The field a path ends in: 'group', or 'provides' item 0."""
    keys = where[4:] if len(where) >= 4 and where[2] == "files" else where[2:]
    if not keys:
        return "the entry"
    text = f"field {keys[0]!r}"
    return text + "".join(f" item {k}" for k in keys[1:])


_TYPE_NAMES = {"string": "a string", "array": "a list", "object": "a mapping", "integer": "an integer"}


def _messages(error) -> list[str]:
    """What is wrong, in words: the subschema's x-message, or one made from the failed keyword."""
    where, value, keyword = list(error.absolute_path), error.instance, error.validator
    if keyword == "required":
        missing = [key for key in error.validator_value if key not in value]
        special = error.schema.get("x-message-required", {})
        template = error.schema.get("x-message", "field {missing!r} is missing")
        return [special.get(key) or template.format(missing=key) for key in missing]
    if keyword == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(str(key) for key in value if key not in error.schema.get("properties", {}))
        return [f"unknown field(s) {unknown}; allowed: {allowed}"]
    field = _field(where)
    if "x-message" in error.schema:
        return [error.schema["x-message"].format(value=value)]
    if keyword == "enum":
        allowed = ", ".join(repr(v) for v in error.validator_value)
        return [f"{field} must be one of {allowed}, got {value!r}"]
    if keyword == "type":
        return [f"{field} must be {_TYPE_NAMES.get(error.validator_value, error.validator_value)}, got {value!r}"]
    return [f"{field}: {error.message}"]


def _parse_source(path: Path, name: str, raw: dict) -> Source:
    """The Source of a schema-valid entry, after the checks a schema cannot make (paths, names, `provides`)."""

    def fail(msg: str):
        raise ManifestError(f"{path}: source {name!r}: {msg}")

    provides = raw["provides"]
    for p in provides:
        if _bad_relpath(p):
            fail(f"field 'provides': {p!r} must be a relative path without '..'")
    files = tuple(_parse_file(fail, i, f) for i, f in enumerate(raw.get("files") or ()))
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        fail(f"file names must be unique, got {names}")
    dests = [PurePosixPath(f.dest) for f in files]
    for p in provides:
        if files and not any(_within(PurePosixPath(p), d) for d in dests):
            fail(f"field 'provides': {p!r} is not under any file's 'dest' {[f.dest for f in files]}")
    return Source(
        name=name,
        group=raw["group"],
        kind=raw.get("kind") or files[0].kind,
        files=files,
        provides=tuple(provides),
        description=str(raw.get("description") or ""),
        instructions=raw.get("instructions"),
        note=raw.get("note"),
    )


def _parse_file(fail, index: int, values: dict) -> FileSpec:
    """The FileSpec of a schema-valid file entry (its source's INHERITED fields filled in)."""
    label = f"files[{index}] ({values['name']})"
    if _bad_relpath(values["dest"]):
        fail(f"{label}: field 'dest' must be a relative path without '..'")
    sizes = {}
    if values.get("size") is not None:
        sizes["size"] = values["size"]
    if values.get("approx_size") is not None:
        sizes["approx_size"] = _parse_size(values["approx_size"])
        if sizes["approx_size"] <= 0:  # "0 GB": the pattern's number may still be zero
            fail(f"{label}: field 'approx_size' must be a positive number of bytes")
    kind, name = values["kind"], values["name"]
    filename = values.get("filename") or (name if kind == "huggingface" or values.get("folder") else None)
    return FileSpec(
        name=name,
        kind=kind,
        dest=str(PurePosixPath(values["dest"])),
        url=values.get("url"),
        id=values.get("id"),
        folder=values.get("folder"),
        repo=values.get("repo"),
        repo_type=values.get("repo_type"),
        filename=filename,
        revision=values.get("revision"),
        unpack=None if values.get("unpack") in (None, "none") else values["unpack"],
        strip_top_level=values.get("strip_top_level"),
        note=values.get("note"),
        **sizes,
    )


def _parse_size(value) -> int:
    if isinstance(value, str):
        number, unit = SIZE_RE.match(value).groups()
        return int(float(number) * SIZE_UNITS[unit.lower()])
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
        write_json(path, body, fsync=True)  # the lock must survive a crash


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
