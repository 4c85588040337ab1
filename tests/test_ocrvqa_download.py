"""OCR-VQA without a person: dataset.json found by name in its Google Drive folder, then the images from its URLs.

Everything runs against a real HTTP server on 127.0.0.1 that serves, per path, good images, dead links, resets,
stalls, truncated bodies and pages instead of images, and counts the requests; the retry waits go to an injected
`sleep`, so no test really waits for a backoff.
"""

import hashlib
import http.server
import io
import json
import socket
import struct
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from clip_flant5 import download
from clip_flant5.download import (
    DatasetFileError,
    FetchOptions,
    FolderEntry,
    HTTPStatusError,
    ImageDownloadsFailed,
    NotInFolderError,
    download_ocrvqa_images,
    fetch_source,
    list_gdrive_folder,
    resolve_gdrive_file,
)
from clip_flant5.sources import read_lock

FAST = FetchOptions(read_timeout=2.0, total_timeout=20.0, retries=2, backoff=0.01, max_backoff=0.05, progress=False)
SLOW = 0.8  # the stalled first answer of /img/slow.jpg, against a read timeout of ...
READ_TIMEOUT = 0.25
FOLDER, FILE_ID = "1_FoLdEr", "1DaTaSeT-json"


def image_bytes(fmt: str, color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (5, 4), color).save(buf, format=fmt)
    return buf.getvalue()


JPEG, GIF, PNG = image_bytes("JPEG", (200, 10, 10)), image_bytes("GIF", (10, 200, 10)), image_bytes("PNG", (1, 2, 3))

# path -> (behaviour, body); flaky behaviours fail on the first request only
PATHS = {
    "/img/a.jpg": ("ok", JPEG),
    "/img/b.gif": ("ok", GIF),
    "/img/c.png": ("ok", PNG),
    "/img/q.jpg": ("ok", JPEG),  # asked with a query string: named by the path's extension
    "/img/gone.jpg": ("status 404", b""),
    "/img/removed.jpg": ("status 410", b""),
    "/img/forbidden.png": ("status 403", b""),
    "/img/page.jpg": ("html", b"<html><body>This image is no longer available</body></html>"),
    "/img/sniff.jpg": ("ok", b"\n<!DOCTYPE html><html>a login page served as image/jpeg</html>"),
    "/img/reset.jpg": ("reset first", JPEG),  # the connection is reset before any response
    "/img/midreset.gif": ("reset mid-body first", GIF),
    "/img/slow.jpg": ("stall first", JPEG),
    "/img/trunc.png": ("truncate first", PNG),  # Content-Length larger than the body, then a clean close
    "/img/busy.gif": ("503 first", GIF),  # with Retry-After: 1
    "/img/down.jpg": ("status 503", b""),  # never recovers
}
GOOD = {"a": ".jpg", "b": ".gif", "c": ".png", "q": ".jpg", "reset": ".jpg", "midreset": ".gif", "slow": ".jpg",
        "trunc": ".png", "busy": ".gif"}  # fmt: skip
DEAD = {"gone": 404, "removed": 410, "forbidden": 403, "page": 200, "sniff": 200}
FLAKY = {"reset", "midreset", "slow", "trunc", "busy"}


def listing(*entries: tuple[str, str, bool]) -> bytes:
    """A folder page laid out as Drive's embeddedfolderview: (title, id, is_folder) per entry."""
    rows = []
    for title, ident, is_folder in entries:
        href = f"https://drive.google.com/drive/folders/{ident}" if is_folder else (
            f"https://drive.google.com/file/d/{ident}/view?usp=drive_web"
        )  # fmt: skip
        rows.append(
            f'<div class="flip-entry" id="entry-{ident}" tabindex="0" role="link"><div class="flip-entry-info">'
            f'<a href="{href}" target="_blank"><div class="flip-entry-thumb"><img src="/icon.png"></div>'
            f'<div class="flip-entry-title">{title}</div></a></div>'
            '<div class="flip-entry-last-modified"><div>Feb 3, 2019</div></div></div>'
        )
    return f"<!DOCTYPE html><html><body><div class='flip-entries'>{''.join(rows)}</div></body></html>".encode()


FOLDERS = {
    FOLDER: listing(("images", "1SuBfOlDeR", True), ("dataset.json", FILE_ID, False),
                    ("loadDataset.py", "1LoAdEr", False), ("notes &amp; README.txt", "1NoTeS", False)),
    "1_EmPtY": b"<!DOCTYPE html><html><body>Sign in to continue</body></html>",
    "1_TwIcE": listing(("dataset.json", "1AaA", False), ("dataset.json", "1BbB", False)),
}  # fmt: skip


