"""Edge mode: file and RTSP sources, decoded and resized once, JPEG-encoded, published to Kafka.

Cameras sit at the edge; GPU workers read the frames topic. The sources are the worker's own
(`worker.sources`: the same reconnect with backoff, stall watchdog, sampling and metrics); only
the other side of their `SourceContext` differs: instead of a window pipeline, each frame is
encoded in its source thread and handed to one resilient producer. There is no queue here, so
this edge process keeps its few threads in this module: one per source, plus the metrics server.

- Backpressure: the producer's unacked messages are the only buffer. A live source (camera)
  drops a frame when it is full (counted, reason "overload"; the seq gap tells the worker); a
  file waits.
- A source's stream reset (reconnect, loop) marks the stream's next frame with a `vbw-reset`
  header, so the worker closes that stream's windows at the same place.
- SIGTERM/SIGINT: stop the sources, flush the producer within the grace, exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterable
from typing import Any

from worker.frames import Frame
from worker.kafka.frame_codec import FrameEncoder
from worker.kafka.producer import ResilientProducer
from worker.sources.base import Feedback, Source

log = logging.getLogger("vbw.ingest")

_IDLE_S = 0.1


class _IngestCtx:
    """The `SourceContext` one source thread sees in edge mode."""

    def __init__(self, ingest: Ingest, source: Source) -> None:
        self._ing = ingest
        self.source = source
        self.metrics = ingest.metrics
        self.image_size = ingest.image_size
        self._encoder = FrameEncoder(ingest.cfg.ingest.format, ingest.cfg.ingest.quality)
        self._resets: dict[str, str] = {}
        self._known: set[str] = set()

    def stopping(self) -> bool:
        return self._ing._stop.is_set()

    def wait(self, seconds: float) -> bool:
        return self._ing._stop.wait(max(0.0, seconds))

    def emit(self, frame: Frame) -> bool:
        ing = self._ing
        sid = frame.stream_id
        if sid not in self._known:
            self._known.add(sid)
            ing.metrics.register_stream(sid)
        ing.metrics.frames_received.labels(ing.metrics.stream(sid)).inc()
        while ing.pending() >= ing.max_pending:
            if self.source.live or self.stopping():
                ing.metrics.frame_dropped(sid, "overload" if not self.stopping() else "shutdown")
                return False
            time.sleep(0.005)
        t0 = time.perf_counter()
        key, value, headers = self._encoder.encode(frame, reset=self._resets.pop(sid, None))
        ing.metrics.stage_seconds("encode_jpeg", time.perf_counter() - t0)
        ing.send(key, value, headers, frame.capture_time)
        return True

    def stream_reset(self, stream_id: str, reason: str, emit_partial: bool = True) -> None:
        self._resets[stream_id] = reason

    def drop_streams(self, stream_ids: Iterable[str], reason: str) -> None:
        pass  # no window state at the edge

    def load(self) -> float:
        return min(1.0, self._ing.pending() / self._ing.max_pending)

    def congested(self) -> bool:
        return self.load() >= self._ing.cfg.pipeline.high_water

    def take_feedback(self) -> list[Feedback]:
        return []

    def drained(self) -> bool:
        return True


class Ingest:
    def __init__(self, cfg: Any, image_size: tuple[int, int], sources: list[Source] | None = None) -> None:
        from worker.health import Health
        from worker.metrics import Metrics

        self.cfg = cfg
        self.image_size = image_size
        self.metrics = Metrics(cfg.metrics.per_stream_labels)
        self.health = Health(cfg.metrics.wedged_after_s)
        self.topic = cfg.ingest.topic
        self.max_pending = cfg.ingest.producer.max_pending
        self._sources_arg = sources
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the producer is owned by whoever holds this
        self._producer: ResilientProducer | None = None
        self._threads: dict[str, threading.Thread] = {}
        self._http: Any = None
        self.metrics_port: int | None = None
        self.published = 0
        self.failed = 0

    # -- producer, shared by the source threads under one lock -------------------------------
    def pending(self) -> int:
        p = self._producer
        return 0 if p is None else p.pending

    def send(self, key: bytes, value: bytes, headers: list, capture_time: float) -> None:
        def done(err: str | None) -> None:
            if err is None:
                self.published += 1
                self.metrics.published.labels(self.topic).inc()
                self.metrics.end_to_end.observe(max(0.0, time.time() - capture_time))
            else:
                self.failed += 1
                self.metrics.publish_errors.labels(self.topic).inc()
                log.error("frame of %s not published: %s", key.decode(errors="replace"), err)

        with self._lock:
            assert self._producer is not None
            self._producer.send(self.topic, key, value, headers, done)

    def stop(self, reason: str = "stop requested") -> None:
        if not self._stop.is_set():
            log.info("stopping: %s", reason)
            self._stop.set()

    # -- run ----------------------------------------------------------------------------------
    def run(self, install_signals: bool = True) -> int:
        from worker.sources import build_source

        cfg = self.cfg
        if cfg.metrics.enabled:
            from worker.health import make_server

            try:
                self._http = make_server(
                    cfg.metrics.host, cfg.metrics.port, self.metrics.registry, self.health
                )
            except OSError as e:
                log.error(
                    "cannot start: metrics port %s:%d: %s",
                    cfg.metrics.host,
                    cfg.metrics.port,
                    e.strerror or e,
                )
                return 1
            self.metrics_port = self._http.server_address[1]
            self._spawn("http", self._http.serve_forever)
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda s, _f: self.stop(signal.Signals(s).name))
        self._producer = ResilientProducer(cfg.kafka, cfg.ingest.producer, name="ingest")
        self._producer.poll()
        self.metrics.published.labels(self.topic)
        self.metrics.publish_errors.labels(self.topic)
        sources = (
            self._sources_arg
            if self._sources_arg is not None
            else [build_source(s, cfg) for s in cfg.sources]
        )
        for s in sources:
            for sid in s.stream_ids():
                self.metrics.register_stream(sid)
            self._spawn(f"source:{s.id}", self._source_main, s)
            log.info("source %s -> %s (%s)", s.describe(), self.topic, cfg.kafka.describe())
        self.health.set_ready(True)
        finite = bool(sources) and all(s.finite for s in sources)
        last_report = time.monotonic()
        while not self._stop.wait(_IDLE_S):
            with self._lock:
                self._producer.poll()
            if finite and not any(self._threads[f"source:{s.id}"].is_alive() for s in sources):
                self.stop("every source ended")
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                log.info(
                    "published %d frames, %d pending, %d failed", self.published, self.pending(), self.failed
                )
        return self._shutdown(sources)

    def _spawn(self, name: str, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=f"vbw-{name}", daemon=True)
        self._threads[name] = t
        t.start()

    def _source_main(self, source: Source) -> None:
        try:
            source.run(_IngestCtx(self, source))
        except Exception as e:  # one broken source never stops the others
            log.error("source %s failed: %s: %s", source.describe(), type(e).__name__, e)

    def _shutdown(self, sources: list[Source]) -> int:
        grace = self.cfg.pipeline.shutdown_grace_s
        deadline = time.monotonic() + grace
        self.health.set_ready(False, "shutting down")
        for s in sources:
            self._threads[f"source:{s.id}"].join(max(0.0, deadline - grace / 2 - time.monotonic()))
        assert self._producer is not None
        with self._lock:
            ok = self._producer.flush(max(0.1, deadline - time.monotonic()))
            self._producer.close(timeout=1.0)
        if self._http is not None:
            with contextlib.suppress(Exception):
                self._http.shutdown()
                self._http.server_close()
        log.info(
            "stopped: %d frames published, %d failed%s",
            self.published,
            self.failed,
            "" if ok else ", some unacked",
        )
        return 0 if ok else 1
