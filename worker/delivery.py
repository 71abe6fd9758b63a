"""Delivery bookkeeping: which frames are still needed, which windows are still with the sinks,
and the feedback each source gets for its streams (worker.sources.base: WindowDelivery,
FramesReleased). No thread of its own.

A frame with a `source_ref` is held once while it sits in its stream's window buffer and once
per window that used it, until every sink has acked that window (worker.refs.RefCounts). The
inference side reports holds and buffer releases (`hold`, `release`); the sink thread hands
each window over with `publish`, and the sinks' verdicts come back to `_on_done` from any
thread (a producer's I/O thread), hence the lock. A failed window keeps its frames held, so an
at-least-once source never commits past them.

Segment events (worker.events.EventBatch) take a path of their own: `publish_events` hands each
event to every event sink; per stream, batches then go on in order: once every event of a batch
and of every batch before it is acked, the sink thread's `pump` writes the batch's checkpoint to
the state store, and once that is acked the batch's extra holds (`cover`) are released. An event
that fails keeps its batch, and every later batch of the stream, from checkpointing: their
frames stay held and are replayed after a restart, like a failed window's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from contracts.types import SourceRef
from worker.event_messages import EventMessage
from worker.events import EventBatch, StateStore
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


@dataclass(slots=True)
class _EventPending:
    """An event batch on its way: events to the sinks, then its checkpoint to the store."""

    batch: EventBatch
    remaining: int
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
        self._chains: dict[str, deque[_EventPending]] = {}  # per stream, batches not yet checkpointed
        self._checkpoints_in_flight = 0

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
        if not sinks:  # every sink takes events only: nothing to wait for
            pending.remaining = 1
            self._on_done(pending, None, None)
            return
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

    def _on_done(self, pending: _Pending, sink: Sink | None, error: str | None) -> None:
        """A sink's verdict on one window (sink None: there was no window sink). Any thread."""
        if sink is not None:
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

    # -- events -----------------------------------------------------------------------------------
    def publish_events(self, batch: EventBatch, sinks: Sequence[Sink]) -> None:
        """Hand a batch's events to every event sink (from the sink thread); `pump` goes on."""
        entry = _EventPending(batch, len(batch.events) * len(sinks))
        with self._lock:
            self._chains.setdefault(batch.stream_id, deque()).append(entry)
        for event in batch.events:
            for sink in sinks:
                try:
                    sink.publish_event(event, lambda err, s=sink, e=event: self._on_event(entry, s, e, err))
                except Exception as e:
                    self._on_event(entry, sink, event, f"publish raised {type(e).__name__}: {e}")

    def pump(self, store: StateStore | None) -> int:
        """Sink thread: write the checkpoints now due (per stream, in order, once every event up
        to them is acked); release the holds of batches without one. Returns how many went."""
        ready: list[_EventPending] = []
        with self._lock:
            for sid in list(self._chains):
                chain = self._chains[sid]
                while chain and chain[0].remaining == 0 and chain[0].error is None:
                    ready.append(chain.popleft())
                if not chain:
                    del self._chains[sid]
        for entry in ready:
            ck = entry.batch.checkpoint
            if ck is None or store is None:
                self._release_cover(entry.batch)
                continue
            with self._lock:
                self._checkpoints_in_flight += 1
            try:
                store.write(ck, lambda err, e=entry: self._on_checkpoint(e, err))
            except Exception as e:
                self._on_checkpoint(entry, f"write raised {type(e).__name__}: {e}")
        return len(ready)

    def events_in_flight(self) -> int:
        """Event batches not yet checkpointed (or failed), and checkpoints not yet acked."""
        with self._lock:
            return sum(len(c) for c in self._chains.values()) + self._checkpoints_in_flight

    def _on_event(self, entry: _EventPending, sink: Sink, event: EventMessage, error: str | None) -> None:
        """A sink's verdict on one event. Any thread."""
        if error is None:
            self.metrics.published.labels(sink.name).inc()
        else:
            self.metrics.publish_errors.labels(sink.name).inc()
            log.error(
                "sink %s: event %s (%s %s of %s) not delivered: %s; the stream's segment state is not "
                "saved past it, its frames stay held",
                sink.name, event.event_id, event.label, event.type, event.stream_id, error,
            )  # fmt: skip
        with self._lock:
            entry.remaining -= 1
            if error is not None and entry.error is None:
                entry.error = error

    def _on_checkpoint(self, entry: _EventPending, error: str | None) -> None:
        """The store's verdict on a checkpoint. Any thread."""
        with self._lock:
            self._checkpoints_in_flight -= 1
        if error is not None:
            log.error(
                "stream %s: segment state not saved: %s; its frames stay held",
                entry.batch.stream_id,
                error,
            )
            return
        self._release_cover(entry.batch)

    def _release_cover(self, batch: EventBatch) -> None:
        if batch.cover:
            self.release(batch.stream_id, batch.cover)

    def _feed(self, stream_id: str, item: Feedback | None) -> None:
        if item is None:
            return
        feed = self._route(stream_id)
        if feed is not None:
            feed(item)
