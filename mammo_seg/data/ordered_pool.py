"""Results of a task over a list, in the list's order, from ``spawn`` worker processes that may die."""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

_END = object()


def in_order(task, items: list, workers: int, died):
    """``task(item)`` for every item, results in the items' order; ``workers > 1`` runs them in
    ``spawn`` processes, at most ``2 × workers`` ahead. A worker that dies (killed for memory) breaks
    the pool: the earliest unfinished item is retried alone, and if it kills its worker again its
    result is ``died(item)``; the pool is rebuilt for the rest. Never hangs on a dead worker."""
    if workers <= 1 or not items:
        yield from map(task, items)
        return

    def new_pool():
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

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