@dataclass
class Server:
    url: str
    hits: Counter = field(default_factory=Counter)
    files: dict = field(default_factory=dict)  # extra paths (the Drive download endpoint)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        srv: Server = self.server.state
        parts = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        with srv.lock:
            srv.hits[parts.path] += 1
            first = srv.hits[parts.path] == 1
        if parts.path == "/folder":
            page = FOLDERS.get(query.get("id"))
            return self.send(page, "text/html; charset=utf-8") if page else self.send_error(404)
        if parts.path == "/uc":
            data = srv.files.get(query.get("id"))
            return self.send(data, "application/json") if data else self.send_error(404)
        behaviour, body = PATHS.get(parts.path, ("status 404", b""))
        flaky = behaviour.endswith(" first") and first
        if behaviour.startswith("status "):
            self.send_error(int(behaviour.split()[1]))
        elif behaviour == "html":
            self.send(body, "text/html")
        elif flaky and behaviour == "reset first":
            self.reset()
        elif flaky and behaviour == "reset mid-body first":
            self.send(body, "image/gif", length=len(body), body_bytes=len(body) // 2)
            self.reset()
        elif flaky and behaviour == "stall first":
            time.sleep(SLOW)
            self.send(body, "image/jpeg")
        elif flaky and behaviour == "truncate first":
            self.send(body, "image/png", length=len(body) + 100)
        elif flaky and behaviour == "503 first":
            self.send_response(503)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send(body, "image/jpeg")

    def send(self, body: bytes, content_type: str, length: int | None = None, body_bytes: int | None = None):
        try:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            self.wfile.write(body[:body_bytes])
            self.wfile.flush()
        except OSError:  # the client gave up (read timeout)
            pass

    def reset(self):
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


@pytest.fixture
def server(monkeypatch):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.handle_error = lambda *args: None  # resets and client timeouts are the point here
    httpd.state = Server(f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setattr(download.gdrive, "GDRIVE_FOLDER_URL", httpd.state.url + "/folder?id={id}")
    monkeypatch.setattr(download.fetch, "GDRIVE_URL", httpd.state.url + "/uc?id={id}&export=download&confirm=t")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()


def record(url: str) -> dict:
    return {"imageURL": url, "title": "A Book", "authorName": "Someone", "genre": "Reference", "split": 1,
            "questions": ["Who wrote this book?"], "answers": ["Someone"]}  # fmt: skip


def write_dataset(path: Path, base: str, ids) -> Path:
    data = {}
    for i in ids:
        suffix = GOOD.get(i) or next(p for p in PATHS if p.startswith(f"/img/{i}."))[len(f"/img/{i}") :]
        data[i] = record(f"{base}/img/{i}{suffix}" + ("?v=L" if i == "q" else ""))
    path.write_text(json.dumps(data))
    return path


def body_of(image_id: str) -> bytes:
    return PATHS[f"/img/{image_id}{GOOD[image_id]}"][1]


@pytest.fixture
def run(tmp_path):
    sleeps: list[float] = []
    images, report = tmp_path / "train" / "ocr_vqa" / "images", tmp_path / "ocr_vqa_images.json"

    def go(dataset, **kwargs):
        options = dict(connections=4, retries=3, backoff=0.5, max_backoff=2.0, read_timeout=READ_TIMEOUT,
                       report_path=report, sleep=sleeps.append, progress=False)  # fmt: skip
        return download_ocrvqa_images(dataset, images, **{**options, **kwargs})

    return go, images, report, sleeps


ALL = [*GOOD, *DEAD]


# ---------------------------------------------------------------- the images


def test_images_are_saved_dead_links_reported_and_transient_failures_retried(server, run, tmp_path):
    go, images, report_path, sleeps = run
    dataset = write_dataset(tmp_path / "dataset.json", server.url, ALL)
    report = go(dataset)
    assert sorted(p.name for p in images.iterdir()) == sorted(i + ext for i, ext in GOOD.items())  # no temp files
    for image_id, ext in GOOD.items():
        assert (images / f"{image_id}{ext}").read_bytes() == body_of(image_id), image_id
    assert report["counts"] == {"total": len(ALL), "downloaded": len(GOOD), "already_present": 0,
                                "dead": len(DEAD), "failed": 0, "bad_records": 0}  # fmt: skip
    assert {d["id"]: d["status"] for d in report["dead"]} == DEAD
    dead = {d["id"]: d for d in report["dead"]}
    assert dead["gone"]["reason"] == "HTTP 404 Not Found" and dead["removed"]["reason"] == "HTTP 410 Gone"
    assert "HTML page" in dead["page"]["reason"] and "HTML page" in dead["sniff"]["reason"]
    assert dead["gone"]["url"] == f"{server.url}/img/gone.jpg"
    assert report["failed"] == [] and report["bad_records"] == []
    # each flaky URL was asked twice, everything else once: dead links are never retried
    assert {p.split("/")[-1].split(".")[0]: n for p, n in server.hits.items()} == {
        i: 2 if i in FLAKY else 1 for i in ALL
    }
    assert report["retries"] == len(FLAKY)
    assert sorted(sleeps) == [0.5, 0.5, 0.5, 0.5, 1.0]  # backoff * 2**0 each; Retry-After: 1 for busy.gif
    assert json.loads(report_path.read_text()) == report


def test_a_rerun_resumes_keeps_files_and_skips_known_dead_links(server, run, tmp_path):
    go, images, report_path, _ = run
    dataset = write_dataset(tmp_path / "dataset.json", server.url, ALL)
    go(dataset)
    before = {p.name: p.stat().st_mtime_ns for p in images.iterdir()}
    hits = sum(server.hits.values())
    report = go(dataset)
    assert sum(server.hits.values()) == hits  # nothing fetched, the dead links not asked again
    assert {p.name: p.stat().st_mtime_ns for p in images.iterdir()} == before
    assert report["counts"] == {"total": len(ALL), "downloaded": 0, "already_present": len(GOOD),
                                "dead": len(DEAD), "failed": 0, "bad_records": 0}  # fmt: skip
    assert report["dead_from_previous_report"] == len(DEAD) and {d["id"] for d in report["dead"]} == set(DEAD)
    (images / "b.gif").unlink()
    (images / "c.png").write_bytes(b"")  # an empty file (another tool's leftover) is no image
    report = go(dataset)
    assert report["counts"]["downloaded"] == 2 and report["counts"]["already_present"] == len(GOOD) - 2
    assert (images / "b.gif").read_bytes() == GIF and (images / "c.png").read_bytes() == PNG
    assert server.hits["/img/b.gif"] == 2 and server.hits["/img/a.jpg"] == 1
    report = go(dataset, recheck_dead=True)
    assert server.hits["/img/gone.jpg"] == 2 and report["dead_from_previous_report"] == 0
    assert {d["id"]: d["status"] for d in report["dead"]} == DEAD


def test_exhausted_retries_raise_after_writing_the_report_unless_allowed(server, run, tmp_path):
    go, images, report_path, sleeps = run
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    data = {"a": record(f"{server.url}/img/a.jpg"), "down": record(f"{server.url}/img/down.jpg"),
            "refused": record(f"http://127.0.0.1:{closed}/x.png")}  # fmt: skip
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps(data))
    expected = r"2 of 3 OCR-VQA images could not be downloaded after 2 retries"
    with pytest.raises(ImageDownloadsFailed, match=expected) as info:
        go(dataset, retries=2, backoff=1.0, max_backoff=1.5)
    message = str(info.value)
    assert "Rerun to resume" in message and str(report_path) in message and "1 images in" in message
    report = json.loads(report_path.read_text())
    assert info.value.report == report
    assert report["counts"]["failed"] == 2 and report["counts"]["downloaded"] == 1
    failed = {f["id"]: f for f in report["failed"]}
    assert set(failed) == {"down", "refused"}
    assert "HTTP 503" in failed["down"]["error"] and "Connection refused" in failed["refused"]["error"]
    assert failed["refused"]["url"] == f"http://127.0.0.1:{closed}/x.png"
    assert server.hits["/img/down.jpg"] == 3  # the first attempt and 2 retries
    assert sorted(sleeps) == [1.0, 1.0, 1.5, 1.5]  # 1 * 2**0, then 1 * 2**1 capped at 1.5
    assert (images / "a.jpg").read_bytes() == JPEG
    report = go(dataset, retries=0, allow_failures=True)
    assert report["counts"]["failed"] == 2 and report["counts"]["already_present"] == 1


def test_records_without_a_usable_url_are_counted_never_fetched(server, run, tmp_path):
    go, images, _, _ = run
    data = {
        "a": record(f"{server.url}/img/a.jpg"),
        "no_url": {"title": "x"},
        "number": {"imageURL": 7},
        "blank": record("  "),
        "../evil": record(f"{server.url}/img/a.jpg"),
        "ftp": record("ftp://example.org/x.jpg"),
        "noext": record(f"{server.url}/img/a"),
        "list": ["not", "an", "object"],
    }
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps(data))
    report = go(dataset)
    assert report["counts"]["total"] == 8 and report["counts"]["bad_records"] == 7
    assert report["counts"]["downloaded"] == 1
    reasons = {b["id"]: b["reason"] for b in report["bad_records"]}
    assert list(reasons) == [i for i in data if i != "a"]  # in file order
    assert reasons["no_url"] == reasons["number"] == reasons["blank"] == "no 'imageURL' string"
    assert "not a plain file name" in reasons["../evil"] and "not an http(s) URL" in reasons["ftp"]
    assert "no file extension" in reasons["noext"] and "not an object" in reasons["list"]
    assert sorted(p.name for p in images.iterdir()) == ["a.jpg"] and not (images.parent / "evil.jpg").exists()
    assert dict(server.hits) == {"/img/a.jpg": 1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, r"dataset\.json does not exist: fetch the OCR-VQA dataset\.json first"),
        ("[1, 2]", r"dataset\.json: expected a JSON object of image id -> record .* got a JSON list"),
        ("{not json", r"cannot read .*dataset\.json as JSON"),
    ],
)
def test_a_dataset_file_that_is_not_ocr_vqas_is_an_error_naming_it(run, tmp_path, text, message):
    go, images, report_path, _ = run
    dataset = tmp_path / "dataset.json"
    if text is not None:
        dataset.write_text(text)
    with pytest.raises(DatasetFileError, match=message):
        go(dataset)
    assert not report_path.exists() and not images.exists()


