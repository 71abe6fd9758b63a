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
- Sources at runtime (the stream API, a config reload): `add_source`, `replace_source` and
  `remove_source` change one source and leave the others alone. A removal drains: the source's
  thread stops, its streams' open windows close by the end-of-stream rule (the partial policy),
  and a `_Drain` marker follows them through frame_q, the inference thread (until none of the
  streams has a window inside) and result_q; the sink thread has then published every window of
  them, and the streams' state and metric series go.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import Engine
from worker.config import ConfigProblem, EngineConfig, SourceConfig, VbwConfig
from worker.delivery import DeliveryLedger
from worker.engine_start import prepare_swap, start_engine
from worker.event_messages import EventModelRef
from worker.events import EventBatch, EventStage, resolve_rules
from worker.frames import Frame, Window
from worker.health import Health
from worker.inference_stage import DropStreams, InferenceStage, StageOutput, StreamReset
from worker.metrics import FRAME_DROP_REASONS, Metrics
from worker.model_swap import ModelSwapError, SwapResult, model_fingerprint, return_freed_memory
from worker.runtime import Runtime, StartupError
from worker.sinks.base import Sink
from worker.sources.base import Feedback, Source
from worker.sources.context import SourceContextBase
from worker.stream_registry import (
    LastErrors,
    RateMeter,
    SourceList,
    SourceStatus,
    StreamConflict,
    StreamNotFound,
    StreamRefused,
    StreamStatus,
)

log = logging.getLogger("vbw.pipeline")

_IDLE_S = 0.1  # longest any worker thread sleeps without looking at its inputs


# Items on frame_q besides frames: StreamReset, DropStreams (worker.inference_stage), and these.
_STOP = object()


