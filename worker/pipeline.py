"""The running worker: its queues and the bodies of its threads (`worker.runtime` runs them).

    source threads ──Frame──> frame_q ──> inference thread ──WindowResult──> result_q ──> sink thread
    (decode+resize)           (bounded)   encode_frames (batched across       (bounded)   publish to every sink,
                                          streams) -> per-stream windows ->               acks -> latency, refs
                                          batcher -> encode_windows                       back to the sources

- One thread per source (`Source.run(ctx)`), one inference thread that owns the engine, one sink
  thread, and the HTTP thread for /metrics, /healthz, /readyz; the runtime spawns, watches and
  joins them, handles signals, and starts the engine (`worker.engine_start`) before the sources.
- Segment events (sinks with `payload: events`): the inference thread's `EventStage` turns the
  windows into `EventBatch`es that follow the windows on result_q; the sink thread publishes
  their events to the event sinks and, through the ledger's `pump`, saves segment state to the
  changelog (worker.kafka.changelog) once the events are acked. docs/events.md.
- Backpressure: the queues are bounded. A live source's frame is dropped at `frame_q` when it is
  full (counted, before it enters a window); other sources block, or pause themselves on
  `ctx.congested()`. A slow sink fills `result_q`, which stalls inference, which fills `frame_q`.
- Stream resets and drops travel through `frame_q` with the frames, so they apply in order.
- Shutdown (SIGTERM/SIGINT, or every finite source ended): sources stop, the inference thread
  encodes what is queued, closes every stream's windows and runs the last batches, the sink
  thread publishes and flushes; a source with `commits_after_drain` (Kafka) keeps taking
  feedback until then (`ctx.drained()`) and commits last; all within `pipeline.shutdown_grace_s`.
- Benches and tests drive this from outside: `run_in_background`, `wait_started`, `stop`, `join`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import wait as wait_future
from typing import Any

import numpy as np

from engines.base import Engine
from worker.config import EngineConfig, VbwConfig
from worker.delivery import DeliveryLedger
from worker.engine_start import prepare_swap, start_engine
from worker.event_messages import EventModelRef
from worker.events import EventBatch, EventStage, resolve_rules
from worker.frames import Frame, Window
from worker.health import Health
from worker.inference_stage import DropStreams, InferenceStage, StageOutput, StreamReset
from worker.metrics import Metrics
from worker.model_swap import ModelSwapError, SwapResult, model_fingerprint
from worker.runtime import Runtime, StartupError
from worker.sinks.base import Sink
from worker.sources.base import Feedback, Source
from worker.sources.context import SourceContextBase

log = logging.getLogger("vbw.pipeline")

_IDLE_S = 0.1  # longest any worker thread sleeps without looking at its inputs


# Items on frame_q besides frames: StreamReset, DropStreams (worker.inference_stage), and this.
_STOP = object()


class _SourceCtx(SourceContextBase):
    """The pipeline as one source sees it: frames and stream controls go through frame_q."""

    def __init__(self, pipeline: Pipeline, source: Source):
        pc = pipeline.cfg.pipeline
        super().__init__(
            source,
            pipeline.runtime,
            pipeline.metrics,
            pipeline.image_size,
            high_water=pc.high_water,
            low_water=pc.low_water,
        )
        self._p = pipeline

    def stream_registered(self, stream_id: str) -> None:
        self._p._register_stream(stream_id, self)

    def emit(self, frame: Frame) -> bool:
        self.received(frame)
        if frame.image.shape != (*self.image_size, 3) or frame.image.dtype != np.uint8:
            self.dropped(frame, "bad_image")
            return False
        fq = self._p._frame_q
        if self.source.live:
            try:
                fq.put_nowait(frame)
                return True
            except queue.Full:
                self.dropped(frame, "overload")
                return False
        while not self.stopping():
            try:
                fq.put(frame, timeout=_IDLE_S)
                return True
            except queue.Full:
                continue
        self.dropped(frame, "shutdown")
        return False

    def _control(self, item: StreamReset | DropStreams) -> None:
        # Controls must not be lost; they wait for room unless the inference thread is gone.
        while self._p.runtime.alive("inference"):
            try:
                self._p._frame_q.put(item, timeout=_IDLE_S)
                return
            except queue.Full:
                continue

    def stream_reset(self, stream_id: str, reason: str, emit_partial: bool = True) -> None:
        self._control(StreamReset(stream_id, reason, emit_partial))

    def drop_streams(self, stream_ids: Iterable[str], reason: str) -> None:
        self._control(DropStreams(tuple(stream_ids), reason))

    def load(self) -> float:
        q = self._p._frame_q
        return q.qsize() / q.maxsize


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
        self.runtime = Runtime(
            log,
            grace_s=cfg.pipeline.shutdown_grace_s,
            health=Health(cfg.metrics.wedged_after_s),
            install_signals=install_signals,
        )
        self.health = self.runtime.health
        self._engine = engine
        self._sources_arg = sources
        self._sinks_arg = sinks
        self.image_size: tuple[int, int] = (0, 0)
        self.worker_id = cfg.worker_id()

        self._frame_q: queue.Queue[Any] = queue.Queue(cfg.pipeline.frame_queue)
        self._result_q: queue.Queue[Any] = queue.Queue(cfg.pipeline.result_queue)
        self._ledger = DeliveryLedger(self.metrics, self._feed_of)
        self._streams: dict[str, _SourceCtx] = {}
        self._streams_lock = threading.Lock()
        self.sources: list[Source] = []
        self.sinks: list[Sink] = []
        self.engine: Engine | None = None
        # segment events (only with a sink that takes them)
        self._window_sinks: list[Sink] = []
        self._event_sinks: list[Sink] = []
        self.events: EventStage | None = None
        self._changelog: Any = None  # worker.kafka.changelog.ChangelogStore, with a kafka source
        self._snapshots: Any = None  # worker.snapshots.SnapshotStore, with snapshots.enabled
        # hot model swap: requests (swap_model) -> swap thread -> a warm engine -> inference thread
        self._swap_q: queue.Queue[tuple[EngineConfig, Future[SwapResult]]] = queue.Queue()
        self._swap_ready: queue.Queue[tuple[Engine, EngineConfig, Future[SwapResult], SwapResult]] = (
            queue.Queue()
        )
        self._engine_cfg = cfg.engine  # what the running model was loaded from
        self._model_fp = model_fingerprint(cfg.engine.model_dir)

    # -- public ---------------------------------------------------------------------------------
    @property
    def metrics_port(self) -> int | None:
        return self.runtime.http_port

    def stop(self, reason: str = "stop requested") -> None:
        """Begin a graceful shutdown (thread-safe, idempotent)."""
        self.runtime.stop(reason)

    def wait_started(self, timeout: float | None = None) -> bool:
        return self.runtime.started.wait(timeout)

    def run(self) -> int:
        """Start everything, run until stopped or every finite source ended, shut down. Exit code."""
        return self.runtime.run(self._start, self._shutdown)

    def run_in_background(self) -> None:
        """`run` in a runtime thread (benches): then `wait_started`, `stop`, `join`."""
        self.runtime.run_in_background(self.run)

    def join(self, timeout: float | None = None) -> int | None:
        """The exit code of `run_in_background`, None while it still runs."""
        return self.runtime.join(timeout)

    # -- start ----------------------------------------------------------------------------------
    def _start(self) -> None:
        cfg = self.cfg
        if cfg.metrics.enabled:  # first, so /readyz answers 503 while the engine loads
            self.runtime.serve_http(cfg.metrics.host, cfg.metrics.port, self.metrics.registry)
        self.engine = start_engine(cfg, self.health, self.metrics, self._engine)
        self.image_size = tuple(self.engine.metadata.image_size)  # type: ignore[assignment]

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
        self._window_sinks = [s for s in self.sinks if not s.takes_events]
        self._event_sinks = [s for s in self.sinks if s.takes_events]
        if self._event_sinks:
            self.events = self._event_stage()

        self.runtime.spawn("sink", self._sink_loop, required=True)
        self.runtime.spawn("inference", self._inference_loop, required=True)
        self.runtime.spawn("model-swap", self._swap_loop)
        for s in self.sources:
            self.runtime.start_source(s, _SourceCtx(self, s))
            log.info("source %s started", s.describe())

    def _event_stage(self) -> EventStage:
        """The segmenter, its state store (with a kafka source) and snapshots."""
        assert self.engine is not None
        cfg, info = self.cfg, self.engine.metadata
        try:
            rules = resolve_rules(cfg.events, info.labels)
        except ValueError as e:
            raise StartupError(str(e)) from None
        if cfg.events.changelog_topic and any(s.type == "kafka" for s in cfg.sources):
            from worker.kafka.changelog import ChangelogStore

            self._changelog = ChangelogStore(cfg.events.changelog_topic, cfg.kafka)
            try:
                self._changelog.open()
            except Exception as e:
                raise StartupError(f"events changelog {cfg.events.changelog_topic}: {e}") from None
        if cfg.snapshots.enabled:
            from worker.snapshots import SnapshotStore

            self._snapshots = SnapshotStore.from_config(cfg.snapshots)
        for s in self.sources:
            for sid in s.stream_ids():
                for label in rules:
                    self.metrics.register_events(sid, label)
        log.info(
            "events: %s to %s", ", ".join(rules) or "no label", ", ".join(s.name for s in self._event_sinks)
        )
        return EventStage(
            rules,
            info.labels,
            size=cfg.windows.size or info.num_frames,
            stride=cfg.windows.stride,
            max_gap=cfg.windows.max_gap,
            model=EventModelRef(name=info.name, version=info.version),
            metrics=self.metrics,
            store=self._changelog,
            snapshot=self._save_snapshot if self._snapshots is not None else None,
            checkpoint_every=cfg.events.checkpoint_every,
        )

    def _save_snapshot(self, stream_id: str, window: Window) -> str | None:
        """The segmenter's hook, when a segment's peak window changes (inference thread): the
        reference names the window, so a replay refers to the same file."""
        if window.key_image is None:
            return None
        from worker.snapshots import SnapshotError

        try:
            return self._snapshots.save(stream_id, window.window_id, window.key_image)
        except SnapshotError as e:  # the event goes out without one
            log.warning("%s", e)
            return None

    # -- sources --------------------------------------------------------------------------------
    def _register_stream(self, stream_id: str, ctx: _SourceCtx) -> None:
        with self._streams_lock:
            self._streams[stream_id] = ctx

    def _ctx_of(self, stream_id: str) -> _SourceCtx | None:
        return self._streams.get(stream_id)

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
            events=self.events,
        )
        fq = self._frame_q
        stopping = False
        while not stopping:
            self.health.beat("inference")
            if not stage.swapping and not self._swap_ready.empty():
                self._begin_swap(stage)
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
        self._fail_swaps("the worker is shutting down")
        self._put_result(_STOP)

    def _hand_on(self, out: StageOutput) -> None:
        for engine in out.retired:  # a swap's old model: memory back (a caller's engine is the caller's)
            if engine is not self._engine:
                with contextlib.suppress(Exception):
                    engine.close()
        # Holds, then releases, then results: no frame is freed while a window still needs it.
        self._ledger.hold(out.held)
        for sid, refs in out.released:
            self._ledger.release(sid, refs)
        for r in out.results:
            self._put_result(r)
        for b in out.events:
            self._put_result(b)

    def _emit_partial_on_stop(self, stream_id: str) -> bool:
        ctx = self._ctx_of(stream_id)
        return ctx.source.emit_partial_on_stop if ctx is not None else True

    def _feed_of(self, stream_id: str) -> Callable[[Feedback], None] | None:
        ctx = self._ctx_of(stream_id)
        return ctx.feed if ctx is not None else None

    def _put_result(self, item: Any) -> None:
        while True:
            self.health.beat("inference")  # blocked by a slow sink is not wedged
            try:
                self._result_q.put(item, timeout=_IDLE_S)
                return
            except queue.Full:
                if not self.runtime.alive("sink"):
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
            if isinstance(item, EventBatch):
                self._ledger.publish_events(item, self._event_sinks)
            elif item is not None:
                self._ledger.publish(item, self._window_sinks)
            if self.events is not None:
                self._ledger.pump(self._changelog)
            now = time.monotonic()
            if item is None or now - last_poll >= _IDLE_S:
                last_poll = now
                for sink in self._polled():
                    try:
                        sink.poll()
                    except Exception as e:
                        log.error("sink %s poll failed: %s: %s", sink.name, type(e).__name__, e)
                if self._snapshots is not None:
                    self._snapshots.tick()
        self.health.unwatch("sink")
        # Flush and close here: every sink call happens on this thread (kafka-python producers
        # are thread-safe, but a sink need not be). Events first, then the segment state they
        # make due, then the changelog.
        for sink in self.sinks:
            try:
                if not sink.flush(self.runtime.remaining()):
                    self._sinks_ok = False
                    log.error("sink %s: windows still unacked at the end of the grace", sink.name)
            except Exception as e:
                self._sinks_ok = False
                log.error("sink %s: flush failed: %s: %s", sink.name, type(e).__name__, e)
        if self.events is not None:
            self._flush_changelog()
        for sink in self._polled():
            try:
                sink.close()
            except Exception as e:
                self._sinks_ok = False
                log.error("sink %s: close failed: %s: %s", sink.name, type(e).__name__, e)
        self.runtime.drained.set()

    def _polled(self) -> list[Any]:
        """What the sink thread polls and closes: the sinks, and the changelog's producer."""
        return [*self.sinks, *([self._changelog] if self._changelog is not None else [])]

    def _flush_changelog(self) -> None:
        """Shutdown: write the checkpoints the last acks made due, and wait for their acks."""
        store = self._changelog
        while self._ledger.pump(store) and self.runtime.remaining() > 0:
            if store is not None:
                store.flush(self.runtime.remaining())
        if store is not None and not store.flush(self.runtime.remaining()):
            self._sinks_ok = False
            log.error("events changelog %s: segment state still unacked at the end of the grace", store.topic)

    # -- hot model swap (worker.model_swap) -----------------------------------------------------
    def swap_model(self, engine: EngineConfig) -> Future[SwapResult]:
        """Swap the model without a restart (thread-safe: the config reload, the API, a test).

        Returns at once; the future's `SwapResult` says what became of it:
        - `switched` once the new model, loaded beside the old one and warmed in the background
          (inference goes on meanwhile), serves: the inference thread has begun handing every
          stream over at its next window boundary. Messages carry the new model from there on;
          no window is lost or made twice. The old model is closed once no stream needs it.
        - `failed`: the old model goes on (bad model dir, load or warm-up error, a model with
          another input size or T, shutdown); logged and counted in vbw_model_swaps_total.
        - `unchanged`: the model of `engine` (dir, backend, precision, threads, options, and
          model.json's content) is the running one; nothing is loaded.
        Requests run one at a time, in order. `top_k` and `warmup_runs` of a running model are
        not changed by a swap."""
        fut: Future[SwapResult] = Future()
        self._swap_q.put((engine, fut))
        return fut

    def swap_engine(self, new: VbwConfig, timeout: float | None = None) -> SwapResult:
        """The config reload's call (worker.reload): `swap_model(new.engine)` and wait for its
        result; ModelSwapError when it failed (the old model goes on). Call it also when only
        the model directory's content changed (`model_fingerprint`): a request naming the
        running model returns `unchanged` without loading anything."""
        res = self.swap_model(new.engine).result(timeout)
        if not res.ok:
            raise ModelSwapError(res.error or "model swap failed")
        return res

    def _swap_loop(self) -> None:
        while not self.runtime.stop_sources.is_set():
            try:
                engine_cfg, fut = self._swap_q.get(timeout=_IDLE_S)
            except queue.Empty:
                continue
            if fut.set_running_or_notify_cancel():
                self._swap_one(engine_cfg, fut)
        self._fail_swaps("the worker is shutting down")

    def _swap_one(self, engine_cfg: EngineConfig, fut: Future[SwapResult]) -> None:
        """Load, check and warm the new model (this thread), then leave it to the inference thread."""
        assert self.engine is not None
        old = self.engine.metadata
        keys = {"model_dir", "backend", "precision", "threads", "options"}
        if engine_cfg.model_dump(include=keys) == self._engine_cfg.model_dump(include=keys) and (
            model_fingerprint(engine_cfg.model_dir) == self._model_fp
        ):
            self.metrics.model_swaps.labels("unchanged").inc()
            fut.set_result(SwapResult("unchanged", old.version, old.version))
            return
        log.info("model swap: loading %s beside %s %s", engine_cfg.model_dir, old.name, old.version)
        t0 = time.perf_counter()
        try:
            new = prepare_swap(self.cfg, engine_cfg, old, events=self.events is not None)
        except ModelSwapError as e:
            log.error("model swap failed, %s %s goes on: %s", old.name, old.version, e)
            self.metrics.model_swaps.labels("failed").inc()
            fut.set_result(SwapResult("failed", old.version, error=str(e), load_s=time.perf_counter() - t0))
            return
        res = SwapResult("switched", old.version, new.metadata.version, load_s=time.perf_counter() - t0)
        self._swap_ready.put((new, engine_cfg, fut, res))
        # One at a time: the next request is checked against the model this one brings.
        while not wait_future([fut], timeout=_IDLE_S).done:
            if not self.runtime.alive("inference"):
                self._fail_swaps("the inference thread ended")

    def _begin_swap(self, stage: InferenceStage) -> None:
        """Inference thread: the warm new model takes over, stream by stream."""
        try:
            new, engine_cfg, fut, res = self._swap_ready.get_nowait()
        except queue.Empty:
            return
        stage.begin_swap(new)
        self.engine, self._engine_cfg = new, engine_cfg
        self._model_fp = model_fingerprint(engine_cfg.model_dir)
        m = new.metadata
        self.metrics.engine_info.info(
            {"backend": m.backend, "precision": m.precision, "model": m.name, "version": m.version}
        )
        self.metrics.model_swaps.labels("switched").inc()
        fut.set_result(res)

    def _fail_swaps(self, why: str) -> None:
        """Swaps not begun when the worker stops: their new engines are closed, the requests fail."""
        version = self.engine.metadata.version if self.engine is not None else ""
        futs: list[Future[SwapResult]] = []
        with contextlib.suppress(queue.Empty):
            while True:
                new, _, fut, _ = self._swap_ready.get_nowait()
                with contextlib.suppress(Exception):
                    new.close()
                futs.append(fut)
        with contextlib.suppress(queue.Empty):
            while True:
                futs.append(self._swap_q.get_nowait()[1])
        for fut in futs:
            if not fut.done():
                self.metrics.model_swaps.labels("failed").inc()
                with contextlib.suppress(Exception):  # a request cancelled meanwhile
                    fut.set_result(SwapResult("failed", version, error=why))

    # -- shutdown -------------------------------------------------------------------------------
    _sinks_ok = True  # the sink thread clears it when a sink could not flush or close

    def _shutdown(self) -> int:
        log.info("shutting down: %s", self.runtime.stop_reason)
        ok = self.runtime.shutdown(self._drain) and self._sinks_ok
        if self.engine is not None and self.engine is not self._engine:
            with contextlib.suppress(Exception):
                self.engine.close()
        self.runtime.close()
        log.info("stopped%s", "" if ok else " (some work was cut off by the grace period)")
        return self.runtime.exit_code(ok)

    def _drain(self) -> bool:
        """After the sources: inference finishes what is queued, the sink thread publishes and flushes."""
        rt = self.runtime
        # The inference thread takes _STOP after everything queued before it.
        while rt.alive("inference") and rt.remaining() > 0:
            try:
                self._frame_q.put(_STOP, timeout=_IDLE_S)
                break
            except queue.Full:
                continue
        ok = True
        for name in ("inference", "sink"):
            t = rt.threads[name]
            t.join(max(0.0, rt.remaining() - (0.5 if name == "inference" else 0.0)))
            if t.is_alive():
                ok = False
                log.error("%s thread did not finish within the %.1fs grace", name, rt.grace_s)
        return ok
