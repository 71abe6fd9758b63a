"""The runtime's registry of running sources, under the stream API: one source stops alone while
the others go on, a source started after the program's stop is stopped at once, the program's
stop reaches every source's own stop event, and the sources list follows adds and removals."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from worker.frames import Frame
from worker.metrics import Metrics
from worker.runtime import Runtime
from worker.sources.base import Source
from worker.sources.context import SourceContextBase

log = logging.getLogger("vbw.test-api-runtime")


class RecordCtx(SourceContextBase):
    def __init__(self, source: Source, rt: Runtime) -> None:
        super().__init__(source, rt, Metrics(), (8, 8))

    def emit(self, frame: Frame) -> bool:
        return True

    def stream_reset(self, stream_id: str, reason: str, emit_partial: bool = True) -> None:
        pass

    def drop_streams(self, stream_ids: Iterable[str], reason: str) -> None:
        pass

    def load(self) -> float:
        return 0.0


class Scripted(Source):
    """Runs until its context says stop."""

    def __init__(self, source_id: str, _outcome: str) -> None:
        self.id = source_id

    def run(self, ctx: SourceContextBase) -> None:  # type: ignore[override]
        ctx.wait(120)


def test_stop_source_stops_one_and_leaves_the_others() -> None:
    rt = Runtime(log, grace_s=5.0, install_signals=False)
    srcs = [Scripted(f"s{i}", "wait") for i in range(3)]
    ctxs = [RecordCtx(s, rt) for s in srcs]
    for s, c in zip(srcs, ctxs, strict=True):
        rt.start_source(s, c)
    assert rt.stop_source(srcs[1], ctxs[1], timeout=10)
    assert not rt.alive("source:s1") and rt.alive("source:s0") and rt.alive("source:s2")
    assert [s.id for s in rt.running_sources()] == ["s0", "s2"]
    assert not ctxs[0].stopping() and ctxs[1].stopping()
    # the same id again: a new source with a new context runs
    again = Scripted("s1", "wait")
    ctx = RecordCtx(again, rt)
    rt.start_source(again, ctx)
    assert rt.alive("source:s1") and not ctx.stopping()
    rt.stop_sources.set()  # the program's stop reaches every source's own event
    for name in ("s0", "s1", "s2"):
        t = rt.threads[f"source:{name}"]
        t.join(10)
        assert not t.is_alive()


def test_a_source_started_after_the_stop_stops_at_once() -> None:
    rt = Runtime(log, grace_s=5.0, install_signals=False)
    rt.stop_sources.set()
    s = Scripted("late", "wait")
    ctx = RecordCtx(s, rt)
    assert ctx.stopping() and ctx.wait(5)
    rt.start_source(s, ctx)
    rt.threads["source:late"].join(10)
    assert not rt.alive("source:late")


def test_removed_contexts_are_not_kept_alive_by_the_fan_out() -> None:
    import gc

    rt = Runtime(log, grace_s=5.0, install_signals=False)
    before = threading.active_count()
    for i in range(50):
        s = Scripted(f"c{i}", "wait")
        c = RecordCtx(s, rt)
        rt.start_source(s, c)
        assert rt.stop_source(s, c, timeout=10)
    del s, c
    gc.collect()
    assert len(rt.stop_sources._each) == 0  # the WeakSet let every removed context go
    assert threading.active_count() == before
    assert rt.running_sources() == [] and not any(n.startswith("source:") for n in rt.threads)
