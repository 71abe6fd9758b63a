"""Delivery bookkeeping: which frames are still needed, which windows are still with the sinks,
and the feedback each source gets for its streams (worker.sources.base: WindowDelivery,
FramesReleased). No thread of its own.

A frame with a `source_ref` is held once while it sits in its stream's window buffer and once
per window that used it, until every sink has acked that window (worker.refs.RefCounts). The
inference side reports holds and buffer releases (`hold`, `release`); the sink thread hands
each window over with `publish`, and the sinks' verdicts come back to `_on_done` from any
thread (a producer's I/O thread), hence the lock. A failed window keeps its frames held, so an
at-least-once source never commits past them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from contracts.types import SourceRef
from worker.metrics import Metrics
from worker.refs import RefCounts
from worker.sinks.base import Sink, WindowResult
from worker.sources.base import Feedback, FramesReleased, WindowDelivery

log = logging.getLogger("vbw.pipeline")  # the logger these lines always had

#: stream id -> where that stream's source takes its feedback (None: no such stream)
Route = Callable[[str], Callable[[Feedback], None] | None]


@dataclass(slots=True)
class _Pending:
    """A window on its way through the sinks."""

    result: WindowResult
    remaining: int
    started: float
    error: str | None = None


class DeliveryLedger:
    def __init__(
        self,
        metrics: Metrics,
        route: Route,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.metrics = metrics
        self._route = route
        self._clock = clock
        self._wall = wall_clock
        self._refs = RefCounts()
        self._lock = threading.Lock()
        self._in_flight = 0

    # -- inference side -------------------------------------------------------------------------
    def hold(self, refs: Iterable[SourceRef]) -> None:
        """One more holder for each ref (a frame entering its window buffer, a window emitted)."""
        with self._lock:
            self._refs.hold(refs)

    def release(self, stream_id: str, refs: Iterable[SourceRef]) -> None:
        """A window buffer of `stream_id` let go of these frames; route the ones now free."""
        with self._lock:
            freed = self._refs.release(refs)
        self._feed(stream_id, FramesReleased(tuple(freed)) if freed else None)

    # -- sink side ------------------------------------------------------------------------------
    def publish(self, result: WindowResult, sinks: Sequence[Sink]) -> None:
        """Hand one window to every sink (from the sink thread)."""
        pending = _Pending(result, len(sinks), self._clock())
        with self._lock:
            self._in_flight += 1
        self.metrics.windows_emitted.labels(self.metrics.stream(result.message.stream_id)).inc()
        for sink in sinks:
            try:
                sink.publish(result, lambda err, s=sink: self._on_done(pending, s, err))
            except Exception as e:
                self._on_done(pending, sink, f"publish raised {type(e).__name__}: {e}")

    def in_flight(self) -> int:
        """Windows published and not yet settled by every sink."""
        return self._in_flight

    def held(self, ref: SourceRef) -> int:
        return self._refs.held(ref)

    def __len__(self) -> int:
        """Frames still held by a buffer or an unsettled window."""
        return len(self._refs)

    def _on_done(self, pending: _Pending, sink: Sink, error: str | None) -> None:
        """A sink's verdict on one window. Any thread."""
        if error is None:
            self.metrics.published.labels(sink.name).inc()
        else:
            self.metrics.publish_errors.labels(sink.name).inc()
            log.error(
                "sink %s: window %s not delivered: %s", sink.name, pending.result.message.window_id, error
            )
        self.metrics.stage_seconds("publish", self._clock() - pending.started)
        with self._lock:
            pending.remaining -= 1
            if error is not None and pending.error is None:
                pending.error = error
            if pending.remaining:
                return
            self._in_flight -= 1
        w = pending.result.window
        if pending.error is None:
            self.metrics.end_to_end.observe(max(0.0, self._wall() - w.capture_time))
        if not w.source_refs:
            return
        refs: tuple[SourceRef, ...] = tuple(w.source_refs)
        self._feed(
            w.stream_id, WindowDelivery(w.window_id, w.stream_id, refs, pending.error is None, pending.error)
        )
        if pending.error is None:
            with self._lock:
                freed = self._refs.release(refs)
            self._feed(w.stream_id, FramesReleased(tuple(freed)) if freed else None)

    def _feed(self, stream_id: str, item: Feedback | None) -> None:
        if item is None:
            return
        feed = self._route(stream_id)
        if feed is not None:
            feed(item)
