"""The process pool (clip_flant5.parallel): every item once, and workers that end without being sent SIGTERM."""

import multiprocessing.process

from clip_flant5.parallel import process_map


def test_every_item_once_in_processes_or_in_this_one():
    assert sorted(process_map(abs, range(-50, 0), 2, 3)) == list(range(1, 51))
    assert list(process_map(abs, [-2, -1], 1, 1)) == [2, 1]


def test_workers_leave_by_the_closed_queue_never_by_sigterm(monkeypatch):
    """A process that handles SIGTERM itself (a training run, while it trains) passes its handler on to the pool's
    workers; a pool shut down by SIGTERM (Pool.terminate, what `with Pool()` does) then waited forever in the tests."""
    terminated, terminate = [], multiprocessing.process.BaseProcess.terminate

    def recording_terminate(self):
        terminated.append(self.pid)
        terminate(self)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "terminate", recording_terminate)
    assert sorted(process_map(abs, range(-40, 0), 2, 4)) == list(range(1, 41))
    assert terminated == []
