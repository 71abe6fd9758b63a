"""The Kafka frames source on a real Tansu broker, driven through the pipeline's source contract.

`PipelineSide` plays the pipeline's half of `worker.sources.base.SourceContext` (emit, congestion,
feedback, drained) so these tests can decide exactly when frames are released; the full worker
with the real pipeline and model is exercised in test_e2e.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np
from services.tansu import FAST_GROUP, committed_offsets, consume_all, produce
from worker_helpers import wait_until

from worker.frames import Frame
from worker.kafka.config import KafkaConnectionConfig, KafkaSourceConfig
from worker.kafka.frame_codec import FrameEncoder
from worker.metrics import Metrics
from worker.sources.base import FramesReleased
from worker.sources.kafka import KafkaFrameSource

SIZE = (32, 32)


def lag_partitions(ctx: PipelineSide) -> set[str]:
    return {s.labels["partition"] for fam in ctx.metrics.kafka_lag.collect() for s in fam.samples}


class PipelineSide:
    def __init__(self, auto_release: bool = True) -> None:
        self.metrics = Metrics()
        self.image_size = SIZE
        self.frames: list[Frame] = []
        self.resets: list[tuple[str, str]] = []
        self.drops: list[tuple[str, ...]] = []
        self.auto_release = auto_release
        self.congested_flag = False
        self._feedback: deque = deque()
        self._stop = threading.Event()
        self._drained = threading.Event()
        self.lock = threading.Lock()

    # SourceContext
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        return self._stop.wait(seconds)

    def emit(self, frame: Frame) -> bool:
        self.metrics.register_stream(frame.stream_id)  # as the pipeline's context does, at 0
        if self._stop.is_set():
            self._feedback.append(FramesReleased((frame.source_ref,)))
            return False
        with self.lock:
            self.frames.append(frame)
        if self.auto_release:
            self._feedback.append(FramesReleased((frame.source_ref,)))
        return True

    def stream_reset(self, stream_id: str, reason: str, emit_partial: bool = True) -> None:
        self.resets.append((stream_id, reason))

    def drop_streams(self, stream_ids, reason: str) -> None:
        self.drops.append(tuple(stream_ids))

    def congested(self) -> bool:
        return self.congested_flag

    def load(self) -> float:
        return 1.0 if self.congested_flag else 0.0

    def take_feedback(self) -> list:
        out = []
        while self._feedback:
            out.append(self._feedback.popleft())
        return out

    def drained(self) -> bool:
        return self._drained.is_set()

    # test controls
    def release(self, refs) -> None:
        self._feedback.append(FramesReleased(tuple(refs)))

    def stop(self) -> None:
        self._stop.set()
        self._drained.set()

    def seen(self) -> int:
        with self.lock:
            return len(self.frames)


def frame_records(stream: str, n: int, start: int = 0, size=(48, 64)) -> list:
    enc = FrameEncoder("jpeg")
    rng = np.random.default_rng(start)
    out = []
    for seq in range(start, start + n):
        img = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        out.append(enc.encode(Frame(stream, seq, seq / 8, 1_700_000_000.0 + seq, img)))
    return out


def make_source(
    bootstrap: str, group: str = "g", dlq: str | None = None, stride: int = 1, **kw
) -> KafkaFrameSource:
    cfg = KafkaSourceConfig(
        type="kafka",
        id="frames",
        topics=["frames"],
        group_id=group,
        dead_letter_topic=dlq,
        commit_interval_s=0.2,
        **FAST_GROUP,
        **kw,
    )
    conn = KafkaConnectionConfig(bootstrap_servers=[bootstrap])
    return KafkaFrameSource(cfg, conn, stride=stride, drain_timeout_s=5)


def start(source: KafkaFrameSource, ctx: PipelineSide) -> threading.Thread:
    t = threading.Thread(target=source.run, args=(ctx,), daemon=True)
    t.start()
    return t


def wait_for(cond, timeout: float = 30.0, what: str = "condition") -> None:
    wait_until(cond, timeout, what)


def test_frames_flow_and_commits_follow_releases(broker):
    broker.create_topics({"frames": 2})
    recs = frame_records("cam-a", 40) + frame_records("cam-b", 40)
    produce(broker.bootstrap, "frames", recs, partition_of=lambda k: 0 if k == b"cam-a" else 1)
    ctx = PipelineSide(auto_release=False)
    src = make_source(broker.bootstrap)
    t = start(src, ctx)
    wait_for(lambda: ctx.seen() == 80, what="80 frames")
    by_stream: dict[str, list[Frame]] = {}
    for f in ctx.frames:
        by_stream.setdefault(f.stream_id, []).append(f)
    assert [f.seq for f in by_stream["cam-a"]] == list(range(40))
    assert by_stream["cam-b"][0].image.shape == (*SIZE, 3)
    # nothing released yet: nothing committed beyond the first frame
    time.sleep(0.5)
    assert set(committed_offsets(broker.bootstrap, "g", "frames").values()) <= {None, 0}
    # release cam-a out of order except offset 10: the commit stops at 10
    a_refs = [f.source_ref for f in by_stream["cam-a"]]
    ctx.release(reversed([r for r in a_refs if r[2] != 10]))
    wait_for(lambda: committed_offsets(broker.bootstrap, "g", "frames")[0] == 10, what="commit at 10")
    ctx.release([a_refs[10]] + [f.source_ref for f in by_stream["cam-b"]])
    wait_for(
        lambda: committed_offsets(broker.bootstrap, "g", "frames") == {0: 40, 1: 40}, what="commit at end"
    )
    ctx.stop()
    t.join(10)
    assert not t.is_alive()


def test_bad_messages_go_to_the_dead_letter_topic_with_reasons(broker):
    broker.create_topics({"frames": 1, "dlq": 1})
    good = frame_records("cam", 10)
    jpeg = good[0][1]
    bad = [
        (b"cam", b"garbage" * 20, []),
        (b"cam", jpeg[: len(jpeg) // 2], []),
        (b"cam", b"\x01" * 10, [("content-type", b"image/x-raw-rgb; width=4; height=4")]),
        (b"cam", b"", []),
        (None, jpeg, []),
        (b"cam", b"\xff\xd8\xff" + b"\0" * 70_000, []),
    ]
    produce(broker.bootstrap, "frames", good[:5] + bad + good[5:])
    ctx = PipelineSide()
    src = make_source(broker.bootstrap, dlq="dlq", max_message_bytes=65536)
    t = start(src, ctx)
    wait_for(lambda: ctx.seen() == 10, what="good frames")
    dead = consume_all(broker.bootstrap, "dlq", len(bad), timeout=20)
    reasons = [dict(m.headers())["vbw-dlq-reason"].decode() for m in dead]
    assert reasons == [
        "not-jpeg", "truncated-jpeg", "wrong-raw-size", "empty-value", "missing-key", "oversize"
    ]  # fmt: skip
    offsets = [int(dict(m.headers())["vbw-dlq-offset"]) for m in dead]
    assert offsets == list(range(5, 11))
    assert dead[0].value() == bad[0][1]  # the original bytes, for a replay once fixed
    assert dead[5].value() is None  # oversize values are not copied
    assert src.dead_letters == 6
    counter = ctx.metrics.registry.get_sample_value(
        "vbw_kafka_dead_letters_total", {"topic": "frames", "reason": "missing-key"}
    )
    assert counter == 1
    wait_for(
        lambda: committed_offsets(broker.bootstrap, "g", "frames") == {0: 16}, what="commit past the bad ones"
    )
    ctx.stop()
    t.join(10)


def test_backpressure_pauses_and_resumes_without_losing_frames(broker):
    broker.create_topics({"frames": 1})
    ctx = PipelineSide()
    ctx.congested_flag = True
    src = make_source(broker.bootstrap)
    t = start(src, ctx)
    wait_for(lambda: src._consumer is not None and src._consumer.assignment(), what="assignment")
    produce(broker.bootstrap, "frames", frame_records("cam", 30))
    time.sleep(1.5)
    assert ctx.seen() == 0, "frames were read while the pipeline was congested"
    ctx.congested_flag = False
    wait_for(lambda: ctx.seen() == 30, what="all frames after resume")
    assert [f.seq for f in ctx.frames] == list(range(30))
    ctx.stop()
    t.join(10)


def test_stride_alignment_skips_to_the_grid_and_commits_the_skipped(broker):
    broker.create_topics({"frames": 1})
    produce(broker.bootstrap, "frames", frame_records("cam", 10, start=3))  # seqs 3..12
    ctx = PipelineSide()
    src = make_source(broker.bootstrap, stride=4)
    t = start(src, ctx)
    wait_for(lambda: ctx.seen() == 9, what="frames from seq 4")
    assert [f.seq for f in ctx.frames] == list(range(4, 13))
    wait_for(lambda: committed_offsets(broker.bootstrap, "g", "frames") == {0: 10}, what="commit")
    ctx.stop()
    t.join(10)


def test_rebalance_hands_partitions_over_and_commits_on_revoke(broker):
    broker.create_topics({"frames": 2})
    ctx1, ctx2 = PipelineSide(auto_release=False), PipelineSide()
    s1, s2 = make_source(broker.bootstrap), make_source(broker.bootstrap)
    t1 = start(s1, ctx1)
    wait_for(lambda: s1._consumer is not None and len(s1._consumer.assignment()) == 2, what="s1 owns both")
    produce(broker.bootstrap, "frames", frame_records("cam-a", 20), partition_of=lambda k: 0)
    produce(broker.bootstrap, "frames", frame_records("cam-b", 20), partition_of=lambda k: 1)
    wait_for(lambda: ctx1.seen() == 40, what="s1 read everything")
    # s1 releases the first 12 of each partition only
    ctx1.release([f.source_ref for f in ctx1.frames if f.seq < 12])
    wait_for(lambda: committed_offsets(broker.bootstrap, "g", "frames") == {0: 12, 1: 12}, what="commit 12")
    t2 = start(s2, ctx2)
    wait_for(
        lambda: s2._consumer is not None and len(s2._consumer.assignment()) == 1, timeout=30, what="split"
    )
    # s2 took one partition from s1's commit point: it re-reads the 8 unreleased frames
    wait_for(lambda: ctx2.seen() == 8, what="s2 re-reads from the commit point")
    assert sorted(f.seq for f in ctx2.frames) == list(range(12, 20))
    lost = {(f.stream_id) for f in ctx2.frames}
    assert any(lost <= set(d) for d in ctx1.drops), f"s1 did not drop {lost}: {ctx1.drops}"
    # lag is reported by the partition's owner only: s1 dropped the series of the one it lost
    kept = {str(tp.partition) for tp in s1._consumer.assignment()}
    wait_for(lambda: lag_partitions(ctx1) == kept, what=f"s1 lag series only for {kept}")
    ctx1.stop()
    ctx2.stop()
    t1.join(10)
    t2.join(10)


def stream_up(ctx: PipelineSide, stream: str) -> float | None:
    return ctx.metrics.registry.get_sample_value("vbw_stream_up", {"stream": stream})


def test_kafka_streams_report_up_while_their_partition_is_ours(broker):
    """vbw_stream_up is 1 for a stream met on a partition we own, and gone once the partition
    moved to another worker (its new owner reports it; a 0 here would fire VbwStreamDown)."""
    broker.create_topics({"frames": 2})
    ctx1, ctx2 = PipelineSide(), PipelineSide()
    s1, s2 = make_source(broker.bootstrap), make_source(broker.bootstrap)
    t1 = start(s1, ctx1)
    wait_for(lambda: s1._consumer is not None and len(s1._consumer.assignment()) == 2, what="s1 owns both")
    on_p = {0: "cam-a", 1: "cam-b"}
    produce(broker.bootstrap, "frames", frame_records("cam-a", 10), partition_of=lambda k: 0)
    produce(broker.bootstrap, "frames", frame_records("cam-b", 10), partition_of=lambda k: 1)
    wait_for(lambda: ctx1.seen() == 20, what="s1 read both streams")
    assert stream_up(ctx1, "cam-a") == 1 and stream_up(ctx1, "cam-b") == 1
    t2 = start(s2, ctx2)
    wait_for(
        lambda: s2._consumer is not None and len(s2._consumer.assignment()) == 1, timeout=30, what="split"
    )
    moved = on_p[next(iter(s2._consumer.assignment())).partition]
    kept = on_p[1 - next(iter(s2._consumer.assignment())).partition]
    produce(broker.bootstrap, "frames", frame_records("cam-a", 10, start=10), partition_of=lambda k: 0)
    produce(broker.bootstrap, "frames", frame_records("cam-b", 10, start=10), partition_of=lambda k: 1)
    wait_for(lambda: stream_up(ctx2, moved) == 1, what=f"s2 reports {moved} up")
    wait_for(lambda: stream_up(ctx1, moved) is None, what=f"s1 dropped the up series of {moved}")
    assert stream_up(ctx1, kept) == 1
    assert stream_up(ctx2, kept) is None
    ctx1.stop()
    ctx2.stop()
    t1.join(10)
    t2.join(10)


def test_a_log_that_went_back_resets_the_partition_and_reads_on(broker, caplog):
    """The broker lost its log (restarted empty): offsets start below our position. The source
    catches the OffsetRegression, closes the partition's streams and commits on the new log."""
    caplog.set_level(logging.INFO)  # on failure, the path it took is in the report
    broker.create_topics({"frames": 1})
    produce(broker.bootstrap, "frames", frame_records("cam", 30))
    ctx = PipelineSide()
    src = make_source(broker.bootstrap)
    t = start(src, ctx)
    wait_for(lambda: committed_offsets(broker.bootstrap, "g", "frames") == {0: 30}, what="commit at 30")
    broker.restart()  # memory storage: topics, groups and offsets are gone
    # Tansu auto-creates a topic (4 partitions) on any metadata request, whatever the client's
    # allow_auto_create_topics says, so the reconnecting consumer may create it before we do: pin
    # the new log to partition 0 so either layout puts it where the old one was.
    broker.create_topics({"frames": 1})
    produce(broker.bootstrap, "frames", frame_records("cam", 10, start=30), partition_of=lambda _k: 0)
    wait_for(lambda: ctx.seen() == 40, timeout=60, what="the frames of the new log")
    # Two paths, by timing: the consumer kept the partition and read below its position (the
    # OffsetRegression resets the streams), or it rejoined while the topic did not exist yet, lost
    # the partition (streams dropped) and got it back as new. Either way no window spans the logs.
    assert ("cam", "offset_reset") in ctx.resets or ("cam",) in ctx.drops, (
        ctx.resets,
        ctx.drops,
        [f"{r.name}: {r.getMessage()}" for r in caplog.records],
    )
    assert [f.seq for f in ctx.frames] == list(range(40))
    assert [f.source_ref[2] for f in ctx.frames[30:]] == list(range(10))
    wait_for(
        lambda: committed_offsets(broker.bootstrap, "g", "frames").get(0) == 10,
        timeout=30,
        what="commit at 10",
    )
    ctx.stop()
    t.join(10)
    assert not t.is_alive()
