"""The one base class of every `SourceContext` (worker.sources.base): the parts all programs share.

A program (the pipeline, `vbw ingest`, the benches) subclasses `SourceContextBase` with what
differs: where a frame goes (`emit`), what a stream reset or drop means, and the downstream fill
level (`load`). Stopping, waiting, stream registration and metrics, the feedback queue, the
drained flag and the high/low-water congestion signal are here, backed by the `Runtime` that
runs the source's thread.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from worker.frames import Frame
from worker.metrics import Metrics
from worker.sources.base import Feedback, FramesReleased, Source, SourceContext

if TYPE_CHECKING:
    from worker.runtime import Runtime


class SourceContextBase(SourceContext):
    """One source's view of its program. Subclasses implement emit, stream_reset, drop_streams
    and load; everything else a source may call is here."""

    def __init__(
        self,
        source: Source,
        runtime: Runtime,
        metrics: Metrics,
        image_size: tuple[int, int],
        *,
        high_water: float = 1.0,
        low_water: float = 0.0,
    ) -> None:
        self.source = source
        self.runtime = runtime
        self.metrics = metrics
        self.image_size = image_size
        self.high_water, self.low_water = high_water, low_water
        self.streams: set[str] = set()  # the streams this source has emitted frames of
        self._feedback: deque[Feedback] = deque()
        self._congested = False
        # This source's own stop: set when it is removed at runtime, and by the program's stop.
        self.stop_event = threading.Event()
        runtime.stop_sources.listen(self.stop_event)

    # -- lifecycle ------------------------------------------------------------------------------
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def wait(self, seconds: float) -> bool:
        return self.stop_event.wait(max(0.0, seconds))

    def drained(self) -> bool:
        return self.runtime.drained.is_set()

    # -- streams and counters -------------------------------------------------------------------
    def received(self, frame: Frame) -> None:
        """Count a frame handed over, registering its stream the first time it is seen."""
        sid = frame.stream_id
        if sid not in self.streams:
            self.streams.add(sid)
            self.metrics.register_stream(sid)
            self.stream_registered(sid)
        self.metrics.frames_received.labels(self.metrics.stream(sid)).inc()

    def stream_registered(self, stream_id: str) -> None:
        """Hook: a stream of this source was seen for the first time (before its first frame counts)."""

    def dropped(self, frame: Frame, reason: str) -> None:
        """Count a frame that never entered a window; its source ref is released at once."""
        self.metrics.frame_dropped(frame.stream_id, reason)
        if frame.source_ref is not None:
            self.feed(FramesReleased((frame.source_ref,)))

    def source_raised(self) -> None:
        """After `run` raised: count the error and close every stream of this source."""
        for sid in self.streams or set(self.source.stream_ids()):
            self.metrics.decode_error(sid)
            self.metrics.stream_up(sid, False)
            self.stream_reset(sid, "error")

    # -- feedback -------------------------------------------------------------------------------
    def feed(self, item: Feedback) -> None:
        """Route a delivery or release to the source (any thread; deque.append is thread-safe)."""
        self._feedback.append(item)

    def take_feedback(self) -> list[Feedback]:
        out = []
        while self._feedback:
            out.append(self._feedback.popleft())
        return out

    # -- backpressure ---------------------------------------------------------------------------
    def congested(self) -> bool:
        # Hysteresis: on at high water, off again only at low water, so a paused input does not flap.
        load = self.load()
        if self._congested and load <= self.low_water:
            self._congested = False
        elif not self._congested and load >= self.high_water:
            self._congested = True
        return self._congested

    # -- what each program decides --------------------------------------------------------------
    @abstractmethod
    def emit(self, frame: Frame) -> bool: ...

    @abstractmethod
    def stream_reset(self, stream_id: str, reason: str, emit_partial: bool = True) -> None: ...

    @abstractmethod
    def drop_streams(self, stream_ids: Iterable[str], reason: str) -> None: ...

    @abstractmethod
    def load(self) -> float: ...
