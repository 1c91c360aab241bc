"""Writer processes for predict: how many, failures that cross back as the originals, a process that dies."""

import errno
import os
import pickle
import signal

import pytest

from mammo_seg.errors import MammoError
from mammo_seg.inference import prediction_output as po
from mammo_seg.inference.predict import PredictOptions, _failure_record, _Job, _reason
from mammo_seg.inference.writer_processes import DIED, Failure, WriterDied, WriterProcesses, default_writers


def test_the_default_leaves_two_cores_to_the_predict_process_and_takes_at_most_four_with_a_gpu_alone():
    assert [default_writers(True, cores) for cores in (1, 2, 3, 4, 6, 7, 64)] == [0, 0, 1, 2, 4, 4, 4]
    assert [default_writers(False, cores) for cores in (1, 4, 64)] == [0, 0, 0]
    assert default_writers(True) >= 0 and default_writers(False) == 0


def _chained(error: BaseException, *causes: BaseException) -> BaseException:
    """``error`` raised from the first of ``causes``, raised from the next, ... (as ``raise ... from``)."""
    for outer, inner in zip((error,) + causes, causes):
        outer.__cause__ = inner
    return error


def _outcome(error: BaseException, out: str, capsys) -> tuple:
    """What predict makes of a scan's write failure: (its record or the run-stopping message, the console)."""
    job = _Job(os.path.join(out, "in", "b.dcm"), "b", "b.dcm")
    try:
        result = _failure_record(job, error, out, PredictOptions())
    except MammoError as stopped:
        result = ("stopped", str(stopped))
    return result, capsys.readouterr().err


@pytest.mark.parametrize("error", [
    # a full disk while highdicom writes the SEG: raised by the library from the OSError (stops the run)
    lambda out: _chained(po.OutputNotWritten("b_seg.dcm"), RuntimeError("Traceback (most recent call last)"),
                         OSError(errno.ENOSPC, "No space left on device", os.path.join(out, "b_seg.dcm.tmp"))),
    # no permission on the output folder (stops the run)
    lambda out: _chained(po.OutputNotWritten("b_mask.png"), OSError(errno.EACCES, "Permission denied",
                                                                    os.path.join(out, "b_mask.png"))),
    # an I/O error on one file: that scan's line
    lambda out: _chained(po.OutputNotWritten("b_sr.dcm"), OSError(errno.EIO, "Input/output error")),
    # the scan's file gone before its size was read: that scan's line
    lambda out: FileNotFoundError(errno.ENOENT, "No such file or directory", os.path.join(out, "in", "b.dcm")),
    # anything else, its message on two lines
    lambda out: ValueError("a value\nthe writer refused"),
])
def test_a_failure_crosses_back_to_what_predict_makes_of_the_original(tmp_path, capsys, error):
    out = str(tmp_path / "out")
    original = error(out)
    crossed = pickle.loads(pickle.dumps(Failure.of(original, _reason(original)))).exception()
    assert _outcome(crossed, out, capsys) == _outcome(original, out, capsys)


def test_a_failure_with_no_errno_keeps_its_reason_alone(tmp_path):
    failure = Failure.of(OSError("pydicom's own OSError, a traceback for its message"), "OSError: pydicom's own")
    assert (failure.errno, failure.output) == (None, None)
    rebuilt = failure.exception()
    assert _reason(rebuilt) == "OSError: pydicom's own" and po.os_error(rebuilt) is None


def doubled(value):
    """A writer task: kills its process for "die", else gives twice its value."""
    if value == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return value * 2


def test_a_process_that_dies_costs_its_scan_alone_and_is_replaced():
    with WriterProcesses(2) as pool:
        futures = [(value, pool.submit(doubled, value)) for value in (1, "die", 3, 4)]
        results = []
        for value, future in futures:
            try:
                results.append(pool.result(future, doubled, value))
            except WriterDied as e:
                results.append(str(e))
        assert results == [2, DIED, 6, 8]
        assert pool.result(pool.submit(doubled, 5), doubled, 5) == 10
    with pytest.raises(ValueError):
        WriterProcesses(0)


KILLED = """
import os, signal, sys, time
from mammo_seg.inference.writer_processes import WriterProcesses
pool = WriterProcesses(2)
futures = [pool.submit(time.sleep, 120) for _ in range(2)]
while not all(f.running() for f in futures) or len(pool._pool._processes) < 2:
    time.sleep(0.05)
print(" ".join(map(str, pool._pool._processes)), flush=True)
time.sleep(1)  # both busy sleeping
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="lists processes through /proc")
def test_kill_9_of_predict_leaves_no_writer_process_behind():
    import subprocess
    import sys
    import time

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", KILLED], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == -9, run.stderr
    pids = [int(pid) for pid in run.stdout.split()]
    assert len(pids) == 2

    def alive(pid):
        try:
            return open(f"/proc/{pid}/stat").read().split(") ")[-1][0] != "Z"
        except OSError:
            return False

    deadline = time.time() + 10
    while time.time() < deadline and any(map(alive, pids)):
        time.sleep(0.1)
    assert not [pid for pid in pids if alive(pid)]