# ---------------------------------------------------------------- the Drive folder


def test_folder_lookup_finds_the_file_id_by_its_title(server):
    assert resolve_gdrive_file(FOLDER, "dataset.json", options=FAST) == FILE_ID
    assert list_gdrive_folder(FOLDER, options=FAST) == [
        FolderEntry("images", None),
        FolderEntry("dataset.json", FILE_ID),
        FolderEntry("loadDataset.py", "1LoAdEr"),
        FolderEntry("notes & README.txt", "1NoTeS"),
    ]
    assert server.hits["/folder"] == 2


def test_folder_lookup_failures_say_what_the_folder_holds_and_what_to_do(server):
    hint = "Fetch it by hand and put it at /data/dataset.json."
    with pytest.raises(NotInFolderError) as info:
        resolve_gdrive_file(FOLDER, "dataset.jsonl", options=FAST, hint=hint)
    message = str(info.value)
    assert f"https://drive.google.com/drive/folders/{FOLDER} has no file named 'dataset.jsonl'" in message
    assert "4 entries: 'images/', 'dataset.json', 'loadDataset.py', 'notes & README.txt'" in message
    assert message.endswith(hint)
    with pytest.raises(NotInFolderError, match=r"no entries at all \(the folder is not public"):
        resolve_gdrive_file("1_EmPtY", "dataset.json", options=FAST)
    with pytest.raises(NotInFolderError, match=r"holds 2 files named 'dataset.json' \(1AaA, 1BbB\)"):
        resolve_gdrive_file("1_TwIcE", "dataset.json", options=FAST)
    with pytest.raises(HTTPStatusError, match=r"HTTP 404 .*/folder\?id=1_NoSuCh"):
        resolve_gdrive_file("1_NoSuCh", "dataset.json", options=FAST)


