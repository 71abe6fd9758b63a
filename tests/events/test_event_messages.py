"""vbw.event/v1: the committed schema is current, messages validate against it, ids are stable."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from worker.event_messages import (
    EVENT_NAMESPACE,
    SCHEMA_FILE,
    EventMessage,
    EventModelRef,
    event_id,
    json_schema_text,
    segment_id,
    split_stream,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "schemas" / SCHEMA_FILE
VALIDATOR = jsonschema.Draft202012Validator(
    json.loads(SCHEMA.read_text()), format_checker=jsonschema.FormatChecker()
)


def message(**over) -> EventMessage:
    seg = segment_id("cam1/door", "grow", "w-1")
    fields = dict(
        event_id=event_id(seg, "start", 0),
        segment_id=seg,
        type="start",
        stream_id="cam1/door",
        source_id="cam1",
        zone="door",
        label="grow",
        start_time=1795437001.25,
        end_time=1795437002.05,
        start_pts=20.5,
        end_pts=21.3,
        start_seq=164,
        end_seq=195,
        start_window_id="w-1",
        windows=2,
        peak_score=0.93,
        mean_score=0.9,
        peak_time=1795437002.05,
        peak_window_id="w-2",
        update=0,
        end_reason=None,
        snapshot="cam1/door/w-2.jpg",
        model=EventModelRef(name="vbw-motion-small", version="0.2.0"),
    )
    fields.update(over)
    return EventMessage(**fields)


def test_committed_schema_is_current():
    assert SCHEMA.read_text() == json_schema_text(), (
        "schemas/vbw.event.v1.json is stale: python -m worker.event_messages > schemas/vbw.event.v1.json"
    )


def test_message_validates_and_has_no_run_dependent_field():
    doc = json.loads(message().to_json())
    VALIDATOR.validate(doc)
    assert doc["schema"] == "vbw.event/v1"
    # a repeat after a crash must be the same bytes: no producer time, no worker id in the value
    assert not {"produced_at", "worker", "latency_ms"} & set(doc)


@pytest.mark.parametrize(
    "over", [{"peak_score": float("nan")}, {"type": "begin"}, {"windows": 0}, {"label": "\ud800"}]
)
def test_invalid_messages_are_refused_when_built(over):
    with pytest.raises((ValidationError, ValueError)):
        message(**over)


def test_schema_refuses_missing_and_extra_fields():
    doc = json.loads(message().to_json())
    bad = dict(doc)
    del bad["event_id"]
    assert not VALIDATOR.is_valid(bad)
    assert not VALIDATOR.is_valid({**doc, "extra": 1})


def test_ids_follow_the_documented_recipe():
    seg = segment_id("cam1/door", "grow", "w-1")
    assert seg == str(uuid.uuid5(EVENT_NAMESPACE, "cam1/door\x1fgrow\x1fw-1"))
    assert event_id(seg, "update", 3) == str(uuid.uuid5(EVENT_NAMESPACE, f"{seg}\x1fupdate\x1f3"))
    assert len({event_id(seg, t, n) for t in ("start", "update", "end") for n in range(3)}) == 9
    assert split_stream("cam1/door") == ("cam1", "door") and split_stream("cam1") == ("cam1", None)


def test_readme_event_id_recipe_recomputes_ids():
    readme = (REPO / "README.md").read_text()
    m = re.search(
        r"<!-- event-id-recipe:start[^\n]*-->\n```python\n(.*?)```\n<!-- event-id-recipe:end -->",
        readme,
        re.S,
    )
    assert m, "README: the event id recipe block is missing"
    ns: dict = {}
    exec(m.group(1), ns)  # the README's own code, as a reader would run it
    doc = json.loads(
        message(
            type="update", update=2, event_id=event_id(segment_id("cam1/door", "grow", "w-1"), "update", 2)
        ).to_json()
    )
    assert ns["segment_id"](doc) == doc["segment_id"]
    assert ns["event_id"](doc) == doc["event_id"]