@dataclass(frozen=True, slots=True)
class _Drain:
    """Behind a removed source's last controls: set `done` once every window of `stream_ids`
    has been published (the inference thread holds it until none is inside, the sink thread sets it)."""

    stream_ids: tuple[str, ...]
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(slots=True)
class _Running:
    """A running source, as the stream API sees it."""

    source: Source
    ctx: _SourceCtx
    config: SourceConfig | None  # None: handed in as an object (benches, tests)
    started: float = field(default_factory=time.monotonic)
    draining: bool = False
    rates: dict[str, tuple[RateMeter, RateMeter]] = field(default_factory=dict)


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
        self.removed = False  # removed at runtime: its frames and controls go nowhere from now on
        self.last_frame: dict[str, float] = {}  # stream -> monotonic time of its last frame

    def stream_registered(self, stream_id: str) -> None:
        self._p._register_stream(stream_id, self)

    def emit(self, frame: Frame) -> bool:
        if self.removed:  # a thread that outlived its removal (blocked read): the pipeline drained it
            self.dropped(frame, "shutdown")
            return False
        self.received(frame)
        self.last_frame[frame.stream_id] = time.monotonic()
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
        if not self.removed:  # once removed, the pipeline closes its streams itself
            self._p._put_control(item)

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
        config_path: str | Path | None = None,
    ):
        self.cfg = cfg
        self.config_path = Path(config_path) if config_path is not None else None
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
        # (None as the engine: only engine.labels changed)
        self._swap_ready: queue.Queue[tuple[Engine | None, EngineConfig, Future[SwapResult], SwapResult]] = (
            queue.Queue()
        )
        self._engine_cfg = cfg.engine  # what the running model was loaded from
        self._model_fp = model_fingerprint(cfg.engine.model_dir)
        # sources at runtime (stream API, config reload)
        self._running: dict[str, _Running] = {}
        self._event_rules: list[str] = []  # labels with segment events (a new stream's series)
        self._changes = threading.Lock()  # one add/remove/restart at a time
        self.last_errors = LastErrors()
        self._api: Any = None  # worker.api.ApiServer, with api.enabled
        self.api_port: int | None = None
        self.reloader: Any = None  # worker.reload.Reloader, with a config file
        if config_path is not None:
            from worker.reload import Reloader

            self.reloader = Reloader(self, self.config_path, self.metrics)  # type: ignore[arg-type]
            self.runtime.on_hangup = lambda: self.reloader.reload("SIGHUP")

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
        logging.getLogger("vbw.source").addHandler(self.last_errors)
        by_id = {sc.id: sc for sc in cfg.sources}
        for s in self.sources:
            self._launch(s, by_id.get(s.id) if self._sources_arg is None else None)
        if cfg.api.enabled:
            from worker.api import ApiServer

            self._api = ApiServer(self, cfg.api, self.reloader.reload if self.reloader is not None else None)
            try:
                self.api_port = self._api.bind()
            except OSError as e:
                raise StartupError(f"api port {cfg.api.host}:{cfg.api.port}: {e.strerror or e}") from None
            self.runtime.spawn("api", self._api.serve)
            log.info("stream API on http://%s:%d/streams", cfg.api.host, self.api_port)
        if self.reloader is not None and cfg.api.watch_config:
            self.runtime.spawn("config-watch", self._watch_config)

    def _event_stage(self) -> EventStage:
        """The segmenter, its state store (with a kafka source) and snapshots."""
        assert self.engine is not None
        cfg, info = self.cfg, self.engine.metadata
        # With zero-shot labels the scores are the prompts', in the config's order.
        labels = list(cfg.engine.labels.prompts) if cfg.engine.labels is not None else list(info.labels)
        try:
            rules = resolve_rules(cfg.events, labels)
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
        self._event_rules = list(rules)
        log.info(
            "events: %s to %s", ", ".join(rules) or "no label", ", ".join(s.name for s in self._event_sinks)
        )
        return EventStage(
            rules,
            labels,
            size=cfg.windows.size or info.num_frames,
            stride=cfg.windows.stride,
            max_gap=cfg.windows.max_gap,
            model=EventModelRef(name=info.name, version=info.version),
            metrics=self.metrics,
            store=self._changelog,
            snapshot=self._save_snapshot if self._snapshots is not None else None,
            checkpoint_every=cfg.events.checkpoint_every,
            resolve=lambda names: resolve_rules(cfg.events, names),  # a reload's new zero-shot labels
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
    def _launch(self, source: Source, config: SourceConfig | None) -> None:
        """Start one source in its thread, its streams' series at 0 first (caller: at start, or
        holding `_changes`)."""
        for sid in source.stream_ids():
            self.metrics.register_stream(sid)
            for label in self._event_rules:
                self.metrics.register_events(sid, label)
        ctx = _SourceCtx(self, source)
        self._running[source.id] = _Running(source, ctx, config)
        self.runtime.start_source(source, ctx)
        log.info("source %s started", source.describe())

    def _put_control(self, item: Any) -> None:
        # Controls must not be lost; they wait for room unless the inference thread is gone.
        while self.runtime.alive("inference"):
            try:
                self._frame_q.put(item, timeout=_IDLE_S)
                return
            except queue.Full:
                continue

    def _drain_source(self, entry: _Running) -> bool:
        """Stop one source, close its streams' windows (end-of-stream rule), wait until all of
        them are published, then forget the streams. True when it finished within the grace."""
        src, ctx = entry.source, entry.ctx
        entry.draining = True
        ctx.removed = True
        grace = self.cfg.pipeline.shutdown_grace_s
        t0 = time.monotonic()
        stopped = self.runtime.stop_source(src, ctx, grace / 2)
        sids = tuple(sorted(ctx.streams | set(src.stream_ids())))
        for sid in sids:
            self._put_control(StreamReset(sid, "shutdown", src.emit_partial_on_stop))
        self._put_control(DropStreams(sids, "removed"))
        drain = _Drain(sids)
        self._put_control(drain)
        published = drain.done.wait(max(0.5, grace - (time.monotonic() - t0)))
        with self._streams_lock:
            for sid in sids:
                if self._streams.get(sid) is ctx:
                    del self._streams[sid]
        value = self.metrics.registry.get_sample_value
        windows = sum(
            value("vbw_windows_emitted_total", {"stream": self.metrics.stream(s)}) or 0 for s in sids
        )
        for sid in sids:
            self.metrics.forget_stream(sid)
        self._running.pop(src.id, None)
        self.last_errors.forget(src.id)
        if src in self.sources:
            self.sources.remove(src)
        log.info(
            "source %s removed in %.2fs, %d windows published%s",
            src.describe(),
            time.monotonic() - t0,
            windows,
            "" if published and stopped else " (not every window was published within the grace)",
        )
        return published and stopped

    def _refuse(self, sc: SourceConfig | None, entry: _Running | None) -> None:
        if self.runtime.stop_sources.is_set():
            raise StreamRefused("the worker is shutting down")
        if (sc is not None and sc.type == "kafka") or (
            entry is not None and entry.source.commits_after_drain
        ):
            raise StreamRefused(
                "kafka sources join a consumer group and commit after the drain: change them in the "
                "config and restart (docs/operations.md)"
            )

    def _with_sources(self, sources: list[SourceConfig]) -> None:
        self.cfg = self.cfg.model_copy(update={"sources": sources})

    def add_source(self, sc: SourceConfig) -> SourceStatus:
        """Start a new source (stream API POST, reload). StreamConflict when its id runs already."""
        from worker.sources import build_source

        with self._changes:
            self._refuse(sc, None)
            if sc.id in self._running:
                raise StreamConflict(f"source {sc.id!r} exists already (PUT changes it)")
            source = build_source(sc, self.cfg)
            self.sources.append(source)
            self._launch(source, sc)
            self._with_sources([*(s for s in self.cfg.sources if s.id != sc.id), sc])
            return self._status(self._running[sc.id])

    def replace_source(self, sc: SourceConfig) -> SourceStatus:
        """Drain the source of that id and start it again with `sc` (stream API PUT, reload)."""
        from worker.sources import build_source

        with self._changes:
            entry = self._running.get(sc.id)
            if entry is None:
                raise StreamNotFound(f"no source {sc.id!r}")
            self._refuse(sc, entry)
            if entry.config == sc and self.runtime.alive(f"source:{sc.id}"):
                return self._status(entry)  # the same entry: nothing to change, not a frame lost
            source = build_source(sc, self.cfg)  # before the drain: a bad build leaves it running
            self._drain_source(entry)
            self.sources.append(source)
            self._launch(source, sc)
            self._with_sources([sc if s.id == sc.id else s for s in self.cfg.sources])
            return self._status(self._running[sc.id])

    def remove_source(self, source_id: str) -> bool:
        """Drain and forget a source (stream API DELETE, reload). True when every window of it
        was published within the grace."""
        with self._changes:
            entry = self._running.get(source_id)
            if entry is None:
                raise StreamNotFound(f"no source {source_id!r}")
            self._refuse(None, entry)
            ok = self._drain_source(entry)
            self._with_sources([s for s in self.cfg.sources if s.id != source_id])
            return ok

    def source_status(self, source_id: str) -> SourceStatus:
        entry = self._running.get(source_id)
        if entry is None:
            raise StreamNotFound(f"no source {source_id!r}")
        return self._status(entry)

    def source_list(self) -> SourceList:
        return SourceList(sources=[self._status(e) for e in list(self._running.values())])

    def _status(self, entry: _Running) -> SourceStatus:
        src, ctx = entry.source, entry.ctx
        name = f"source:{src.id}"
        now = time.monotonic()
        sids = sorted(ctx.streams | set(src.stream_ids()))
        value = self.metrics.registry.get_sample_value
        streams = []
        for sid in sids:
            label = {"stream": self.metrics.stream(sid)}
            n_in = int(value("vbw_frames_received_total", label) or 0)
            dropped = int(
                sum(
                    value("vbw_frames_dropped_total", {**label, "reason": r}) or 0 for r in FRAME_DROP_REASONS
                )
            )
            meters = entry.rates.setdefault(sid, (RateMeter(entry.started), RateMeter(entry.started)))
            last = ctx.last_frame.get(sid)
            streams.append(
                StreamStatus(
                    stream_id=sid,
                    up=bool(value("vbw_stream_up", label)),
                    last_frame_age_s=None if last is None else round(now - last, 3),
                    frames_in_per_s=round(meters[0].rate(now, n_in), 2),
                    frames_analysed_per_s=round(meters[1].rate(now, max(0, n_in - dropped)), 2),
                    frames_in=n_in,
                    frames_dropped=dropped,
                    windows=int(value("vbw_windows_emitted_total", label) or 0),
                    reconnects=int(value("vbw_stream_reconnects_total", label) or 0),
                )
            )
        if entry.draining:
            state = "draining"
        elif not self.runtime.alive(name):
            state = "failed" if src.id in self.runtime.failed else "ended"
        elif any(s.up for s in streams):
            state = "running"
        else:
            error = self.last_errors.get(src.id)
            state = (
                "starting" if not ctx.streams and error is None and now - entry.started < 5 else "connecting"
            )
        return SourceStatus(
            id=src.id,
            kind=entry.config.type if entry.config is not None else type(src).__name__,
            state=state,
            uptime_s=round(now - entry.started, 3),
            last_error=self.last_errors.get(src.id),
            streams=streams,
            config=entry.config.model_dump(mode="json") if entry.config is not None else {},
        )

    def _watch_config(self) -> None:
        """Poll the config file for a change (worker.reload.Reloader.changed says why polling)."""
        assert self.reloader is not None
        interval = self.cfg.api.watch_interval_s
        while not self.runtime.stop_sources.wait(interval):
            if self.reloader.changed():
                self.reloader.reload("file changed")

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
            # Zero-shot labels: the prompts are encoded here, in the thread that runs the engine.
            prompts=cfg.engine.labels.prompts if cfg.engine.labels is not None else None,
        )
        fq = self._frame_q
        stopping = False
        drains: list[_Drain] = []  # waiting for their streams' last windows to leave the stage
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
            batch: list[Any] = []
            for i in items:
                if isinstance(i, _Drain):  # the items before it go first
                    self._hand_on(stage.feed(batch))
                    batch = []
                    drains.append(i)
                elif i is not _STOP:
                    batch.append(i)
            self._hand_on(stage.feed(batch))
            # A drained stream's windows have all left the stage: the marker follows them.
            for d in [d for d in drains if not any(stage.pending(s) for s in d.stream_ids)]:
                drains.remove(d)
                self._put_result(d)
        # Shutdown: what is queued is in flight; finish it, then close every stream.
        self._hand_on(stage.close(self._emit_partial_on_stop))
        self._fail_swaps("the worker is shutting down")
        for d in drains:
            self._put_result(d)
        self._put_result(_STOP)

    def _hand_on(self, out: StageOutput) -> None:
        for engine in out.retired:  # a swap's old model: memory back (a caller's engine is the caller's)
            if engine is not self._engine:
                with contextlib.suppress(Exception):
                    engine.close()
                return_freed_memory()
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
            if isinstance(item, _Drain):  # every window of its streams was handed to the sinks
                for sink in self.sinks:
                    with contextlib.suppress(Exception):
                        sink.poll()
                item.done.set()
            elif isinstance(item, EventBatch):
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
        with self._changes:
            self.cfg = self.cfg.model_copy(update={"engine": new.engine})
        return res

    def model_changed(self, engine: EngineConfig) -> bool:
        """The model `engine` names differs from the running one though the section may not:
        its model.json changed (a new model written over the directory, a symlink swapped)."""
        return model_fingerprint(engine.model_dir) != self._model_fp

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
            if engine_cfg.labels == self._engine_cfg.labels:
                self.metrics.model_swaps.labels("unchanged").inc()
                fut.set_result(SwapResult("unchanged", old.version, old.version))
                return
            # Only the zero-shot labels changed: the inference thread re-encodes them (no load).
            self._swap_ready.put((None, engine_cfg, fut, SwapResult("relabelled", old.version, old.version)))
            self._wait_begun(fut)
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
        self._wait_begun(fut)

    def _wait_begun(self, fut: Future[SwapResult]) -> None:
        # One at a time: the next request is checked against the model (and labels) this one brings.
        while not wait_future([fut], timeout=_IDLE_S).done:
            if not self.runtime.alive("inference"):
                self._fail_swaps("the inference thread ended")

    def engine_problems(self, new: VbwConfig) -> list[ConfigProblem]:
        """What a reload's engine section cannot bring to the running model (worker.reload
        rejects the whole reload then): zero-shot labels on a model without a text encoder, and
        prompt names that lack a label `events.labels` names. A new model is checked when it loads."""
        assert self.engine is not None
        ec = new.engine
        keys = {"model_dir", "backend", "precision", "threads", "options"}
        if (
            ec.labels is None
            or ec.model_dump(include=keys) != self._engine_cfg.model_dump(include=keys)
            or model_fingerprint(ec.model_dir) != self._model_fp
        ):
            return []
        if not self.engine.has_text:
            m = self.engine.metadata
            return [
                ConfigProblem(
                    "engine.labels",
                    f"prompts need a model with a text encoder; {m.name} {m.version} has none",
                )
            ]
        if self.events is not None:
            try:
                resolve_rules(new.events, list(ec.labels.prompts))
            except ValueError as e:
                return [ConfigProblem("engine.labels", f"segment events: {e}")]
        return []

    def _begin_swap(self, stage: InferenceStage) -> None:
        """Inference thread: the warm new model takes over, stream by stream (or, with no new
        model, the new zero-shot labels: `_relabel`)."""
        try:
            new, engine_cfg, fut, res = self._swap_ready.get_nowait()
        except queue.Empty:
            return
        if new is None:
            self._relabel(stage, engine_cfg, fut, res)
            return
        stage.begin_swap(new, engine_cfg.labels.prompts if engine_cfg.labels is not None else None)
        self.engine, self._engine_cfg = new, engine_cfg
        self._model_fp = model_fingerprint(engine_cfg.model_dir)
        m = new.metadata
        self.metrics.engine_info.info(
            {"backend": m.backend, "precision": m.precision, "model": m.name, "version": m.version}
        )
        self.metrics.model_swaps.labels("switched").inc()
        fut.set_result(res)

    def _relabel(
        self, stage: InferenceStage, engine_cfg: EngineConfig, fut: Future[SwapResult], res: SwapResult
    ) -> None:
        """Inference thread (the only one that may run the engine): encode the new prompts; each
        stream switches at its next window (InferenceStage.set_prompts). On failure the running
        labels go on."""
        before = ", ".join(stage.labels)
        try:
            stage.set_prompts(engine_cfg.labels.prompts if engine_cfg.labels is not None else None)
        except Exception as e:
            log.error(
                "labels: the new engine.labels cannot apply, %s go on: %s: %s", before, type(e).__name__, e
            )
            self.metrics.model_swaps.labels("failed").inc()
            fut.set_result(
                SwapResult("failed", res.old_version, error=f"engine.labels: {type(e).__name__}: {e}")
            )
            return
        self._engine_cfg = engine_cfg
        if self.events is not None:
            self._event_rules = list(self.events.rules)
        log.info(
            "labels changed: %s -> %s; each stream switches at its next window",
            before,
            ", ".join(stage.labels),
        )
        self.metrics.model_swaps.labels("relabelled").inc()
        fut.set_result(res)

    def _fail_swaps(self, why: str) -> None:
        """Swaps not begun when the worker stops: their new engines are closed, the requests fail."""
        version = self.engine.metadata.version if self.engine is not None else ""
        futs: list[Future[SwapResult]] = []
        with contextlib.suppress(queue.Empty):
            while True:
                new, _, fut, _ = self._swap_ready.get_nowait()
                if new is not None:
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
        if self._api is not None:
            self._api.stop()
        logging.getLogger("vbw.source").removeHandler(self.last_errors)
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
