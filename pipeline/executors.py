"""Executors: run the same stage objects in-process or as a streaming DAG of Ray actors.

A stage is described by a :class:`StageSpec` (its class and constructor arguments) so that each executor
can build it where it runs: in this process, or inside a Ray actor. Both executors feed every stage its
batches in frame order, pass flushed look-ahead batches on downstream, and hand the sink batches in
frame order; given the same specs and input they produce identical frames.
"""

from __future__ import annotations

import importlib
import sys
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.ray_session import STOP_GRACE_SECONDS, RayStopped, init_ray, ray_logs, ray_module, ray_stopped
from stages.types import FrameBatch

Sink = Callable[[FrameBatch], None]


@dataclass
class StageSpec:
    """How to build one stage: ``cls(*args)``. ``num_gpus`` is the Ray resource request of its actor."""

    name: str
    cls: type
    args: tuple[Any, ...] = ()
    num_gpus: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        return self.cls(*self.args, **self.kwargs)


class OrderedSink:
    """Passes batches on in frame order, holding back any that arrive early."""

    def __init__(self, sink: Sink, first_index: int = 0) -> None:
        self.sink = sink
        self.next_index = int(first_index)
        self._held: dict[int, FrameBatch] = {}

    def __call__(self, batch: FrameBatch) -> None:
        if len(batch) == 0:
            return
        self._held[int(batch.indices[0])] = batch
        while self.next_index in self._held:
            b = self._held.pop(self.next_index)
            self.next_index = int(b.indices[-1]) + 1
            self.sink(b)

    def close(self) -> None:
        if self._held:
            missing = self.next_index
            raise RuntimeError(f"pipeline lost frames: frame {missing} never arrived")


class StageChain:
    """Several stages run as one, in order: one Ray actor hosts a group of stages (``ray.actor_groups``),
    so a cheap stage does not cost a process, its imports and a hop through the object store.

    ``__call__`` passes a batch through every stage; :meth:`flush` flushes them in order and passes each
    flushed batch through the stages after the one that held it, exactly as :class:`LocalExecutor` does,
    so a chain gives the frames of its stages run one by one.
    """

    def __init__(self, specs: Iterable[StageSpec]) -> None:
        self.stages = [s.build() for s in specs]

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        return self.through(batch, 0)

    def through(self, batch: FrameBatch, first: int) -> FrameBatch:
        """``batch`` through the stages from index ``first`` on."""
        for stage in self.stages[first:]:
            batch = stage(batch)
        return batch

    def flush(self) -> list[FrameBatch]:
        out: list[FrameBatch] = []
        for k, stage in enumerate(self.stages):
            out.extend(self.through(held, k + 1) for held in stage.flush())
        return out


def group_specs(specs: list[StageSpec], groups: list[list[str]]) -> list[StageSpec]:
    """Merge runs of consecutive specs that ``groups`` puts together into one :class:`StageChain` spec each.

    groups: lists of stage names (``ray.actor_groups``); a spec joins the previous one's chain when both
    names are in the same group, so a stage not named in any group (or one between two of a group) keeps
    an actor of its own. A chain is named by its stages joined with ``+`` and asks for the most GPUs any
    of them asks for.
    """
    group_of = {name: i for i, group in enumerate(groups) for name in group}
    runs: list[list[StageSpec]] = []
    for spec in specs:
        g = group_of.get(spec.name)
        if runs and g is not None and group_of.get(runs[-1][-1].name) == g:
            runs[-1].append(spec)
        else:
            runs.append([spec])
    return [
        run[0]
        if len(run) == 1
        else StageSpec("+".join(s.name for s in run), StageChain, (tuple(run),), max(s.num_gpus for s in run))
        for run in runs
    ]


class LocalExecutor:
    """Calls the stages one after another in this process (single clips, tests, debugging).

    With ``overlap`` (the default) the batches are read (decoded) in a thread ahead of the stages and the
    sink (the encoder) runs in a thread behind them (:mod:`pipeline.overlap`); the stages still see every
    batch in order in one thread and the sink gets them in frame order, so the frames are the same.
    """

    def __init__(self, specs: list[StageSpec], overlap: bool = True) -> None:
        self.chain = StageChain(specs)
        self.overlap = overlap

    def run(self, batches: Iterable[FrameBatch], sink: Sink, first_index: int = 0) -> None:
        """Batches through every stage into ``sink`` in frame order; the first frame is ``first_index``."""
        ordered = OrderedSink(sink, first_index)
        if not self.overlap:
            for batch in batches:
                ordered(self.chain(batch))
            for held in self.chain.flush():
                ordered(held)
            ordered.close()
            return
        from pipeline.overlap import ReadAhead, WriteBehind

        reader = ReadAhead(batches, name="decode")
        writer = WriteBehind(ordered, name="encode")
        try:
            for batch in reader:
                writer.put(self.chain(batch))
            for held in self.chain.flush():
                writer.put(held)
            writer.close()
        except BaseException:
            reader.stop()
            writer.abort()
            raise
        ordered.close()

    def close(self) -> None:
        self.chain.stages = []


