"""The HTTP retry policy of every download (urllib3's `Retry`) and the connections it runs on.

urllib3 retries what fails before a response's body arrives: a refused or reset connection, a read timeout while
waiting for the headers, the statuses of RETRY_STATUS and every other 5xx (waiting as long as Retry-After asks,
within the cap), and it follows redirects. What fails while a body streams (a reset or a stall in the middle of a
file, fewer bytes than announced) is the caller's to handle, on the same policy: it counts the failure with
`retry.increment(...)` (MaxRetryError once the retries are used up), waits with `retry.sleep()`, and asks again;
`download_url` asks with a Range request for the bytes still missing, which `Retry` has no notion of.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from http import HTTPStatus

import urllib3
from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import RequestHistory, Retry

log = logging.getLogger(__name__)


class _RetriesLoggedHere(logging.Filter):
    """urllib3 warns before each retry after a broken connection; Backoff logs every retry itself (the file, the
    count, the wait) at the level its caller chose (debug for 200,000 OCR-VQA images), so that warning is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not hasattr(record, "__urllib3-retry-warning")


logging.getLogger("urllib3.connectionpool").addFilter(_RetriesLoggedHere())

USER_AGENT = "clip-flant5-downloader/1 (+https://github.com/linzhiqiu/CLIP-FlanT5)"
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
RETRIED_STATUS = RETRY_STATUS | frozenset(range(500, 600))  # every 5xx is worth another try
MAX_REDIRECTS = 10


class Backoff(Retry):
    """urllib3's Retry, with this project's waits and counting:

    - the k-th consecutive retry waits `backoff_factor * 2**(k-1)` seconds, at most `backoff_max` (urllib3 would
      retry the first at once: the servers here are often overloaded or rate-limiting, so each retry waits);
    - a Retry-After header lengthens the wait, never beyond `backoff_max` (urllib3: up to 6 hours);
    - a redirect is no failed attempt: it counts against `redirect` only, never against the retry budget `total`
      (urllib3 spends one of `total` on it, so that with retries=0 a Google Drive link, which redirects, would fail);
    - Retry-After alone makes no status retried (urllib3: also 413), only RETRIED_STATUS are;
    - each wait is logged (at `log_level`, naming `label` and the failure) and goes through `sleeper` (time.sleep;
      tests record it, and `download_url` stops there at its deadline).
    """

    RETRY_AFTER_STATUS_CODES = frozenset()

    def __init__(
        self,
        *args,
        sleeper: Callable[[float], None] = time.sleep,
        label: str = "",
        log_level: int = logging.WARNING,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.sleeper, self.label, self.log_level = sleeper, label, log_level

    def new(self, **kwargs) -> Backoff:
        return super().new(**{"sleeper": self.sleeper, "label": self.label, "log_level": self.log_level, **kwargs})

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None) -> Backoff:
        if error is None and response is not None and response.get_redirect_location():
            counted = Retry.increment(self.new(total=None), method, url, response, error, _pool, _stacktrace)
            return counted.new(total=self.total)
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def get_backoff_time(self) -> float:
        failed = failures(self)
        return min(self.backoff_factor * 2 ** (failed - 1), self.backoff_max) if failed else 0.0

    def sleep(self, response=None) -> None:
        wait = self.get_backoff_time()
        if response is not None and self.respect_retry_after_header:
            wait = max(wait, min(self._retry_after(response), self.backoff_max))
        self._pause(wait)

    def sleep_for_retry(self, response) -> bool:  # urllib3 calls it for a redirect
        if wait := min(self._retry_after(response), self.backoff_max):
            self._pause(wait)
        return bool(wait)

    def _retry_after(self, response) -> float:
        try:
            return self.get_retry_after(response) or 0.0
        except InvalidHeader:  # a malformed Retry-After: the backoff alone
            return 0.0

    def _pause(self, wait: float) -> None:
        failed = failures(self)
        budget = "" if self.total is None else f" of {failed + self.total}"
        last = describe(self.history[-1]) if self.history else "failed"
        log.log(self.log_level, "%s: %s; retry %d%s in %.1f s", self.label, last, failed, budget, wait)
        self.sleeper(wait)


def retry_policy(
    retries: int,
    backoff: float,
    max_backoff: float,
    *,
    sleeper: Callable[[float], None] = time.sleep,
    label: str = "",
    log_level: int = logging.WARNING,
) -> Backoff:
    """`retries` failed attempts in a row are retried (redirects aside), waiting `backoff`, then twice as long
    each time, at most `max_backoff` seconds. A retried status that is still failing after them is returned as
    the response (not raised), for the caller to report with its status line."""
    return Backoff(
        total=retries,
        redirect=MAX_REDIRECTS,
        status_forcelist=RETRIED_STATUS,
        allowed_methods=frozenset({"GET"}),
        backoff_factor=backoff,
        backoff_max=max_backoff,
        raise_on_status=False,
        sleeper=sleeper,
        label=label,
        log_level=log_level,
    )


def failures(retry: Retry) -> int:
    """The failed attempts a retry state has counted (its redirects aside)."""
    return sum(entry.redirect_location is None for entry in retry.history)


def attempts_made(retry: Retry) -> int:
    """The failed attempts in all once urllib3 gave up (MaxRetryError) on a request started with `retry`."""
    return failures(retry) + (retry.total or 0) + 1


class BrokenBody(Exception):
    """A failure while a response's body streamed, counted on the Retry with `retry.increment(error=...)`; its
    message says what happened."""


def describe(failure: RequestHistory | BaseException) -> str:
    """A failure in words, for messages and logs: "HTTP 503 Service Unavailable", "ReadTimeoutError: ...",
    "NewConnectionError: ..."."""
    if isinstance(failure, RequestHistory):
        if failure.error is None:
            try:
                return f"HTTP {failure.status} {HTTPStatus(failure.status).phrase}"
            except ValueError:
                return f"HTTP {failure.status}"
        failure = failure.error
    return str(failure) if isinstance(failure, BrokenBody) else f"{type(failure).__name__}: {failure}"


class Connections:
    """urllib3 connection pools (kept-alive connections, thread-safe), direct or through the proxy that the
    environment names (http_proxy, https_proxy, no_proxy), as urllib.request honoured them."""

    def __init__(self, maxsize: int = 1):
        self._maxsize, self._managers, self._lock = maxsize, {}, threading.Lock()

    def manager(self, url: str) -> urllib3.PoolManager:
        parts = urllib.parse.urlsplit(url)
        proxy = urllib.request.getproxies().get(parts.scheme)
        if proxy and urllib.request.proxy_bypass(parts.netloc):
            proxy = None
        with self._lock:
            if proxy not in self._managers:
                pools = {"num_pools": 32, "maxsize": self._maxsize}
                self._managers[proxy] = urllib3.ProxyManager(proxy, **pools) if proxy else urllib3.PoolManager(**pools)
            return self._managers[proxy]

    def get(self, url: str, retry: Retry, *, timeout: float, headers: dict | None = None) -> urllib3.BaseHTTPResponse:
        """GET `url` with `retry` (see the module docstring); the body is left to stream, undecoded (the bytes
        are what is hashed). Raises MaxRetryError when urllib3 gave up before a response."""
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
        return self.manager(url).urlopen(
            "GET",
            url,
            headers=headers,
            retries=retry,
            redirect=True,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            preload_content=False,
            decode_content=False,
        )

    def close(self) -> None:
        with self._lock:
            for manager in self._managers.values():
                manager.clear()
            self._managers.clear()
