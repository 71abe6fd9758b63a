"""Parsing what `vbw index` reads: the worker's own embedding records and JSONL lines, and bad ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
from search_helpers import result

from search.records import BadMessage, IndexedWindow, Snapshot, from_event_value, from_kafka, from_line
from worker.sinks.jsonl import JsonlSink
from worker.sinks.kafka import embedding_record


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_kafka_embedding_record_round_trip(dtype):
    r = result("cam1", 32, capture_time=1_800_000_000.0)
    key, value, headers = embedding_record(r, dtype)
    w = from_kafka(key, value, [(k, v) for k, v in headers])
    m = r.message
    assert (w.window_id, w.stream_id, w.model_version) == (m.window_id, "cam1", "1.0")
    assert (w.start_pts, w.end_pts, w.end_time) == (m.start_pts, m.end_pts, m.capture_time)
    assert w.start_time == pytest.approx(m.capture_time - (m.end_pts - m.start_pts))
    np.testing.assert_allclose(w.vector, r.embedding, atol=2e-3)
    assert np.linalg.norm(w.vector) == pytest.approx(1.0, abs=1e-6)


def _headers(**over):
    key, value, headers = embedding_record(result("cam1", 0))
    h = dict(headers)
    for k, v in over.items():
        k = k.replace("_", "-") if k.startswith("vbw_") else k
        if v is None:
            h.pop(k)
        else:
            h[k] = v
    return key, value, list(h.items())


@pytest.mark.parametrize(
    ("over", "value", "reason"),
    [
        ({"vbw_start_pts": None}, None, "missing-field"),
        ({"vbw_capture_time": b"nan"}, None, "bad-field"),
        ({"vbw_end_pts": b"soon"}, None, "bad-field"),
        ({"dtype": b"int8"}, None, "bad-header"),
        ({"dim": b"3"}, None, "bad-vector"),
        ({}, b"", "empty-value"),
        ({}, b"\x00" * 7, "bad-vector"),
        ({}, np.zeros(16, "<f4").tobytes(), "bad-vector"),
        ({"window_id": b"", "vbw_window_id": b""}, None, "missing-field"),
    ],
)
def test_bad_kafka_records_say_why(over, value, reason):
    key, good, headers = _headers(**over)
    with pytest.raises(BadMessage) as e:
        from_kafka(key, good if value is None else value, headers)
    assert e.value.reason == reason


def test_jsonl_embeddings_sink_lines_are_index_input(tmp_path):
    """The worker's JSONL sink with `payload: embeddings` writes what `vbw index --jsonl` reads."""
    results = [result("cam1", s) for s in (0, 4, 8)]
    sink = JsonlSink(tmp_path / "w.jsonl", embeddings=True)
    sink.open()
    acks = []
    for r in results:
        sink.publish(r, acks.append)
    sink.close()
    assert acks == [None] * 3
    lines = (tmp_path / "w.jsonl").read_text().splitlines()
    for r, line in zip(results, lines, strict=True):
        doc = json.loads(line)
        assert doc["window_id"] == r.message.window_id and len(doc["embedding"]) == 16
        w = from_line(line)
        assert isinstance(w, IndexedWindow)
        np.testing.assert_allclose(w.vector, r.embedding, atol=1e-6)


def test_event_lines_give_snapshots_and_plain_windows_are_refused():
    ev = {"schema": "vbw.event/v1", "peak_window_id": "w1", "snapshot": "snapshots/cam1/1.jpg"}
    assert from_line(json.dumps(ev)) == Snapshot("w1", "snapshots/cam1/1.jpg")
    assert from_line(json.dumps({**ev, "snapshot": None})) is None
    assert from_event_value(json.dumps(ev).encode()) == Snapshot("w1", "snapshots/cam1/1.jpg")
    with pytest.raises(BadMessage, match="not-event"):
        from_event_value(b'{"schema": "vbw.window/v1"}')
    labels_only = json.loads(result("cam1", 0).message.to_json())
    with pytest.raises(BadMessage) as e:
        from_line(json.dumps(labels_only))
    assert e.value.reason == "no-embedding"
    with pytest.raises(BadMessage) as e:
        from_line("{not json")
    assert e.value.reason == "not-json"
