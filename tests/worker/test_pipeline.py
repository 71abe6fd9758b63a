"""The pipeline in-process with a real (tiny) ONNX Runtime model: delivery feedback to sources,
revokes, failing sinks, and the overload policy for live sources."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from worker_helpers import metric_value

from worker.config import parse_config
from worker.frames import Frame
from worker.pipeline import Pipeline
from worker.sinks.base import DeliveryCallback, Sink, WindowResult
from worker.sources.base import FramesReleased, Source, SourceContext, WindowDelivery


class ListSink(Sink):
    """Keeps results in memory; fails the windows whose index is in `fail`; sleeps `delay` each."""

    def __init__(
        self, name: str = "list", fail: set[int] | None = None, delay: float = 0.0, async_ack: bool = False
    ):
        self.name = name
        self.fail = fail or set()
        self.delay = delay
        self.async_ack = async_ack
        self.results: list[WindowResult] = []
        self._threads: list[threading.Thread] = []

    def publish(self, result: WindowResult, done: DeliveryCallback) -> None:
        if self.delay:
            time.sleep(self.delay)
        self.results.append(result)
        verdict = "boom" if result.message.index in self.fail else None
        if self.async_ack:  # ack from another thread, later, as a Kafka producer does
            t = threading.Timer(0.01, done, args=(verdict,))
            t.start()
            self._threads.append(t)
        else:
            done(verdict)

    def flush(self, timeout: float) -> bool:
        for t in self._threads:
            t.join(timeout)
        return True

    def close(self) -> None:
        pass


class RefSource(Source):
    """Emits frames carrying (topic, partition, offset) refs, like a Kafka source, and collects feedback
    in its own thread until every ref it emitted has been released (or a timeout)."""

    live = False
    finite = True

    def __init__(self, streams: dict[str, int], size: int, revoke: str | None = None, expect_held: int = 0):
        self.id = "refs"
        self.streams = streams
        self.size = size
        self.revoke = revoke
        self.expect_held = expect_held
        self.emitted: list[tuple[str, int, int]] = []
        self.released: list[tuple[str, int, int]] = []
        self.deliveries: list[WindowDelivery] = []
        self.thread_ids: set[int] = set()

    def stream_ids(self) -> list[str]:
        return list(self.streams)

    def _drain(self, ctx: SourceContext) -> None:
        for fb in ctx.take_feedback():
            self.thread_ids.add(threading.get_ident())
            if isinstance(fb, FramesReleased):
                self.released.extend(fb.refs)
            else:
                self.deliveries.append(fb)

    def run(self, ctx: SourceContext) -> None:
        rng = np.random.default_rng(0)
        offset = 0
        n_max = max(self.streams.values())
        for i in range(n_max):
            for p, (sid, n) in enumerate(self.streams.items()):
                if i < n:
                    img = rng.integers(0, 255, (*self.size, 3), dtype=np.uint8)
                    ref = ("frames", p, offset)
                    offset += 1
                    self.emitted.append(ref)
                    ctx.emit(Frame(sid, i, i / 5, time.time(), img, source_ref=ref))
            self._drain(ctx)
        for sid in self.streams:
            if sid == self.revoke:
                ctx.drop_streams([sid], "revoked")
            else:
                ctx.stream_reset(sid, "eos")
        deadline = time.monotonic() + 30
        while len(self.released) < len(self.emitted) - self.expect_held and time.monotonic() < deadline:
            ctx.wait(0.05)
            self._drain(ctx)
        ctx.wait(0.3)
        self._drain(ctx)


def run_pipeline(cfg_doc: dict, sources: list[Source], sinks: list[Sink]) -> Pipeline:
    p = Pipeline(parse_config(cfg_doc), sources=sources, sinks=sinks, install_signals=False)
    t = threading.Thread(target=lambda: setattr(p, "rc", p.run()))
    t.start()
    t.join(90)
    assert not t.is_alive(), "pipeline did not finish"
    assert p.rc == 0
    return p


def base_cfg(model_dir: Path, **over) -> dict:
    doc = {
        "sources": [{"type": "file", "id": "unused", "path": "x"}],  # replaced by the sources= argument
        "engine": {"model_dir": str(model_dir)},
        "windows": {"stride": 2, "partial": "pad"},
        "metrics": {"enabled": False},
    }
    doc.update(over)
    return doc


def test_every_ref_is_released_once_after_all_sinks_ack(tiny_model_dir):
    src = RefSource({"a": 21, "b": 9, "c": 3}, (32, 32))
    s1, s2 = ListSink("s1"), ListSink("s2", async_ack=True)
    run_pipeline(base_cfg(tiny_model_dir), [src], [s1, s2])
    # released exactly once each, and only by the source's own thread
    assert sorted(src.released) == sorted(src.emitted)
    assert len(src.thread_ids) == 1
    assert len(s1.results) == len(s2.results) == len(src.deliveries)
    by_id = {r.message.window_id: r for r in s1.results}
    for d in src.deliveries:
        assert d.ok and d.error is None
        assert list(d.refs) == by_id[d.window_id].window.source_refs
        assert len(d.refs) == by_id[d.window_id].message.frames
    # T=8, stride 2: a=21 frames -> 7 complete + 1 padded; b=9 -> 1 + 1; c=3 -> 0 + 1 padded
    per = {
        s: sorted((r.message.start_seq, r.message.complete) for r in s1.results if r.message.stream_id == s)
        for s in "abc"
    }
    assert per["a"] == [*[(k, True) for k in range(0, 14, 2)], (14, False)]
    assert per["b"] == [(0, True), (2, False)]
    assert per["c"] == [(0, False)]


def test_revoke_drops_state_without_windows(tiny_model_dir):
    src = RefSource({"a": 12, "gone": 7}, (32, 32), revoke="gone")
    sink = ListSink()
    run_pipeline(base_cfg(tiny_model_dir), [src], [sink])
    gone = [r for r in sink.results if r.message.stream_id == "gone"]
    assert gone == []  # 7 frames < T: only a partial existed, and a revoke emits nothing
    assert sorted(src.released) == sorted(src.emitted)


def test_failed_delivery_keeps_frames_held(tiny_model_dir):
    src = RefSource({"a": 16}, (32, 32), expect_held=8)
    sink = ListSink(fail={1})  # 16 frames, T=8, stride 8: windows 0 and 1; the second fails
    p = Pipeline(
        parse_config(base_cfg(tiny_model_dir, windows={"stride": 8})),
        sources=[src],
        sinks=[sink],
        install_signals=False,
    )
    t = threading.Thread(target=p.run)
    t.start()
    t.join(90)
    bad = [d for d in src.deliveries if not d.ok]
    assert len(bad) == 1 and bad[0].error == "boom"
    held = set(src.emitted) - set(src.released)
    assert held == set(bad[0].refs)
    from prometheus_client import generate_latest

    text = generate_latest(p.metrics.registry).decode()
    assert metric_value(text, "vbw_publish_errors_total", topic="list") == 1


class PacedSource(Source):
    """A camera stand-in: frames at `fps` on the wall clock, never waiting for the pipeline."""

    live = True
    finite = True

    def __init__(self, sid: str, n: int, fps: float, size: tuple[int, int]):
        self.id = sid
        self.n, self.fps, self.size = n, fps, size

    def run(self, ctx: SourceContext) -> None:
        img = np.zeros((*self.size, 3), np.uint8)
        t0 = time.monotonic()
        for i in range(self.n):
            if ctx.wait(t0 + i / self.fps - time.monotonic()):
                return
            ctx.emit(Frame(self.id, i, i / self.fps, time.time(), img))
        ctx.stream_reset(self.id, "eos")


def test_overload_drops_frames_before_windows_so_windows_stay_whole(tiny_model_dir):
    sources = [PacedSource(f"cam{i}", 120, 40.0, (32, 32)) for i in range(4)]
    slow = ListSink(delay=0.05)  # 20 windows/s at most, far below what 4 x 40 fps x stride 2 need
    doc = base_cfg(
        tiny_model_dir,
        windows={"stride": 2, "partial": "drop"},
        pipeline={"frame_queue": 8, "result_queue": 2},
    )
    p = run_pipeline(doc, sources, [slow])
    from prometheus_client import generate_latest

    text = generate_latest(p.metrics.registry).decode()
    dropped = metric_value(text, "vbw_frames_dropped_total", reason="overload")
    assert dropped > 0
    assert metric_value(text, "vbw_windows_dropped_total", reason="gap") > 0
    assert slow.results
    for r in slow.results:  # every window published is whole: T consecutive frames, nothing missing
        m = r.message
        assert m.complete and m.frames == 8 and m.end_seq - m.start_seq == 7


@pytest.mark.parametrize(
    "windows",
    [{"partial": "emit"}, {"size": 5}],
    ids=["emit-needs-variable-T", "size-must-match-model"],
)
def test_startup_refuses_windows_the_engine_cannot_take(tiny_model_dir, windows, caplog):
    cfg = parse_config(base_cfg(tiny_model_dir, windows=windows))
    p = Pipeline(cfg, sources=[], sinks=[], install_signals=False)
    assert p.run() == 1
    assert any("cannot start" in r.getMessage() for r in caplog.records)


class BlockingSink(ListSink):
    """A sink whose publish hangs until released: a wedged downstream."""

    def __init__(self) -> None:
        super().__init__("stuck")
        self.release = threading.Event()

    def publish(self, result: WindowResult, done: DeliveryCallback) -> None:
        self.release.wait(60)
        done(None)


def test_healthz_reports_a_wedged_sink_and_readyz_follows_the_lifecycle(tiny_model_dir, labelled_clips):
    from worker_helpers import http_get

    from worker.sources.file import FileSource

    sink = BlockingSink()
    doc = base_cfg(tiny_model_dir, metrics={"host": "127.0.0.1", "port": 0, "wedged_after_s": 1.0})
    cfg = parse_config(doc)
    src = FileSource("f", labelled_clips["grow"], cfg.sampling, realtime=True)
    p = Pipeline(cfg, sources=[src], sinks=[sink], install_signals=False)
    t = threading.Thread(target=p.run)
    t.start()
    try:
        assert p.wait_started(60)
        base = f"http://127.0.0.1:{p.metrics_port}"
        assert http_get(base + "/readyz")[0] == 200
        deadline = time.monotonic() + 20
        code, body = http_get(base + "/healthz")
        while code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
            code, body = http_get(base + "/healthz")
        assert code == 503 and "sink silent" in body
    finally:
        sink.release.set()
        p.stop("test")
        t.join(60)


class ImageSource(Source):
    """Interleaved streams of reproducible random frames, with a hole in stream "b"."""

    live = False
    finite = True

    def __init__(self, seqs: dict[str, list[int]], size: tuple[int, int]):
        self.id = "images"
        self.seqs, self.size = seqs, size

    def stream_ids(self) -> list[str]:
        return list(self.seqs)

    def image(self, sid: str, seq: int) -> np.ndarray:
        rng = np.random.default_rng([ord(sid), seq])
        return rng.integers(0, 255, (*self.size, 3), dtype=np.uint8)

    def run(self, ctx: SourceContext) -> None:
        for i in range(max(len(s) for s in self.seqs.values())):
            for sid, seqs in self.seqs.items():
                if i < len(seqs):
                    ctx.emit(Frame(sid, seqs[i], seqs[i] / 5, time.time(), self.image(sid, seqs[i])))
        for sid in self.seqs:
            ctx.stream_reset(sid, "eos")


def test_incremental_windows_equal_whole_window_inference(tiny_model_dir):
    """Cached features and tokens, batched across streams however the frames fall, give the
    scores of the whole window recomputed from its pixels in one graph."""
    from engines import load_engine

    # a: a one-frame hole inside windows (max_gap 1); b: a hole that closes them; c: too short
    seqs = {"a": [s for s in range(23) if s != 12], "b": [*range(10), *range(14, 30)], "c": list(range(7))}
    src = ImageSource(seqs, (32, 32))
    sink = ListSink()
    doc = base_cfg(
        tiny_model_dir,
        windows={"stride": 3, "partial": "pad", "max_gap": 1},
        batching={"frame_max_batch": 5, "max_batch": 4},
    )
    run_pipeline(doc, [src], [sink])
    engine = load_engine(tiny_model_dir, "onnxruntime")
    t = engine.metadata.num_frames
    assert {r.message.stream_id for r in sink.results} == {"a", "b", "c"}
    assert any(r.message.complete for r in sink.results) and any(not r.message.complete for r in sink.results)
    for r in sink.results:
        m = r.message
        real = [s for s in seqs[m.stream_id] if m.start_seq <= s <= m.end_seq]
        assert len(real) == m.frames
        real += [real[-1]] * (t - len(real))  # pad repeats the last frame
        clip = np.stack([src.image(m.stream_id, s) for s in real])[None]
        want, want_emb = engine.infer_windows(clip)
        np.testing.assert_allclose(r.scores, want[0], atol=1e-4, err_msg=f"{m.stream_id} {m.start_seq}")
        np.testing.assert_allclose(r.embedding, want_emb[0], atol=1e-4)
