"""Threads beside the in-process executor: decode ahead of the stages and encode behind them.

Decoding (PyAV) and encoding (x264) spend most of their time in C code outside the GIL, so on a machine
with two or more cores they overlap with the stages' own work. Each side keeps the order it is given:
batches are read in order by one thread, and handed to the sink in order by one thread, so the frames and
the file written are the same as when everything runs one after another.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_END = object()
POLL_SECONDS = 0.1  # how often a blocked thread looks whether the run is stopping


class ReadAhead:
    """Iterates ``items`` in a thread of its own, at most ``depth`` items ahead of the consumer.

    Iterating a ReadAhead yields the items in order; an exception of the source is raised there, in the
    consumer's thread. :meth:`stop` ends the thread early (the source iterator is closed in its thread).
    """

    def __init__(self, items: Iterable[Any], depth: int = 2, name: str = "read-ahead") -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._fill, args=(iter(items),), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, source: Iterator[Any]) -> None:
        try:
            for item in source:
                if not self._put(item):
                    break
        except BaseException as exc:  # handed to the consumer, raised there
            self._error = exc
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
            self._put(_END)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is _END:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def stop(self) -> None:
        """Stop reading (the run ends early); waits briefly for the thread."""
        self._stop.set()
        self._thread.join(timeout=5.0)


class WriteBehind:
    """Calls ``sink`` on each item :meth:`put` to it, in order, in a thread of its own, at most ``depth``
    items behind. An exception of ``sink`` is raised at the next :meth:`put` or at :meth:`close`."""

    def __init__(self, sink: Callable[[Any], None], depth: int = 2, name: str = "write-behind") -> None:
        self._sink = sink
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name=name, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._error is None:
                try:
                    self._sink(item)
                except BaseException as exc:  # raised in the producer's thread
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: Any) -> None:
        self._raise()
        while True:
            try:
                self._queue.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                self._raise()

    def close(self) -> None:
        """Wait until every item has gone to the sink; raise what the sink raised."""
        self._queue.put(_END)
        self._thread.join()
        self._raise()

    def abort(self) -> None:
        """The run failed: skip what is still queued, and wait only for the item the sink is on (so that
        nothing touches the sink's file after this returns)."""
        if self._error is None:
            self._error = RuntimeError("the run stopped")
        while True:
            try:
                self._queue.put_nowait(_END)
                break
            except queue.Full:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
        self._thread.join()
