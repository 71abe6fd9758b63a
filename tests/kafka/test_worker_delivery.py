"""`vbw run` with a Kafka source and Kafka sinks, as real subprocesses against a real Tansu broker.

At-least-once under SIGTERM, SIGKILL, a broker restart, a rebalance and bad input. The tiny
random model keeps these about the delivery machinery; accuracy is test_e2e.py's business.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time

import pytest
from kafka_helpers import FramePublisher, TopicReader, escaped_errors, expected_windows, worker_config
from services.tansu import committed_offsets
from worker_helpers import WorkerProc, wait_until

from engines.manifest import load_manifest

STREAMS = ["cam-0", "cam-1", "cam-2"]


@pytest.fixture()
def topics(broker):
    broker.create_topics({"frames": 3, "labels": 3, "emb": 3, "dlq": 1})
    return broker


def test_sigterm_exits_0_after_commit_and_restart_rereads_only_in_flight(topics, tiny_model_dir, tmp_path):
    broker = topics
    version = load_manifest(tiny_model_dir, verify=False).version
    n = 240
    want = expected_windows(STREAMS, n, 8, 4, version)
    labels = TopicReader(broker.bootstrap, "labels")
    labels.start()
    pub = FramePublisher(broker.bootstrap, "frames", STREAMS, n, fps=40)
    cfg = worker_config(broker.bootstrap, tiny_model_dir)
    w1 = WorkerProc(tmp_path, cfg).start()
    try:
        w1.wait_ready(60)
        pub.start()
        wait_until(lambda: len(labels.ids()) >= 30, 60, "30 windows", [w1])
        rc, _took = w1.sigterm(timeout=30)
        assert rc == 0, w1.stderr()[-3000:]
        first = labels.ids()
        assert not escaped_errors(w1.stderr())
        assert "committed" in w1.stderr()
        committed = committed_offsets(broker.bootstrap, "workers", "frames")
        assert any(o for o in committed.values()), committed  # (a partition may carry no stream)

        w2 = WorkerProc(tmp_path, {**cfg, "pipeline": {**cfg["pipeline"], "worker_id": "w2"}}).start()
        pub.join(60)
        assert pub.error is None
        wait_until(lambda: want <= labels.ids(), 90, "every window after the restart", [w2])
        rc2, _ = w2.sigterm(timeout=30)
        assert rc2 == 0
    finally:
        pub.stop()
        w1.stop()
        labels.stop()
    docs = labels.docs()
    ids = [d["window_id"] for d in docs]
    assert set(ids) == want, f"unexpected windows: {set(ids) - want}"
    repeated = [d for d in docs if d["worker"] == "w2" and d["window_id"] in first]
    # Everything w1 published was acked before its commit: w2 re-reads only the window buffers.
    assert len(repeated) <= len(STREAMS), f"{len(repeated)} windows published again after a clean stop"
    print(f"SIGTERM: {len(first)} windows before, {len(repeated)} repeated after restart")


@pytest.mark.slow
def test_sigkill_three_times_every_window_at_least_once_with_identical_repeats(
    topics, tiny_model_dir, tmp_path
):
    broker = topics
    version = load_manifest(tiny_model_dir, verify=False).version
    n = 400
    want = expected_windows(STREAMS, n, 8, 4, version)
    labels = TopicReader(broker.bootstrap, "labels")
    labels.start()
    pub = FramePublisher(broker.bootstrap, "frames", STREAMS, n, fps=25)
    cfg = worker_config(broker.bootstrap, tiny_model_dir)
    rng = random.Random(20261123)
    workers = []
    try:
        w = WorkerProc(tmp_path, cfg).start()
        workers.append(w)
        w.wait_ready(60)
        pub.start()
        for _ in range(3):
            time.sleep(rng.uniform(1.5, 4.0))  # mid-stream, at a random point
            assert pub.is_alive(), "the input ended before the kill: not mid-stream"
            w.proc.kill()
            w.proc.wait(10)
            w = WorkerProc(tmp_path, cfg).start()
            workers.append(w)
        pub.join(60)
        assert pub.error is None
        wait_until(lambda: want <= labels.ids(), 120, "every window after three SIGKILLs", [w])
        assert w.sigterm(timeout=30)[0] == 0
    finally:
        pub.stop()
        for x in workers:
            x.stop()
        labels.stop()
    docs = labels.docs()
    by_id: dict[str, list[dict]] = {}
    for d in docs:
        by_id.setdefault(d["window_id"], []).append(d)
    assert set(by_id) == want, f"missing {len(want - set(by_id))}, unexpected {len(set(by_id) - want)}"
    repeats = {k: v for k, v in by_id.items() if len(v) > 1}
    for wid, copies in repeats.items():
        first = copies[0]
        for c in copies[1:]:
            assert (c["stream_id"], c["start_seq"], c["end_seq"]) == (
                first["stream_id"],
                first["start_seq"],
                first["end_seq"],
            )
            assert [x["label"] for x in c["labels"]] == [x["label"] for x in first["labels"]], wid
            for a, b in zip(c["labels"], first["labels"], strict=True):
                assert abs(a["score"] - b["score"]) < 1e-5, wid
    print(f"SIGKILL x3: {len(want)} windows, {len(repeats)} delivered more than once")


def test_bad_input_dead_lettered_counted_and_good_windows_all_produced(topics, tiny_model_dir, tmp_path):
    from kafka_helpers import synthetic_image
    from worker_helpers import metric_value

    from worker.kafka.frame_codec import FrameEncoder

    broker = topics
    version = load_manifest(tiny_model_dir, verify=False).version
    jpeg, _ = FrameEncoder("jpeg").encode_image(synthetic_image(0, 0))
    raw_ct = [("content-type", b"image/x-raw-rgb; width=8; height=8")]
    kinds = [
        ("not-jpeg", lambda i: (b"cam-0", b"garbage-%d" % i * 30, [])),
        ("truncated-jpeg", lambda i: (b"cam-1", jpeg[: 100 + i % 200], [])),
        ("wrong-raw-size", lambda i: (b"cam-2", b"\x07" * (100 + i % 50), raw_ct)),
        ("empty-value", lambda i: (b"cam-0", b"", [])),
        ("missing-key", lambda i: (None, jpeg, [])),
        ("oversize", lambda i: (b"cam-1", b"\xff\xd8\xff" + bytes(70_000), [])),
    ]
    bad = [(kinds[i % len(kinds)][0], *kinds[i % len(kinds)][1](i)) for i in range(1000)]
    expect_reasons = {}
    for reason, *_ in bad:
        expect_reasons[reason] = expect_reasons.get(reason, 0) + 1
    n = 120
    want = expected_windows(STREAMS, n, 8, 4, version)
    labels, dlq = TopicReader(broker.bootstrap, "labels"), TopicReader(broker.bootstrap, "dlq")
    labels.start()
    dlq.start()
    pub = FramePublisher(
        broker.bootstrap, "frames", STREAMS, n, bad_every=1, bad_messages=[b[1:] for b in bad]
    )
    cfg = worker_config(broker.bootstrap, tiny_model_dir, max_message_bytes=65536)
    w = WorkerProc(tmp_path, cfg).start()
    try:
        w.wait_ready(60)
        pub.start()
        pub.join(60)
        assert pub.error is None and pub.bad_sent == 1000
        wait_until(
            lambda: want <= labels.ids() and len(dlq.snapshot()) >= 1000, 120, "windows and dead letters", [w]
        )
        time.sleep(1.0)
        metrics = w.metrics()
        assert w.proc.poll() is None, "the worker must stay up"
        from worker_helpers import http_get

        assert http_get(w.base + "/healthz")[0] == 200
        assert w.sigterm(timeout=30)[0] == 0
    finally:
        pub.stop()
        w.stop()
        labels.stop()
        dlq.stop()
    assert labels.ids() == want
    got = {}
    for m in dlq.snapshot():
        h = dict(m.headers())
        got[h["vbw-dlq-reason"].decode()] = got.get(h["vbw-dlq-reason"].decode(), 0) + 1
        assert h["vbw-dlq-detail"] and h["vbw-dlq-topic"] == b"frames"
    assert got == expect_reasons
    for reason, count in expect_reasons.items():
        assert metric_value(metrics, "vbw_kafka_dead_letters_total", topic="frames", reason=reason) == count
    if shutil.which("promtool"):  # the Kafka series keep the exposition lint-clean
        lint = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr
    assert not escaped_errors(w.stderr())


@pytest.mark.parametrize("stalled", [False, True], ids=["worker-running", "worker-stalled"])
def test_broker_restarted_empty_worker_carries_on(topics, tiny_model_dir, tmp_path, stalled):
    """`stalled`: the worker is frozen (SIGSTOP) while the broker restarts and the producer writes
    the new log, as a worker on a busy node can be. Its old read position is then a valid offset
    of the new log, and only the topic's new id tells the logs apart (this hung CI once)."""
    broker = topics
    version = load_manifest(tiny_model_dir, verify=False).version
    labels = TopicReader(broker.bootstrap, "labels")
    labels.start()
    cfg = worker_config(broker.bootstrap, tiny_model_dir)
    w = WorkerProc(tmp_path, cfg).start()
    pub2 = None
    try:
        w.wait_ready(60)
        pub1 = FramePublisher(broker.bootstrap, "frames", STREAMS, 100, fps=50)
        pub1.start()
        pub1.join(60)
        wait_until(lambda: expected_windows(STREAMS, 100, 8, 4, version) <= labels.ids(), 60, "phase 1", [w])
        labels.stop()

        if stalled:
            os.kill(w.proc.pid, signal.SIGSTOP)
        broker.restart()  # memory storage: every topic, group and offset is gone
        broker.create_topics({"frames": 3, "labels": 3, "emb": 3, "dlq": 1})
        labels = TopicReader(broker.bootstrap, "labels")
        labels.start()
        pub2 = FramePublisher(broker.bootstrap, "frames", STREAMS, 100, fps=50, start_seq=100)
        pub2.start()
        pub2.join(90)
        assert pub2.error is None
        if stalled:
            os.kill(w.proc.pid, signal.SIGCONT)
        want = expected_windows(STREAMS, 100, 8, 4, version, start=100)
        wait_until(lambda: want <= labels.ids(), 120, "windows after the broker restart", [w])
        assert w.proc.poll() is None
        assert w.sigterm(timeout=30)[0] == 0
    finally:
        if stalled and w.proc.poll() is None:
            os.kill(w.proc.pid, signal.SIGCONT)
        if pub2 is not None:
            pub2.stop()
        w.stop()
        labels.stop()
    err = w.stderr()
    assert not escaped_errors(err), escaped_errors(err)
    print("broker restart: log lines mentioning recovery:")
    for line in err.splitlines():
        if "rebuilt" in line or "went back" in line or "recreated" in line or "failed (" in line:
            print("  ", line[:200])


