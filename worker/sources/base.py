"""What a source is, and what the pipeline offers it.

A source reads one or more streams (a file, a camera, a Kafka consumer) and hands decoded
`Frame`s to the pipeline. The pipeline owns the thread: it calls `Source.run(ctx)` once, in a
thread of its own, and every call a source makes goes through the `SourceContext` it was given.

Contract, for anyone adding a source (the Kafka frames source is one):

- `run(ctx)` loops until `ctx.stopping()` is true or the input ends (finite sources), then returns.
  Expected input problems (unreadable file, refused connection, bad message) are handled inside:
  one log line, a counter (`ctx.metrics`), and the source carries on or ends. A source that ends
  because its input failed for good (a file that cannot be opened or read to its end) raises
  `SourceFailed`; the runtime logs it as one line. Any other exception that escapes `run` is also
  logged as one line and ends only this source. A run whose every source failed exits non-zero;
  a source whose input simply ended (end of file) has not failed.
- Frames: `ctx.emit(frame)`. `frame.seq` is monotonic per stream and never reused (not even
  after a reconnect); the pipeline treats a seq jump larger than `windows.max_gap` as a gap.
  Set `frame.source_ref` (for Kafka: (topic, partition, offset)) to get delivery feedback.
- Backpressure: a `live` source's `emit` never blocks; when the pipeline is full the frame is
  dropped (counted, reason "overload") before it enters a window, and the seq gap closes the
  stream's window state, so no window has a hole. A non-live source's `emit` blocks until there
  is room (or the pipeline stops). A source that must keep its own loop turning (Kafka: `poll()`
  drives group membership) should instead watch `ctx.congested()` and pause its input (Kafka:
  `consumer.pause(*partitions)`), resuming when it turns false; `ctx.load()` gives the fill level.
- Stream state: `ctx.stream_reset(stream, reason)` after a reconnect, a jump in the input, or an
  end of stream closes that stream's window state (the partial-window policy applies). For a
  Kafka revoke, `ctx.drop_streams(streams, "revoked")` forgets the state without emitting
  anything. Both are ordered with the frames already emitted by this source.
- Delivery feedback, for at-least-once offset commits: the pipeline routes back, thread-safely,
  (a) a `WindowDelivery` when every sink has acked (or one failed) a window, with the
  `source_ref` of every frame the window used, and (b) `FramesReleased` when frames are no longer
  needed by anything: out of the window ring buffer and every window that used them acked by all
  sinks (or dropped at ingress, or never part of a window). A window that failed delivery keeps
  its frames held, so their offsets are never committed (they are re-read after a restart). Only
  frames with a `source_ref` take part. The source drains them in its OWN thread with
  `ctx.take_feedback()` (kafka-python consumers are not thread-safe), e.g. once per poll loop.
  For Kafka the commit point of a partition is then the lowest emitted offset not yet released.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from contracts.errors import VbwError
from contracts.types import SourceRef
from worker.frames import Frame


@dataclass(frozen=True, slots=True)
class WindowDelivery:
    """Every sink acked the window (ok) or one of them failed it for good (not ok)."""

    window_id: str
    stream_id: str
    refs: tuple[SourceRef, ...]  # source_ref of every frame the window used, oldest first
    ok: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class FramesReleased:
    """These frames are no longer needed by any window buffer or unacked window."""

    refs: tuple[SourceRef, ...]


Feedback = WindowDelivery | FramesReleased


class SourceFailed(VbwError):
    """Raised by `Source.run` when its input failed for good. The runtime logs it as the one
    line `<source id>: <what>: <detail>` (the source has counted the error itself)."""

    def __init__(self, source_id: str, what: str, detail: str):
        super().__init__(f"{source_id}: {what}: {detail}")
        self.source_id, self.what, self.detail = source_id, what, detail


class SourceMetrics(Protocol):
    """Per-stream counters a source updates itself (labels follow `metrics.per_stream_labels`).
    `worker.metrics.Metrics` is the one implementation; every context hands it to its sources."""

    def stream_up(self, stream_id: str, up: bool) -> None: ...
    def reconnect(self, stream_id: str) -> None: ...
    def decode_error(self, stream_id: str) -> None: ...
    def frame_dropped(self, stream_id: str, reason: str, n: int = 1) -> None: ...
    def stage_seconds(self, stage: str, seconds: float) -> None: ...

    # Kafka: streams and partitions come and go with the group's assignment.
    def stream_gone(self, stream_id: str) -> None:
        """No longer ours to report (partition revoked): its up series goes, it does not read 0."""
        ...

    def consumer_lag(self, topic: str, partition: int, lag: int) -> None: ...
    def consumer_lag_gone(self, topic: str, partition: int) -> None: ...
    def dead_letter(self, topic: str, reason: str) -> None: ...
    def register_dead_letters(self, topics: Iterable[str], reasons: Iterable[str]) -> None: ...


class SourceContext(Protocol):
    """The pipeline, as one source sees it. Every method is safe to call from the source thread.

    `worker.sources.context.SourceContextBase` implements the shared parts; each program (the
    pipeline, `vbw ingest`, the benches) subclasses it with its own emit, resets and load."""

    metrics: SourceMetrics
    image_size: tuple[int, int]  # (H, W) frames must have, from the model

    def stopping(self) -> bool:
        """True once the pipeline is shutting down: return from `run` soon."""
        ...

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking early on shutdown. Returns `stopping()`."""
        ...

    def emit(self, frame: Frame) -> bool:
        """Hand a frame over. False if it was dropped (live source, pipeline full) or the
        pipeline is stopping. Counts `vbw_frames_received_total` and any drop."""
        ...

    def stream_reset(self, stream_id: str, reason: str, emit_partial: bool = True) -> None:
        """Close the stream's window state after the frames already emitted (gap, reconnect, EOS).
        `emit_partial=False` drops the partial window whatever the policy (counted)."""
        ...

    def drop_streams(self, stream_ids: Iterable[str], reason: str) -> None:
        """Forget the window state of these streams, emitting nothing (e.g. Kafka revoke)."""
        ...

    def congested(self) -> bool:
        """Downstream is above its high-water mark; pause input until this turns false."""
        ...

    def load(self) -> float:
        """Fill level of the pipeline's frame queue, 0..1."""
        ...

    def take_feedback(self) -> list[Feedback]:
        """Deliveries and releases routed to this source since the last call, oldest first."""
        ...

    def drained(self) -> bool:
        """At shutdown: True once the sinks have flushed, so no more feedback will come. A source
        with `commits_after_drain` keeps taking feedback until then, then commits and returns."""
        ...


class Source(ABC):
    """One input. Built from its config entry by `worker.sources.build_source`."""

    #: config id; used in logs and as the default stream id. Never a URL (those carry secrets).
    id: str
    #: drop frames (counted) rather than block when the pipeline is full: cameras cannot wait.
    live: bool = True
    #: `run` returns at the end of input; the worker exits when every finite source has ended.
    finite: bool = False
    #: at shutdown, apply the partial-window policy to this source's open windows. A Kafka
    #: source sets False: its unfinished windows are rebuilt from uncommitted offsets next run.
    emit_partial_on_stop: bool = True
    #: keep running after `ctx.stopping()` (emitting nothing) until `ctx.drained()`, so the last
    #: acks reach the source before it commits (Kafka). The pipeline joins it after the sinks.
    commits_after_drain: bool = False

    @abstractmethod
    def run(self, ctx: SourceContext) -> None:
        """Read and emit frames until `ctx.stopping()` or end of input. Runs in its own thread."""

    def stream_ids(self) -> list[str]:
        """Streams known up front (for metrics and readiness); dynamic sources may return []."""
        return [self.id]

    def describe(self) -> str:
        """Safe one-line description for logs (URLs redacted)."""
        return self.id
