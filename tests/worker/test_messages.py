"""vbw.window/v1: the committed JSON Schema is the generated one, and messages validate against it."""

from __future__ import annotations

import io
import json
import logging
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from worker.frames import Window
from worker.messages import SCHEMA_FILE, LabelScore, ModelRef, WindowMessage, json_schema_text, window_id
from worker.sinks.base import INVALID_REASON, WindowResult, reject
from worker.sinks.jsonl import JsonlSink, StdoutSink
from worker.sinks.kafka import labels_record

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
    v = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
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


# -- the model rejects what the schema rejects (finding 11: `null` times reached the labels) -------
VALIDATOR = jsonschema.Draft202012Validator(
    json.loads(SCHEMA.read_text()), format_checker=jsonschema.FormatChecker()
)


def test_format_checker_really_checks_date_time():
    # jsonschema skips `format: date-time` silently unless rfc3339-validator is installed (dev extra).
    doc = json.loads(sample().to_json())
    assert not VALIDATOR.is_valid({**doc, "produced_at": "2026-01-02 03:04:05"})
    assert not VALIDATOR.is_valid({**doc, "produced_at": "2026-01-02T03:04:05"})  # no offset


def fields(**change) -> dict:
    base = sample().model_dump(by_alias=False)
    base.pop("schema_")
    return {**base, **change}


@pytest.mark.parametrize("name", ["start_pts", "end_pts", "capture_time", "latency_ms"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_at_construction(name, bad):
    with pytest.raises(ValidationError, match="finite"):
        WindowMessage(**fields(**{name: bad}))


def test_non_finite_score_naive_time_and_unencodable_text_are_refused():
    with pytest.raises(ValidationError, match="finite"):
        WindowMessage(**fields(labels=[{"label": "grow", "score": math.nan}]))
    with pytest.raises(ValidationError, match="timezone"):
        WindowMessage(**fields(produced_at=datetime(2026, 1, 2, 3, 4, 5)))
    with pytest.raises(ValueError, match="surrogates"):
        WindowMessage(**fields(stream_id="cam\ud800"))


def test_produced_at_is_written_in_utc_whatever_its_zone():
    odd = timezone(timedelta(hours=5, minutes=30, seconds=7))  # not expressible in RFC 3339
    doc = json.loads(WindowMessage(**fields(produced_at=datetime(2026, 1, 2, 9, 0, 0, tzinfo=odd))).to_json())
    assert doc["produced_at"] == "2026-01-02T03:29:53Z"
    VALIDATOR.validate(doc)


def test_a_message_cannot_be_changed_after_its_check():
    msg = sample()
    with pytest.raises(ValidationError):
        msg.end_pts = math.nan  # type: ignore[misc]


_FINITE = st.floats(allow_nan=False, allow_infinity=False)
_ZONES = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=5, minutes=30)),
        timezone(-timedelta(seconds=30)),
        timezone(timedelta(hours=23)),
    ]
)
# One broken value per kind of field: what the schema cannot hold, or what it forbids.
_BROKEN_FLOAT = st.sampled_from([math.nan, math.inf, -math.inf])
_BROKEN = {
    "text": st.sampled_from(["a\ud800b", "\udfff"]),  # lone surrogates: not UTF-8
    "int": st.integers(max_value=-1),
    "float": _BROKEN_FLOAT,
    "latency": st.one_of(_BROKEN_FLOAT, st.floats(max_value=-1e-9, allow_nan=False)),
    "time": st.datetimes(),  # naive: no offset, not RFC 3339
}
_KIND = {
    **dict.fromkeys(
        ["window_id", "stream_id", "worker", "label", "name", "version", "backend", "precision"], "text"
    ),
    **dict.fromkeys(["index", "start_seq", "end_seq", "frames"], "int"),
    **dict.fromkeys(["start_pts", "end_pts", "capture_time", "score"], "float"),
    "latency_ms": "latency",
    "produced_at": "time",
}


