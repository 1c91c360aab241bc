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
