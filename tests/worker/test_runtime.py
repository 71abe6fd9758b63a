"""The Runtime without a model or a pipeline: how sources end and what exit code that makes, the
finite-source and required-thread watch, signals (a second one forces), start-up errors, the
shutdown order (sources, drain, then sources that commit after the drain), and the shared
SourceContextBase parts (stream registration, feedback, congestion with high/low water)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterable

import numpy as np
import pytest

from worker.frames import Frame
from worker.metrics import Metrics
from worker.runtime import Runtime, StartupError
from worker.sources.base import FramesReleased, Source, SourceFailed
from worker.sources.context import SourceContextBase

log = logging.getLogger("vbw.test-runtime")


class RecordCtx(SourceContextBase):
    def __init__(self, source: Source, rt: Runtime) -> None:
        super().__init__(source, rt, Metrics(), (8, 8), high_water=0.8, low_water=0.2)
        self.resets: list[tuple[str, str]] = []
        self.level = 0.0

    def emit(self, frame: Frame) -> bool:
        self.received(frame)
        return True

    def stream_reset(self, stream_id: str, reason: str, emit_partial: bool = True) -> None:
        self.resets.append((stream_id, reason))

    def drop_streams(self, stream_ids: Iterable[str], reason: str) -> None:
        pass

    def load(self) -> float:
        return self.level


class Scripted(Source):
    """Ends as told: "end" (input over), "fail" (SourceFailed), "raise" (a bug), "wait" (until stopped)."""

    finite = True

    def __init__(self, source_id: str, outcome: str) -> None:
        self.id = source_id
        self.outcome = outcome

    def run(self, ctx: SourceContextBase) -> None:  # type: ignore[override]
        if self.outcome == "fail":
            raise SourceFailed(self.id, "cannot open file", "x.mp4: No such file")
        if self.outcome == "raise":
            raise RuntimeError("boom")
        if self.outcome == "wait":
            ctx.wait(120)


def run_sources(outcomes: list[str], **rt_args) -> tuple[int, Runtime, list[RecordCtx]]:
    rt = Runtime(log, grace_s=rt_args.pop("grace_s", 5.0), install_signals=False, **rt_args)
    ctxs: list[RecordCtx] = []

    def start() -> None:
        for i, outcome in enumerate(outcomes):
            s = Scripted(f"s{i}", outcome)
            ctxs.append(RecordCtx(s, rt))
            rt.start_source(s, ctxs[-1])

    rc = rt.run(start, lambda: rt.exit_code(rt.shutdown(lambda: True)))
    return rc, rt, ctxs


@pytest.mark.parametrize(
    ("outcomes", "rc_expected"),
    [(["fail", "raise"], 1), (["fail", "end"], 0), (["end", "end"], 0)],
    ids=["every-source-failed", "one-ended", "all-ended"],
)
def test_the_exit_code_says_whether_every_source_failed(outcomes, rc_expected, caplog):
    caplog.set_level(logging.INFO)
    rc, rt, ctxs = run_sources(outcomes)
    assert rc == rc_expected
    assert rt.stop_reason == "every source ended"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    failed = [f"s{i}" for i, o in enumerate(outcomes) if o in ("fail", "raise")]
    assert rt.failed == set(failed)
    # one line per failure, plus the verdict when every source failed
    assert len(errors) == len(failed) + (rc_expected == 1)
    if "fail" in outcomes:
        assert any(
            r.name == "vbw.source" and r.getMessage() == "s0: cannot open file: x.mp4: No such file"
            for r in errors
        )
    if "raise" in outcomes:
        assert any(r.getMessage() == "source s1 failed: RuntimeError: boom" for r in errors)
        # the raising source's streams are counted and closed, the SourceFailed one's left to it
        assert ctxs[1].resets == [("s1", "error")]
        assert ctxs[1].metrics.decode_errors.labels("s1")._value.get() == 1
        assert ctxs[0].resets == []
    if rc_expected == 1:
        assert errors[-1].getMessage() == "every source failed (s0, s1)"


def test_a_required_thread_that_ends_stops_the_run():
    rt = Runtime(log, grace_s=2.0, install_signals=False)
    gone = threading.Event()

    def start() -> None:
        s = Scripted("cam", "wait")
        s.finite = False
        rt.start_source(s, RecordCtx(s, rt))
        rt.spawn("worker", gone.wait, 0.2, required=True)

    rc = rt.run(start, lambda: rt.exit_code(rt.shutdown(lambda: True)))
    assert rc == 0
    assert rt.stop_reason == "worker thread ended"
    assert not rt.alive("source:cam")


def test_a_start_up_error_is_one_line_and_exit_1(caplog):
    rt = Runtime(log, grace_s=1.0, install_signals=False)

    def start() -> None:
        rt.serve_http("127.0.0.1", 0, Metrics().registry)
        raise StartupError("engine x: no model.json")

    assert rt.run(start, lambda: 0) == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "cannot start: engine x: no model.json"
    ]
    assert not rt.alive("http")  # the server was shut down
    assert not rt.started.is_set()


def test_a_second_signal_forces_the_shutdown():
    assert threading.current_thread() is threading.main_thread()
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    rt = Runtime(log, grace_s=30.0)
    try:
        rt.install_signals()
        signal.raise_signal(signal.SIGTERM)
        assert rt.stop_reason == "SIGTERM" and not rt.force
        assert rt.remaining(time.monotonic() + 10) > 5
        signal.raise_signal(signal.SIGINT)
        assert rt.stop_reason == "SIGTERM" and rt.force
        assert rt.remaining(time.monotonic() + 10) == 0.0
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Lingering(Source):
    """Commits after the drain: keeps running until `ctx.drained()`."""

    finite = False
    commits_after_drain = True

    def __init__(self) -> None:
        self.id = "kafka"
        self.saw_drained = False

    def run(self, ctx: SourceContextBase) -> None:  # type: ignore[override]
        while not ctx.drained():
            time.sleep(0.01)  # ctx.wait returns at once after the stop
        self.saw_drained = True


class Stuck(Source):
    """Ignores the stop for a while (an RTSP read blocked until its timeout)."""

    finite = False

    def __init__(self, release: threading.Event) -> None:
        self.id = "stuck"
        self.release = release

    def run(self, ctx: SourceContextBase) -> None:  # type: ignore[override]
        self.release.wait(60)


def test_shutdown_joins_sources_then_drains_then_the_ones_that_commit_after(caplog):
    rt = Runtime(log, grace_s=2.0, install_signals=False)
    lingering, release = Lingering(), threading.Event()
    at_drain: dict[str, bool] = {}

    def drain() -> bool:
        at_drain["stuck"] = rt.alive("source:stuck")
        at_drain["kafka"] = rt.alive("source:kafka")
        at_drain["drained"] = rt.drained.is_set()
        return True

    def start() -> None:
        for s in (lingering, Stuck(release)):
            rt.start_source(s, RecordCtx(s, rt))
        rt.stop("test")

    try:
        t0 = time.monotonic()
        ok = rt.run(start, lambda: rt.exit_code(rt.shutdown(drain)))
        took = time.monotonic() - t0
    finally:
        release.set()
    assert ok == 0
    # the stuck source had half the grace, then was left; the Kafka-like one waited for the drain
    assert at_drain == {"stuck": True, "kafka": True, "drained": False}
    assert lingering.saw_drained and not rt.alive("source:kafka")
    assert any(r.getMessage() == "source:stuck still blocked at shutdown; leaving it" for r in caplog.records)
    assert took < 2.0 + 1.0


def test_the_context_base_registers_streams_routes_feedback_and_congests_with_hysteresis():
    rt = Runtime(log, grace_s=1.0, install_signals=False)
    src = Scripted("cam", "end")
    seen: list[str] = []

    class Ctx(RecordCtx):
        def stream_registered(self, stream_id: str) -> None:
            seen.append(stream_id)

    ctx = Ctx(src, rt)
    img = np.zeros((8, 8, 3), np.uint8)
    for seq in range(3):
        ctx.emit(Frame("cam", seq, seq / 5, time.time(), img))
    ctx.dropped(Frame("cam", 3, 0.6, time.time(), img, source_ref=("t", 0, 3)), "overload")
    assert seen == ["cam"]
    assert ctx.metrics.frames_received.labels("cam")._value.get() == 3
    assert ctx.metrics.frames_dropped.labels("cam", "overload")._value.get() == 1
    ctx.feed(FramesReleased((("t", 0, 1),)))
    assert ctx.take_feedback() == [FramesReleased((("t", 0, 3),)), FramesReleased((("t", 0, 1),))]
    assert ctx.take_feedback() == []
    flags = []
    for level in (0.5, 0.8, 0.5, 0.2, 0.5):
        ctx.level = level
        flags.append(ctx.congested())
    assert flags == [False, True, True, False, False]
    assert not ctx.stopping() and not ctx.drained()
    rt.stop_sources.set()
    assert ctx.stopping() and ctx.wait(5)
