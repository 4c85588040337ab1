"""Google Drive folders: the id of a file known only by its name in a public folder (OCR-VQA's dataset.json).

The folder's embeddable listing (`embeddedfolderview`) is a plain HTML page that needs neither a login nor an API
key: each entry links `https://drive.google.com/file/d/<file id>/view...` and shows its title in an element of class
`flip-entry-title`. That page is not a documented API, so a listing without any entry is reported as such (the
folder is not public, or the page changed format) rather than as a missing file.
"""

from __future__ import annotations

import codecs
import email.message
import http.client
import logging
import re
from dataclasses import dataclass
from html.parser import HTMLParser

import urllib3
from urllib3.exceptions import MaxRetryError

from .errors import DownloadError, HTTPStatusError, NotInFolderError
from .retry import RETRIED_STATUS, Connections, attempts_made, describe, failures
from .transfer import FetchOptions

log = logging.getLogger(__name__)

GDRIVE_FOLDER_URL = "https://drive.google.com/embeddedfolderview?id={id}"  # the listing; tests point it elsewhere
GDRIVE_FOLDER_PAGE = "https://drive.google.com/drive/folders/{id}"  # what a person opens (for messages)
FILE_LINK_RE = re.compile(r"/file/d/([A-Za-z0-9_-]+)")
MAX_PAGE_BYTES = 32 << 20  # a listing is a few hundred kB even for large folders


@dataclass(frozen=True)
class FolderEntry:
    title: str
    id: str | None  # the file id; None for an entry without a file link (a subfolder)


def list_gdrive_folder(folder_id: str, *, options: FetchOptions | None = None, hint: str = "") -> list[FolderEntry]:
    """The entries of a public Google Drive folder, in page order. Raises HTTPStatusError (4xx: no such folder, or
    not public) and DownloadError (transient failures left after `options.retries`)."""
    parser = _Listing()
    parser.feed(_get_page(GDRIVE_FOLDER_URL.format(id=folder_id), options or FetchOptions(), hint))
    parser.close()
    return [FolderEntry(e["title"], e["id"]) for e in parser.entries if e["title"]]


def resolve_gdrive_file(folder_id: str, name: str, *, options: FetchOptions | None = None, hint: str = "") -> str:
    """The file id of the file titled `name` in the public folder `folder_id`. Raises NotInFolderError (no such
    file, or several) listing what the folder holds, then `hint` (how to put the file in place by hand)."""
    entries = list_gdrive_folder(folder_id, options=options, hint=hint)
    page = GDRIVE_FOLDER_PAGE.format(id=folder_id)
    matches = sorted({e.id for e in entries if e.title == name and e.id})
    if len(matches) == 1:
        log.info("Google Drive folder %s: %s is file %s", folder_id, name, matches[0])
        return matches[0]
    if matches:
        raise NotInFolderError(
            f"the Google Drive folder {page} holds {len(matches)} files named {name!r} ({', '.join(matches)}): "
            f"cannot tell which one is meant; give the file's 'id' in the manifest instead. {hint}".rstrip()
        )
    if entries:
        names = ", ".join(repr(e.title if e.id else e.title + "/") for e in entries)
        found = f"it lists {len(entries)} entries: {names}"
    else:
        found = "its listing shows no entries at all (the folder is not public, or the listing page changed format)"
    raise NotInFolderError(f"the Google Drive folder {page} has no file named {name!r}; {found}. {hint}".rstrip())


def _get_page(url: str, options: FetchOptions, hint: str) -> str:
    """GET a small HTML page, retrying transient failures (urllib3's Retry, `options`' policy) as download_url
    does; a body cut short is asked for again."""
    connections = Connections()
    retry = options.retry_policy(url)
    try:
        while True:
            try:
                resp = connections.get(url, retry, timeout=options.read_timeout)
            except MaxRetryError as err:
                raise _give_up(url, attempts_made(retry), describe(err.reason), hint) from err
            with resp:
                if resp.status in RETRIED_STATUS:  # urllib3 retried it as often as allowed
                    raise _give_up(url, failures(resp.retries) + 1, f"HTTP {resp.status} {resp.reason}", hint)
                if resp.status >= 400:
                    raise HTTPStatusError(url, resp.status, resp.reason or "", hint)
                try:
                    body = resp.read(MAX_PAGE_BYTES)
                except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as err:
                    try:
                        retry = resp.retries.increment("GET", url, error=err)
                    except MaxRetryError:
                        raise _give_up(url, failures(resp.retries) + 1, describe(err), hint) from err
                    retry.sleep()
                    continue
                return body.decode(_charset(resp.headers.get("Content-Type", "")), errors="replace")
    finally:
        connections.close()


def _charset(content_type: str) -> str:
    header = email.message.Message()
    header["Content-Type"] = content_type
    charset = header.get_content_charset() or "utf-8"
    try:
        return codecs.lookup(charset).name
    except LookupError:  # a charset Python does not know: the page's markup is ASCII anyway
        return "utf-8"


def _give_up(url: str, attempts: int, last_error: str, hint: str) -> DownloadError:
    return DownloadError(
        f"giving up on the Google Drive folder listing {url} after {attempts} failed attempts; "
        f"last error: {last_error}. {hint}".rstrip()
    )


class _Listing(HTMLParser):
    """Collects (title, file id) pairs. An element of class `flip-entry` starts an entry; without such wrappers
    (another page layout) a link or title that finds the current entry's field already set starts a new one."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.entries: list[dict] = []
        self._title_tag: str | None = None
        self._depth, self._text = 0, []

    def _entry_for(self, key: str) -> dict:
        if not self.entries or self.entries[-1][key] is not None:
            self.entries.append({"title": None, "id": None})
        return self.entries[-1]

    def handle_starttag(self, tag, attrs):
        if self._title_tag is not None:
            self._depth += tag == self._title_tag
            return
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if "flip-entry" in classes:
            self.entries.append({"title": None, "id": None})
        if tag == "a" and (m := FILE_LINK_RE.search(attrs.get("href") or "")):
            self._entry_for("id")["id"] = m.group(1)
        if "flip-entry-title" in classes:
            self._title_tag, self._depth, self._text = tag, 1, []

    def handle_endtag(self, tag):
        if self._title_tag == tag:
            self._depth -= 1
            if not self._depth:
                self._title_tag = None
                self._entry_for("title")["title"] = " ".join("".join(self._text).split())

    def handle_data(self, data):
        if self._title_tag is not None:
            self._text.append(data)
