"""Labels and embeddings sinks on a real Tansu broker, read back by a real confluent-kafka consumer."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from services.tansu import consume_all

from worker.frames import Window
from worker.kafka.config import KafkaConnectionConfig, KafkaSinkConfig, ProducerTuning
from worker.messages import LabelScore, ModelRef, WindowMessage, window_id
from worker.sinks.base import WindowResult
from worker.sinks.kafka import KafkaTopicSink

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "vbw.window.v1.json").read_text())


def result(stream: str, start: int, dim: int = 32, seed: int = 0) -> WindowResult:
    emb = np.random.default_rng(seed * 1000 + start).normal(size=dim).astype(np.float32)
    emb /= np.linalg.norm(emb)
    wid = window_id(stream, start, "1.0")
    msg = WindowMessage(
        window_id=wid,
        stream_id=stream,
        index=start // 4,
        start_seq=start,
        end_seq=start + 15,
        start_pts=start / 8,
        end_pts=(start + 15) / 8,
        frames=16,
        complete=True,
        capture_time=time.time(),
        labels=[LabelScore(label="left", score=0.9), LabelScore(label="right", score=0.1)],
        model=ModelRef(name="vbw-motion-small", version="1.0", backend="onnxruntime", precision="fp32"),
        latency_ms=5.0,
        worker="test",
        produced_at=datetime.now(UTC),
    )
    w = Window(stream, start // 4, start, start + 15, 0.0, 1.0, 16, True, time.time(), window_id=wid)
    return WindowResult(message=msg, embedding=emb, scores=np.array([0.9, 0.1], np.float32), window=w)


class Acks:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: dict[str, str | None] = {}
        self.calls = 0

    def cb(self, wid: str):
        def done(err: str | None) -> None:
            with self.lock:
                self.calls += 1
                assert wid not in self.done, f"done() called twice for {wid}"
                self.done[wid] = err

        return done


def sinks_for(bootstrap: str, tuning: ProducerTuning | None = None) -> tuple[KafkaTopicSink, KafkaTopicSink]:
    conn = KafkaConnectionConfig(bootstrap_servers=[bootstrap])
    tuning = tuning or ProducerTuning(linger_ms=5)
    labels = KafkaTopicSink(KafkaSinkConfig(type="kafka", topic="labels", producer=tuning), conn)
    emb = KafkaTopicSink(
        KafkaSinkConfig(type="kafka", topic="emb", payload="embeddings", dtype="float16", producer=tuning),
        conn,
    )
    return labels, emb


def test_labels_and_embeddings_arrive_keyed_with_headers(broker):
    broker.create_topics({"labels": 2, "emb": 2})
    labels, emb = sinks_for(broker.bootstrap)
    acks = Acks()
    results = [result(f"cam{s}", 4 * i, seed=s) for s in range(3) for i in range(20)]
    for sink in (labels, emb):
        sink.open()
    for r in results:
        labels.publish(r, acks.cb("L" + r.message.window_id))
        emb.publish(r, acks.cb("E" + r.message.window_id))
    assert labels.flush(20) and emb.flush(20)
    labels.close()
    emb.close()
    assert acks.calls == 2 * len(results)
    assert all(err is None for err in acks.done.values())

    by_id = {r.message.window_id: r for r in results}
    got_labels = consume_all(broker.bootstrap, "labels", len(results))
    assert len(got_labels) == len(results)
    for m in got_labels:
        doc = json.loads(m.value())
        jsonschema.validate(doc, SCHEMA, format_checker=jsonschema.FormatChecker())
        headers = dict(m.headers())
        assert headers["window_id"].decode() == doc["window_id"]
        assert m.key().decode() == doc["stream_id"]
        assert doc == json.loads(by_id[doc["window_id"]].message.to_json())

    got_emb = consume_all(broker.bootstrap, "emb", len(results))
    assert len(got_emb) == len(results)
    for m in got_emb:
        h = {k: v.decode() for k, v in m.headers()}
        vec = np.frombuffer(m.value(), dtype=h["dtype"])
        assert vec.shape == (int(h["dim"]),) == (32,)
        assert h["vbw-model-version"] == "1.0"
        doc = by_id[h["window_id"]].message
        assert (float(h["vbw-start-pts"]), float(h["vbw-end-pts"])) == (doc.start_pts, doc.end_pts)
        assert float(h["vbw-capture-time"]) == doc.capture_time
        np.testing.assert_allclose(np.linalg.norm(vec.astype(np.float32)), 1.0, atol=2e-3)
        np.testing.assert_allclose(vec, by_id[h["window_id"]].embedding, atol=1e-3)
        assert m.key().decode() == by_id[h["window_id"]].message.stream_id


def test_producer_rebuilt_after_broker_restart_resends_unacked(broker):
    """Tansu restarts empty: the idempotent producer goes fatal (UnknownProducerId); it is rebuilt
    and the windows sent while the broker was down are delivered, each done() exactly once."""
    broker.create_topics({"labels": 1})
    labels, _ = sinks_for(broker.bootstrap, ProducerTuning(linger_ms=5, delivery_timeout_ms=5000))
    labels.open()
    acks = Acks()
    before = [result("cam", 4 * i) for i in range(10)]
    for r in before:
        labels.publish(r, acks.cb(r.message.window_id))
    assert labels.flush(10)

    broker.kill()
    during = [result("cam", 4 * i) for i in range(10, 30)]
    for r in during:
        labels.publish(r, acks.cb(r.message.window_id))
    time.sleep(1.0)
    broker.start()
    broker.create_topics({"labels": 1})
    after = [result("cam", 4 * i) for i in range(30, 40)]
    for r in after:
        labels.publish(r, acks.cb(r.message.window_id))
    deadline = time.monotonic() + 60
    while labels.producer.pending and time.monotonic() < deadline:
        labels.poll()
        time.sleep(0.05)
    assert labels.flush(5)
    labels.close()
    assert acks.calls == 40
    assert all(err is None for err in acks.done.values()), acks.done
    assert labels.producer.recreations >= 1

    # The new (empty) broker holds everything sent since it went down, once or more, and in order.
    want = [r.message.window_id for r in during + after]
    got = [json.loads(m.value())["window_id"] for m in consume_all(broker.bootstrap, "labels", len(want), 20)]
    assert set(want) <= set(got)
    firsts = sorted(set(got), key=got.index)
    assert firsts == [w for w in want if w in set(got)]


def test_oversize_message_fails_alone_and_the_producer_keeps_going(broker):
    broker.create_topics({"emb": 1})
    conn = KafkaConnectionConfig(bootstrap_servers=[broker.bootstrap])
    sink = KafkaTopicSink(
        KafkaSinkConfig(
            type="kafka", topic="emb", payload="embeddings", producer=ProducerTuning(max_request_size=4096)
        ),
        conn,
    )
    sink.open()
    acks = Acks()
    big = result("cam", 0, dim=4096)  # 16 KiB of float32 > 4 KiB limit
    small = result("cam", 4, dim=8)
    sink.publish(big, acks.cb("big"))
    sink.publish(small, acks.cb("small"))
    assert sink.flush(10)
    sink.close()
    assert acks.done["big"] is not None and "MessageSizeTooLarge" in acks.done["big"]
    assert acks.done["small"] is None
    assert sink.producer.recreations == 0


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_embedding_record_is_little_endian(dtype):
    from worker.sinks.kafka import embedding_record

    r = result("cam", 0, dim=5)
    _, value, headers = embedding_record(r, dtype)
    h = dict(headers)
    assert h["dim"] == b"5" and h["dtype"] == dtype.encode()
    np.testing.assert_allclose(
        np.frombuffer(value, "<f4" if dtype == "float32" else "<f2"), r.embedding, atol=1e-3
    )
