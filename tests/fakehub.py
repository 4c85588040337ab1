"""A Hugging Face Hub on loopback, in the layout huggingface_hub's snapshot_download reads: repository info
(`/api/models/<repo>/revision/<rev>`), the file tree at a commit, and `/<repo>/resolve/<commit>/<file>`.

Repositories keep every commit pushed to them, so a locked old commit stays downloadable after a branch moves.
Every request is recorded (`requests`), and `offline()` makes the server refuse all of them: what a compute
node without network sees.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict] = {}  # repo -> {"refs": {name: commit}, "commits": {commit: {file: bytes}}}
        self.requests: list[tuple[str, str]] = []
        self.refusing = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def push(self, repo: str, files: dict[str, bytes], branch: str = "main") -> str:
        """A new commit of `repo` holding exactly `files`; `branch` moves to it. Returns the commit hash."""
        digest = hashlib.sha1(repo.encode())
        for name, data in sorted(files.items()):
            digest.update(name.encode() + hashlib.sha1(data).digest())
        entry = self.repos.setdefault(repo, {"refs": {}, "commits": {}})
        digest.update(str(len(entry["commits"])).encode())
        commit = digest.hexdigest()
        entry["commits"][commit] = dict(files)
        entry["refs"][branch] = commit
        return commit

    def offline(self, refusing: bool = True) -> None:
        self.refusing = refusing

    def model_requests(self) -> list[tuple[str, str]]:
        """Requests that concern a repository (huggingface_hub also pings a telemetry endpoint on start)."""
        return [r for r in self.requests if "/resolve/" in r[1] or r[1].startswith("/api/models/")]

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _files(self, repo: str, rev: str) -> tuple[str, dict[str, bytes]] | None:
        entry = self.repos.get(repo)
        if entry is None:
            return None
        commit = entry["refs"].get(rev, rev)
        files = entry["commits"].get(commit)
        return None if files is None else (commit, files)


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self._route(head=True)

        def do_GET(self):
            self._route(head=False)

        def _send(self, code: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
            self.send_response(code)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, data, head: bool):
            self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"}, head)

        def _route(self, head: bool):
            hub.requests.append((self.command, self.path))
            if hub.refusing:
                self.close_connection = True
                self.connection.close()  # no answer at all, as an unreachable network
                return
            path = unquote(urlparse(self.path).path)
            if m := re.fullmatch(r"/api/models/(.+?)/revision/(.+)", path):
                found = hub._files(m[1], m[2])
                if found is None:
                    return self._not_found(m[1], m[2], head)
                commit, files = found
                return self._json({"id": m[1], "sha": commit, "siblings": [{"rfilename": f} for f in files]}, head)
            if m := re.fullmatch(r"/api/models/(.+?)/tree/([^/]+)(/.*)?", path):
                found = hub._files(m[1], m[2])
                if found is None:
                    return self._not_found(m[1], m[2], head)
                tree = [{"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                        for f, b in found[1].items()]  # fmt: skip
                return self._json(tree, head)
            if m := re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path):
                found = hub._files(m[1], m[2])
                if found is None or m[3] not in found[1]:
                    return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, head)
                data = found[1][m[3]]
                headers = {"X-Repo-Commit": found[0], "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                           "Content-Type": "application/octet-stream"}  # fmt: skip
                return self._send(200, data, headers, head)
            self._send(404, b"", head=head)

        def _not_found(self, repo: str, rev: str, head: bool):
            code = "RevisionNotFound" if repo in hub.repos else "RepoNotFound"
            body = json.dumps({"error": f"{code}: {repo}@{rev}"}).encode()
            self._send(404, body, {"X-Error-Code": code, "Content-Type": "application/json"}, head)

    return Handler
