"""Three stages over a list of items, overlapped: read the next item and write the previous one while
the current one is computed.

``staged(items, read, compute, write)`` returns ``[write(compute(read(item))) for item in items]``,
with ``read`` running one item ahead in a thread, ``compute`` in the calling thread (the network:
TensorFlow runs it on its own threads with the GIL released) and ``write`` one item behind in a
second thread, in the items' order. Bounded: at most one item is read ahead of the one being
computed and one waits for the writer, so memory holds at most four items at once.

``staged(..., settle=settle, in_flight=n)`` hands the writing on: ``write(value)`` only starts it elsewhere (in
a pool of processes) and returns its future, up to ``n`` items are being written at once, and ``settle(value,
future)``, called in the writer thread in the items' order, is the item's result. Memory then holds at most
``n + 3`` items.

The stages must handle their items' own failures themselves (an item's error is part of its result);
an exception that escapes a stage stops the whole run and is raised in the caller, after both
threads have ended.
"""

from __future__ import annotations

import queue
import threading
from collections import deque

_END = object()
_POLL_S = 0.1


class _Stopped(Exception):
    """Another stage failed: this one gives up."""


def sequential(items, read, compute, write) -> list:
    """The same results one item at a time, in the calling thread."""
    return [write(compute(read(item))) for item in items]


def staged(items, read, compute, write, settle=None, in_flight: int = 1) -> list:
    """``[write(compute(read(item))) for item in items]`` with the three stages overlapped, or with ``settle``
    ``[settle(v, write(v)) for v in map(compute, map(read, items))]`` with ``in_flight`` writes under way at once
    (module docstring)."""
    if in_flight < 1:
        raise ValueError(f"in_flight must be at least 1, got {in_flight}")
    stop, failures = threading.Event(), []
    ahead = threading.Semaphore(1)  # the reader starts an item only when the previous one was taken
    to_compute, to_write = queue.Queue(1), queue.Queue(1)
    results = []

    def put(q, value):
        while not _put(q, value):
            if stop.is_set():
                raise _Stopped

    def get(q):
        while True:
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                if stop.is_set():
                    raise _Stopped from None

    def guarded(stage):
        def run():
            try:
                stage()
            except _Stopped:
                pass
            except BaseException as e:  # noqa: BLE001 - raised again in the caller
                failures.append(e)
                stop.set()
        return run

    def reader():
        for item in items:
            while not ahead.acquire(timeout=_POLL_S):
                if stop.is_set():
                    raise _Stopped
            put(to_compute, read(item))
        put(to_compute, _END)

    def writer():
        pending = deque()  # (value, its future), oldest first
        while (value := get(to_write)) is not _END:
            if settle is None:
                results.append(write(value))
                continue
            while len(pending) >= in_flight:
                results.append(settle(*pending.popleft()))
            pending.append((value, write(value)))
        while pending:
            results.append(settle(*pending.popleft()))

    threads = [threading.Thread(target=guarded(reader), name="predict-read", daemon=True),
               threading.Thread(target=guarded(writer), name="predict-write", daemon=True)]
    for thread in threads:
        thread.start()
    guarded(lambda: _compute_all(get, put, to_compute, to_write, ahead, compute))()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return results


def _compute_all(get, put, to_compute, to_write, ahead, compute) -> None:
    """The calling thread's part: take each read item, compute it, hand it to the writer."""
    while (value := get(to_compute)) is not _END:
        ahead.release()
        put(to_write, compute(value))
    put(to_write, _END)


def _put(q: queue.Queue, value) -> bool:
    """Put ``value`` within one poll interval; False when the queue stayed full."""
    try:
        q.put(value, timeout=_POLL_S)
        return True
    except queue.Full:
        return False
