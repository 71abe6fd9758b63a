"""`vbw index` against a real broker: the worker's own embeddings sink writes the topic, the
indexer (a real subprocess) fills a real LanceDB index, counts and logs a bad message by
topic/partition/offset, commits offsets, survives SIGKILL without losing or doubling windows,
and a replay of the whole topic changes nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from search_helpers import IndexProc, result
from services.tansu import Tansu, committed_offsets, produce
from worker_helpers import wait_until

from search.store import WindowIndex
from worker.kafka.config import KafkaConnectionConfig, KafkaSinkConfig, ProducerTuning
from worker.sinks.kafka import KafkaTopicSink

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def broker(tmp_path: Path):
    with Tansu(log_path=tmp_path / "tansu.log") as b:
        yield b


def publish_windows(bootstrap: str, results) -> None:
    """Through the worker's embeddings sink (payload: embeddings), every window acked."""
    sink = KafkaTopicSink(
        KafkaSinkConfig(
            type="kafka", topic="emb", payload="embeddings", producer=ProducerTuning(linger_ms=5)
        ),
        KafkaConnectionConfig(bootstrap_servers=[bootstrap]),
    )
    sink.open()
    acks: list = []
    for r in results:
        sink.publish(r, acks.append)
    assert sink.flush(30)
    sink.close()
    assert acks == [None] * len(results)


def test_index_from_the_embeddings_topic(broker, tmp_path):
    broker.create_topics({"emb": 2, "events": 1})
    base = time.time() - 60
    results = [result(f"cam{i % 3}", 4 * i, capture_time=base + i) for i in range(40)]
    publish_windows(broker.bootstrap, results[:30])
    # a bad message between good ones: skipped, counted, logged with where it was
    produce(
        broker.bootstrap,
        "emb",
        [(b"cam0", b"\x01\x02\x03", [("window_id", b"bad-1"), ("dtype", b"float32")])],
    )
    event = {
        "schema": "vbw.event/v1",
        "peak_window_id": results[5].message.window_id,
        "snapshot": "snapshots/cam2/a.jpg",
    }
    produce(broker.bootstrap, "events", [(b"cam2", json.dumps(event).encode(), [])])

    db = tmp_path / "index"
    ix = IndexProc(tmp_path, broker.bootstrap, db, topic="emb", events_topic="events", group_id="idx").start()
    try:
        wait_until(lambda: ix.metric("vbw_index_windows") == 30, 90, "30 windows indexed", [ix])
        wait_until(
            lambda: ix.metric("vbw_index_bad_messages_total", reason="bad-vector") == 1,
            30,
            "bad counted",
            [ix],
        )
        assert "skipped emb[" in ix.stderr() and "bad-vector" in ix.stderr()
        assert ix.metric("vbw_index_written_total", kind="snapshot") == 1
        assert 0 < ix.metric("vbw_index_lag_seconds") < 3600
        wait_until(lambda: ix.metric("vbw_index_size_bytes") > 0, 30, "index size reported", [ix])
        # offsets: everything read is committed once written
        wait_until(
            lambda: sum(o or 0 for o in committed_offsets(broker.bootstrap, "idx", "emb").values()) == 31,
            30,
            "offsets committed to the end of emb",
            [ix],
        )
        # SIGKILL mid-stream: no graceful close; the next start re-reads only what was not committed
        publish_windows(broker.bootstrap, results[30:35])
        wait_until(lambda: ix.metric("vbw_index_windows") == 35, 60, "35 windows", [ix])
        ix.proc.send_signal(signal.SIGKILL)
        ix.proc.wait(timeout=30)
        publish_windows(broker.bootstrap, results[35:])
        ix.start()
        wait_until(lambda: ix.metric("vbw_index_windows") == 40, 90, "40 windows after the restart", [ix])
        # a replay of every window (a worker re-published them after a crash): nothing changes
        publish_windows(broker.bootstrap, results)
        wait_until(
            lambda: ix.metric("vbw_index_written_total", kind="window") >= 40, 60, "replay written", [ix]
        )
        wait_until(
            lambda: sum(o or 0 for o in committed_offsets(broker.bootstrap, "idx", "emb").values()) == 81,
            60,
            "the replay committed",
            [ix],
        )
        assert ix.metric("vbw_index_windows") == 40
        ix.proc.send_signal(signal.SIGTERM)
        assert ix.proc.wait(timeout=30) == 0
    finally:
        ix.stop()

    index = WindowIndex(db)
    assert index.count() == 40
    hits = index.search(results[5].embedding, 1)
    assert hits[0].window_id == results[5].message.window_id
    assert hits[0].snapshot == "snapshots/cam2/a.jpg"
    m = results[5].message
    assert (hits[0].stream_id, hits[0].start_pts, hits[0].end_pts, hits[0].end_time) == (
        m.stream_id,
        m.start_pts,
        m.end_pts,
        m.capture_time,
    )

    # and the CLI finds its neighbours, never itself
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "vbw.cli",
            "search",
            "--db",
            str(db),
            "--like",
            m.window_id,
            "-k",
            "5",
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    docs = json.loads(out.stdout)
    assert len(docs) == 5 and m.window_id not in [d["window_id"] for d in docs]
