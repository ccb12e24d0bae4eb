"""Tests of geoseg.pipeline: ordered worker, read-ahead, machine-derived defaults."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from geoseg.pipeline import (
    CPU_BATCH_PIXELS,
    MAX_AUTO_BATCH,
    OrderedWorker,
    ReadAhead,
    cpu_count,
    default_batch_size,
)


def _geoseg_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("geoseg-")]


def test_ordered_worker_runs_items_in_order() -> None:
    done: list[int] = []

    def work(i: int) -> None:
        time.sleep(random.random() / 500)
        done.append(i)

    with OrderedWorker(work, depth=2) as w:
        for i in range(50):
            w.put(i)
    assert done == list(range(50))
    assert not _geoseg_threads()


def test_ordered_worker_error_is_raised_by_put() -> None:
    def work(i: int) -> None:
        if i == 3:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), OrderedWorker(work, depth=1) as w:
        for i in range(1000):  # put raises once the worker has failed
            w.put(i)
    assert not _geoseg_threads()


def test_ordered_worker_error_is_raised_by_join() -> None:
    def work(i: int) -> None:
        raise ValueError(f"bad {i}")

    w = OrderedWorker(work)
    w.put(0)
    with pytest.raises(ValueError, match="bad 0"):
        w.join()


def test_ordered_worker_cancel_drops_queued_items_without_hanging() -> None:
    started = threading.Event()
    release = threading.Event()
    done: list[int] = []

    def work(i: int) -> None:
        started.set()
        release.wait(5)
        done.append(i)

    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt), OrderedWorker(work, depth=3) as w:
        for i in range(3):
            w.put(i)
        started.wait(5)
        threading.Timer(0.2, release.set).start()
        raise KeyboardInterrupt  # Ctrl-C in the main thread while the worker is busy
    assert done == [0]  # the running item finished, the queued ones were dropped
    assert time.perf_counter() - t0 < 5
    assert not _geoseg_threads()


def test_read_ahead_starts_reading_before_iteration_and_keeps_order() -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def read(i: int) -> int:
        with lock:
            calls.append(i)
        time.sleep(random.random() / 500)
        return i * i

    with ReadAhead(read, range(20), workers=2, ahead=4) as ra:
        deadline = time.time() + 5
        while len(calls) < 4 and time.time() < deadline:
            time.sleep(0.01)
        assert sorted(calls) == [0, 1, 2, 3]  # read before anyone asked, and no further
        assert list(ra) == [i * i for i in range(20)]
    assert not _geoseg_threads()


def test_read_ahead_error_and_early_close() -> None:
    def read(i: int) -> int:
        if i == 5:
            raise OSError("read failed")
        return i

    with (
        pytest.raises(OSError, match="read failed"),
        ReadAhead(read, range(100), workers=2, ahead=3) as ra,
    ):
        for _ in ra:
            pass
    with ReadAhead(read, range(100), workers=2, ahead=3) as ra:
        assert next(iter(ra)) == 0  # leaving early cancels the rest
    assert not _geoseg_threads()


def test_default_batch_size_cpu() -> None:
    assert default_batch_size(256 * 256) == CPU_BATCH_PIXELS // (256 * 256) == 8
    assert default_batch_size(512 * 512) == 4  # at least four chips up to 1 Mpx
    assert default_batch_size(1024 * 1024) == 1
    assert default_batch_size(4096 * 4096) == 1
    assert default_batch_size(16 * 16) == MAX_AUTO_BATCH


def test_cpu_count_is_what_this_process_may_use() -> None:
    n = cpu_count()
    assert 1 <= n <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert n <= len(os.sched_getaffinity(0))
