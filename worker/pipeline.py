"""The running worker: the ONLY module that owns threads and queues.

    source threads ──Frame──> frame_q ──> inference thread ──WindowResult──> result_q ──> sink thread
    (decode+resize)           (bounded)   encode_frames (batched across       (bounded)   publish to every sink,
                                          streams) -> per-stream windows ->               acks -> latency, refs
                                          batcher -> encode_windows                       back to the sources

- One thread per source (`Source.run(ctx)`), one inference thread that owns the engine, one sink
  thread, and the HTTP thread for /metrics, /healthz, /readyz.
- Backpressure: the queues are bounded. A live source's frame is dropped at `frame_q` when it is
  full (counted, before it enters a window); other sources block, or pause themselves on
  `ctx.congested()`. A slow sink fills `result_q`, which stalls inference, which fills `frame_q`.
- Stream resets and drops travel through `frame_q` with the frames, so they apply in order.
- Shutdown (SIGTERM/SIGINT, or every finite source ended): sources stop, the inference thread
  encodes what is queued, closes every stream's windows and runs the last batches, the sink
  thread publishes and flushes; a source with `commits_after_drain` (Kafka) keeps taking
  feedback until then (`ctx.drained()`) and commits last; all within `pipeline.shutdown_grace_s`.
- Anything else that runs threads (the bench harness, tests) only drives these from outside.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from engines.base import Engine
from worker.batcher import Batcher
from worker.config import VbwConfig
from worker.frames import Frame, Window
from worker.health import Health, make_server
from worker.messages import LabelScore, ModelRef, WindowMessage
from worker.metrics import Metrics
from worker.refs import RefCounts, SourceRef
from worker.sinks.base import Sink, WindowResult
from worker.sources.base import Feedback, FramesReleased, Source, WindowDelivery
from worker.windows import FrameMeta, SlidingWindowAssembler, Step, predecessor_features

log = logging.getLogger("vbw.pipeline")

_IDLE_S = 0.1  # longest any worker thread sleeps without looking at its inputs


class StartupError(Exception):
    """The worker cannot start (engine, model, sink). One line, no traceback."""


# -- items on frame_q besides frames ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Reset:
    stream_id: str
    reason: str
    emit_partial: bool


@dataclass(frozen=True, slots=True)
class _Drop:
    stream_ids: tuple[str, ...]
    reason: str


_STOP = object()


class _SourceCtx:
    """The pipeline as one source sees it (worker.sources.base.SourceContext)."""

    def __init__(self, pipeline: Pipeline, source: Source):
        self._p = pipeline
        self.source = source
        self.metrics = pipeline.metrics
        self.image_size = pipeline.image_size
        self._feedback: deque[Feedback] = deque()
        self._congested = False
        self._known: set[str] = set()

    def stopping(self) -> bool:
        return self._p._stop_sources.is_set()

    def wait(self, seconds: float) -> bool:
        return self._p._stop_sources.wait(max(0.0, seconds))

    def _register(self, stream_id: str) -> None:
        if stream_id not in self._known:
            self._known.add(stream_id)
            self._p._register_stream(stream_id, self)

    def emit(self, frame: Frame) -> bool:
        p = self._p
        sid = frame.stream_id
        self._register(sid)
        p.metrics.frames_received.labels(p.metrics.stream(sid)).inc()
        if frame.image.shape != (*self.image_size, 3) or frame.image.dtype != np.uint8:
            self._dropped(frame, "bad_image")
            return False
        if self.source.live:
            try:
                p._frame_q.put_nowait(frame)
                return True
            except queue.Full:
                self._dropped(frame, "overload")
                return False
        while not self.stopping():
            try:
                p._frame_q.put(frame, timeout=_IDLE_S)
                return True
            except queue.Full:
                continue
        self._dropped(frame, "shutdown")
        return False

    def _dropped(self, frame: Frame, reason: str) -> None:
        self._p.metrics.frame_dropped(frame.stream_id, reason)
        if frame.source_ref is not None:
            self._feedback.append(FramesReleased((frame.source_ref,)))

    def _control(self, item: _Reset | _Drop) -> None:
        # Controls must not be lost; they wait for room unless the inference thread is gone.
        while self._p._inference_alive():
            try:
                self._p._frame_q.put(item, timeout=_IDLE_S)
                return
            except queue.Full:
                continue

    def stream_reset(self, stream_id: str, reason: str, emit_partial: bool = True) -> None:
        self._control(_Reset(stream_id, reason, emit_partial))

    def drop_streams(self, stream_ids: Iterable[str], reason: str) -> None:
        self._control(_Drop(tuple(stream_ids), reason))

    def load(self) -> float:
        q = self._p._frame_q
        return q.qsize() / q.maxsize

    def congested(self) -> bool:
        load, pc = self.load(), self._p.cfg.pipeline
        if self._congested and load <= pc.low_water:
            self._congested = False
        elif not self._congested and load >= pc.high_water:
            self._congested = True
        return self._congested

    def drained(self) -> bool:
        """True once the sink thread has flushed at shutdown: no more feedback will come."""
        return self._p._drained.is_set()

    def take_feedback(self) -> list[Feedback]:
        out = []
        while self._feedback:
            out.append(self._feedback.popleft())
        return out

    def _feed(self, item: Feedback) -> None:
        self._feedback.append(item)  # deque.append is thread-safe


@dataclass(slots=True)
class _Pending:
    """A window on its way through the sinks."""

    result: WindowResult
    remaining: int
    started: float
    error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class Pipeline:
    def __init__(
        self,
        cfg: VbwConfig,
        *,
        engine: Engine | None = None,
        sources: list[Source] | None = None,
        sinks: list[Sink] | None = None,
        metrics: Metrics | None = None,
        install_signals: bool = True,
    ):
        self.cfg = cfg
        self.metrics = metrics or Metrics(cfg.metrics.per_stream_labels)
        self.health = Health(cfg.metrics.wedged_after_s)
        self._engine = engine
        self._sources_arg = sources
        self._sinks_arg = sinks
        self._install_signals = install_signals
        self.image_size: tuple[int, int] = (0, 0)
        self.worker_id = cfg.worker_id()
        self.metrics_port: int | None = None

        self._frame_q: queue.Queue[Any] = queue.Queue(cfg.pipeline.frame_queue)
        self._result_q: queue.Queue[Any] = queue.Queue(cfg.pipeline.result_queue)
        self._stop_sources = threading.Event()  # sources: return from run()
        self._stop_requested = threading.Event()  # main loop: begin shutdown
        self._stop_reason = ""
        self._started = threading.Event()
        self._drained = threading.Event()  # sinks flushed at shutdown (sources with commits_after_drain)
        self._refs = RefCounts()
        self._refs_lock = threading.Lock()
        self._streams: dict[str, _SourceCtx] = {}
        self._streams_lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._http: Any = None
        self.sources: list[Source] = []
        self.sinks: list[Sink] = []
        self.engine: Engine | None = None
        self._assemblers: dict[str, SlidingWindowAssembler] = {}

    # -- public ---------------------------------------------------------------------------------
    def stop(self, reason: str = "stop requested") -> None:
        """Begin a graceful shutdown (thread-safe, idempotent)."""
        if not self._stop_requested.is_set():
            self._stop_reason = reason
            self._stop_requested.set()

    def wait_started(self, timeout: float | None = None) -> bool:
        return self._started.wait(timeout)

    def run(self) -> int:
        """Start everything, run until stopped or every finite source ended, shut down. Exit code."""
        try:
            self._start()
        except StartupError as e:
            log.error("cannot start: %s", e)
            self._close_http()
            return 1
        self._main_loop()
        return self._shutdown()

    # -- start ----------------------------------------------------------------------------------
    def _start(self) -> None:
        cfg = self.cfg
        if cfg.metrics.enabled:  # first, so /readyz answers 503 while the engine loads
            try:
                self._http = make_server(
                    cfg.metrics.host, cfg.metrics.port, self.metrics.registry, self.health
                )
            except OSError as e:
                raise StartupError(
                    f"metrics port {cfg.metrics.host}:{cfg.metrics.port}: {e.strerror or e}"
                ) from None
            self.metrics_port = self._http.server_address[1]
            self._spawn("http", self._http.serve_forever)
            log.info("metrics on http://%s:%d/metrics", cfg.metrics.host, self.metrics_port)
        if self._install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)

        self.health.set_ready(False, "loading engine")
        self.engine = self._engine or self._load_engine()
        info = self.engine.metadata
        self.image_size = tuple(info.image_size)  # type: ignore[assignment]
        self.window_size = cfg.windows.size or info.num_frames
        if self.window_size != info.num_frames:
            raise StartupError(
                f"windows.size={self.window_size} but model {info.name} {info.version} takes T={info.num_frames}"
            )
        self.window_max_batch = min(cfg.batching.max_batch, info.max_batch)
        if cfg.engine.warmup_runs:
            # GPU runtimes reach steady speed only after a few runs (autotuning, arena growth).
            self.health.set_ready(False, "warming up")
            t0 = time.perf_counter()
            try:
                for _ in range(cfg.engine.warmup_runs):
                    self.engine.warmup()
            except Exception as e:
                raise StartupError(f"engine warm-up failed: {e}") from None
            log.info("engine warm in %.2fs (%d runs)", time.perf_counter() - t0, cfg.engine.warmup_runs)
        if cfg.windows.partial == "emit":
            self._check_short_windows()
        self.metrics.engine_info.info(
            {
                "backend": info.backend,
                "precision": info.precision,
                "model": info.name,
                "version": info.version,
            }
        )
        self._labels = list(info.labels)
        self._model_ref = ModelRef(
            name=info.name, version=info.version, backend=info.backend, precision=info.precision
        )

        from worker.sinks import build_sink
        from worker.sources import build_source

        self.sinks = (
            self._sinks_arg if self._sinks_arg is not None else [build_sink(s, cfg) for s in cfg.sinks]
        )
        self.sources = (
            self._sources_arg
            if self._sources_arg is not None
            else [build_source(s, cfg) for s in cfg.sources]
        )
        for s in self.sources:
            for sid in s.stream_ids():
                self.metrics.register_stream(sid)
        self.metrics.watch_queue("frames", self._frame_q.qsize)
        self.metrics.watch_queue("results", self._result_q.qsize)
        for sink in self.sinks:
            self.metrics.published.labels(sink.name)
            self.metrics.publish_errors.labels(sink.name)
            try:
                sink.open()
            except Exception as e:
                raise StartupError(f"sink {sink.name}: {e}") from None

        self._spawn("sink", self._sink_loop)
        self._spawn("inference", self._inference_loop)
        for s in self.sources:
            self._spawn(f"source:{s.id}", self._source_main, s)
            log.info("source %s started", s.describe())
        self.health.set_ready(True)
        self._started.set()

    def _load_engine(self) -> Engine:
        from engines import EngineUnavailable, load_engine
        from engines.manifest import ModelDirError

        ec = self.cfg.engine
        opts = dict(ec.options)
        opts.setdefault("max_batch", self.cfg.batching.max_batch)
        if ec.threads is not None:
            opts.setdefault("intra_op_threads" if ec.backend == "onnxruntime" else "threads", ec.threads)
        t0 = time.perf_counter()
        try:
            engine = load_engine(ec.model_dir, backend=ec.backend, precision=ec.precision, **opts)
        except (EngineUnavailable, ModelDirError, TypeError, ValueError, OSError) as e:
            raise StartupError(f"engine {ec.backend}/{ec.precision} from {ec.model_dir}: {e}") from None
        m = engine.metadata
        log.info(
            "engine %s %s %s/%s on %s loaded in %.2fs (T=%d, %dx%d)",
            m.name, m.version, m.backend, m.precision, m.device, time.perf_counter() - t0,
            m.num_frames, *m.image_size,
        )  # fmt: skip
        return engine

    def _check_short_windows(self) -> None:
        assert self.engine is not None
        m = self.engine.metadata
        try:
            self.engine.encode_windows(np.zeros((1, max(1, m.num_frames - 1), m.feature_dim), np.float32))
        except Exception:
            raise StartupError(
                f"windows.partial=emit needs an engine that takes windows shorter than T; "
                f"{m.name} ({m.backend}) has a fixed T={m.num_frames}: use pad or drop"
            ) from None

    def _spawn(self, name: str, target: Callable[..., Any], *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=f"vbw-{name}", daemon=True)
        self._threads[name] = t
        t.start()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self._stop_requested.is_set():
            log.warning("%s again: exiting now", name)
            self._force = True
            return
        log.info("%s: stopping (grace %.1fs)", name, self.cfg.pipeline.shutdown_grace_s)
        self.stop(name)

    def _main_loop(self) -> None:
        finite = bool(self.sources) and all(s.finite for s in self.sources)
        while not self._stop_requested.wait(_IDLE_S):
            if finite and not any(self._threads[f"source:{s.id}"].is_alive() for s in self.sources):
                self.stop("every source ended")
            for name in ("inference", "sink"):
                if not self._threads[name].is_alive():
                    self.stop(f"{name} thread ended")

    # -- sources --------------------------------------------------------------------------------
    def _source_main(self, source: Source) -> None:
        ctx = _SourceCtx(self, source)
        try:
            source.run(ctx)
        except Exception as e:  # a broken source ends alone; the others go on
            log.error(
                "source %s failed: %s: %s",
                source.describe(),
                type(e).__name__,
                e,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            for sid in ctx._known or set(source.stream_ids()):
                self.metrics.decode_error(sid)
                self.metrics.stream_up(sid, False)
                ctx.stream_reset(sid, "error")

    def _register_stream(self, stream_id: str, ctx: _SourceCtx) -> None:
        with self._streams_lock:
            self._streams[stream_id] = ctx
        self.metrics.register_stream(stream_id)

    def _ctx_of(self, stream_id: str) -> _SourceCtx | None:
        return self._streams.get(stream_id)

    def _inference_alive(self) -> bool:
        t = self._threads.get("inference")
        return t is not None and t.is_alive()

    # -- inference thread -----------------------------------------------------------------------
    def _inference_loop(self) -> None:
        cfg = self.cfg
        frames: Batcher[Frame] = Batcher(cfg.batching.frame_max_batch, cfg.batching.frame_max_delay_ms / 1000)
        windows: Batcher[Window] = Batcher(self.window_max_batch, cfg.batching.max_delay_ms / 1000)
        fq = self._frame_q
        stopping = False
        while True:
            self.health.beat("inference")
            now = time.monotonic()
            deadlines = [d for d in (frames.deadline(), windows.deadline()) if d is not None]
            timeout = min(_IDLE_S, max(0.0, min(deadlines) - now)) if deadlines else _IDLE_S
            items: list[Any] = []
            try:
                items.append(fq.get(timeout=timeout) if timeout > 0 else fq.get_nowait())
                while len(items) < cfg.batching.frame_max_batch:
                    items.append(fq.get_nowait())
            except queue.Empty:
                pass
            now = time.monotonic()
            for item in items:
                if isinstance(item, Frame):
                    frames.add(item, now)
                elif item is _STOP:
                    stopping = True
                else:  # a control: the frames before it go first
                    for batch in frames.flush():
                        self._encode_frames(batch, windows)
                    self._control(item, windows)
            for batch in frames.ready(now):
                self._encode_frames(batch, windows)
            for batch in windows.ready(time.monotonic()):
                self._encode_windows(batch)
            if stopping:
                break
        # Shutdown: what is queued is in flight; finish it, then close every stream.
        for batch in frames.flush():
            self._encode_frames(batch, windows)
        for sid in list(self._assemblers):
            ctx = self._ctx_of(sid)
            emit = ctx.source.emit_partial_on_stop if ctx else True
            step = self._assemblers[sid].close("shutdown", emit_partial=emit)
            if not emit:  # the source rebuilds these windows from uncommitted offsets: keep them held
                step.released.clear()
            self._apply_step(sid, step, windows)
        for batch in windows.flush():
            self._encode_windows(batch)
        self._put_result(_STOP)

    def _assembler(self, stream_id: str) -> SlidingWindowAssembler:
        a = self._assemblers.get(stream_id)
        if a is None:
            w, info = self.cfg.windows, self.engine.metadata  # type: ignore[union-attr]
            a = SlidingWindowAssembler(
                stream_id,
                self.window_size,
                w.stride,
                max_gap=w.max_gap,
                partial=w.partial,
                min_partial_frames=w.min_partial_frames,
                model_version=info.version,
            )
            self._assemblers[stream_id] = a
        return a

    def _control(self, item: _Reset | _Drop, windows: Batcher[Window]) -> None:
        if isinstance(item, _Reset):
            a = self._assemblers.get(item.stream_id)
            if a is not None:
                self._apply_step(item.stream_id, a.close(item.reason, item.emit_partial), windows)
        else:
            for sid in item.stream_ids:
                a = self._assemblers.pop(sid, None)
                if a is not None:
                    self._apply_step(sid, a.drop(), windows)
                    log.info("stream %s: window state dropped (%s)", sid, item.reason)

    def _encode_frames(self, batch: list[Frame], windows: Batcher[Window]) -> None:
        """Features and tokens of a batch of frames (both once per frame), into the windows."""
        assert self.engine is not None
        t0 = time.perf_counter()
        try:
            feats = self.engine.encode_frames(np.stack([f.image for f in batch]))
            prev = predecessor_features(
                [f.stream_id for f in batch], [f.seq for f in batch], feats, self._assemblers.get
            )
            tokens = self.engine.encode_steps(feats, prev)
        except Exception as e:
            log.error("encode_frames failed on %d frames: %s: %s", len(batch), type(e).__name__, e)
            for f in batch:
                self.metrics.frame_dropped(f.stream_id, "engine_error")
                # the stream's windows must not bridge the hole
                a = self._assemblers.get(f.stream_id)
                if a is not None:
                    self._apply_step(f.stream_id, a.close("engine_error"), windows)
            return
        self.metrics.stage_seconds("encode_frames", time.perf_counter() - t0)
        for f, feat, token in zip(batch, feats, tokens, strict=True):
            if f.source_ref is not None:
                with self._refs_lock:
                    self._refs.hold((f.source_ref,))
            step = self._assembler(f.stream_id).push(
                FrameMeta(f.seq, f.pts, f.capture_time, f.source_ref), feat, token
            )
            self._apply_step(f.stream_id, step, windows)

    def _apply_step(self, stream_id: str, step: Step, windows: Batcher[Window]) -> None:
        now = time.monotonic()
        for w in step.windows:
            if w.source_refs:
                with self._refs_lock:
                    self._refs.hold(w.source_refs)
            # One engine path per batch: cached tokens (complete windows) or features (padded).
            rows = w.features.shape[0] if w.features is not None else 0
            windows.add(w, now, key=(rows, w.tokens is not None))
        for what, reason in step.events:
            if what == "partial_dropped":
                self.metrics.windows_dropped.labels(reason).inc()
            elif what in ("partial_padded", "partial_emitted"):
                self.metrics.windows_partial.labels(what.removeprefix("partial_"), reason).inc()
            elif what == "out_of_order":
                self.metrics.frame_dropped(stream_id, "out_of_order")
        if step.released:
            with self._refs_lock:
                freed = self._refs.release(step.released)
            ctx = self._ctx_of(stream_id)
            if freed and ctx is not None:
                ctx._feed(FramesReleased(tuple(freed)))

    def _encode_windows(self, batch: list[Window]) -> None:
        assert self.engine is not None
        t0 = time.perf_counter()
        try:
            scores, emb = self._window_outputs(batch)
        except Exception as e:
            # Their frames stay held: at-least-once sources re-read them after a restart.
            log.error("encode_windows failed on %d windows: %s: %s", len(batch), type(e).__name__, e)
            self.metrics.windows_dropped.labels("engine_error").inc(len(batch))
            return
        self.metrics.stage_seconds("encode_windows", time.perf_counter() - t0)
        self.metrics.batch_size.observe(len(batch))
        k = min(self.cfg.engine.top_k, len(self._labels))
        produced = datetime.now(UTC)
        wall = time.time()
        for w, s, e in zip(batch, scores, emb, strict=True):
            top = np.argsort(-s, kind="stable")[:k]
            msg = WindowMessage(
                window_id=w.window_id,
                stream_id=w.stream_id,
                index=w.index,
                start_seq=w.start_seq,
                end_seq=w.end_seq,
                start_pts=w.start_pts,
                end_pts=w.end_pts,
                frames=w.frames,
                complete=w.complete,
                capture_time=w.capture_time,
                labels=[LabelScore(label=self._labels[i], score=float(s[i])) for i in top],
                model=self._model_ref,
                latency_ms=max(0.0, (wall - w.capture_time) * 1000.0),
                worker=self.worker_id,
                produced_at=produced,
            )
            w.features = w.tokens = None  # the sinks do not need them; free the memory early
            self._put_result(WindowResult(message=msg, embedding=e, scores=s, window=w))

    def _window_outputs(self, batch: list[Window]) -> tuple[np.ndarray, np.ndarray]:
        """(scores, embeddings): complete windows from their cached tokens (only the transformer
        runs), padded ones from their features. The batcher never mixes the two."""
        assert self.engine is not None
        if batch[0].tokens is not None:
            return self.engine.encode_token_windows(
                np.stack([w.features[0] for w in batch]),  # type: ignore[index]
                np.stack([w.tokens for w in batch]),  # type: ignore[misc]
            )
        return self.engine.encode_windows(np.stack([w.features for w in batch]))  # type: ignore[misc]

    def _put_result(self, item: Any) -> None:
        while True:
            self.health.beat("inference")  # blocked by a slow sink is not wedged
            try:
                self._result_q.put(item, timeout=_IDLE_S)
                return
            except queue.Full:
                if not self._threads["sink"].is_alive():
                    return

    # -- sink thread ----------------------------------------------------------------------------
    def _sink_loop(self) -> None:
        rq = self._result_q
        last_poll = time.monotonic()
        while True:
            self.health.beat("sink")
            try:
                item = rq.get(timeout=_IDLE_S)
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            if item is not None:
                self._publish(item)
            now = time.monotonic()
            if item is None or now - last_poll >= _IDLE_S:
                last_poll = now
                for sink in self.sinks:
                    try:
                        sink.poll()
                    except Exception as e:
                        log.error("sink %s poll failed: %s: %s", sink.name, type(e).__name__, e)
        self.health.unwatch("sink")
        # Flush and close here: every sink call happens on this thread (kafka-python producers
        # are thread-safe, but a sink need not be).
        for sink in self.sinks:
            try:
                if not sink.flush(self._remaining(self._deadline)):
                    self._sinks_ok = False
                    log.error("sink %s: windows still unacked at the end of the grace", sink.name)
                sink.close()
            except Exception as e:
                self._sinks_ok = False
                log.error("sink %s: close failed: %s: %s", sink.name, type(e).__name__, e)
        self._drained.set()

    def _publish(self, result: WindowResult) -> None:
        pending = _Pending(result, len(self.sinks), time.monotonic())
        self.metrics.windows_emitted.labels(self.metrics.stream(result.message.stream_id)).inc()
        for sink in self.sinks:
            try:
                sink.publish(result, lambda err, s=sink: self._on_done(pending, s, err))
            except Exception as e:
                self._on_done(pending, sink, f"publish raised {type(e).__name__}: {e}")

    def _on_done(self, pending: _Pending, sink: Sink, error: str | None) -> None:
        """A sink's verdict on one window. Any thread."""
        if error is None:
            self.metrics.published.labels(sink.name).inc()
        else:
            self.metrics.publish_errors.labels(sink.name).inc()
            log.error(
                "sink %s: window %s not delivered: %s", sink.name, pending.result.message.window_id, error
            )
        self.metrics.stage_seconds("publish", time.monotonic() - pending.started)
        with pending.lock:
            pending.remaining -= 1
            if error is not None and pending.error is None:
                pending.error = error
            last = pending.remaining == 0
        if not last:
            return
        w = pending.result.window
        if pending.error is None:
            self.metrics.end_to_end.observe(max(0.0, time.time() - w.capture_time))
        if not w.source_refs:
            return
        ctx = self._ctx_of(w.stream_id)
        refs: tuple[SourceRef, ...] = tuple(w.source_refs)
        if ctx is not None:
            ctx._feed(WindowDelivery(w.window_id, w.stream_id, refs, pending.error is None, pending.error))
        if pending.error is None:
            with self._refs_lock:
                freed = self._refs.release(refs)
            if freed and ctx is not None:
                ctx._feed(FramesReleased(tuple(freed)))

    # -- shutdown -------------------------------------------------------------------------------
    _force = False
    _sinks_ok = True
    _deadline = float("inf")  # set when shutdown begins; the sink thread flushes within it

    def _remaining(self, deadline: float) -> float:
        return 0.0 if self._force else max(0.0, deadline - time.monotonic())

    def _shutdown(self) -> int:
        grace = self.cfg.pipeline.shutdown_grace_s
        deadline = self._deadline = time.monotonic() + grace
        log.info("shutting down: %s", self._stop_reason)
        self.health.set_ready(False, "shutting down")
        self._stop_sources.set()
        # Sources get up to half the grace (an RTSP read can block until its read timeout).
        src_deadline = time.monotonic() + grace / 2
        # Sources that commit after the last ack (Kafka) keep running until the sinks drained.
        lingering = {f"source:{s.id}" for s in self.sources if getattr(s, "commits_after_drain", False)}
        for name, t in self._threads.items():
            if name.startswith("source:") and name not in lingering:
                t.join(max(0.0, src_deadline - time.monotonic()))
                if t.is_alive():
                    log.warning("%s still blocked at shutdown; leaving it", name)
        ok = True
        # The inference thread takes _STOP after everything queued before it.
        while self._inference_alive() and self._remaining(deadline) > 0:
            try:
                self._frame_q.put(_STOP, timeout=_IDLE_S)
                break
            except queue.Full:
                continue
        for name in ("inference", "sink"):
            t = self._threads[name]
            t.join(max(0.0, self._remaining(deadline) - (0.5 if name == "inference" else 0.0)))
            if t.is_alive():
                ok = False
                log.error("%s thread did not finish within the %.1fs grace", name, grace)
        self._drained.set()  # also when the sink thread died or ran out of grace
        for name in sorted(lingering):
            t = self._threads[name]
            t.join(max(0.5, self._remaining(deadline)))
            if t.is_alive():
                log.warning("%s did not finish its last commit within the grace", name)
        ok = ok and self._sinks_ok
        if self.engine is not None and self._engine is None:
            with contextlib.suppress(Exception):
                self.engine.close()
        self._close_http()
        log.info("stopped%s", "" if ok else " (some work was cut off by the grace period)")
        return 0 if ok else 1

    def _close_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
