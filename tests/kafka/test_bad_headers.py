"""Finding 11, end to end: frame messages whose time headers are NaN, infinite or absurd go to the
dead-letter topic as `bad-header` and never make a window; the good stream beside them is intact.

A real `vbw run` subprocess against a real Tansu broker; the frames come from a confluent-kafka
producer (not our own encoder), like a third-party edge would send them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
from kafka_helpers import TopicReader, escaped_errors, expected_windows, synthetic_image, worker_config
from worker_helpers import WorkerProc, metric_value, wait_until

from engines.manifest import load_manifest
from worker.kafka.frame_codec import FrameEncoder

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "vbw.window.v1.json").read_text())
GOOD, BAD = "good-cam", "bad-cam"

# (vbw-seq, vbw-pts, vbw-capture-time) of the bad stream's messages: each has one broken number.
BROKEN = [
    (b"0", b"nan", None),
    (b"1", b"inf", None),
    (b"2", b"-inf", None),
    (b"3", b"1e400", None),
    (b"4", b"0.8", b"nan"),
    (b"5", b"1.0", b"inf"),
    (b"6", b"1.2", b"1700000000000"),  # milliseconds sent as seconds
    (b"7", b"1.4", b"12.5"),  # seconds since boot, not a unix time
    (b"8", b"1.6", str(time.time() + 7 * 86_400).encode()),  # a week in the future
    (b"-1", b"1.8", None),
    (b"9.5", b"2.0", None),
    (b"nan", b"2.2", None),
]


def _produce(bootstrap: str, n_good: int) -> None:
    """The bad stream first, then the good one, on one partition: once the good stream's last window
    is out, every bad message before it has been handled."""
    from confluent_kafka import Producer

    enc = FrameEncoder("jpeg")
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    failures: list[str] = []

    def acked(err, _msg) -> None:
        if err is not None:
            failures.append(str(err))

    now = time.time()
    for i, (seq, pts, cap) in enumerate(BROKEN):
        jpeg, _ = enc.encode_image(synthetic_image(1, i))
        headers = [("content-type", b"image/jpeg"), ("vbw-seq", seq), ("vbw-pts", pts)]
        headers.append(("vbw-capture-time", cap if cap is not None else repr(now).encode()))
        p.produce("frames", key=BAD.encode(), value=jpeg, headers=headers, partition=0, on_delivery=acked)
    for seq in range(n_good):
        jpeg, _ = enc.encode_image(synthetic_image(0, seq))
        headers = [
            ("content-type", b"image/jpeg"),
            ("vbw-seq", str(seq).encode()),
            ("vbw-pts", repr(seq / 8).encode()),
            ("vbw-capture-time", repr(time.time()).encode()),
        ]
        p.produce("frames", key=GOOD.encode(), value=jpeg, headers=headers, partition=0, on_delivery=acked)
    assert p.flush(30) == 0 and not failures, failures


def test_bad_time_headers_are_dead_lettered_and_make_no_window(broker, tiny_model_dir, tmp_path):
    broker.create_topics({"frames": 1, "labels": 1, "emb": 1, "dlq": 1})
    version = load_manifest(tiny_model_dir, verify=False).version
    n_good = 24
    want = expected_windows([GOOD], n_good, 8, 4, version)
    labels, dlq = TopicReader(broker.bootstrap, "labels"), TopicReader(broker.bootstrap, "dlq")
    labels.start()
    dlq.start()
    w = WorkerProc(tmp_path, worker_config(broker.bootstrap, tiny_model_dir)).start()
    try:
        w.wait_ready(60)
        _produce(broker.bootstrap, n_good)
        wait_until(
            lambda: want <= labels.ids() and len(dlq.snapshot()) >= len(BROKEN),
            120,
            "the good stream's windows and the dead letters",
            [w],
        )
        metrics = w.metrics()
        assert w.sigterm(timeout=30)[0] == 0
    finally:
        w.stop()
        labels.stop()
        dlq.stop()

    # Every broken message is a dead letter with its reason and the number that broke it.
    letters = dlq.snapshot()
    assert len(letters) == len(BROKEN)
    for m in letters:
        h = dict(m.headers())
        assert m.key() == BAD.encode()
        assert h["vbw-dlq-reason"] == b"bad-header", h
        assert b"frames[0]@" in h["vbw-dlq-detail"] and b"stream bad-cam" in h["vbw-dlq-detail"]
    assert metric_value(metrics, "vbw_kafka_dead_letters_total", topic="frames", reason="bad-header") == len(
        BROKEN
    )
    # ... logged (rate-limited, so at least once) ...
    err = w.stderr()
    assert "bad frame message" in err and "bad-header" in err
    assert not escaped_errors(err)
    # ... and never part of a window; what was published is schema-valid.
    docs = labels.docs()
    assert {d["window_id"] for d in docs} == want
    assert {d["stream_id"] for d in docs} == {GOOD}
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    for d in docs:
        validator.validate(d)