MANIFEST = """
sources:
  ocr:
    group: train
    kind: gdrive
    files:
      - {{name: dataset.json, folder: {folder}, dest: ocr_vqa/dataset.json}}
    provides: [ocr_vqa/dataset.json]
"""


def test_fetch_source_resolves_the_folder_then_downloads_and_locks_the_file(server, run, tmp_path):
    go, images, _, _ = run
    dataset = write_dataset(tmp_path / "served.json", server.url, ["a", "gone", "busy"]).read_bytes()
    server.files[FILE_ID] = dataset
    manifest, lock, root = tmp_path / "sources.yaml", tmp_path / "sources.lock.json", tmp_path / "R"
    manifest.write_text(MANIFEST.format(folder=FOLDER))
    fetched = fetch_source("ocr", root, sources_path=manifest, lock_path=lock, options=FAST)
    assert fetched == [root / "train" / "ocr_vqa" / "dataset.json"]
    assert fetched[0].read_bytes() == dataset == (root / "downloads" / "ocr" / "dataset.json").read_bytes()
    assert read_lock(lock)["ocr/dataset.json"].sha256 == hashlib.sha256(dataset).hexdigest()
    assert server.hits["/folder"] == 1 and server.hits["/uc"] == 1
    fetch_source("ocr", root, sources_path=manifest, lock_path=lock, options=FAST)
    assert server.hits["/folder"] == 1 and server.hits["/uc"] == 1  # complete: no lookup, no download
    report = go(fetched[0])  # and on to the images, from the fetched file
    assert report["counts"]["downloaded"] == 2 and report["counts"]["dead"] == 1
    assert sorted(p.name for p in images.iterdir()) == ["a.jpg", "busy.gif"]

    manifest.write_text(MANIFEST.format(folder="1_EmPtY"))
    with pytest.raises(NotInFolderError) as info:
        fetch_source("ocr", tmp_path / "R2", sources_path=manifest, lock_path=lock, options=FAST)
    message = str(info.value)
    assert "https://drive.google.com/drive/folders/1_EmPtY (the file 'dataset.json' in that folder)" in message
    assert f"put it at {tmp_path / 'R2' / 'downloads' / 'ocr' / 'dataset.json'}, then rerun" in message
    assert server.hits["/uc"] == 1
