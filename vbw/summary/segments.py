"""Events -> segments: what the summary page draws.

A segment is announced by a `start` event, may get periodic `update`s and is closed by an `end`.
Delivery is at least once, so any message may come twice (same `event_id`: the repeat is
dropped), and a summary may be made while segments are still open (a start without an end).
The fold is order-independent: each segment takes its times, scores and snapshot from its most
advanced message (end > update > start, then more windows), so JSONL files read in any order and
Kafka partitions interleaved in any way give the same segments.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from contracts.errors import VbwError

EVENT_SCHEMA = "vbw.event/v1"
EVENT_TYPES = ("start", "update", "end")
WHOLE_FRAME = "(whole frame)"  # the zone row of events that carry no zone


class BadEvent(VbwError, ValueError):
    """A document that is not a usable vbw.event/v1 event; the message says where it came from."""


@dataclass(frozen=True)
class Event:
    """The fields of a vbw.event/v1 message the summary reads."""

    event_id: str
    type: str  # start | update | end
    stream: str
    zone: str | None
    label: str
    start_time: float  # capture time of the segment's first window, unix seconds
    end_time: float | None  # capture time of its last window so far (the end, on an end event)
    peak_score: float
    mean_score: float
    windows: int
    snapshot: str | None
    segment_key: tuple[str, ...]  # the same on every message of one segment


def _field(doc: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if name not in doc:
        raise BadEvent(f"{where}: no {name!r}")
    value = doc[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BadEvent(f"{where}: {name!r} is {type(value).__name__}, not {kind}")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadEvent(f"{where}: {name!r} is {value}")
    return value


def parse_event(doc: Any, where: str) -> Event | None:
    """One decoded JSON document -> Event; None for another schema (a window message in the same
    file); BadEvent for a vbw.event/v1 document that lacks what the page needs."""
    if not isinstance(doc, dict):
        raise BadEvent(f"{where}: not a JSON object")
    if doc.get("schema") != EVENT_SCHEMA:
        return None
    num = (int, float)
    kind = _field(doc, "type", str, where)
    if kind not in EVENT_TYPES:
        raise BadEvent(f"{where}: type {kind!r} is not one of {EVENT_TYPES}")
    stream = _field(doc, "stream", str, where)
    label = _field(doc, "label", str, where)
    start = float(_field(doc, "start_time", num, where))
    end = doc.get("end_time")
    end = None if end is None else float(_field(doc, "end_time", num, where))
    zone = doc.get("zone")
    zone = None if zone is None else _field(doc, "zone", str, where)
    snapshot = doc.get("snapshot")
    snapshot = None if snapshot is None else _field(doc, "snapshot", str, where)
    return Event(
        event_id=_field(doc, "event_id", str, where),
        type=kind,
        stream=stream,
        zone=zone or None,
        label=label,
        start_time=start,
        end_time=end,
        peak_score=float(_field(doc, "peak_score", num, where)),
        mean_score=float(_field(doc, "mean_score", num, where)),
        windows=int(_field(doc, "windows", int, where)),
        snapshot=snapshot or None,
        segment_key=(stream, label, repr(start)),
    )


def camera_and_zone(stream: str, zone: str | None) -> tuple[str, str]:
    """(the camera's page, the zone's row). A zone is analysed as the stream `cam1/door`: its
    events belong on cam1's page, in the row `door`."""
    if not zone:
        return stream, WHOLE_FRAME
    suffix = "/" + zone
    return (stream[: -len(suffix)] if stream.endswith(suffix) and len(stream) > len(suffix) else stream), zone


@dataclass
class Segment:
    camera: str
    zone: str
    label: str
    start: float
    end: float  # the end time, or the last time heard of while open
    closed: bool
    peak_score: float
    mean_score: float
    windows: int
    snapshot: str | None
    event_ids: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass
class Fold:
    segments: list[Segment]  # by camera, then start time
    repeats: int  # messages dropped as repeats of an event_id already read
    conflicts: list[str]  # event_ids whose repeats differ (an at-least-once bug upstream)


def _progress(e: Event) -> tuple[int, int, float]:
    return (EVENT_TYPES.index(e.type), e.windows, e.end_time if e.end_time is not None else e.start_time)


def fold(events: Iterable[Event]) -> Fold:
    by_id: dict[str, Event] = {}
    repeats, conflicts = 0, []
    for e in events:
        first = by_id.setdefault(e.event_id, e)
        if first is not e:
            repeats += 1
            if first != e and e.event_id not in conflicts:
                conflicts.append(e.event_id)
    groups: dict[tuple[str, ...], list[Event]] = {}
    for e in by_id.values():
        groups.setdefault(e.segment_key, []).append(e)
    segments = []
    for msgs in groups.values():
        last = max(msgs, key=_progress)
        with_snapshot = [m for m in msgs if m.snapshot]
        camera, zone = camera_and_zone(last.stream, last.zone)
        ends = [m.end_time for m in msgs if m.end_time is not None]
        segments.append(
            Segment(
                camera=camera,
                zone=zone,
                label=last.label,
                start=min(m.start_time for m in msgs),
                end=max([last.start_time, *ends])
                if last.type != "end"
                else (last.end_time or last.start_time),
                closed=last.type == "end",
                peak_score=max(m.peak_score for m in msgs),
                mean_score=last.mean_score,
                windows=last.windows,
                # The latest snapshot is the peak window's so far.
                snapshot=max(with_snapshot, key=_progress).snapshot if with_snapshot else None,
                event_ids=sorted(m.event_id for m in msgs),
            )
        )
    segments.sort(key=lambda s: (s.camera, s.start, s.zone, s.label))
    return Fold(segments, repeats, conflicts)


def by_camera(segments: Iterable[Segment]) -> dict[str, list[Segment]]:
    out: dict[str, list[Segment]] = {}
    for s in segments:
        out.setdefault(s.camera, []).append(s)
    return dict(sorted(out.items()))
