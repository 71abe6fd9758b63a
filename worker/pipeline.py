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
from typing import Any

import numpy as np

from engines.base import Engine
from worker.config import VbwConfig
from worker.delivery import DeliveryLedger
from worker.frames import Frame
from worker.health import Health, make_server
from worker.inference_stage import DropStreams as _Drop
from worker.inference_stage import InferenceStage, StageOutput
from worker.inference_stage import StreamReset as _Reset
from worker.messages import ModelRef
from worker.metrics import Metrics
from worker.sinks.base import Sink
from worker.sources.base import Feedback, FramesReleased, Source

log = logging.getLogger("vbw.pipeline")

_IDLE_S = 0.1  # longest any worker thread sleeps without looking at its inputs


class StartupError(Exception):
    """The worker cannot start (engine, model, sink). One line, no traceback."""


# Items on frame_q besides frames: _Reset, _Drop (worker.inference_stage), and this.
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
        self._ledger = DeliveryLedger(self.metrics, self._feed_of)
        self._streams: dict[str, _SourceCtx] = {}
        self._streams_lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._http: Any = None
        self.sources: list[Source] = []
        self.sinks: list[Sink] = []
        self.engine: Engine | None = None

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
        assert self.engine is not None
        cfg = self.cfg
        stage = InferenceStage(
            self.engine,
            cfg.windows,
            cfg.batching,
            metrics=self.metrics,
            worker_id=self.worker_id,
            top_k=cfg.engine.top_k,
        )
        fq = self._frame_q
        stopping = False
        while not stopping:
            self.health.beat("inference")
            due = stage.deadline()
            timeout = _IDLE_S if due is None else min(_IDLE_S, max(0.0, due - time.monotonic()))
            items: list[Any] = []
            try:
                items.append(fq.get(timeout=timeout) if timeout > 0 else fq.get_nowait())
                while len(items) < stage.frame_max_batch:
                    items.append(fq.get_nowait())
            except queue.Empty:
                pass
            stopping = any(i is _STOP for i in items)
            self._hand_on(stage.feed([i for i in items if i is not _STOP]))
        # Shutdown: what is queued is in flight; finish it, then close every stream.
        self._hand_on(stage.close(self._emit_partial_on_stop))
        self._put_result(_STOP)

    def _hand_on(self, out: StageOutput) -> None:
        # Holds, then releases, then results: no frame is freed while a window still needs it.
        self._ledger.hold(out.held)
        for sid, refs in out.released:
            self._ledger.release(sid, refs)
        for r in out.results:
            self._put_result(r)

    def _emit_partial_on_stop(self, stream_id: str) -> bool:
        ctx = self._ctx_of(stream_id)
        return ctx.source.emit_partial_on_stop if ctx is not None else True

    def _feed_of(self, stream_id: str) -> Callable[[Feedback], None] | None:
        ctx = self._ctx_of(stream_id)
        return ctx._feed if ctx is not None else None

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
                self._ledger.publish(item, self.sinks)
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