def test_rebalance_two_workers_one_stopped_the_other_finishes(topics, tiny_model_dir, tmp_path):
    broker = topics
    version = load_manifest(tiny_model_dir, verify=False).version
    streams = [f"cam-{i}" for i in range(6)]
    n = 240
    want = expected_windows(streams, n, 8, 4, version)
    labels = TopicReader(broker.bootstrap, "labels")
    labels.start()
    pub = FramePublisher(broker.bootstrap, "frames", streams, n, fps=30)
    cfg = worker_config(broker.bootstrap, tiny_model_dir)
    w1 = WorkerProc(tmp_path, cfg).start()
    w2 = WorkerProc(tmp_path, {**cfg, "pipeline": {**cfg["pipeline"], "worker_id": "w2"}}).start()
    try:
        w1.wait_ready(60)
        w2.wait_ready(60)
        pub.start()
        wait_until(
            lambda: {d["worker"] for d in labels.docs()} == {"w1", "w2"},
            60,
            "both workers publishing",
            [w1, w2],
        )
        rc, _ = w1.sigterm(timeout=30)
        assert rc == 0, w1.stderr()[-3000:]
        pub.join(60)
        wait_until(lambda: want <= labels.ids(), 120, "w2 finishing the input", [w2])
        assert w2.sigterm(timeout=30)[0] == 0
    finally:
        pub.stop()
        w1.stop()
        w2.stop()
        labels.stop()
    docs = labels.docs()
    assert {d["window_id"] for d in docs} == want
    after = [d for d in docs if d["worker"] == "w2"]
    taken_over = {d["stream_id"] for d in after} - {
        d["stream_id"] for d in docs if d["worker"] == "w2" and d["start_seq"] < 20
    }
    print(
        f"rebalance: w1 {sum(d['worker'] == 'w1' for d in docs)} windows, w2 {len(after)}; streams w2 took over: {sorted(taken_over)}"
    )
    assert not escaped_errors(w1.stderr() + w2.stderr())


