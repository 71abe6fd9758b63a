"""What a sink is: where finished windows go (JSONL file, stdout, Kafka topics).

The pipeline calls `open()` once at start-up (before any thread runs; a failure there stops the
start with its message), then every other method from its single sink thread: `publish()` per
window, `poll()` whenever the thread is idle (at least every 100 ms), and at shutdown
`flush(timeout)` and `close()`.

Contract, for anyone adding a sink (the Kafka labels and embeddings sinks are two):

- `publish(result, done)` hands one window over and returns quickly; a sink that buffers or
  sends asynchronously (Kafka) returns before delivery. When the window is durably delivered, or
  has failed for good (after the sink's own retries), the sink calls `done(None)` or
  `done("reason")` EXACTLY ONCE, from any thread (a producer's I/O thread is fine): the pipeline's
  callback is thread-safe and cheap. `publish` may block for a while when the sink's own buffer
  is full: that is the backpressure that eventually pauses Kafka sources and makes cameras drop.
- A window counts as delivered when EVERY sink has acked it. Only then are its frames released
  to the sources (Kafka offsets commit after this), and the end-to-end latency is observed.
- `publish` raising counts as a failed delivery of that window (the error becomes `done`'s reason);
  it is logged on one line and the pipeline carries on with the next window.
- `poll()` is the sink thread's idle hook: serve delivery callbacks, notice a producer in a fatal
  state and recreate it (resending its unacked windows), etc.
- `flush(timeout)` waits until everything published has been acked or failed, or the timeout
  passes; it returns True if nothing is left pending. `close()` releases the resources.
- `name` labels the sink's `vbw_published_total{topic}` / `vbw_publish_errors_total{topic}`
  (for Kafka: the topic; for JSONL: "jsonl" or the configured name).
- Event sinks (`payload: events`, `takes_events`) get `publish_event(event, done)` instead of
  `publish`, under the same contract: one `vbw.event/v1` message each, `done` exactly once.

Validation: a sink only ever sees valid windows. The `WindowMessage` checks itself when built
(finite numbers, RFC 3339 time, UTF-8: whatever `schemas/vbw.window.v1.json` rejects) and
`WindowResult` checks the embedding and scores are finite, both raising ValueError. Whoever
builds results catches that and calls `reject()`: the window is dropped for good, counted in
`vbw_windows_dropped_total{reason="invalid_message"}` and logged (rate-limited), never published.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from contracts.types import DeliveryCallback
from worker.event_messages import EventMessage
from worker.frames import Window
from worker.messages import WindowMessage, problems

#: vbw_windows_dropped_total{reason} of a window whose message or embedding cannot be valid
INVALID_REASON = "invalid_message"


@dataclass(slots=True)
class WindowResult:
    """One analysed window, ready to publish."""

    message: WindowMessage  # the vbw.window/v1 document (labels, ids, model, latency...)
    embedding: np.ndarray  # float32 [E], L2-normalised
    scores: np.ndarray  # float32 [C], every label's score in model label order
    window: Window  # the window itself (features already dropped), for refs and timing
    labels: tuple[str, ...] | None = None  # names of `scores`, in order (None: the model's labels)

    def __post_init__(self) -> None:
        # The message checked itself; a NaN here would reach the embeddings topic unchecked.
        if not (np.isfinite(self.embedding).all() and np.isfinite(self.scores).all()):
            raise ValueError(f"window {self.message.window_id}: non-finite embedding or scores")

    @property
    def key(self) -> str:
        """Partitioning key: the stream id."""
        return self.message.stream_id


class Sink(ABC):
    #: label value of vbw_published_total{topic=...}
    name: str
    #: publishes vbw.event/v1 segment events (`publish_event`) instead of windows (`payload: events`)
    takes_events: bool = False

    def open(self) -> None:  # noqa: B027 - optional hook
        """Connect / open files. Called once at start-up; raise with a clear message on failure."""

    @abstractmethod
    def publish(self, result: WindowResult, done: DeliveryCallback) -> None:
        """Send one window; call `done` exactly once when it is acked or has failed for good."""

    def publish_event(self, event: EventMessage, done: DeliveryCallback) -> None:
        """Send one segment event (sinks with `takes_events`); the same contract as `publish`."""
        raise NotImplementedError(f"sink {self.name} does not publish events")

    def poll(self) -> None:  # noqa: B027 - optional hook
        """Idle hook, called from the sink thread at least every 100 ms."""

    @abstractmethod
    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` s for every published window to be acked or failed. True if none pending."""

    @abstractmethod
    def close(self) -> None:
        """Release files/connections. No publish after this."""


class _Throttled:
    """At most `burst` lines per `period` seconds; says how many it held back."""

    def __init__(self, log: logging.Logger, burst: int = 20, period: float = 10.0) -> None:
        self.log, self.burst, self.period = log, burst, period
        self._start, self._count, self._held = -period, 0, 0

    def warning(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._start > self.period:
            if self._held:
                self.log.warning("%d more invalid windows not logged in %.0fs", self._held, self.period)
            self._start, self._count, self._held = now, 0, 0
        if self._count < self.burst:
            self._count += 1
            self.log.warning(msg, *args)
        else:
            self._held += 1


_invalid_log = _Throttled(logging.getLogger("vbw.sinks"))


def reject(window: Window, err: Exception, windows_dropped: Any) -> None:
    """A window that cannot be a valid vbw.window/v1 message (a NaN score or time, ...): count it in
    `windows_dropped` (the vbw_windows_dropped_total counter) and log why. It is never published."""
    windows_dropped.labels(INVALID_REASON).inc()
    _invalid_log.warning(
        "stream %s: window %s (seq %d-%d) dropped, not a valid vbw.window/v1 message: %s",
        window.stream_id,
        window.window_id,
        window.start_seq,
        window.end_seq,
        problems(err),
    )
