"""Downloads, lock verification and unpacking against a real HTTP server on 127.0.0.1 with injected faults.

Every failure test also checks that nothing corrupted is left where it would be used: the destination does not
exist, and a rejected file sits in `<dest>.bad`.
"""

import hashlib
import http.server
import io
import json
import random
import socket
import struct
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from clip_flant5 import download
from clip_flant5.download import (
    ChecksumError,
    CorruptArchiveError,
    DownloadError,
    DownloadTimeout,
    FetchOptions,
    HTTPStatusError,
    ManualDownloadRequired,
    NotAFileError,
    SizeMismatchError,
    UnpackError,
    UnsafeArchiveError,
    download_url,
    fetch_source,
    iter_status_lines,
    lock_status,
    marker_path,
    unpack_archive,
)
from clip_flant5.errors import UserError
from clip_flant5.sources import LockEntry, read_lock, update_lock

DATA = random.Random(0).randbytes(3 << 20)  # 3 MiB
FAST = FetchOptions(read_timeout=2.0, total_timeout=20.0, retries=3, backoff=0.01, max_backoff=0.05,
                    chunk_size=64 << 10, progress=False)  # fmt: skip


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- the server


@dataclass
class Faults:
    status: int | None = None  # answer every request with this status
    fail_first: int = 0  # the first N requests get a 500
    drops: int = 0  # the first N bodies are cut by a connection reset ...
    drop_after: int = 0  # ... after this many bytes
    truncations: int = 0  # the first N bodies stop early with a clean close (Content-Length stays full) ...
    truncate_after: int = 0  # ... after this many bytes
    ignore_range: bool = False
    corrupt: bool = False  # flip one byte in the middle
    piece: int = 64 << 10  # bytes per write
    delay: float = 0.0  # sleep after each write (slow trickle)
    stalls: int = 0  # the first N bodies pause `stall` seconds after `stall_after` bytes
    stall: float = 0.0
    stall_after: int = 0
    content_type: str = "application/octet-stream"


