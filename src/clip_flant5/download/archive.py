"""Safe unpacking: `unpack_archive` extracts into a temp folder, refuses unsafe members, verifies every member
and the `provides` paths, and only then renames the folder into place."""

from __future__ import annotations

import lzma
import os
import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from ..atomic import write_json
from ..sources import join_rel
from .errors import CorruptArchiveError, UnpackError, UnsafeArchiveError
from .files import _read_json, sha256_file

UNPACK_STAMP = ".clip_flant5-unpack.json"  # inside <dest>.unpack-tmp: which archive (sha256) it is extracting
TAR_MODES = {"tar": "r:", "tar.gz": "r:gz", "tgz": "r:gz", "tar.bz2": "r:bz2", "tar.xz": "r:xz"}


def _member_path(archive: Path, name: str) -> str | None:
    """The normalised relative path of an archive member; None for entries to skip. Refuses absolute paths and
    '..' (path traversal)."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or (len(raw) > 2 and raw[0].isalpha() and raw[1:3] == ":/"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to unpack")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} points outside the archive ('..'); refusing to unpack")
    if not parts or parts[0] == "__MACOSX":  # macOS resource forks: not content
        return None
    return "/".join(parts)


def _write_member(target: Path, size: int, opener: Callable) -> None:
    """Extract one file unless a resumed run already did (right size). Written under a temp name and renamed, so a
    file with its final name is always complete."""
    if target.is_file() and target.stat().st_size == size:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    with opener() as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    os.replace(tmp, target)


def _extract(archive: Path, fmt: str, into: Path | None) -> tuple[dict[str, int], set[str]]:
    """Extract into `into` (None: only list). Returns {file path: size} and the set of directory paths."""
    files, dirs = {}, set()
    try:
        if fmt == "zip":
            with zipfile.ZipFile(archive) as zf:
                infos = [(i, _member_path(archive, i.filename)) for i in zf.infolist()]  # check all before writing
                for info, rel in infos:
                    if rel is None:
                        continue
                    if info.is_dir():
                        dirs.add(rel)
                        continue
                    files[rel] = info.file_size
                    if into is not None:  # zf.open checks each member's CRC as it is read
                        _write_member(into / rel, info.file_size, lambda i=info: zf.open(i))
        else:
            with tarfile.open(archive, TAR_MODES[fmt]) as tf:
                for m in tf:
                    rel = _member_path(archive, m.name)
                    if rel is None:
                        continue
                    if m.isdir():
                        dirs.add(rel)
                        continue
                    if not m.isfile():
                        raise UnsafeArchiveError(
                            f"{archive}: member {m.name!r} is a link or a special file; refusing to unpack"
                        )
                    files[rel] = m.size
                    if into is not None:
                        _write_member(into / rel, m.size, lambda m=m: tf.extractfile(m))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise  # a real I/O error (disk full, permissions): not the archive's fault
        raise CorruptArchiveError(f"{archive} is not a valid {fmt} archive or is corrupt: {err}") from err
    for rel in list(files) + list(dirs):  # parent folders are implied by their members
        dirs.update(str(p) for p in PurePosixPath(rel).parents if str(p) != ".")
    return files, dirs


def _tree(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath, n)
            out[p.relative_to(root).as_posix()] = p.stat().st_size
    return out


def _top_level(files: dict[str, int], dirs: set[str]) -> list[str]:
    tops = {p.split("/", 1)[0] for p in files} | {d.split("/", 1)[0] for d in dirs}
    return sorted(t + "/" if t in dirs else t for t in tops)


def _strip(archive: Path, files: dict, dirs: set, strip: str | None) -> str | None:
    """The top-level folder whose content becomes the destination (None: the archive's root)."""
    tops = _top_level(files, dirs)
    if strip is None:
        return None
    if strip == "auto":
        return tops[0][:-1] if len(tops) == 1 and tops[0].endswith("/") else None
    if tops != [strip + "/"]:
        raise UnpackError(
            f"{archive} was expected to hold a single top-level folder {strip + '/'!r} but holds: "
            f"{_preview(tops)}; fix 'strip_top_level' in the manifest"
        )
    return strip


def _preview(names: list[str], limit: int = 20) -> str:
    more = f" ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def unpack_archive(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    fmt: str,
    strip_top_level: str | None = None,
    provides: tuple[str, ...] = (),
    stamp: str | None = None,
    replace_existing: bool = False,
) -> Path:
    """Unpack `archive` so that its content (without the stripped top-level folder) becomes the folder `dest`.

    Extracts into `<dest>.unpack-tmp` (a rerun after a kill reuses the members already extracted with the right
    size if the temp folder belongs to the same archive, `stamp` = its sha256, and otherwise starts it afresh),
    checks that the extracted files are exactly the archive's members with their sizes and that `provides`
    (relative to `dest`) exist, then renames it into place. An existing `dest` is replaced only with
    `replace_existing` (it was unpacked by us); otherwise it is kept if it already matches the archive, and
    refused if not. Raises UnsafeArchiveError (absolute or '..' members, links) or UnpackError."""
    archive, dest = Path(archive), Path(dest)
    tmp, old = dest.with_name(dest.name + ".unpack-tmp"), dest.with_name(dest.name + ".unpack-old")
    if old.exists():
        shutil.rmtree(old)  # a previous run died while swapping folders
    stamp_data = {"archive": archive.name, "sha256": stamp or sha256_file(archive).sha256}
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()  # an empty folder holds nothing to protect
    if dest.exists() and not replace_existing:
        _adopt_existing(archive, dest, fmt, strip_top_level, provides)
        shutil.rmtree(tmp, ignore_errors=True)
        return dest
    if tmp.exists() and _read_json(tmp / UNPACK_STAMP) != stamp_data:
        shutil.rmtree(tmp)  # left by another archive (or version): never mix
    tmp.mkdir(parents=True, exist_ok=True)
    write_json(tmp / UNPACK_STAMP, stamp_data, fsync=True)
    for leftover in tmp.rglob("*.partial"):
        leftover.unlink()
    try:
        files, dirs = _extract(archive, fmt, tmp)
    except UnsafeArchiveError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    found = _tree(tmp)
    found.pop(UNPACK_STAMP, None)
    _verify_members(archive, files, found, tmp)
    top = _strip(archive, files, dirs, strip_top_level)
    root = tmp / top if top else tmp
    for d in dirs:  # empty folders of the archive
        (tmp / d).mkdir(parents=True, exist_ok=True)
    if missing := [p for p in provides if not join_rel(root, p).exists()]:
        raise UnpackError(
            f"after unpacking {archive}, missing {missing} (expected under {dest}). The archive holds "
            f"{len(files)} files; its top level: {_preview(_top_level(files, dirs))}. Fix 'dest', "
            f"'strip_top_level' or 'provides' in the manifest; {tmp} is kept and reused."
        )
    (tmp / UNPACK_STAMP).unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(root, dest)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _verify_members(archive: Path, files: dict[str, int], found: dict[str, int], tmp: Path) -> None:
    missing = sorted(set(files) - set(found))
    extra = sorted(set(found) - set(files))
    wrong = sorted(p for p in set(files) & set(found) if files[p] != found[p])
    if missing or extra or wrong:
        shutil.rmtree(tmp, ignore_errors=True)  # so that a rerun starts cleanly
        raise UnpackError(
            f"unpacking {archive} gave {len(found)} files for its {len(files)} members "
            f"(missing: {_preview(missing, 5) or 'none'}; not in the archive: "
            f"{_preview(extra, 5) or 'none'}; wrong size: {_preview(wrong, 5) or 'none'}); "
            "the temp folder was removed, rerun to unpack again"
        )


def _adopt_existing(archive: Path, dest: Path, fmt: str, strip: str | None, provides) -> None:
    """`dest` exists but we did not unpack it (a run killed right after the final rename, or data the user already
    had): keep it if it holds every member with its size, refuse otherwise (never delete someone's files)."""
    files, dirs = _extract(archive, fmt, None)
    top = _strip(archive, files, dirs, strip)
    prefix = top + "/" if top else ""
    bad = []
    for rel, size in files.items():
        p = dest / rel[len(prefix) :]
        if not p.is_file() or p.stat().st_size != size:
            bad.append(rel)
    bad += [p for p in provides if not join_rel(dest, p).exists()]
    if bad:
        raise UnpackError(
            f"{dest} already exists but does not match {archive} ({len(bad)} of {len(files)} members "
            f"missing or of another size, e.g. {_preview(sorted(bad), 3)}); it was not unpacked by this "
            "tool: move it away or delete it, then rerun"
        )