class StageStateLost(RuntimeError):
    """A stage actor no longer holds a video's stage object: Ray restarted it after it died."""


def actor_failures() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a stage actor died (or was restarted and lost the video's state): the video
    can be run again from its start on the restarted actors."""
    ray = ray_module()
    return (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, StageStateLost)


def rerun_after_actor_death(attempt: Callable[[], None], retries: int, pool, what: str) -> None:
    """Call ``attempt`` (one run of a video or segment from its start) and call it again, at most
    ``retries`` times, when a stage actor died (:func:`actor_failures`): stages keep per-video state, so a
    half-done run cannot resume. Anything else, or a closed ``pool`` (the run is stopping), is raised at
    once. ``what`` names the run in the line printed to stderr."""
    for n in range(retries + 1):
        try:
            attempt()
            return
        except BaseException as exc:
            stopping = pool is not None and pool.closed
            if n == retries or stopping or not isinstance(exc, actor_failures()):
                raise
            stopped = ray_stopped(within=STOP_GRACE_SECONDS)
            if stopped:
                raise RayStopped(f"Ray's {stopped} stopped under the run; its logs: {ray_logs()}") from exc
            print(
                f"swapstream: {what}: a stage actor died ({type(exc).__name__}); "
                f"running it again from its start ({n + 2}/{retries + 1})",
                file=sys.stderr,
            )


class _PoolActor:
    """A Ray actor hosting stage objects of many videos at once: one object per (job, stage), built when
    the job opens, so each video keeps its own state (tracks, smoothing windows, its source face) while the
    process, its imports and its threads are shared. A restarted actor starts empty, so a call for a job it
    does not hold raises :class:`StageStateLost` (the video must start again: stages are stateful)."""

    def __init__(self) -> None:
        self.stages: dict[str, Any] = {}

    def preload(self, modules: list[str]) -> None:
        """Import the stages' modules (torch, dlib, OpenCV...) before the first video opens."""
        for name in modules:
            importlib.import_module(name)

    def open(self, job: str, spec: StageSpec) -> None:
        self.stages[job] = spec.build()

    def _stage(self, job: str) -> Any:
        try:
            return self.stages[job]
        except KeyError:
            raise StageStateLost(f"stage actor has no state for video job {job} (restarted)") from None

    def process(self, job: str, batch: FrameBatch) -> FrameBatch:
        return self._stage(job)(batch)

    def flush(self, job: str) -> list[FrameBatch]:
        return self._stage(job).flush()

    def close(self, job: str) -> None:
        self.stages.pop(job, None)

    def jobs(self) -> int:
        return len(self.stages)


class StagePool:
    """Ray actors shared by every video of a run: up to ``per_stage[name]`` actors per stage name
    (default 1; a chain of grouped stages, named ``a+b+c``, takes the largest of its stages' numbers),
    created on first use; each new video's stage goes to the actor of that name with the fewest open videos
    (the earliest on ties). Thread-safe, so several videos can run at once.

    max_restarts: how often Ray restarts an actor whose process dies (``ray.max_restarts``); the videos it
    served fail with an actor error and :func:`pipeline.run.swap_video` runs them again on it (it makes such a
    pool for a single video too). A :class:`RayExecutor` given no pool makes one without restarts and kills
    it when it closes.
    """

    def __init__(
        self,
        per_stage: dict[str, int] | None = None,
        max_restarts: int = 0,
        gcs_reconnect_seconds: float | None = None,
    ) -> None:
        self.per_stage = dict(per_stage or {})
        self.max_restarts = int(max_restarts)
        self.gcs_reconnect_seconds = gcs_reconnect_seconds
        self.closed = False
        self._actors: dict[str, list[Any]] = {}
        self._load: dict[int, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: dict) -> StagePool:
        """``ray.swap_actors`` swap actors and ``ray.stage_actors`` of every other stage."""
        from pipeline.config import STAGE_NAMES

        r = cfg["ray"]
        per = {name: int(r["stage_actors"]) for name in STAGE_NAMES}
        per["swap"] = int(r["swap_actors"])
        return cls(per, max_restarts=int(r["max_restarts"]), gcs_reconnect_seconds=r["gcs_reconnect_seconds"])

    def _limit(self, name: str) -> int:
        return max(1, *(self.per_stage.get(part, 1) for part in name.split("+")))

    def acquire(self, spec: StageSpec) -> Any:
        """The actor that will run ``spec`` for one more video; RuntimeError once the pool is closed."""
        if self.closed:
            raise RuntimeError("the Ray stage pool was closed (the run is stopping)")
        ray = ray_module()
        init_ray(gcs_reconnect_seconds=self.gcs_reconnect_seconds)
        with self._lock:
            actors = self._actors.setdefault(spec.name, [])
            if len(actors) < self._limit(spec.name) and all(self._load[id(a)] for a in actors):
                gpus = ray.cluster_resources().get("GPU", 0)
                if spec.num_gpus > gpus:
                    raise RuntimeError(
                        f"stage {spec.name} asks for {spec.num_gpus} GPU(s) but the Ray cluster has {gpus}: "
                        "set ray.swap_num_gpus=0 to run it on CPU"
                    )
                remote = ray.remote(_PoolActor).options(
                    num_cpus=0, num_gpus=spec.num_gpus, max_concurrency=1, max_restarts=self.max_restarts
                )
                actor = remote.remote()
                actors.append(actor)
                self._load[id(actor)] = 0
            actor = min(actors, key=lambda a: self._load[id(a)])
            self._load[id(actor)] += 1
            return actor

    def warm(self, specs: list[StageSpec]) -> None:
        """Start the actors ``specs`` will run on and have them import their stages' modules, without
        waiting: the driver's own work (reading the source photo) overlaps the actors' start-up."""
        for spec in specs:
            actor = self.acquire(spec)
            self.release(actor)
            members = spec.args[0] if spec.cls is StageChain else (spec,)
            actor.preload.remote(sorted({m.cls.__module__ for m in members}))

    def release(self, actor: Any) -> None:
        with self._lock:
            if id(actor) in self._load:
                self._load[id(actor)] -= 1

    def close(self) -> None:
        """Kill every actor (running videos then fail with an actor error and are not run again)."""
        ray = ray_module()
        with self._lock:
            self.closed = True
            for actors in self._actors.values():
                for actor in actors:
                    ray.kill(actor)
            self._actors.clear()
            self._load.clear()


class RayExecutor:
    """The stages of one video as Ray actors; batches flow as object refs, at most ``max_in_flight`` per edge.

    With a shared :class:`StagePool` the actors serve other videos at the same time (each keeps its own
    stage objects); without one the executor makes a private pool (one actor per stage) and kills it on
    close. Each actor receives this video's calls in submission order (Ray keeps the order of one caller's
    calls to a synchronous actor), so stateful stages see frames in order. When an edge holds
    ``max_in_flight`` unfinished batches the driver waits for the oldest (backpressure), and the sink gets
    results in order.
    """

    def __init__(self, specs: list[StageSpec], max_in_flight: int = 4, pool: StagePool | None = None) -> None:
        ray = ray_module()
        self.own_pool = pool is None
        self.pool = pool if pool is not None else StagePool()
        self.max_in_flight = max(1, int(max_in_flight))
        self.job = uuid.uuid4().hex
        self.names = [s.name for s in specs]
        self.actors: list[Any] = []
        try:
            for spec in specs:
                self.actors.append(self.pool.acquire(spec))
            ray.get([a.open.remote(self.job, spec) for a, spec in zip(self.actors, specs)])
        except BaseException:
            self.close()
            raise

    def run(self, batches: Iterable[FrameBatch], sink: Sink, first_index: int = 0) -> None:
        """Batches through the actors into ``sink`` in frame order; the first frame is ``first_index``."""
        ray = ray_module()
        ordered = OrderedSink(sink, first_index)
        edges: list[deque] = [deque() for _ in self.actors]
        outputs: deque = deque()
        job = self.job

        def submit(ref, first: int):
            for k in range(first, len(self.actors)):
                edge = edges[k]
                while edge and _done(ray, edge[0]):
                    edge.popleft()
                if len(edge) >= self.max_in_flight:
                    ray.wait([edge[0]], num_returns=1)
                    edge.popleft()
                ref = self.actors[k].process.remote(job, ref)
                edge.append(ref)
            outputs.append(ref)

        def drain(block: bool) -> None:
            while outputs and ((block and len(outputs) >= self.max_in_flight) or _done(ray, outputs[0])):
                ordered(ray.get(outputs.popleft()))

        for batch in batches:
            submit(ray.put(batch), 0)
            drain(block=True)
        for k, actor in enumerate(self.actors):
            for held in ray.get(actor.flush.remote(job)):
                if k + 1 < len(self.actors):
                    submit(ray.put(held), k + 1)
                else:
                    outputs.append(ray.put(held))
            drain(block=True)
        while outputs:
            ordered(ray.get(outputs.popleft()))
        ordered.close()

    def close(self) -> None:
        if self.own_pool:
            self.pool.close()
        else:
            for actor in self.actors:
                actor.close.remote(self.job)
                self.pool.release(actor)
        self.actors = []


def _done(ray, ref) -> bool:
    ready, _ = ray.wait([ref], num_returns=1, timeout=0)
    return bool(ready)


def make_executor(kind: str, specs: list[StageSpec], cfg: dict, pool: StagePool | None = None):
    """``kind``: ``local`` (in-process) or ``ray`` (on ``pool``'s shared actors when given; the stages
    grouped into actors by ``ray.actor_groups``)."""
    if kind == "local":
        return LocalExecutor(specs)
    if kind == "ray":
        grouped = group_specs(specs, cfg["ray"]["actor_groups"])
        return RayExecutor(grouped, max_in_flight=cfg["ray"]["max_in_flight"], pool=pool)
    raise ValueError(f"executor must be 'ray' or 'local', not {kind!r}")
