"""The threads of the predict pipeline and the machine-derived defaults it runs with.

:func:`geoseg.predict.predict` overlaps three stages so that the model never waits:

* **read**: :class:`ReadAhead` keeps a thread pool reading the next chips; it starts before
  the model is built, so the first batch is read while the network loads.
* **infer**: the calling thread runs the engine, batch after batch.
* **blend + write**: :class:`OrderedWorker` hands each inferred batch to one worker thread
  that blends it and writes the rows it finishes, in submission order, so the output bytes do
  not depend on thread timing.

Both queues are bounded (memory stays that of a few batches), an error in any thread is
raised in the calling thread, and leaving the ``with`` block early (an exception, Ctrl-C)
stops the threads without waiting for work that is no longer wanted.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Generic, TypeVar

__all__ = [
    "CPU_BATCH_PIXELS",
    "OrderedWorker",
    "ReadAhead",
    "cpu_count",
    "default_batch_size",
]

T = TypeVar("T")
R = TypeVar("R")

#: Chip pixels per CPU batch when the batch size is not given: half a megapixel (eight 256 px
#: chips), but at least four chips while four stay within :data:`CPU_BATCH_MAX_PIXELS` (four
#: 512 px chips). Measured on 2 cores: U-Net/ResNet-18 with 512 px chips costs about twice as
#: much per pixel at one chip per pass as at four (eight: the same as four); a tiny model with
#: 256 px chips on a 20000 px wide scene peaked at 1154 MB RSS with 16 chips per pass and
#: 992 MB with 8 (benchmarks/bench_predict.py ``scale``).
CPU_BATCH_PIXELS = 2**19
CPU_BATCH_MIN_CHIPS = 4
CPU_BATCH_MAX_PIXELS = 2**20
#: Upper bound of an automatic batch (CPU or GPU).
MAX_AUTO_BATCH = 64


def cpu_count() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    return max(1, n)


def default_batch_size(chip_pixels: int, *, per_chip_bytes: int | None = None) -> int:
    """Chips per forward pass when the user gives none.

    On CPU (``per_chip_bytes`` ``None``): :data:`CPU_BATCH_PIXELS` worth of chips, at least
    :data:`CPU_BATCH_MIN_CHIPS` while they fit in :data:`CPU_BATCH_MAX_PIXELS`. On a GPU,
    ``per_chip_bytes`` is the device memory one chip's forward pass needs (measured by the
    engine): as many chips as fill half the free device memory.
    """
    if per_chip_bytes is None:
        px = max(1, chip_pixels)
        n = max(CPU_BATCH_PIXELS // px, min(CPU_BATCH_MIN_CHIPS, CPU_BATCH_MAX_PIXELS // px))
    else:
        n = _gpu_free_bytes() // 2 // max(1, per_chip_bytes)
    return int(min(MAX_AUTO_BATCH, max(1, n)))


def _gpu_free_bytes() -> int:  # pragma: no cover - needs CUDA
    import torch

    free, _total = torch.cuda.mem_get_info()
    return int(free)


class ReadAhead(Generic[T, R]):
    """``fn(item)`` of ``items`` in order, computed by ``workers`` threads ``ahead`` in advance.

    Reading starts when the object is created (not at the first ``next``), so work done
    between creation and iteration (building the model) overlaps the first reads.
    """

    def __init__(
        self, fn: Callable[[T], R], items: Iterable[T], *, workers: int, ahead: int
    ) -> None:
        self._fn = fn
        self._items = iter(items)
        self._ahead = max(1, int(ahead))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="geoseg-read")
        self._queue: deque[Future[R]] = deque()
        self._fill()

    @property
    def ahead(self) -> int:
        """Items computed in advance (settable before iterating, e.g. once the batch is known)."""
        return self._ahead

    @ahead.setter
    def ahead(self, n: int) -> None:
        self._ahead = max(1, int(n))
        self._fill()

    def _fill(self) -> None:
        while len(self._queue) < self._ahead:
            item = next(self._items, _END)
            if item is _END:
                return
            self._queue.append(self._pool.submit(self._fn, item))  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[R]:
        while self._queue:
            result = self._queue.popleft().result()
            self._fill()
            yield result

    def close(self) -> None:
        """Cancel what is not started and wait for the reads in flight."""
        for f in self._queue:
            f.cancel()
        self._queue.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ReadAhead[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_END = object()
_STOP = object()


class OrderedWorker(Generic[T]):
    """Runs ``fn(item)`` for each :meth:`put` item, in order, in one worker thread.

    At most ``depth`` items wait in the queue (:meth:`put` blocks beyond that). The first
    exception ``fn`` raises stops the worker and is raised again by the next :meth:`put` or by
    :meth:`join`; leaving the ``with`` block with an exception stops the worker after the item
    it is running, drops the queued ones, and waits for it. Use as a context manager; call
    :meth:`join` to wait for all items.
    """

    def __init__(
        self, fn: Callable[[T], object], *, depth: int = 2, name: str = "geoseg-write"
    ) -> None:
        self._fn = fn
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, int(depth)))
        self._error: BaseException | None = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP or self._cancel.is_set():
                return
            try:
                self._fn(item)  # type: ignore[arg-type]
            except BaseException as exc:
                self._error = exc
                self._cancel.set()
                return

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: T) -> None:
        """Queue ``item``; raises the worker's error if it has failed."""
        while True:
            self._raise()
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    self._raise()
                    raise RuntimeError("the write thread stopped") from None

    def join(self) -> None:
        """Wait until every queued item is done; raises the worker's error."""
        self._stop()
        self._raise()

    def _stop(self) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join()

    def cancel(self) -> None:
        """Stop after the item being run; drop the queued ones."""
        self._cancel.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._stop()

    def __enter__(self) -> OrderedWorker[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.join()
        else:
            self.cancel()
