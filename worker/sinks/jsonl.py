"""JSONL sinks: `vbw.window/v1` documents (or `vbw.event/v1` with `payload: events`), one per
line, to a file or stdout. A file sink with `payload: embeddings` adds each window's
`embedding` (list of floats) to its document: what `vbw index --jsonl` reads.

Writes are synchronous and small, so a window is acked as soon as its line reached the OS
(flushed); `fsync: true` also forces it to disk at each flush(). A line is never split: each
document is written with one write() call.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import IO

import numpy as np

from contracts.types import DeliveryCallback
from worker.config import JsonlSinkConfig, StdoutSinkConfig, VbwConfig
from worker.event_messages import EventMessage
from worker.sinks.base import Sink, WindowResult


def text_line(result: WindowResult) -> str:
    """The readable one-liner of `vbw demo` / stdout format=text."""
    m = result.message
    labels = "  ".join(f"{ls.label} {ls.score:.2f}" for ls in m.labels)
    flag = "" if m.complete else f"  (partial: {m.frames} frames)"
    return f"{m.stream_id:<12} {m.start_pts:7.2f}s - {m.end_pts:7.2f}s   {labels}{flag}"


def event_text_line(e: EventMessage) -> str:
    """The readable one-liner of an event (stdout format=text)."""
    span = f"{e.start_pts:7.2f}s - {e.end_pts:7.2f}s"
    end = f"  ({e.end_reason})" if e.end_reason else ""
    return (
        f"{e.stream_id:<12} {e.type:<6} {e.label:<12} {span}   peak {e.peak_score:.2f}  "
        f"mean {e.mean_score:.2f}  {e.windows} windows{end}"
    )


class _LineSink(Sink):
    def __init__(self, name: str, events: bool = False):
        self.name = name
        self.takes_events = events
        self._f: IO[str] | None = None

    def _line(self, result: WindowResult) -> str:
        return result.message.to_json()

    def _event_line(self, event: EventMessage) -> str:
        return event.to_json()

    def publish(self, result: WindowResult, done: DeliveryCallback) -> None:
        self._write(self._line(result), done)

    def publish_event(self, event: EventMessage, done: DeliveryCallback) -> None:
        self._write(self._event_line(event), done)

    def _write(self, line: str, done: DeliveryCallback) -> None:
        assert self._f is not None, "publish before open"
        try:
            self._f.write(line + "\n")
            self._f.flush()
        except (OSError, ValueError) as e:
            done(f"{self.name}: write failed: {e}")
            return
        done(None)

    def flush(self, timeout: float) -> bool:
        if self._f is not None:
            with contextlib.suppress(OSError, ValueError):
                self._f.flush()
        return True


def embedding_line(result: WindowResult) -> str:
    """The window's vbw.window/v1 document with its `embedding` (a list of floats) added."""
    doc = json.loads(result.message.to_json())
    doc["embedding"] = np.asarray(result.embedding, dtype=np.float32).reshape(-1).tolist()
    return json.dumps(doc, separators=(",", ":"))


class JsonlSink(_LineSink):
    def __init__(
        self,
        path: str | Path,
        name: str = "jsonl",
        fsync: bool = False,
        events: bool = False,
        embeddings: bool = False,
    ):
        super().__init__(name, events)
        self.path = Path(path)
        self.fsync = fsync
        self.embeddings = embeddings

    @classmethod
    def from_config(cls, sc: JsonlSinkConfig, cfg: VbwConfig) -> JsonlSink:
        return cls(
            sc.path, sc.name, sc.fsync, events=sc.payload == "events", embeddings=sc.payload == "embeddings"
        )

    def _line(self, result: WindowResult) -> str:
        return embedding_line(result) if self.embeddings else result.message.to_json()

    def open(self) -> None:
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a", encoding="utf-8")

    def flush(self, timeout: float) -> bool:
        super().flush(timeout)
        if self.fsync and self._f is not None:
            with contextlib.suppress(OSError, ValueError):
                os.fsync(self._f.fileno())
        return True

    def close(self) -> None:
        if self._f is not None:
            self.flush(0)
            self._f.close()
            self._f = None


class StdoutSink(_LineSink):
    def __init__(
        self, fmt: str = "json", name: str = "stdout", stream: IO[str] | None = None, events: bool = False
    ):
        super().__init__(name, events)
        self.format = fmt
        self._stream = stream

    @classmethod
    def from_config(cls, sc: StdoutSinkConfig, cfg: VbwConfig) -> StdoutSink:
        return cls(sc.format, sc.name, events=sc.payload == "events")

    def open(self) -> None:
        self._f = self._stream or sys.stdout

    def _line(self, result: WindowResult) -> str:
        return text_line(result) if self.format == "text" else result.message.to_json()

    def _event_line(self, event: EventMessage) -> str:
        return event_text_line(event) if self.format == "text" else event.to_json()

    def close(self) -> None:
        self.flush(0)
        self._f = None
