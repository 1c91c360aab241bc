"""Results of a task over a list, in the list's order, from ``spawn`` worker processes that may die, and that
end when the process that started them dies."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

_END = object()
PARENT_CHECK_SECONDS = 0.5


def exit_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when ``parent`` (the process that started it) is gone, killed with
    ``kill -9`` included. Its pool's queues would otherwise keep it waiting for work forever (it holds their
    pipes' write ends itself), and with it multiprocessing's resource tracker. A watcher thread checks the
    worker's parent pid, which changes when the parent dies; ``prctl(PR_SET_PDEATHSIG)`` is not used, as it
    fires when the parent's *thread* that started the worker ends."""
    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def in_order(task, items: list, workers: int, died):
    """``task(item)`` for every item, results in the items' order; ``workers > 1`` runs them in
    ``spawn`` processes, at most ``2 × workers`` ahead. A worker that dies (killed for memory) breaks
    the pool: the earliest unfinished item is retried alone, and if it kills its worker again its
    result is ``died(item)``; the pool is rebuilt for the rest. Never hangs on a dead worker, and the workers
    never outlive this process (:func:`exit_with_parent`)."""
    if workers <= 1 or not items:
        yield from map(task, items)
        return

    def new_pool():
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=exit_with_parent, initargs=(os.getpid(),))

    def submit(item):
        # A worker may die between two submissions: the pool then refuses new work at once. The
        # item's future carries the breakage, handled below when its turn comes.
        try:
            return pool.submit(task, item)
        except BrokenProcessPool as e:
            refused = Future()
            refused.set_exception(e)
            return refused

    pool, queue, ahead = new_pool(), deque(), iter(items)
    try:
        while True:
            while len(queue) < 2 * workers and (item := next(ahead, _END)) is not _END:
                queue.append((item, submit(item)))
            if not queue:
                return
            item, future = queue.popleft()
            try:
                result = future.result()
            except BrokenProcessPool:
                pool.shutdown(wait=False, cancel_futures=True)
                pool = new_pool()
                try:
                    result = submit(item).result()
                except BrokenProcessPool:
                    result = died(item)
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = new_pool()
                queue = deque((i, submit(i)) for i, _ in queue)
            yield result
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
