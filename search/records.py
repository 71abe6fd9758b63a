"""One indexed window, and how it is read from each input.

Inputs:
- a Kafka embeddings record (docs/kafka.md): key = stream id, value = little-endian float32 or
  float16, headers `window_id`, `dtype`, `dim`, `vbw-model`, `vbw-model-version`,
  `vbw-start-pts`, `vbw-end-pts`, `vbw-capture-time`;
- a JSONL line of a `payload: embeddings` sink: the vbw.window/v1 document plus `embedding`;
- a vbw.event/v1 document (Kafka events topic or a JSONL line) that carries a `snapshot`: the
  snapshot of its peak window.

Capture times: a window's document carries the capture time of its newest frame; the start is
that less the window's pts span (the source clock and the wall clock run at the same rate).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from contracts.errors import VbwError

_DTYPES = {"float32": "<f4", "float16": "<f2"}
#: every BadMessage reason (vbw_index_bad_messages_total{reason}, each series there from the start)
REASONS = (
    "missing-field",
    "bad-field",
    "bad-header",
    "bad-key",
    "empty-value",
    "bad-vector",
    "not-json",
    "not-json-object",
    "no-embedding",
    "not-event",
    "wrong-dim",  # a vector of another size than the index holds (a model with another embed_dim)
)


class BadMessage(VbwError, ValueError):
    """A message that is not an indexable window or event; `reason` is the metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason  # each reason has its metric series from the start
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class IndexedWindow:
    window_id: str
    stream_id: str
    start_time: float  # capture time of the first frame, unix seconds
    end_time: float  # capture time of the newest frame
    start_pts: float
    end_pts: float
    model_name: str
    model_version: str
    vector: np.ndarray  # float32 [E], L2-normalised


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The snapshot reference an event gives its peak window."""

    window_id: str
    snapshot: str


def _finite(name: str, text: str | float | None) -> float:
    if text is None:
        raise BadMessage("missing-field", f"no {name}")
    try:
        x = float(text)
    except (TypeError, ValueError):
        raise BadMessage("bad-field", f"{name}={str(text)[:40]!r} is not a number") from None
    if not math.isfinite(x):
        raise BadMessage("bad-field", f"{name}={x} is not finite")
    return x


def _unit(vector: np.ndarray) -> np.ndarray:
    v = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
    if v.size == 0 or not np.isfinite(v).all():
        raise BadMessage("bad-vector", f"{v.size} values, not all finite")
    norm = float(np.linalg.norm(v))
    if norm == 0.0:
        raise BadMessage("bad-vector", "zero vector")
    # Published embeddings are unit length; float16 rounding leaves them a little off.
    return v / norm


def window(
    window_id: str,
    stream_id: str,
    start_pts: float,
    end_pts: float,
    capture_time: float,
    model_name: str,
    model_version: str,
    vector: np.ndarray,
) -> IndexedWindow:
    if not window_id:
        raise BadMessage("missing-field", "no window_id")
    if not stream_id:
        raise BadMessage("missing-field", "no stream id")
    return IndexedWindow(
        window_id=window_id,
        stream_id=stream_id,
        start_time=capture_time - max(0.0, end_pts - start_pts),
        end_time=capture_time,
        start_pts=start_pts,
        end_pts=end_pts,
        model_name=model_name,
        model_version=model_version,
        vector=_unit(vector),
    )


def from_kafka(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> IndexedWindow:
    """An embeddings-topic record -> IndexedWindow; BadMessage says why not."""
    h: dict[str, str] = {}
    for k, v in headers or []:
        try:
            h[k] = v.decode() if v is not None else ""
        except UnicodeDecodeError:
            raise BadMessage("bad-header", f"header {k} is not UTF-8") from None
    dtype = h.get("dtype", "float32")
    if dtype not in _DTYPES:
        raise BadMessage("bad-header", f"dtype={dtype[:20]!r}")
    if not value:
        raise BadMessage("empty-value", "no vector bytes")
    size = np.dtype(_DTYPES[dtype]).itemsize
    if len(value) % size:
        raise BadMessage("bad-vector", f"{len(value)} bytes is not a whole number of {dtype}")
    vec = np.frombuffer(value, dtype=_DTYPES[dtype])
    if "dim" in h and h["dim"] != str(vec.size):
        raise BadMessage("bad-vector", f"dim header {h['dim'][:12]} but {vec.size} values")
    try:
        stream = (key or b"").decode()
    except UnicodeDecodeError:
        raise BadMessage("bad-key", "key is not UTF-8") from None
    return window(
        window_id=h.get("window_id") or h.get("vbw-window-id", ""),
        stream_id=stream,
        start_pts=_finite("vbw-start-pts", h.get("vbw-start-pts")),
        end_pts=_finite("vbw-end-pts", h.get("vbw-end-pts")),
        capture_time=_finite("vbw-capture-time", h.get("vbw-capture-time")),
        model_name=h.get("vbw-model", ""),
        model_version=h.get("vbw-model-version", ""),
        vector=vec,
    )


def from_document(doc: Any) -> IndexedWindow | Snapshot | None:
    """A JSON document: a window with `embedding`, or an event with a snapshot (None when the
    event has no snapshot: nothing to index, not an error)."""
    if not isinstance(doc, dict):
        raise BadMessage("not-json-object", f"a {type(doc).__name__}")
    if doc.get("schema") == "vbw.event/v1":
        ref, peak = doc.get("snapshot"), doc.get("peak_window_id")
        if not ref:
            return None
        if not isinstance(ref, str) or not isinstance(peak, str) or not peak:
            raise BadMessage("bad-field", "event snapshot or peak_window_id is not a string")
        return Snapshot(peak, ref)
    emb = doc.get("embedding")
    if not isinstance(emb, list):
        raise BadMessage("no-embedding", "a window line needs `embedding` (sink payload: embeddings)")
    try:
        vec = np.asarray(emb, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadMessage("bad-vector", "embedding is not a list of numbers") from None
    model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
    return window(
        window_id=str(doc.get("window_id") or ""),
        stream_id=str(doc.get("stream_id") or ""),
        start_pts=_finite("start_pts", doc.get("start_pts")),
        end_pts=_finite("end_pts", doc.get("end_pts")),
        capture_time=_finite("capture_time", doc.get("capture_time")),
        model_name=str(model.get("name", "")),
        model_version=str(model.get("version", "")),
        vector=vec,
    )


def from_line(line: str) -> IndexedWindow | Snapshot | None:
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadMessage("not-json", str(e)) from None
    return from_document(doc)


def from_event_value(value: bytes | None) -> Snapshot | None:
    """An events-topic record (vbw.event/v1 JSON) -> its snapshot, if it has one."""
    if not value:
        raise BadMessage("empty-value", "no event document")
    try:
        doc = json.loads(value)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadMessage("not-json", str(e)[:80]) from None
    if not isinstance(doc, dict) or doc.get("schema") != "vbw.event/v1":
        raise BadMessage("not-event", "value is not a vbw.event/v1 document")
    got = from_document(doc)
    assert got is None or isinstance(got, Snapshot)
    return got
