"""`vbw.window/v1`: the one document published per window (JSONL line, Kafka labels value).

This pydantic model is the single source of the message schema: `schemas/vbw.window.v1.json`
is generated from it (`python -m worker.messages > schemas/vbw.window.v1.json`) and a test
checks the committed file is current.

The model also rejects, at construction, what the schema would reject in the JSON: NaN and
infinite numbers (JSON has none; pydantic would write `null`), a `produced_at` without a time
zone (not RFC 3339), anything that cannot be encoded as UTF-8 JSON (the document is serialised
once, there, and sinks publish those bytes). So a `WindowMessage` that exists is a valid
vbw.window/v1 document, and the check costs one serialisation per window, which the sinks
needed anyway. A window whose message fails is dropped by its producer, counted and logged.

Window ids (docs/kafka.md, "Window ids"): UUIDv5 in namespace `WINDOW_NAMESPACE` of the name
`{stream_id}\x1f{start_seq}\x1f{model version}`, plus `\x1fpartial:{frames}` for a window that
is not complete (\x1f: ASCII unit separator).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

SCHEMA_ID = "vbw.window/v1"
SCHEMA_FILE = "vbw.window.v1.json"
# Fixed namespace so that window ids are the same on every machine and every run.
WINDOW_NAMESPACE = uuid.UUID("5b0c6f3e-7a51-4d0e-9a57-0c2b1f1f6e21")
# Shared by the three models: numbers must be finite (the schema's "number" has no NaN/inf), and a
# message does not change once built (it is checked and serialised once, at construction).
_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


def window_id(stream_id: str, start_seq: int, model_version: str, frames: int | None = None) -> str:
    """Stable id: the same stream, start and model give the same id after any restart.

    `frames` is given only for incomplete windows, so a partial window (cut short by a gap or
    shutdown) never shares an id with the complete window a replay may later produce.
    """
    key = f"{stream_id}\x1f{start_seq}\x1f{model_version}"
    if frames is not None:
        key += f"\x1fpartial:{frames}"
    return str(uuid.uuid5(WINDOW_NAMESPACE, key))


class LabelScore(BaseModel):
    model_config = _STRICT
    label: str
    score: float = Field(description="softmax probability (or sigmoid score for multi-label models)")


class ModelRef(BaseModel):
    model_config = _STRICT
    name: str
    version: str
    backend: str = Field(description="onnxruntime | torch | tensorrt")
    precision: str = Field(description="fp32 | fp16 | int8")


class WindowMessage(BaseModel):
    """One analysed window of one stream."""

    model_config = ConfigDict(
        **_STRICT, title="vbw.window/v1", json_schema_serialization_defaults_required=True
    )

    schema_: Literal["vbw.window/v1"] = Field(SCHEMA_ID, alias="schema")
    window_id: str = Field(description="stable id from (stream_id, start_seq, model version)")
    stream_id: str
    index: int = Field(ge=0, description="per-stream window counter of this worker run")
    start_seq: int = Field(ge=0, description="seq of the first frame (monotonic per stream)")
    end_seq: int = Field(ge=0, description="seq of the last frame, inclusive")
    start_pts: float = Field(description="source presentation time of the first frame, seconds")
    end_pts: float = Field(description="source presentation time of the last frame, seconds")
    frames: int = Field(ge=1, description="real frames in the window (the model's T when complete)")
    complete: bool = Field(description="false for a partial window cut short by a gap or end of stream")
    capture_time: float = Field(description="wall-clock capture time of the newest frame, unix seconds")
    labels: list[LabelScore] = Field(description="top-k labels, best first")
    model: ModelRef
    latency_ms: float = Field(ge=0, description="capture of the newest frame to this message, ms")
    worker: str = Field(description="id of the worker that produced the window")
    produced_at: AwareDatetime = Field(description="when the message was made (UTC, RFC 3339)")

    _json: str = PrivateAttr("")

    @field_validator("produced_at")
    @classmethod
    def _in_utc(cls, v: datetime) -> datetime:
        # Written with "Z": an RFC 3339 offset is whole minutes, a Python tzinfo need not be.
        try:
            return v.astimezone(UTC)
        except OverflowError as e:
            raise ValueError(f"{v.isoformat()} has no UTC equivalent") from e

    def model_post_init(self, context: object, /) -> None:
        # Serialise now: a string that is not UTF-8-encodable fails here, like a field would, and
        # every sink publishes these same bytes.
        self._json = self.model_dump_json(by_alias=True)

    def to_json(self) -> str:
        return self._json


def problems(err: Exception) -> str:
    """Why a message could not be built, on one line (pydantic's own text spans several)."""
    if isinstance(err, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']} (got {str(e.get('input'))[:60]})"
            for e in err.errors(include_url=False)
        )
    return " ".join(f"{type(err).__name__}: {err}".split())


def json_schema() -> dict:
    schema = WindowMessage.model_json_schema(by_alias=True, mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://vbw.invalid/schemas/{SCHEMA_FILE}"
    return schema


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(json_schema_text(), end="")
