"""pipeline/overlap.py and the in-process executor's threads: decode ahead, encode behind, same frames,
errors raised where the run is, no thread left behind."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pipeline.executors import LocalExecutor, StageSpec
from pipeline.overlap import ReadAhead, WriteBehind
from tests.stage_fixtures import Brighten, DelayOne
from tests.test_executors import SPECS, synthetic_batches


def _frames(out) -> np.ndarray:
    return np.concatenate([b.frames for b in out])


def test_overlapped_local_run_gives_the_frames_of_the_plain_one():
    plain, overlapped = [], []
    LocalExecutor(SPECS, overlap=False).run(synthetic_batches(), plain.append)
    LocalExecutor(SPECS).run(synthetic_batches(), overlapped.append)
    assert [b.indices.tolist() for b in overlapped] == [b.indices.tolist() for b in plain]
    assert np.array_equal(_frames(overlapped), _frames(plain))


def test_the_sink_runs_in_another_thread_in_order():
    threads, order = set(), []

    def sink(batch):
        threads.add(threading.get_ident())
        order.extend(batch.indices.tolist())

    LocalExecutor(SPECS).run(synthetic_batches(), sink)
    assert order == list(range(50)) and threading.get_ident() not in threads


def _alive(name: str) -> bool:
    return any(t.name == name and t.is_alive() for t in threading.enumerate())


def test_a_failing_source_is_raised_in_the_run_and_stops_the_threads():
    def broken():
        yield from list(synthetic_batches())[:2]
        raise OSError("decoding failed at frame 16")

    with pytest.raises(OSError, match="frame 16"):
        LocalExecutor(SPECS).run(broken(), lambda b: None)
    time.sleep(0.3)
    assert not _alive("decode") and not _alive("encode")


def test_a_failing_sink_is_raised_in_the_run_and_the_source_is_closed():
    closed = []

    def source():
        try:
            yield from synthetic_batches(400, 8)
        finally:
            closed.append(True)

    def sink(batch):
        if batch.indices[0] >= 16:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        LocalExecutor([StageSpec("b", Brighten)]).run(source(), sink)
    time.sleep(0.3)
    assert closed == [True] and not _alive("decode") and not _alive("encode")


def test_a_failing_stage_waits_for_the_sink_s_current_batch():
    """After the run raises, nothing calls the sink any more (its file may be removed at once)."""
    calls, busy = [], threading.Event()

    def sink(batch):
        busy.set()
        time.sleep(0.2)
        calls.append(int(batch.indices[0]))
        busy.clear()

    class Fails(DelayOne):
        seen = 0

        def __call__(self, batch):
            Fails.seen += 1
            if Fails.seen == 4:
                raise ValueError("stage broke")
            return super().__call__(batch)

    with pytest.raises(ValueError, match="stage broke"):
        LocalExecutor([StageSpec("f", Fails)]).run(synthetic_batches(), sink)
    after = list(calls)
    time.sleep(0.5)
    assert calls == after and not busy.is_set()


def test_read_ahead_and_write_behind_alone():
    got = []
    writer = WriteBehind(got.append, depth=1)
    for item in ReadAhead(range(100), depth=3):
        writer.put(item)
    writer.close()
    assert got == list(range(100))
