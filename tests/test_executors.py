"""Executors: same stages, same frames, in order; Ray runs them as a streaming DAG of actors."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.executors import LocalExecutor, OrderedSink, RayExecutor, StageSpec
from stages.types import FrameBatch
from tests.stage_fixtures import Brighten, DelayOne


def synthetic_batches(n_frames: int = 50, batch: int = 8):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(n_frames, 24, 32, 3), dtype=np.uint8)
    for start in range(0, n_frames, batch):
        idx = np.arange(start, min(start + batch, n_frames))
        yield FrameBatch("v", idx, idx * 3, frames[idx].copy())


def collect(executor) -> list[FrameBatch]:
    out: list[FrameBatch] = []
    executor.run(synthetic_batches(), out.append)
    return out


SPECS = [StageSpec("brighten", Brighten), StageSpec("delay", DelayOne), StageSpec("brighten2", Brighten)]


def test_local_executor_order_and_flush():
    out = collect(LocalExecutor(SPECS))
    idx = np.concatenate([b.indices for b in out])
    assert np.array_equal(idx, np.arange(50))
    assert np.array_equal(np.concatenate([b.pts for b in out]), np.arange(50) * 3)


def test_ordered_sink_reorders_and_detects_gaps():
    got = []
    sink = OrderedSink(got.append)
    batches = list(synthetic_batches(24, 8))
    sink(batches[1])
    assert got == []
    sink(batches[0])
    sink(batches[2])
    assert [int(b.indices[0]) for b in got] == [0, 8, 16]
    sink2 = OrderedSink(got.append)
    sink2(batches[1])
    with pytest.raises(RuntimeError, match="frame 0"):
        sink2.close()


def test_grouped_stages_run_as_one_chain_with_the_same_frames():
    """ray.actor_groups puts consecutive named stages into one StageChain; a stage named in no group (or
    separated from its group) keeps its own; the chain's frames equal the stages run one by one."""
    from pipeline.executors import StageChain, group_specs

    grouped = group_specs(SPECS, [["brighten", "delay"]])
    assert [s.name for s in grouped] == ["brighten+delay", "brighten2"]
    assert grouped[0].cls is StageChain and grouped[1] is SPECS[2]
    apart = ["brighten", "delay", "brighten2"]
    assert [s.name for s in group_specs(SPECS, [["brighten", "brighten2"]])] == apart
    assert [s.name for s in group_specs(SPECS, [])] == apart
    one = group_specs(SPECS, [["brighten", "delay", "brighten2"]])
    expected = np.concatenate([b.frames for b in collect(LocalExecutor(SPECS))])
    for specs in (grouped, one):
        assert np.array_equal(np.concatenate([b.frames for b in collect(LocalExecutor(specs))]), expected)


def test_actor_groups_are_checked_on_load():
    from models.errors import ConfigError
    from pipeline.config import load_config

    load_config(None, ["ray.actor_groups=[[detect, landmarks], [swap]]"])
    for bad in ("[[detect, detect]]", "[[detect], [detetc]]", "[detect]"):
        with pytest.raises(ConfigError, match="ray.actor_groups"):
            load_config(None, [f"ray.actor_groups={bad}"])


@pytest.mark.slow
@pytest.mark.parametrize("groups", [[], [["brighten", "delay"]]])
def test_ray_executor_matches_local_bit_for_bit(groups):
    from pipeline.executors import group_specs

    local = collect(LocalExecutor(SPECS))
    executor = RayExecutor(group_specs(SPECS, groups), max_in_flight=2)
    try:
        remote = collect(executor)
    finally:
        executor.close()
    assert len(local) == len(remote)
    for a, b in zip(local, remote):
        assert np.array_equal(a.indices, b.indices)
        assert np.array_equal(a.pts, b.pts)
        assert np.array_equal(a.frames, b.frames)


@pytest.mark.slow
def test_shared_pool_runs_videos_at_once_with_their_own_state():
    """Three videos at once on one StagePool (two actors for the stateful stage): every video's frames
    equal its in-process run, although the stateful DelayOne actors serve several videos."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.executors import StagePool

    def batches(seed: int):
        rng = np.random.default_rng(seed)
        frames = rng.integers(0, 256, size=(40, 24, 32, 3), dtype=np.uint8)
        for start in range(0, 40, 8):
            idx = np.arange(start, start + 8)
            yield FrameBatch(f"v{seed}", idx, idx, frames[idx].copy())

    def run(executor, seed: int) -> np.ndarray:
        out: list[FrameBatch] = []
        try:
            executor.run(batches(seed), out.append)
        finally:
            executor.close()
        return np.concatenate([b.frames for b in out])

    expected = {seed: run(LocalExecutor(SPECS), seed) for seed in (1, 2, 3)}
    pool = StagePool({"delay": 2})
    try:
        with ThreadPoolExecutor(3) as threads:
            futures = {
                seed: threads.submit(lambda s: run(RayExecutor(SPECS, 2, pool=pool), s), seed)
                for seed in (1, 2, 3)
            }
            got = {seed: f.result() for seed, f in futures.items()}
        assert len(pool._actors["delay"]) == 2 and len(pool._actors["brighten"]) == 1
    finally:
        pool.close()
    for seed in (1, 2, 3):
        assert np.array_equal(got[seed], expected[seed])


def test_closed_pool_refuses_new_videos():
    """Closing the shared pool stops the run: a video that would start again after its actor was killed
    gets an error instead of new actors."""
    from pipeline.executors import StagePool

    pool = StagePool()
    pool.close()
    with pytest.raises(RuntimeError, match="pool was closed"):
        pool.acquire(StageSpec("brighten", Brighten))
