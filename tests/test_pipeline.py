"""The staged runner predict uses: same results as one item at a time, bounded, failures raised."""

import threading

import pytest

from mammo_seg.inference.pipeline import sequential, staged


class Recorder:
    """Stages that log what they did, in which thread, and how far reading ran ahead of writing."""

    def __init__(self, fail_at=None):
        self.lock, self.read, self.written, self.threads, self.fail_at = threading.Lock(), [], [], {}, fail_at
        self.most_ahead = 0

    def note(self, stage):
        self.threads.setdefault(stage, set()).add(threading.current_thread().name)

    def do_read(self, item):
        self.note("read")
        with self.lock:
            self.read.append(item)
            self.most_ahead = max(self.most_ahead, len(self.read) - len(self.written))
        return item * 10

    def do_compute(self, value):
        self.note("compute")
        return value + 1

    def do_write(self, value):
        self.note("write")
        if value == self.fail_at:
            raise OSError(28, "No space left on device")
        with self.lock:
            self.written.append(value)
        return -value


def test_staged_gives_the_sequential_results_with_bounded_lookahead():
    items = list(range(12))
    seq, pipe = Recorder(), Recorder()
    expected = sequential(items, seq.do_read, seq.do_compute, seq.do_write)
    assert expected == [-(10 * i + 1) for i in items]
    assert staged(items, pipe.do_read, pipe.do_compute, pipe.do_write) == expected
    assert pipe.read == items and pipe.written == [10 * i + 1 for i in items]
    # one item read ahead, one computed, one waiting for the writer, one being written: never more
    assert 1 <= pipe.most_ahead <= 4 and seq.most_ahead == 1
    main = threading.current_thread().name
    assert pipe.threads["compute"] == {main} and main not in pipe.threads["read"] | pipe.threads["write"]
    assert staged([], pipe.do_read, pipe.do_compute, pipe.do_write) == []


def test_an_exception_escaping_a_stage_stops_the_run_and_is_raised():
    recorder = Recorder(fail_at=31)  # the writer fails on the fourth item
    with pytest.raises(OSError, match="No space left"):
        staged(list(range(100)), recorder.do_read, recorder.do_compute, recorder.do_write)
    assert recorder.written == [1, 11, 21] and len(recorder.read) <= 8
    assert not [t for t in threading.enumerate() if t.name.startswith("predict-")]  # both threads ended

    def compute(value):
        raise KeyError("in the caller's stage")

    with pytest.raises(KeyError):
        staged(list(range(5)), recorder.do_read, compute, recorder.do_write)


def test_settled_writes_run_elsewhere_at_most_in_flight_at_once_and_come_back_in_order():
    """``write`` starts each item's writing in a pool and ``settle`` takes its result: the sequential results,
    in order, though later items finish first, never more than ``in_flight`` under way."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    items, recorder = list(range(10)), Recorder()
    lock, running, most = threading.Lock(), [0], [0]

    def slow_write(value):  # the first items take longest: they finish after later ones
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05 * (10 - value % 10) / 10)
        with lock:
            running[0] -= 1
        return recorder.do_write(value)

    with ThreadPoolExecutor(4, thread_name_prefix="pool") as pool:
        settled = []

        def settle(value, future):
            settled.append(value)
            return future.result()

        results = staged(items, recorder.do_read, recorder.do_compute, lambda v: pool.submit(slow_write, v),
                         settle, in_flight=3)
    assert results == sequential(items, Recorder().do_read, Recorder().do_compute, Recorder().do_write)
    assert settled == [10 * i + 1 for i in items]
    assert most[0] == 3
    assert {t.startswith("pool") for t in recorder.threads["write"]} == {True}
    with pytest.raises(ValueError, match="in_flight"):
        staged(items, recorder.do_read, recorder.do_compute, slow_write, settle, in_flight=0)


def test_a_failing_settle_stops_the_run_and_is_raised():
    from concurrent.futures import ThreadPoolExecutor

    recorder = Recorder(fail_at=31)
    with ThreadPoolExecutor(2) as pool:
        with pytest.raises(OSError, match="No space left"):
            staged(list(range(100)), recorder.do_read, recorder.do_compute,
                   lambda v: pool.submit(recorder.do_write, v), lambda v, f: f.result(), in_flight=2)
    assert recorder.written[:3] == [1, 11, 21] and len(recorder.read) <= 10
    assert not [t for t in threading.enumerate() if t.name.startswith("predict-")]
