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
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from worker.frames import Window
from worker.messages import WindowMessage

#: done(None) = acked; done("reason") = failed for good. Call exactly once per publish.
DeliveryCallback = Callable[[str | None], None]


@dataclass(slots=True)
class WindowResult:
    """One analysed window, ready to publish."""

    message: WindowMessage  # the vbw.window/v1 document (labels, ids, model, latency...)
    embedding: np.ndarray  # float32 [E], L2-normalised
    scores: np.ndarray  # float32 [C], every label's score in model label order
    window: Window  # the window itself (features already dropped), for refs and timing

    @property
    def key(self) -> str:
        """Partitioning key: the stream id."""
        return self.message.stream_id


class Sink(ABC):
    #: label value of vbw_published_total{topic=...}
    name: str

    def open(self) -> None:  # noqa: B027 - optional hook
        """Connect / open files. Called once at start-up; raise with a clear message on failure."""

    @abstractmethod
    def publish(self, result: WindowResult, done: DeliveryCallback) -> None:
        """Send one window; call `done` exactly once when it is acked or has failed for good."""

    def poll(self) -> None:  # noqa: B027 - optional hook
        """Idle hook, called from the sink thread at least every 100 ms."""

    @abstractmethod
    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` s for every published window to be acked or failed. True if none pending."""

    @abstractmethod
    def close(self) -> None:
        """Release files/connections. No publish after this."""
