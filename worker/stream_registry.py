"""What the stream API and the config reload know of the running sources, without the threads.

- `StreamStatus` / `SourceStatus`: one source (a config entry) and its streams as the API shows
  them (pydantic, so the OpenAPI document describes them).
- `RateMeter`: frames per second from a monotonic counter, over the last few seconds of queries.
- `LastErrors`: the last warning or error each source logged (a logging handler on `vbw.source`:
  the sources already log every problem once, with the stream in `extra`; the lines are redacted).
- The errors the API maps to status codes: not found (404), conflict (409), refused (409 too:
  a kind of source that cannot change at runtime).

The pipeline (worker.pipeline) owns the sources and their threads; this module only describes them.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Literal

from pydantic import BaseModel, Field

from contracts.errors import VbwError

SourceState = Literal["starting", "running", "connecting", "draining", "ended", "failed"]

# Rates are over the samples of the last RATE_WINDOW_S (queries add a sample at most every
# RATE_SAMPLE_S), so two polls a second apart and two a minute apart both read a recent rate.
RATE_WINDOW_S = 10.0
RATE_SAMPLE_S = 0.5


class StreamNotFound(VbwError):
    """No running source has this id."""


class StreamConflict(VbwError):
    """A source with this id runs already, or the request contradicts itself."""


class StreamRefused(VbwError):
    """This change cannot be made at runtime (it needs a restart)."""


class StreamStatus(BaseModel):
    """One stream of a source: the whole frame (`<id>`) or a zone (`<id>/<zone>`)."""

    stream_id: str
    up: bool = Field(description="delivering frames now")
    last_frame_age_s: float | None = Field(description="seconds since its last frame; null before the first")
    frames_in_per_s: float = Field(description="frames handed to the pipeline per second (after sampling)")
    frames_analysed_per_s: float = Field(description="frames that entered a window per second (in - drops)")
    frames_in: int
    frames_dropped: int = Field(description="frames dropped before a window, any reason")
    windows: int = Field(description="windows sent to the sinks")
    reconnects: int


class SourceStatus(BaseModel):
    """One source of the config (`sources[]` entry) and its streams."""

    id: str
    kind: str = Field(description="the source's `type`: file, rtsp, kafka")
    state: SourceState
    uptime_s: float
    last_error: str | None = Field(description="the last warning or error it logged (redacted)")
    streams: list[StreamStatus]
    config: dict = Field(description="its config entry; secrets (URLs) shown as **********")


class SourceList(BaseModel):
    sources: list[SourceStatus]


class RateMeter:
    """Per-second rate of a monotonic counter from samples taken when asked (pure; clock given)."""

    def __init__(self, now: float, value: float = 0.0) -> None:
        self._samples: deque[tuple[float, float]] = deque([(now, value)])

    def rate(self, now: float, value: float) -> float:
        if now - self._samples[-1][0] >= RATE_SAMPLE_S:
            self._samples.append((now, value))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()
        t0, v0 = self._samples[0]
        return max(0.0, (value - v0) / (now - t0)) if now > t0 else 0.0


class LastErrors(logging.Handler):
    """The last WARNING+ line each source logged, by source id (from the record's `stream`)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._last: dict[str, str] = {}
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        stream = getattr(record, "stream", None)
        if isinstance(stream, str):
            source_id = stream.split("/", 1)[0]
            with self._guard:
                self._last[source_id] = record.getMessage()

    def note(self, source_id: str, message: str) -> None:
        with self._guard:
            self._last[source_id] = message

    def get(self, source_id: str) -> str | None:
        with self._guard:
            return self._last.get(source_id)

    def forget(self, source_id: str) -> None:
        with self._guard:
            self._last.pop(source_id, None)