@dataclass
class Server:
    url: str
    files: dict
    faults: Faults
    log: list = field(default_factory=list)
    redirects: dict = field(default_factory=dict)  # path -> where a 302 sends it

    def requests(self, path: str) -> list[dict]:
        return [r for r in self.log if r["path"] == path]


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        srv: Server = self.server.state
        f = srv.faults
        rec = {"path": self.path, "range": self.headers.get("Range"), "status": None, "sent": 0}
        srv.log.append(rec)
        n = len(srv.requests(self.path))
        if self.path in srv.redirects:
            rec["status"] = 302
            self.send_response(302)
            self.send_header("Location", srv.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = srv.files.get(self.path)
        if f.status or data is None or n <= f.fail_first:
            rec["status"] = f.status or (404 if data is None else 500)
            self.send_error(rec["status"])
            return
        if f.corrupt:
            data = data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 1]) + data[len(data) // 2 + 1 :]
        start, status = 0, 200
        if rec["range"] and not f.ignore_range:
            start = int(rec["range"].removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                rec["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        rec["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", f.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"v1"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        limit = len(body)
        if n <= f.drops:
            limit = min(limit, f.drop_after)
        if n <= f.truncations:
            limit = min(limit, f.truncate_after)
        stall = n <= f.stalls
        try:
            while rec["sent"] < limit:
                if stall and rec["sent"] >= f.stall_after:
                    time.sleep(f.stall)
                    stall = False
                end = min(limit, rec["sent"] + f.piece, f.stall_after if stall else limit)
                self.wfile.write(body[rec["sent"] : end])
                rec["sent"] = end
                if f.delay:
                    time.sleep(f.delay)
        except OSError:  # the client gave up (timeout)
            return
        if n <= f.drops and limit < len(body):  # a reset, not a clean close
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.handle_error = lambda *args: None  # resets and client timeouts are the point here
    httpd.state = Server(f"http://127.0.0.1:{httpd.server_address[1]}", {"/data.bin": DATA}, Faults())
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()


def assert_nothing_accepted(dest: Path):
    assert not dest.exists()


# ---------------------------------------------------------------- download_url


def test_download_writes_exact_bytes_and_returns_hash(server, tmp_path):
    dest = tmp_path / "d" / "data.bin"
    entry = download_url(server.url + "/data.bin", dest, options=FAST)
    assert dest.read_bytes() == DATA
    assert entry == LockEntry(sha(DATA), len(DATA))
    assert not dest.with_name("data.bin.part").exists() and not dest.with_name("data.bin.part.json").exists()


def test_resume_sends_range_and_appends_only_the_rest(server, tmp_path):
    dest = tmp_path / "data.bin"
    dest.with_name("data.bin.part").write_bytes(DATA[: 1 << 20])
    download_url(server.url + "/data.bin", dest, options=FAST, expected_sha256=sha(DATA))
    assert dest.read_bytes() == DATA
    [req] = server.log
    assert req["range"] == f"bytes={1 << 20}-" and req["status"] == 206
    assert req["sent"] == len(DATA) - (1 << 20)  # only the missing bytes travelled


def test_truncated_body_is_resumed_not_accepted(server, tmp_path):
    server.faults = Faults(truncations=1, truncate_after=1_000_000)
    dest = tmp_path / "data.bin"
    download_url(server.url + "/data.bin", dest, options=FAST)
    assert dest.read_bytes() == DATA
    first, second = server.log
    assert first["range"] is None and first["sent"] == 1_000_000
    assert second["range"] == "bytes=1000000-" and second["status"] == 206
    assert first["sent"] + second["sent"] == len(DATA)


def test_connection_reset_mid_body_is_resumed(server, tmp_path):
    server.faults = Faults(drops=2, drop_after=700_000)
    dest = tmp_path / "data.bin"
    download_url(server.url + "/data.bin", dest, options=FAST)
    assert dest.read_bytes() == DATA
    assert len(server.log) == 3 and server.log[0]["range"] is None
    starts = [int(r["range"].split("=")[1].rstrip("-")) for r in server.log[1:]]
    assert 0 < starts[0] < starts[1]  # each retry resumed where the file ended, never from zero


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.faults = Faults(ignore_range=True)
    dest = tmp_path / "data.bin"
    dest.with_name("data.bin.part").write_bytes(b"\0" * 500_000)  # a prefix that must not survive
    download_url(server.url + "/data.bin", dest, options=FAST)
    assert dest.read_bytes() == DATA
    [req] = server.log
    assert req["range"] == "bytes=500000-" and req["status"] == 200


def test_truncation_then_ignored_range_restarts_cleanly(server, tmp_path):
    server.faults = Faults(truncations=1, truncate_after=1_000_000, ignore_range=True)
    dest = tmp_path / "data.bin"
    download_url(server.url + "/data.bin", dest, options=FAST, expected_sha256=sha(DATA))
    assert dest.read_bytes() == DATA
    assert [r["status"] for r in server.log] == [200, 200]


def test_5xx_is_retried(server, tmp_path):
    server.faults = Faults(fail_first=2)
    dest = tmp_path / "data.bin"
    download_url(server.url + "/data.bin", dest, options=FAST)
    assert dest.read_bytes() == DATA
    assert [r["status"] for r in server.log] == [500, 500, 200]


def test_5xx_gives_up_after_the_retries(server, tmp_path):
    server.faults = Faults(fail_first=100)
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match=r"giving up on http://127\.0\.0\.1:\d+/data\.bin .*HTTP 500"):
        download_url(server.url + "/data.bin", dest, options=FAST)
    assert len(server.log) == FAST.retries + 1
    assert_nothing_accepted(dest)


def test_404_fails_at_once_naming_url_and_status(server, tmp_path):
    dest = tmp_path / "gone.bin"
    with pytest.raises(HTTPStatusError, match=r"HTTP 404 .*/gone\.bin") as info:
        download_url(server.url + "/gone.bin", dest, options=FAST)
    assert info.value.status == 404 and len(server.log) == 1
    assert_nothing_accepted(dest)
    assert not dest.with_name("gone.bin.part").exists()


def test_416_for_a_complete_part_finishes_it(server, tmp_path):
    dest = tmp_path / "data.bin"
    dest.with_name("data.bin.part").write_bytes(DATA)
    entry = download_url(server.url + "/data.bin", dest, options=FAST)
    assert dest.read_bytes() == DATA and entry.sha256 == sha(DATA)
    assert [r["status"] for r in server.log] == [416]


def test_416_for_a_part_longer_than_the_file_restarts(server, tmp_path):
    dest = tmp_path / "data.bin"
    dest.with_name("data.bin.part").write_bytes(DATA + b"junk")
    download_url(server.url + "/data.bin", dest, options=FAST)
    assert dest.read_bytes() == DATA
    assert [r["status"] for r in server.log] == [416, 200]


def test_wrong_bytes_are_rejected_and_moved_aside(server, tmp_path):
    server.faults = Faults(corrupt=True)
    dest = tmp_path / "data.bin"
    with pytest.raises(ChecksumError) as info:
        download_url(server.url + "/data.bin", dest, options=FAST, expected_sha256=sha(DATA), label="src/data.bin")
    served = dest.with_name("data.bin.bad").read_bytes()
    assert served != DATA and len(served) == len(DATA)
    message = str(info.value)
    assert "src/data.bin" in message and sha(DATA) in message and sha(served) in message
    assert_nothing_accepted(dest)
    assert not dest.with_name("data.bin.part").exists()


def test_expected_size_mismatch_stops_before_downloading(server, tmp_path):
    dest = tmp_path / "data.bin"
    with pytest.raises(SizeMismatchError, match="changed upstream"):
        download_url(server.url + "/data.bin", dest, options=FAST, expected_size=len(DATA) + 1)
    assert_nothing_accepted(dest)


def test_slow_trickle_within_the_timeouts_succeeds(server, tmp_path):
    server.files["/small.bin"] = DATA[:64_000]
    server.faults = Faults(piece=4000, delay=0.005)
    dest = tmp_path / "small.bin"
    download_url(server.url + "/small.bin", dest, options=FAST)
    assert dest.read_bytes() == DATA[:64_000]


def test_stall_beyond_the_read_timeout_is_retried_with_range(server, tmp_path):
    server.faults = Faults(stalls=1, stall=1.0, stall_after=300_000)
    dest = tmp_path / "data.bin"
    options = FetchOptions(**{**FAST.__dict__, "read_timeout": 0.2})
    download_url(server.url + "/data.bin", dest, options=options)
    assert dest.read_bytes() == DATA
    assert server.log[1]["range"] == "bytes=300000-"


def test_total_timeout_keeps_the_part_for_a_rerun(server, tmp_path):
    server.faults = Faults(piece=16_000, delay=0.02)
    dest = tmp_path / "data.bin"
    options = FetchOptions(**{**FAST.__dict__, "total_timeout": 0.3})
    with pytest.raises(DownloadTimeout, match="rerun to resume"):
        download_url(server.url + "/data.bin", dest, options=options)
    assert_nothing_accepted(dest)
    kept = dest.with_name("data.bin.part").stat().st_size
    assert 0 < kept < len(DATA)
    server.faults = Faults()
    download_url(server.url + "/data.bin", dest, options=FAST)
    assert dest.read_bytes() == DATA
    assert server.log[-1]["range"] == f"bytes={kept}-"


def test_html_page_instead_of_the_file_is_refused(server, tmp_path):
    server.files["/uc"] = b"<!DOCTYPE html><html>Google Drive - quota exceeded</html>"
    server.faults = Faults(content_type="text/html; charset=utf-8")
    dest = tmp_path / "winoground.zip"
    with pytest.raises(NotAFileError, match=r"HTML page .*put it at /some/where"):
        download_url(server.url + "/uc", dest, options=FAST, manual_hint="Fetch it by hand and put it at /some/where")
    assert_nothing_accepted(dest)
    assert not dest.with_name("winoground.zip.part").exists()
    server.faults = Faults(content_type="application/octet-stream")  # the page itself gives it away
    with pytest.raises(NotAFileError):
        download_url(server.url + "/uc", dest, options=FAST)
    assert_nothing_accepted(dest)


def test_redirects_are_followed_without_using_up_the_retries(server, tmp_path):
    server.redirects = {"/uc": "/hop", "/hop": server.url + "/data.bin"}  # as Drive's download links do
    dest = tmp_path / "data.bin"
    download_url(server.url + "/uc", dest, options=FetchOptions(**{**FAST.__dict__, "retries": 0}))
    assert dest.read_bytes() == DATA
    assert [(r["path"], r["status"]) for r in server.log] == [("/uc", 302), ("/hop", 302), ("/data.bin", 200)]


def test_refused_connections_give_up_naming_the_url_and_what_to_do(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/data.bin"
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError) as info:
        download_url(url, dest, options=FAST, manual_hint="Or fetch it by hand.")
    message = str(info.value)
    assert message.startswith(f"giving up on {url} after {FAST.retries + 1} failed attempts; last error: ")
    assert "Connection refused" in message and message.endswith("Rerun to resume from byte 0. Or fetch it by hand.")
    assert isinstance(info.value, UserError)  # the CLI: one line with what to do, exit status 2
    assert_nothing_accepted(dest)


def test_a_retry_wait_past_the_total_timeout_ends_the_download_at_once(server, tmp_path):
    server.faults = Faults(fail_first=100)
    options = FetchOptions(**{**FAST.__dict__, "backoff": 30.0, "max_backoff": 30.0, "total_timeout": 5.0})
    start = time.monotonic()
    with pytest.raises(DownloadTimeout, match="rerun to resume"):
        download_url(server.url + "/data.bin", tmp_path / "data.bin", options=options)
    assert time.monotonic() - start < 4 and len(server.log) == 1  # not a 30 s sleep inside urllib3 first


def test_the_proxy_of_the_environment_is_used(server, tmp_path, monkeypatch):
    with socket.socket() as s:  # where nothing listens: only the proxy can answer for it
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/data.bin"
    for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", server.url)  # the test server plays the proxy: it is asked for the full URL
    server.files[url] = DATA
    dest = tmp_path / "data.bin"
    download_url(url, dest, options=FAST)
    assert dest.read_bytes() == DATA and [r["path"] for r in server.log] == [url]
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with pytest.raises(DownloadError, match="Connection refused"):  # no proxy for it: asked directly
        download_url(url, tmp_path / "direct.bin", options=FAST)
    assert len(server.log) == 1


# ---------------------------------------------------------------- archives


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, members: dict[str, bytes], mode="w:gz", links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return path


MEMBERS = {"pics/a.png": b"a" * 1000, "pics/sub/b.png": b"b" * 2000, "pics/c.txt": b"c"}


def test_unpack_zip_with_a_known_top_level_folder(tmp_path):
    archive = make_zip(tmp_path / "pics.zip", MEMBERS)
    dest = unpack_archive(archive, tmp_path / "out" / "images", fmt="zip", strip_top_level="pics",
                          provides=("a.png", "sub/b.png"))  # fmt: skip
    assert (dest / "sub" / "b.png").read_bytes() == b"b" * 2000
    assert sorted(p.name for p in dest.rglob("*")) == ["a.png", "b.png", "c.txt", "sub"]
    assert not (tmp_path / "out" / "images.unpack-tmp").exists()


def test_unpack_tar_gz_as_is_and_auto_strip(tmp_path):
    archive = make_tar(tmp_path / "pics.tar.gz", MEMBERS)
    kept = unpack_archive(archive, tmp_path / "kept", fmt="tar.gz", provides=("pics/a.png",))
    assert (kept / "pics" / "c.txt").read_bytes() == b"c"
    stripped = unpack_archive(archive, tmp_path / "stripped", fmt="tgz", strip_top_level="auto")
    assert (stripped / "a.png").exists()
    flat = make_zip(tmp_path / "flat.zip", {"x.json": b"{}", "images/y.png": b"y"})
    flat_dest = unpack_archive(flat, tmp_path / "flat", fmt="zip", strip_top_level="auto", provides=("x.json",))
    assert (flat_dest / "images" / "y.png").exists()  # two top-level entries: nothing stripped


def test_unpack_refuses_path_traversal_and_absolute_members(tmp_path):
    evil = make_zip(tmp_path / "evil.zip", {"ok.txt": b"1", "../evil.txt": b"2"})
    with pytest.raises(UnsafeArchiveError, match=r"\.\./evil\.txt"):
        unpack_archive(evil, tmp_path / "out" / "x", fmt="zip")
    absolute = make_tar(tmp_path / "abs.tar", {"/tmp/abs.txt": b"3"}, mode="w")
    with pytest.raises(UnsafeArchiveError, match="absolute"):
        unpack_archive(absolute, tmp_path / "out" / "y", fmt="tar")
    link = make_tar(tmp_path / "link.tar.gz", {"a.txt": b"4"}, links={"passwd": "/etc/passwd"})
    with pytest.raises(UnsafeArchiveError, match="link"):
        unpack_archive(link, tmp_path / "out" / "z", fmt="tar.gz")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []  # no destination, no temp folder left


def test_unpack_verifies_the_member_count(tmp_path, monkeypatch):
    archive = make_zip(tmp_path / "pics.zip", MEMBERS)
    real = download.archive._write_member
    monkeypatch.setattr(download.archive, "_write_member", lambda t, s, o: None if t.name == "c.txt" else real(t, s, o))
    with pytest.raises(UnpackError, match=r"gave 2 files for its 3 members \(missing: pics/c\.txt"):
        unpack_archive(archive, tmp_path / "images", fmt="zip")
    assert not (tmp_path / "images").exists() and not (tmp_path / "images.unpack-tmp").exists()


def test_unpack_refuses_files_that_are_not_in_the_archive(tmp_path):
    archive = make_zip(tmp_path / "pics.zip", MEMBERS)
    tmp = tmp_path / "images.unpack-tmp"
    tmp.mkdir()
    stamp = {"archive": "pics.zip", "sha256": sha(archive.read_bytes())}
    (tmp / download.UNPACK_STAMP).write_text(json.dumps(stamp))
    (tmp / "pics").mkdir()
    (tmp / "pics" / "stray.txt").write_text("not from this archive")
    with pytest.raises(UnpackError, match=r"not in the archive: pics/stray\.txt"):
        unpack_archive(archive, tmp_path / "images", fmt="zip")
    assert not (tmp_path / "images").exists()
    unpack_archive(archive, tmp_path / "images", fmt="zip")  # the rerun starts cleanly
    assert not (tmp_path / "images" / "pics" / "stray.txt").exists()


def test_unpack_resumes_after_a_kill(tmp_path, monkeypatch):
    archive = make_zip(tmp_path / "pics.zip", MEMBERS)
    tmp = tmp_path / "images.unpack-tmp"
    (tmp / "pics" / "sub").mkdir(parents=True)
    (tmp / download.UNPACK_STAMP).write_text(json.dumps({"archive": "pics.zip", "sha256": sha(archive.read_bytes())}))
    (tmp / "pics" / "a.png").write_bytes(MEMBERS["pics/a.png"])  # finished before the kill
    (tmp / "pics" / "sub" / "b.png.partial").write_bytes(b"b" * 10)  # being written when killed
    (tmp / "pics" / "c.txt").write_bytes(b"")  # wrong size: rewritten
    written = []
    real_copy = download.archive.shutil.copyfileobj
    monkeypatch.setattr(
        download.archive.shutil, "copyfileobj", lambda s, d, n: (written.append(d.name), real_copy(s, d, n))
    )
    dest = unpack_archive(archive, tmp_path / "images", fmt="zip", strip_top_level="pics")
    assert sorted(Path(w).name for w in written) == ["b.png.partial", "c.txt.partial"]  # a.png was reused
    assert {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()} == {
        k.removeprefix("pics/"): v for k, v in MEMBERS.items()
    }


def test_unpack_restarts_a_temp_folder_of_another_archive(tmp_path):
    archive = make_zip(tmp_path / "pics.zip", MEMBERS)
    tmp = tmp_path / "images.unpack-tmp"
    (tmp / "pics").mkdir(parents=True)
    (tmp / download.UNPACK_STAMP).write_text(json.dumps({"archive": "pics.zip", "sha256": "0" * 64}))
    (tmp / "pics" / "a.png").write_bytes(b"X" * 1000)  # right size, other version: must not be reused
    dest = unpack_archive(archive, tmp_path / "images", fmt="zip", strip_top_level="pics")
    assert (dest / "a.png").read_bytes() == b"a" * 1000


def test_unpack_reports_what_the_archive_holds_when_provides_are_missing(tmp_path):
    archive = make_zip(tmp_path / "pics.zip", MEMBERS)
    with pytest.raises(UnpackError, match=r"missing \['images/a\.png'\].*3 files; its top level: pics/"):
        unpack_archive(archive, tmp_path / "dest", fmt="zip", provides=("images/a.png",))
    assert not (tmp_path / "dest").exists()
    with pytest.raises(UnpackError, match=r"single top-level folder 'images/' but holds: pics/"):
        unpack_archive(archive, tmp_path / "dest", fmt="zip", strip_top_level="images")


def test_unpack_keeps_a_matching_existing_folder_and_refuses_a_different_one(tmp_path):
    archive = make_zip(tmp_path / "pics.zip", MEMBERS)
    dest = unpack_archive(archive, tmp_path / "images", fmt="zip", strip_top_level="pics")
    (dest / "extra.txt").write_text("the user's")
    unpack_archive(archive, dest, fmt="zip", strip_top_level="pics")  # adopted: every member is there
    assert (dest / "extra.txt").exists()
    (dest / "a.png").write_bytes(b"short")
    with pytest.raises(UnpackError, match="not unpacked by this tool"):
        unpack_archive(archive, dest, fmt="zip", strip_top_level="pics")
    assert (dest / "a.png").read_bytes() == b"short"  # nothing of the user's was touched
    unpack_archive(archive, dest, fmt="zip", strip_top_level="pics", replace_existing=True)
    assert (dest / "a.png").read_bytes() == b"a" * 1000 and not (dest / "extra.txt").exists()


# ---------------------------------------------------------------- sources: fetch_source, the lock, status

MANIFEST = """
sources:
  blob:
    group: train
    kind: https
    files:
      - {{name: data.bin, url: "{url}/data.bin", dest: blob/data.bin}}
    provides: [blob/data.bin]
  pics:
    group: benchmark
    kind: https
    files:
      - {{name: pics.zip, url: "{url}/pics.zip", unpack: zip, dest: images, strip_top_level: pics}}
      - {{name: meta.tar.gz, url: "{url}/meta.tar.gz", unpack: tar.gz, dest: meta}}
      - {{name: labels.json, url: "{url}/labels.json", dest: labels.json}}
    provides: [images/a.png, meta/info.txt, labels.json]
  tifa:
    group: benchmark
    kind: https
    files:
      - {{name: labels.json, url: "{url}/labels.json", dest: labels.json}}
      - {{name: tifa.zip, url: "{url}/pics.zip", unpack: zip, dest: ., strip_top_level: pics}}
    provides: [labels.json, a.png]
  by_hand:
    group: train
    kind: manual
    instructions: "put the files into {{group_root}}/by_hand"
    provides: [by_hand/x.txt]
  hub:
    group: benchmark
    kind: huggingface
    repo: org/repo
    repo_type: dataset
    files:
      - {{name: x.json, dest: x.json}}
    provides: [x.json]
"""


@pytest.fixture
def setup(server, tmp_path):
    server.files["/pics.zip"] = make_zip(tmp_path / "pics.zip", MEMBERS).read_bytes()
    server.files["/meta.tar.gz"] = make_tar(tmp_path / "meta.tar.gz", {"info.txt": b"info"}).read_bytes()
    server.files["/labels.json"] = b'{"a": 1}'
    manifest = tmp_path / "sources.yaml"
    manifest.write_text(MANIFEST.format(url=server.url))
    lock = tmp_path / "sources.lock.json"
    root = tmp_path / "R"

    def fetch(name, **kwargs):
        return fetch_source(name, root, sources_path=manifest, lock_path=lock, options=FAST, **kwargs)

    return fetch, root, lock, manifest


def test_fetch_source_unpacks_records_the_lock_and_is_idempotent(server, setup):
    fetch, root, lock, _ = setup
    paths = fetch("pics")
    bench = root / "benchmarks" / "pics"
    assert paths == [bench / "images" / "a.png", bench / "meta" / "info.txt", bench / "labels.json"]
    assert (bench / "images" / "sub" / "b.png").read_bytes() == b"b" * 2000
    assert (root / "downloads" / "pics" / "pics.zip").read_bytes() == server.files["/pics.zip"]
    entries = read_lock(lock)
    assert entries["pics/labels.json"] == LockEntry(sha(b'{"a": 1}'), 8)
    assert set(entries) == {"pics/pics.zip", "pics/meta.tar.gz", "pics/labels.json"}
    assert marker_path("pics", root).exists()
    requests = len(server.log)
    assert fetch("pics") == paths
    marker_path("pics", root).unlink()  # without the marker: verified from the state, still no network
    assert fetch("pics") == paths
    assert len(server.log) == requests


def test_fetch_source_verifies_against_the_lock_and_refresh_rewrites_it(server, setup):
    fetch, root, lock, _ = setup
    update_lock(lock, {"blob/data.bin": LockEntry("ab" * 32, len(DATA)), "other/file": LockEntry("cd" * 32, 1)})
    with pytest.raises(ChecksumError) as info:
        fetch("blob")
    message = str(info.value)
    assert "blob/data.bin" in message and "ab" * 32 in message and sha(DATA) in message
    dl = root / "downloads" / "blob"
    assert not (dl / "data.bin").exists() and not (root / "train" / "blob" / "data.bin").exists()
    assert (dl / "data.bin.bad").read_bytes() == DATA
    fetch("blob", refresh_lock=True)
    assert read_lock(lock) == {"blob/data.bin": LockEntry(sha(DATA), len(DATA)), "other/file": LockEntry("cd" * 32, 1)}
    assert (root / "train" / "blob" / "data.bin").read_bytes() == DATA


def test_a_download_changed_on_disk_is_rejected(server, setup):
    fetch, root, lock, _ = setup
    fetch("blob")
    marker_path("blob", root).unlink()
    path = root / "downloads" / "blob" / "data.bin"
    path.unlink()  # broken hard link in place of silent corruption: rewrite the download copy only
    path.write_bytes(DATA[:-1] + b"!")
    with pytest.raises(ChecksumError, match="blob/data.bin"):
        fetch("blob")
    assert not path.exists() and path.with_name("data.bin.bad").exists()
    requests = len(server.log)
    fetch("blob")  # the installed copy was verified when placed: no need to download again
    assert len(server.log) == requests and (root / "train" / "blob" / "data.bin").read_bytes() == DATA
    (root / "train" / "blob" / "data.bin").unlink()
    marker_path("blob", root).unlink()
    fetch("blob")  # neither copy left: downloaded again
    assert path.read_bytes() == DATA and len(server.log) == requests + 1


def test_first_fetch_of_a_corrupt_archive_is_not_locked(server, setup):
    fetch, root, lock, _ = setup
    server.files["/pics.zip"] = b"PK not really a zip"
    with pytest.raises(CorruptArchiveError, match="moved to"):
        fetch("pics")
    assert "pics/pics.zip" not in read_lock(lock)
    assert (root / "downloads" / "pics" / "pics.zip.bad").exists()
    assert not (root / "benchmarks" / "pics" / "images").exists()


def test_plain_files_inside_an_archive_folder_survive_its_replacement(server, setup, tmp_path):
    fetch, root, lock, _ = setup
    bench = root / "benchmarks" / "tifa"
    assert fetch("tifa") == [bench / "labels.json", bench / "a.png"]
    assert (bench / "sub" / "b.png").exists() and (bench / "labels.json").read_bytes() == b'{"a": 1}'
    new_zip = make_zip(tmp_path / "new.zip", {**MEMBERS, "pics/a.png": b"A" * 1000}).read_bytes()
    server.files["/pics.zip"] = new_zip  # a new upstream version, accepted in the lock by a teammate:
    update_lock(lock, {"tifa/tifa.zip": LockEntry(sha(new_zip), len(new_zip))})
    (root / "downloads" / "tifa" / "tifa.zip").unlink()
    fetch("tifa")
    assert (bench / "a.png").read_bytes() == b"A" * 1000  # unpacked again, replacing the folder ...
    assert (bench / "labels.json").read_bytes() == b'{"a": 1}'  # ... and the metadata placed back inside it


def test_fetch_without_unpacking_returns_the_downloads(server, setup):
    fetch, root, lock, _ = setup
    paths = fetch("pics", unpack=False)
    assert [p.name for p in paths] == ["pics.zip", "meta.tar.gz", "labels.json"]
    assert not (root / "benchmarks").exists() and len(read_lock(lock)) == 3


def test_manual_source_explains_and_then_counts_as_present(setup):
    fetch, root, _, _ = setup
    with pytest.raises(ManualDownloadRequired, match=f"put the files into {root / 'train'}/by_hand"):
        fetch("by_hand")
    (root / "train" / "by_hand").mkdir(parents=True)
    (root / "train" / "by_hand" / "x.txt").write_text("1")
    assert fetch("by_hand") == [root / "train" / "by_hand" / "x.txt"]


def test_huggingface_files_go_through_the_hub_cache_and_the_lock(setup, tmp_path, monkeypatch):
    fetch, root, lock, _ = setup
    calls = []

    def fake_hub(repo_id, filename, repo_type, revision, cache_dir):
        calls.append((repo_id, filename, repo_type))
        blob = Path(cache_dir) / "blob"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(b'{"hub": true}')
        return str(blob)

    monkeypatch.setattr(download.hub, "hf_hub_download", fake_hub)
    assert fetch("hub") == [root / "benchmarks" / "hub" / "x.json"]
    assert calls == [("org/repo", "x.json", "dataset")]
    assert read_lock(lock)["hub/x.json"] == LockEntry(sha(b'{"hub": true}'), 13)
    linked = root / "downloads" / "hub" / "x.json", root / "downloads" / ".hf-cache" / "blob"
    assert linked[0].stat().st_ino == linked[1].stat().st_ino  # a hard link, not a second copy
    update_lock(lock, {"hub/x.json": LockEntry("ef" * 32, 13)})
    (root / "downloads" / "hub" / "x.json").unlink()
    with pytest.raises(ChecksumError, match="hub/x.json"):
        fetch("hub")
    assert not (root / "downloads" / "hub" / "x.json").exists()


def test_hub_errors_are_reported_clearly(setup, monkeypatch):
    fetch, _, _, _ = setup

    def missing(**kwargs):
        raise FileNotFoundError("404 entry not found")

    monkeypatch.setattr(download.hub, "hf_hub_download", missing)
    with pytest.raises(DownloadError, match=r"x\.json from the Hugging Face dataset org/repo .*404"):
        fetch("hub")


def test_lock_status_reports_present_partial_and_missing(server, setup):
    fetch, root, lock, manifest = setup
    status = {s.name: s for s in lock_status(root, sources_path=manifest, lock_path=lock)}
    assert {n: s.state for n, s in status.items()} == {n: "missing" for n in ("blob", "pics", "tifa", "by_hand", "hub")}
    fetch("pics")
    (root / "downloads" / "blob").mkdir(parents=True)
    (root / "downloads" / "blob" / "data.bin.part").write_bytes(b"x" * 10)
    status = {s.name: s for s in lock_status(root, sources_path=manifest, lock_path=lock)}
    assert status["pics"].state == "present" and status["pics"].unlocked == []
    assert status["blob"].state == "partial" and status["blob"].files[0].partial_bytes == 10
    assert status["blob"].unlocked == ["data.bin"]
    report = "\n".join(iter_status_lines(list(status.values())))
    assert f"{server.url}/data.bin -> {root / 'downloads' / 'blob' / 'data.bin'}" in report
    assert f"put the files into {root / 'train'}/by_hand" in report


def test_two_processes_cannot_fetch_the_same_source(setup):
    fetch, root, _, _ = setup
    from clip_flant5.sources import folder_lock

    with folder_lock(root / "downloads" / "blob"):
        with pytest.raises(DownloadError, match="already fetching"):
            fetch("blob")