@st.composite
def random_fields(draw) -> dict:
    """Plausible but arbitrary fields (any finite number, any text, any aware time, huge ints),
    with up to two of them broken."""
    broken = draw(st.sets(st.sampled_from(sorted(_KIND)), max_size=2))

    def value(name: str, good: st.SearchStrategy):
        return draw(_BROKEN[_KIND[name]] if name in broken else good)

    text = st.text(max_size=12)
    count = st.integers(0, 2**70)
    return {
        "window_id": value("window_id", text),
        "stream_id": value("stream_id", text),
        "index": value("index", count),
        "start_seq": value("start_seq", count),
        "end_seq": value("end_seq", count),
        "start_pts": value("start_pts", _FINITE),
        "end_pts": value("end_pts", _FINITE),
        "frames": value("frames", st.integers(1, 2**70)),
        "complete": draw(st.booleans()),
        "capture_time": value("capture_time", _FINITE),
        "labels": [
            {"label": value("label", text), "score": value("score", _FINITE)}
            for _ in range(draw(st.integers(1, 3)))
        ],
        "model": {k: value(k, text) for k in ("name", "version", "backend", "precision")},
        "latency_ms": value("latency_ms", st.floats(0, allow_infinity=False)),
        "worker": value("worker", text),
        "produced_at": value("produced_at", st.datetimes(timezones=_ZONES)),
    }


def _can_be_valid(f: dict) -> bool:
    """What the schema allows, from the inputs: the model must accept exactly these."""

    def text_ok(s: str) -> bool:
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True

    texts = [
        f["window_id"],
        f["stream_id"],
        f["worker"],
        *f["model"].values(),
        *(x["label"] for x in f["labels"]),
    ]
    floats = [
        f["start_pts"],
        f["end_pts"],
        f["capture_time"],
        f["latency_ms"],
        *(x["score"] for x in f["labels"]),
    ]
    t = f["produced_at"]
    try:
        in_utc = t.tzinfo is not None and t.astimezone(UTC) is not None
    except OverflowError:
        in_utc = False
    return (
        all(map(text_ok, texts))
        and all(map(math.isfinite, floats))
        and f["latency_ms"] >= 0
        and min(f["index"], f["start_seq"], f["end_seq"]) >= 0
        and f["frames"] >= 1
        and in_utc
    )


def _publish_everywhere(result: WindowResult, jsonl: Path) -> list[bytes]:
    """The document as each real sink publishes it: JSONL file, stdout, Kafka labels value."""
    acks: list[str | None] = []
    out = io.StringIO()
    for sink in (JsonlSink(jsonl), StdoutSink("json", stream=out)):
        sink.open()
        sink.publish(result, acks.append)
        sink.close()
    assert acks == [None, None]
    line = jsonl.read_text(encoding="utf-8").rstrip("\n").split("\n")[-1]  # JSON Lines: \n only
    return [line.encode(), out.getvalue().rstrip("\n").encode(), labels_record(result)[1]]


@settings(max_examples=400, deadline=None)
@given(f=random_fields(), emb_nan=st.booleans())
def test_every_message_the_model_accepts_is_published_schema_valid(tmp_path_factory, f, emb_nan):
    try:
        msg = WindowMessage(**f)
    except ValueError:
        assert not _can_be_valid(f), f"refused a message the schema allows: {f}"
        event("refused")
        return
    assert _can_be_valid(f), f"accepted a message the schema refuses: {f}"
    event("built")
    w = Window("s", 0, 0, 7, 0.0, 1.0, 8, True, 0.0, window_id=msg.window_id)
    emb = np.full(4, np.nan if emb_nan else 0.5, np.float32)
    try:
        result = WindowResult(message=msg, embedding=emb, scores=np.zeros(2, np.float32), window=w)
    except ValueError:
        assert emb_nan
        return
    jsonl = tmp_path_factory.mktemp("jsonl") / "out.jsonl"
    docs = _publish_everywhere(result, jsonl)
    assert len(set(docs)) == 1  # every sink sends the same bytes
    VALIDATOR.validate(json.loads(docs[0]))


def test_reject_counts_and_logs_the_window(caplog):
    from worker.metrics import Metrics

    metrics = Metrics()
    w = Window("cam-9", 3, 12, 19, 1.5, 2.4, 8, True, 1.7e9, window_id=window_id("cam-9", 12, "0.1.0"))
    try:
        WindowMessage(**fields(end_pts=math.inf))
    except ValidationError as e:
        err = e
    with caplog.at_level(logging.WARNING, logger="vbw.sinks"):
        reject(w, err, metrics.windows_dropped)
    assert metrics.registry.get_sample_value("vbw_windows_dropped_total", {"reason": INVALID_REASON}) == 1
    (line,) = [r.getMessage() for r in caplog.records]
    assert "cam-9" in line and w.window_id in line and "end_pts" in line and "finite" in line
    assert "\n" not in line
