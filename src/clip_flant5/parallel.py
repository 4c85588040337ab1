"""Work spread over processes (image checks, OCR-VQA conversions): the one process pool of the package."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator


def process_map(function: Callable, items: Iterable, jobs: int, chunksize: int) -> Iterator:
    """`function` over `items` in `jobs` processes, results in completion order (in this process when jobs == 1).

    The workers leave when the queue is closed, not by SIGTERM: a handler the calling process set (a training
    run's, say) is inherited by them and may ignore it, and `Pool.terminate()` then waits forever.
    """
    if jobs == 1:
        yield from map(function, items)
        return
    pool = multiprocessing.Pool(jobs)
    try:
        yield from pool.imap_unordered(function, items, chunksize=chunksize)
    finally:
        pool.close()
        pool.join()
