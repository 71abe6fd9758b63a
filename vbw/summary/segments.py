"""Events -> segments: what the summary page draws.

A segment is announced by a `start` event, may get periodic `update`s and is closed by an `end`;
its messages share a `segment_id` (worker/event_messages.py). Delivery is at least once, so any
message may come twice (same `event_id`: the repeat is dropped), and a summary may be made while
segments are still open (a start without an end). The fold is order-independent: each segment
takes its times, scores and snapshot from its most advanced message (end > update > start, then
more windows), so JSONL files read in any order and Kafka partitions interleaved in any way give
the same segments.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from contracts.errors import VbwError
from vbw.summary.clock import ClockName
from worker.event_messages import SCHEMA_ID, EventMessage
from worker.messages import problems

EVENT_TYPES = ("start", "update", "end")
WHOLE_FRAME = "(whole frame)"  # the zone row of events that carry no zone


class BadEvent(VbwError, ValueError):
    """A document that is not a valid vbw.event/v1 event; the message says where it came from."""


def parse_event(doc: Any, where: str) -> EventMessage | None:
    """One decoded JSON document -> its event; None for another schema (a window message in the
    same file); BadEvent for a vbw.event/v1 document its schema rejects."""
    if not isinstance(doc, dict):
        raise BadEvent(f"{where}: not a JSON object")
    if doc.get("schema") != SCHEMA_ID:
        return None
    try:
        return EventMessage.model_validate(doc)
    except ValidationError as e:
        raise BadEvent(f"{where}: {problems(e)}") from e


@dataclass
class Segment:
    camera: str  # the event's source_id: one page each
    zone: str  # one timeline row each
    label: str
    start: float
    end: float  # the end time, or the last window's while open
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


def _progress(e: EventMessage) -> tuple[int, int, float]:
    return (EVENT_TYPES.index(e.type), e.windows, e.end_time)


def fold(events: Iterable[EventMessage], clock: ClockName = "capture") -> Fold:
    """Segments of the events, their times on `clock`: capture times or the source's pts."""
    by_id: dict[str, EventMessage] = {}
    repeats, conflicts = 0, []
    for e in events:
        first = by_id.setdefault(e.event_id, e)
        if first is not e:
            repeats += 1
            if first != e and e.event_id not in conflicts:
                conflicts.append(e.event_id)
    groups: dict[str, list[EventMessage]] = {}
    for e in by_id.values():
        groups.setdefault(e.segment_id, []).append(e)
    segments = []
    for msgs in groups.values():
        last = max(msgs, key=_progress)
        with_snapshot = [m for m in msgs if m.snapshot]
        segments.append(
            Segment(
                camera=last.source_id,
                zone=last.zone or WHOLE_FRAME,
                label=last.label,
                start=min(m.start_time if clock == "capture" else m.start_pts for m in msgs),
                end=last.end_time if clock == "capture" else last.end_pts,
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