def test_bare_key_and_jpeg_messages_make_windows(broker, tiny_model_dir, tmp_path):
    """No headers at all: seq is the offset, time is the Kafka timestamp (one stream per partition)."""
    from kafka_helpers import synthetic_image
    from services.tansu import produce

    from worker.kafka.frame_codec import FrameEncoder

    broker.create_topics({"frames": 1, "labels": 1, "emb": 1, "dlq": 1})
    version = load_manifest(tiny_model_dir, verify=False).version
    enc = FrameEncoder("jpeg")
    produce(
        broker.bootstrap,
        "frames",
        [(b"bare-cam", enc.encode_image(synthetic_image(0, i))[0], []) for i in range(40)],
    )
    labels = TopicReader(broker.bootstrap, "labels")
    labels.start()
    w = WorkerProc(tmp_path, worker_config(broker.bootstrap, tiny_model_dir)).start()
    want = expected_windows(["bare-cam"], 40, 8, 4, version)
    try:
        wait_until(lambda: want <= labels.ids(), 60, "windows from bare messages", [w])
        assert w.sigterm(timeout=30)[0] == 0
    finally:
        w.stop()
        labels.stop()
    docs = labels.docs()
    assert {d["window_id"] for d in docs} == want
    assert all(d["capture_time"] > 1e9 for d in docs)  # the Kafka timestamp, in seconds
