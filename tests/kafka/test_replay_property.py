"""At-least-once, end to end but without threads: the Kafka source's offset book and stream
aligner around the worker's real InferenceStage (window assembler, batchers) and DeliveryLedger
(ref counts, pending sinks, feedback), with a numpy engine and two sinks that ack when told.

A partition carries several interleaved streams. The worker crashes at random points (pending
windows and batches are lost, only the last commit survives) and replays from its commit point.
Whatever the crash points, ack order, batch timing and commit timing, every window of an
uninterrupted run must have been delivered (acked by every sink) at least once, and nothing but
those windows (same window_ids) is ever delivered.
"""

from __future__ import annotations

import random
from collections import deque

import numpy as np
from fake_engine import FakeEngine
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.config import BatchingConfig, WindowsConfig
from worker.delivery import DeliveryLedger
from worker.frames import Frame
from worker.inference_stage import InferenceStage, StageOutput
from worker.kafka.align import StreamAligner
from worker.kafka.offsets import OffsetBook
from worker.metrics import Metrics
from worker.sinks.base import DeliveryCallback, Sink, WindowResult
from worker.sources.base import Feedback, FramesReleased, WindowDelivery

TP = ("frames", 0)
IMAGE = np.zeros((2, 2, 3), np.uint8)


class AckLaterSink(Sink):
    """Holds every window's `done` until the test acks it; remembers what it acked."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.waiting: dict[str, DeliveryCallback] = {}
        self.acked: set[str] = set()

    def publish(self, result: WindowResult, done: DeliveryCallback) -> None:
        self.waiting[result.message.window_id] = done

    def ack(self, wid: str) -> None:
        self.waiting.pop(wid)(None)
        self.acked.add(wid)

    def flush(self, timeout: float) -> bool:
        return not self.waiting

    def close(self) -> None:
        pass


class Worker:
    """One worker process: Kafka source bookkeeping -> InferenceStage -> DeliveryLedger -> sinks."""

    def __init__(self, size: int, stride: int, start: int, batching: dict, sinks: list[AckLaterSink]):
        self.book = OffsetBook()
        self.book.assign(TP, start, committed=start)
        self.committed = start
        self.aligner = StreamAligner(stride)
        self.t = 0.0
        self.stage = InferenceStage(
            FakeEngine(num_frames=size),
            WindowsConfig(stride=stride, max_gap=0, partial="drop"),
            BatchingConfig(**batching),
            metrics=Metrics(),
            worker_id="w",
            top_k=1,
            clock=lambda: self.t,
        )
        self.feedback: deque[Feedback] = deque()
        self.ledger = DeliveryLedger(Metrics(), lambda _sid: self.feedback.append)
        self.sinks = sinks
        self.delivered: list[str] = []  # WindowDelivery ok: every sink acked

    def read(self, offset: int, stream: str, seq: int, dt: float) -> None:
        self.t += dt
        if not self.aligner.admit(stream, seq):
            self.book.skip(TP, offset)
            self._hand_on(self.stage.feed([]))
            return
        self.book.hold(TP, offset)
        frame = Frame(stream, seq, float(seq), 0.0, IMAGE, source_ref=(*TP, offset))
        self._hand_on(self.stage.feed([frame]))

    def end_of_input(self) -> None:
        # a Kafka source keeps its open windows held (emit_partial_on_stop=False)
        self._hand_on(self.stage.close(lambda _sid: False))

    def _hand_on(self, out: StageOutput) -> None:  # as the pipeline's inference and sink threads
        self.ledger.hold(out.held)
        for sid, refs in out.released:
            self.ledger.release(sid, refs)
        for r in out.results:
            self.ledger.publish(r, self.sinks)

    def take_feedback(self) -> None:  # as KafkaSource._take_feedback
        while self.feedback:
            item = self.feedback.popleft()
            if isinstance(item, FramesReleased):
                for topic, partition, offset in item.refs:
                    self.book.release((topic, partition), offset)
            elif isinstance(item, WindowDelivery) and item.ok:
                self.delivered.append(item.window_id)

    def commit(self) -> None:
        self.take_feedback()
        point = self.book.commit_point(TP)
        assert point is not None and point >= self.committed
        self.committed = point


NO_WAIT = dict(max_batch=1, max_delay_ms=0, frame_max_batch=1, frame_max_delay_ms=0)


def reference_windows(messages: list[tuple[str, int]], size: int, stride: int) -> set[str]:
    sink = AckLaterSink("ref")
    w = Worker(size, stride, 0, NO_WAIT, [sink])
    for offset, (stream, seq) in enumerate(messages):
        w.read(offset, stream, seq, 0.0)
    w.end_of_input()
    return set(sink.waiting)


@st.composite
def inputs(draw):
    n_streams = draw(st.integers(1, 3))
    order = draw(st.lists(st.integers(0, n_streams - 1), min_size=1, max_size=120))
    starts = [draw(st.integers(0, 6)) for _ in range(n_streams)]
    nxt = list(starts)
    messages = []
    for s in order:
        messages.append((f"cam{s}", nxt[s]))
        nxt[s] += 1
    size = draw(st.integers(1, 6))
    stride = draw(st.integers(1, 7))
    crashes = sorted(draw(st.lists(st.integers(0, len(messages) - 1), max_size=3)))
    return messages, size, stride, crashes


batching = st.fixed_dictionaries(
    {
        "max_batch": st.integers(1, 4),
        "max_delay_ms": st.sampled_from([0.0, 10.0]),
        "frame_max_batch": st.integers(1, 4),
        "frame_max_delay_ms": st.sampled_from([0.0, 10.0]),
    }
)


@settings(max_examples=300, deadline=None)
@given(case=inputs(), batch=batching, seed=st.integers(0, 2**32 - 1))
def test_every_window_delivered_at_least_once_with_stable_ids(case, batch, seed):
    messages, size, stride, crashes = case
    rng = random.Random(seed)
    expected = reference_windows(messages, size, stride)
    delivered: set[str] = set()
    acked: set[str] = set()

    start = 0
    for crash_at in [*crashes, None]:
        sinks = [AckLaterSink("labels"), AckLaterSink("emb")]
        worker = Worker(size, stride, start, batch, sinks)
        end = len(messages) if crash_at is None else max(crash_at, start)
        for offset in range(start, end):
            stream, seq = messages[offset]
            worker.read(offset, stream, seq, rng.choice([0.0, 0.004, 0.02]))
            # each sink acks some of its pending windows, in any order
            for sink in sinks:
                wids = list(sink.waiting)
                rng.shuffle(wids)
                for wid in wids:
                    if rng.random() < 0.5:
                        sink.ack(wid)
            if rng.random() < 0.3:
                worker.commit()
        if crash_at is None:  # clean end: last batches, drain the sinks, commit
            worker.end_of_input()
            for sink in sinks:
                for wid in list(sink.waiting):
                    sink.ack(wid)
            worker.commit()
            assert worker.ledger.in_flight() == 0
        # a crash loses pending windows and batches, and everything after the last commit
        start = worker.committed
        worker.take_feedback()  # (what the sinks acked is out there, taken or not)
        delivered.update(worker.delivered)
        for sink in sinks:
            acked |= sink.acked

    assert acked <= expected, "a replay cut a window the uninterrupted run never had"
    assert expected <= delivered, f"missing windows: {len(expected - delivered)}"
