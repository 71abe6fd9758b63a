"""`vbw.event/v1`: one document per segment event (start, update, end) of one stream and label.

Like `worker.messages` for windows, this pydantic model is the single source of the schema:
`schemas/vbw.event.v1.json` is generated from it (`python -m worker.event_messages >
schemas/vbw.event.v1.json`) and a test checks the committed file is current. A message checks
itself when built (finite numbers, UTF-8) and is serialised once; sinks publish those bytes.

Every field is a function of the windows the segment was made from, so an event repeated after
a crash (at-least-once) is byte-for-byte the same document. Who produced it and when travel in
Kafka headers (`vbw-worker`, `vbw-produced-at`), not in the value.

Ids (README "Event ids"): UUIDv5 in namespace `EVENT_NAMESPACE`:
- `segment_id` of the name `{stream_id}\x1f{label}\x1f{start_window_id}`;
- `event_id` of `{segment_id}\x1f{type}\x1f{update}`.
`start_window_id` is the window_id of the segment's first window, which is stable across
restarts (worker.messages.window_id), so a replay gives the same ids.
"""

from __future__ import annotations

import json
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

SCHEMA_ID = "vbw.event/v1"
SCHEMA_FILE = "vbw.event.v1.json"
# Fixed, so event ids are the same on every machine and every run.
EVENT_NAMESPACE = uuid.UUID("8d3f2a61-4c7e-5b9a-b1d2-6e0f4a3c9b57")
# Zone streams are `<source id>/<zone>` (worker.config.ZONE_SEPARATOR).
ZONE_SEPARATOR = "/"
# Scores are rounded so the documents stay readable; a replay computes the same floats.
SCORE_DIGITS = 6

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


def segment_id(stream_id: str, label: str, start_window_id: str) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{stream_id}\x1f{label}\x1f{start_window_id}"))


def event_id(segment: str, kind: str, update: int) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{segment}\x1f{kind}\x1f{update}"))


def split_stream(stream_id: str) -> tuple[str, str | None]:
    """`cam1/door` -> ("cam1", "door"); `cam1` -> ("cam1", None)."""
    source, sep, zone = stream_id.partition(ZONE_SEPARATOR)
    return source, (zone if sep else None)


class EventModelRef(BaseModel):
    model_config = _STRICT
    name: str
    version: str


class EventMessage(BaseModel):
    """One event of one segment: a label held in one stream (or zone) for a while."""

    model_config = ConfigDict(
        **_STRICT, title="vbw.event/v1", json_schema_serialization_defaults_required=True
    )

    schema_: Literal["vbw.event/v1"] = Field(SCHEMA_ID, alias="schema")
    event_id: str = Field(description="stable id: UUIDv5 of (segment_id, type, update)")
    segment_id: str = Field(description="stable id of the segment, the same in its start, updates and end")
    type: Literal["start", "update", "end"] = Field(
        description="start: the segment is confirmed; update: periodic, while it lasts; end: it is over"
    )
    stream_id: str = Field(description="the stream the windows came from: `<source>` or `<source>/<zone>`")
    source_id: str = Field(description="the source (camera) of the stream: stream_id without the zone")
    zone: str | None = Field(description="zone name, null for the whole frame")
    label: str
    start_time: float = Field(
        description="estimated start, capture time (unix seconds): the first frame of the segment's first "
        "window less half a stride"
    )
    end_time: float = Field(
        description="estimated end so far: the last frame of its last window at or above the off-threshold, "
        "plus a frame and half a stride"
    )
    start_pts: float = Field(description="start_time in source time (pts, seconds)")
    end_pts: float = Field(description="end_time in source time (pts, seconds)")
    start_seq: int = Field(ge=0, description="first frame of the first window")
    end_seq: int = Field(ge=0, description="last frame of the last window so far")
    start_window_id: str = Field(description="window_id of the segment's first window")
    windows: int = Field(ge=1, description="windows in the segment so far")
    peak_score: float = Field(description="highest score of the label in the segment so far")
    mean_score: float = Field(description="mean score of the label over the segment's windows so far")
    peak_time: float = Field(description="capture time of the centre of the peak window")
    peak_window_id: str
    update: int = Field(ge=0, description="0 for start; n for the n-th update; on end, the updates before it")
    end_reason: Literal["off", "break"] | None = Field(
        description="end only: off = the score stayed below the off-threshold for m windows; break = "
        "the stream broke (gap, reset, end of stream, shutdown). null otherwise"
    )
    snapshot: str | None = Field(
        description="the snapshot store's reference of the peak window's key frame; null when snapshots are off"
    )
    model: EventModelRef

    _json: str = PrivateAttr("")

    def model_post_init(self, context: object, /) -> None:
        # Serialise once: text that is not UTF-8 fails here, and every sink sends these bytes.
        self._json = self.model_dump_json(by_alias=True)

    def to_json(self) -> str:
        return self._json


def json_schema() -> dict:
    schema = EventMessage.model_json_schema(by_alias=True, mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://vbw.invalid/schemas/{SCHEMA_FILE}"
    return schema


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(json_schema_text(), end="")
