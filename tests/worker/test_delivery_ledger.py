"""DeliveryLedger without the pipeline: ref counts, pending sinks per window, feedback routing,
and the delivery metrics. Sinks ack inline, later, or from other threads."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import UTC, datetime

import numpy as np

from worker.delivery import DeliveryLedger
from worker.frames import Window
from worker.messages import ModelRef, WindowMessage
from worker.metrics import Metrics
from worker.sinks.base import DeliveryCallback, Sink, WindowResult
from worker.sources.base import Feedback, FramesReleased, WindowDelivery

WALL = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = 10.0

    def __call__(self) -> float:
        return self.t


class HeldSink(Sink):
    """Keeps each window's `done` for the test to call; or raises on publish."""

    def __init__(self, name: str, raises: bool = False) -> None:
        self.name = name
        self.raises = raises
        self.done: dict[str, DeliveryCallback] = {}

    def publish(self, result: WindowResult, done: DeliveryCallback) -> None:
        if self.raises:
            raise ConnectionError("broker gone")
        self.done[result.message.window_id] = done

    def flush(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        pass


def result(sid: str, start: int, n: int = 4, refs: bool = True) -> WindowResult:
    src = [("frames", 0, start + i) for i in range(n)] if refs else []
    w = Window(
        sid,
        0,
        start,
        start + n - 1,
        0.0,
        1.0,
        n,
        True,
        WALL - 2.0,
        source_refs=src,
        window_id=f"{sid}-{start}",
    )
    msg = WindowMessage(
        window_id=w.window_id,
        stream_id=sid,
        index=0,
        start_seq=start,
        end_seq=start + n - 1,
        start_pts=0.0,
        end_pts=1.0,
        frames=n,
        complete=True,
        capture_time=w.capture_time,
        labels=[],
        model=ModelRef(name="m", version="1", backend="b", precision="fp32"),
        latency_ms=0.0,
        worker="w",
        produced_at=datetime.fromtimestamp(WALL, UTC),
    )
    return WindowResult(
        message=msg, embedding=np.zeros(2, np.float32), scores=np.zeros(3, np.float32), window=w
    )


class Routes:
    """Feedback per stream, as the sources would take it."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.got: dict[str, list[Feedback]] = defaultdict(list)
        self.lock = threading.Lock()

    def __call__(self, sid: str):
        if sid not in self.known:
            return None

        def feed(item: Feedback) -> None:
            with self.lock:
                self.got[sid].append(item)

        return feed

    def released(self, sid: str) -> list:
        return [r for fb in self.got[sid] if isinstance(fb, FramesReleased) for r in fb.refs]

    def deliveries(self, sid: str) -> list[WindowDelivery]:
        return [fb for fb in self.got[sid] if isinstance(fb, WindowDelivery)]


def make() -> tuple[DeliveryLedger, Routes, Metrics, Clock]:
    routes, metrics, clock = Routes({"a", "b"}), Metrics(), Clock()
    return DeliveryLedger(metrics, routes, clock=clock, wall_clock=lambda: WALL), routes, metrics, clock


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_buffer_releases_free_only_frames_no_window_needs():
    ledger, routes, _, _ = make()
    refs = [("frames", 0, i) for i in range(4)]
    ledger.hold(refs)  # in the buffer
    ledger.hold(refs[:2])  # and in an unacked window
    ledger.release("a", refs)
    assert routes.released("a") == refs[2:]
    assert ledger.held(refs[0]) == 1 and len(ledger) == 2
    ledger.release("a", [])
    ledger.release("gone", [("frames", 9, 9)])  # a stream no source owns any more: nothing routed
    assert "gone" not in routes.got
    assert sum(isinstance(fb, FramesReleased) for fb in routes.got["a"]) == 1  # no empty releases


def test_window_settles_when_every_sink_acked_then_its_frames_are_freed():
    ledger, routes, metrics, clock = make()
    s1, s2 = HeldSink("labels"), HeldSink("emb")
    r = result("a", 0)
    ledger.hold(r.window.source_refs)  # buffer
    ledger.hold(r.window.source_refs)  # window
    ledger.release("a", r.window.source_refs)  # slid out of the buffer
    ledger.publish(r, [s1, s2])
    assert ledger.in_flight() == 1
    assert sample(metrics, "vbw_windows_emitted_total", stream="a") == 1
    clock.t += 0.25
    s1.done["a-0"](None)
    assert routes.got["a"] == [] and ledger.in_flight() == 1  # one sink still owes its ack
    clock.t += 0.25
    s2.done["a-0"](None)
    assert routes.deliveries("a") == [WindowDelivery("a-0", "a", tuple(r.window.source_refs), True, None)]
    assert routes.released("a") == r.window.source_refs
    assert isinstance(routes.got["a"][-1], FramesReleased)  # the delivery comes first
    assert ledger.in_flight() == 0 and len(ledger) == 0
    assert sample(metrics, "vbw_published_total", topic="labels") == 1
    assert sample(metrics, "vbw_published_total", topic="emb") == 1
    assert sample(metrics, "vbw_stage_seconds_count", stage="publish") == 2
    assert sample(metrics, "vbw_stage_seconds_sum", stage="publish") == 0.25 + 0.5
    assert sample(metrics, "vbw_end_to_end_latency_seconds_count") == 1
    assert sample(metrics, "vbw_end_to_end_latency_seconds_sum") == 2.0  # capture 2 s before WALL


def test_a_failed_sink_keeps_the_frames_held_and_says_why(caplog):
    ledger, routes, metrics, _ = make()
    ok, bad = HeldSink("labels"), HeldSink("emb")
    r = result("b", 8)
    ledger.hold(r.window.source_refs)
    ledger.publish(r, [ok, bad])
    with caplog.at_level(logging.ERROR, logger="vbw.pipeline"):
        bad.done["b-8"]("timed out")
    ok.done["b-8"](None)
    assert routes.deliveries("b") == [
        WindowDelivery("b-8", "b", tuple(r.window.source_refs), False, "timed out")
    ]
    assert routes.released("b") == []
    assert all(ledger.held(ref) == 1 for ref in r.window.source_refs)
    assert sample(metrics, "vbw_publish_errors_total", topic="emb") == 1
    assert sample(metrics, "vbw_end_to_end_latency_seconds_count") == 0  # never delivered
    assert [rec.getMessage() for rec in caplog.records] == ["sink emb: window b-8 not delivered: timed out"]


def test_publish_raising_counts_as_a_failed_delivery():
    ledger, routes, metrics, _ = make()
    ledger.publish(result("a", 4), [HeldSink("labels", raises=True)])
    (d,) = routes.deliveries("a")
    assert not d.ok and d.error == "publish raised ConnectionError: broker gone"
    assert sample(metrics, "vbw_publish_errors_total", topic="labels") == 1
    assert ledger.in_flight() == 0


def test_windows_without_refs_give_metrics_but_no_feedback():
    ledger, routes, metrics, _ = make()
    sink = HeldSink("jsonl")
    ledger.publish(result("a", 0, refs=False), [sink])
    sink.done["a-0"](None)
    assert routes.got["a"] == []
    assert sample(metrics, "vbw_published_total", topic="jsonl") == 1
    assert sample(metrics, "vbw_end_to_end_latency_seconds_count") == 1


def test_acks_from_many_threads_release_every_frame_exactly_once():
    ledger, routes, _, _ = make()
    sinks = [HeldSink("s1"), HeldSink("s2"), HeldSink("s3")]
    results = [result("a", 2 * k) for k in range(60)]  # stride 2: each frame in two windows
    for r in results:
        ledger.hold(r.window.source_refs)
        ledger.publish(r, sinks)
    barrier = threading.Barrier(len(sinks))

    def ack_all(sink: HeldSink) -> None:
        barrier.wait()
        for done in list(sink.done.values()):
            done(None)

    threads = [threading.Thread(target=ack_all, args=(s,)) for s in sinks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert ledger.in_flight() == 0 and len(ledger) == 0
    released = routes.released("a")
    assert sorted(released) == sorted({ref for r in results for ref in r.window.source_refs})
    assert len(routes.deliveries("a")) == len(results)
