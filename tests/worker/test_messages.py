"""vbw.window/v1: the committed JSON Schema is the generated one, and messages validate against it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema

from worker.messages import SCHEMA_FILE, LabelScore, ModelRef, WindowMessage, json_schema_text, window_id

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "schemas" / SCHEMA_FILE


def test_committed_schema_is_current():
    assert SCHEMA.read_text() == json_schema_text(), (
        "schemas/vbw.window.v1.json is stale: python -m worker.messages > schemas/vbw.window.v1.json"
    )


def sample() -> WindowMessage:
    return WindowMessage(
        window_id=window_id("cam1", 40, "0.1.0"),
        stream_id="cam1",
        index=10,
        start_seq=40,
        end_seq=55,
        start_pts=8.0,
        end_pts=11.0,
        frames=16,
        complete=True,
        capture_time=1.7e9,
        labels=[LabelScore(label="grow", score=0.9), LabelScore(label="shrink", score=0.05)],
        model=ModelRef(name="m", version="0.1.0", backend="onnxruntime", precision="fp32"),
        latency_ms=12.5,
        worker="w1",
        produced_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def test_message_validates_against_committed_schema():
    doc = json.loads(sample().to_json())
    assert doc["schema"] == "vbw.window/v1"
    assert doc["produced_at"] == "2026-01-02T03:04:05Z"
    jsonschema.Draft202012Validator(
        json.loads(SCHEMA.read_text()), format_checker=jsonschema.FormatChecker()
    ).validate(doc)


def test_schema_rejects_missing_and_extra_fields():
    schema = json.loads(SCHEMA.read_text())
    doc = json.loads(sample().to_json())
    v = jsonschema.Draft202012Validator(schema)
    assert v.is_valid(doc)
    assert not v.is_valid({k: x for k, x in doc.items() if k != "window_id"})
    assert not v.is_valid({**doc, "surprise": 1})


def test_window_ids_are_stable_and_partials_distinct():
    assert window_id("a", 5, "1") == window_id("a", 5, "1")
    assert (
        len({window_id("a", 5, "1"), window_id("a", 6, "1"), window_id("b", 5, "1"), window_id("a", 5, "2")})
        == 4
    )
    assert window_id("a", 5, "1", frames=7) != window_id("a", 5, "1")
