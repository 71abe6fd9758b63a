"""A known set of events for `vbw summarize`: two cameras, zones, every kind of message
(start/update/end, repeats, an open segment) and every kind of snapshot reference (relative,
file:// URI, missing file, none), with snapshot JPEGs of known solid colours."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

T0 = 1_764_547_200.0  # 2025-12-01 00:00:00 UTC
SNAP_W, SNAP_H = 320, 180

# Solid snapshot colours, far from the label palette and from the page's greys.
MAGENTA, YELLOW, TEAL, PURPLE = (230, 0, 230), (250, 230, 0), (0, 170, 170), (90, 0, 160)


@dataclass(frozen=True)
class Seg:
    """One segment of the fixture, and the messages it sends."""

    name: str
    stream: str
    zone: str | None
    label: str
    start: float  # seconds after T0
    end: float
    closed: bool
    snapshot: str | None  # reference as the event carries it
    color: tuple[int, int, int] | None  # the snapshot file's colour; None: no file written


def event_doc(seg: Seg, kind: str, end: float, windows: int, snapshot: str | None) -> dict[str, Any]:
    """One vbw.event/v1 document of the segment, built by the worker's own model."""
    from worker.event_messages import EventMessage, event_id, segment_id, split_stream
    from worker.messages import window_id

    first = window_id(seg.stream, int(seg.start * 5), "0.1.0")
    seg_id = segment_id(seg.stream, seg.label, first)
    update = 0 if kind == "start" else 1
    msg = EventMessage(
        event_id=event_id(seg_id, kind, update),
        segment_id=seg_id,
        type=kind,
        stream_id=seg.stream,
        source_id=split_stream(seg.stream)[0],
        zone=seg.zone,
        label=seg.label,
        start_time=T0 + seg.start,
        end_time=T0 + end,
        start_pts=seg.start,
        end_pts=end,
        start_seq=int(seg.start * 5),
        end_seq=int(end * 5),
        start_window_id=first,
        windows=windows,
        peak_score=0.9,
        mean_score=0.8,
        peak_time=T0 + seg.start + 1,
        peak_window_id=first,
        update=update,
        end_reason="off" if kind == "end" else None,
        snapshot=snapshot,
        model={"name": "vbw-motion-small", "version": "0.1.0"},
    )
    return json.loads(msg.to_json())


def messages(seg: Seg) -> list[dict[str, Any]]:
    """start, an update halfway, and the end if the segment is closed."""
    mid = (seg.start + seg.end) / 2
    out = [event_doc(seg, "start", seg.start + 3, 2, seg.snapshot)]
    out.append(event_doc(seg, "update", mid if seg.closed else seg.end, 10, seg.snapshot))
    if seg.closed:
        out.append(event_doc(seg, "end", seg.end, 20, seg.snapshot))
    return out


@dataclass
class EventFixture:
    root: Path
    events: Path  # JSONL file
    snapshots: Path  # the snapshot store's directory
    segments: list[Seg]


def write_jpeg(path: Path, color: tuple[int, int, int]) -> None:
    from worker.kafka.frame_codec import FrameEncoder

    image = np.empty((SNAP_H, SNAP_W, 3), np.uint8)
    image[:] = color
    data, _ = FrameEncoder("jpeg", quality=95).encode_image(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build_event_fixture(tmp_path: Path) -> EventFixture:
    store = tmp_path / "store"
    uri_file = tmp_path / "elsewhere" / "e.jpg"
    segs = [
        Seg("A", "cam1/door", "door", "move_left", 0, 60, True, "cam1/door/a.jpg", MAGENTA),
        Seg("B", "cam1/door", "door", "grow", 120, 150, True, "cam1/door/gone.jpg", None),  # file missing
        Seg("C", "cam1/yard", "yard", "rotate_cw", 30, 200, True, "cam1/yard/c.jpg", YELLOW),
        Seg("D", "cam1/yard", "yard", "grow", 100, 160, True, None, None),  # overlaps C: a second lane
        Seg("E", "cam1/door", "door", "move_left", 240, 300, False, uri_file.as_uri(), TEAL),  # open
        Seg("F", "cam2", None, "grow", 10, 50, True, "cam2/f.jpg", PURPLE),
    ]
    lines = []
    for s in segs:
        lines += messages(s)
        if s.color is not None:
            path = uri_file if s.snapshot == uri_file.as_uri() else store / str(s.snapshot)
            write_jpeg(path, s.color)
    # At-least-once: repeats of an end and of a start, and the file not in time order.
    lines += [lines[2], lines[6]]
    lines.reverse()
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(d) + "\n" for d in lines))
    return EventFixture(tmp_path, events, store, segs)
