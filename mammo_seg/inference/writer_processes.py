"""Scans' outputs written in worker processes while the network runs on the next scans (``mammo predict
--writers N``).

On a GPU the network takes hundredths of a second per scan, while a scan's post-processing and writers (breast
region, the probabilities back on the scan's grid, the lesion report, mask, overlay, DICOM SEG and SR) are a few
tenths of Python and NumPy work on one core: written in the predict process, they set the pace of a folder.
:class:`WriterProcesses` runs them in ``spawn`` processes (TensorFlow is never imported there), each scan whole
in one process, so a scan's outputs are the bytes the predict process would write.

What crosses back is plain data: an exception loses its chain (and some their arguments) when pickled, so a
failure comes back as a :class:`Failure`, its one-line reason and the ``OSError`` behind it, from which
:meth:`Failure.exception` rebuilds an exception that predict's error policy (a scan's line, or a full disk that
stops the run) reads as it would have read the original.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from mammo_seg.errors import MammoError
from mammo_seg.inference import prediction_output as po

#: At most this many writer processes by default: each holds its libraries and one scan's arrays (about 0.5 GB
#: with a CBIS-DDSM film), and more than the network's pace needs gains nothing.
MAX_DEFAULT_WRITERS = 4
#: Cores the default leaves to the predict process: the thread that runs the network and the one that reads.
PREDICT_CORES = 2
DIED = "its writer process died (out of memory?) twice"


def available_cores() -> int:
    """The cores this process may run on (its affinity where the system tells it), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_writers(accelerator: bool, cores: int | None = None) -> int:
    """Writer processes when the network runs on an ``accelerator`` (a GPU), for ``cores`` cores (default:
    :func:`available_cores`): those the predict process does not use (:data:`PREDICT_CORES`), at most
    :data:`MAX_DEFAULT_WRITERS`. Otherwise 0, the writing in a thread of the predict process: on a CPU the network
    takes every core and several seconds a scan, against which the thread's few tenths overlap already, and a
    process would only add the cost of handing it the scan (on two cores, a folder took 1.5 times as long)."""
    if not accelerator:
        return 0
    cores = available_cores() if cores is None else cores
    return max(0, min(MAX_DEFAULT_WRITERS, cores - PREDICT_CORES))


@dataclass(frozen=True)
class Failure:
    """A scan's failure in a writer process, as plain data: its reason (one line, as predict prints it), the
    output it was writing when the failure is :class:`~mammo_seg.inference.prediction_output.OutputNotWritten`,
    and the ``OSError`` in its chain (:func:`~mammo_seg.inference.prediction_output.os_error`), if any."""

    reason: str
    output: str | None = None
    errno: int | None = None
    strerror: str | None = None
    filename: str | None = None
    filename2: str | None = None

    @classmethod
    def of(cls, error: BaseException, reason: str) -> "Failure":
        cause = po.os_error(error)
        names = [None if n is None else os.fsdecode(n) if isinstance(n, (str, bytes, os.PathLike)) else str(n)
                 for n in ((cause.filename, cause.filename2) if cause is not None else (None, None))]
        return cls(reason, error.name if isinstance(error, po.OutputNotWritten) else None,
                   None if cause is None else cause.errno, None if cause is None else cause.strerror, *names)

    def exception(self) -> Exception:
        """An exception predict handles as the original: an ``OutputNotWritten`` of the same output, else a
        ``MammoError`` of the same reason; the ``OSError`` (its number, words and file names) as its cause."""
        error = po.OutputNotWritten(self.output) if self.output is not None else MammoError(None, self.reason)
        if self.errno is not None:
            error.__cause__ = OSError(self.errno, self.strerror, self.filename, None, self.filename2)
        return error


class WriterDied(Exception):
    """A writer process died on this scan twice (killed for memory): the scan's failure, not the run's."""

    def __init__(self):
        super().__init__(DIED)


class WriterProcesses:
    """``n`` ``spawn`` processes that run a task per scan; a process that dies is replaced (see :meth:`result`),
    and they end when this process dies, ``kill -9`` included (their half-written files are then stale for
    ``--continue`` to remove).

    Use as a context manager: on leaving, the tasks under way finish (their files are complete or absent) and
    the processes end; the tasks not started are cancelled.
    """

    def __init__(self, n: int):
        if n < 1:
            raise ValueError(f"writer processes: at least 1, got {n}")
        self.n = n
        self._pool = self._new_pool()
        self._owners = {}  # future → the pool it was submitted to (a broken one is replaced once)

    def _new_pool(self) -> ProcessPoolExecutor:
        from mammo_seg.data.ordered_pool import exit_with_parent  # prep's workers end with their parent the same way

        return ProcessPoolExecutor(self.n, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=exit_with_parent, initargs=(os.getpid(),))

    def _renewed(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()

    def submit(self, task, *args):
        """``task(*args)`` started in a process; its future (a pool broken meanwhile is replaced first)."""
        pool = self._pool
        try:
            future = pool.submit(task, *args)
        except BrokenProcessPool:
            self._renewed(pool)
            pool = self._pool
            future = pool.submit(task, *args)
        self._owners[future] = pool
        return future

    def result(self, future, task, *args):
        """The result of ``future`` (``task(*args)``, submitted here). A process that died breaks every task
        under way: each is then run again alone in fresh processes, and one that kills its process again
        raises :class:`WriterDied`; the tasks after it go on."""
        owner = self._owners.pop(future, None)
        try:
            return future.result()
        except BrokenProcessPool:
            self._renewed(owner)
        pool = self._pool
        try:
            return pool.submit(task, *args).result()
        except BrokenProcessPool:
            self._renewed(pool)
            raise WriterDied() from None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "WriterProcesses":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
