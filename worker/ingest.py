"""Edge mode: file and RTSP sources, decoded and resized once, JPEG-encoded, published to Kafka.

Cameras sit at the edge; GPU workers read the frames topic. The sources are the worker's own
(`worker.sources`: the same reconnect with backoff, stall watchdog, sampling and metrics); only
the other side of their `SourceContext` differs: instead of a window pipeline, each frame is
encoded in its source thread and handed to one resilient producer. There is no queue here; the
threads (one per source, the metrics server) are the runtime's (`worker.runtime`), as in `vbw run`.

- Backpressure: the producer's unacked messages are the only buffer. A live source (camera)
  drops a frame when it is full (counted, reason "overload"; the seq gap tells the worker); a
  file waits.
- A source's stream reset (reconnect, loop) marks the stream's next frame with a `vbw-reset`
  header, so the worker closes that stream's windows at the same place.
- SIGTERM/SIGINT: stop the sources, flush the producer within the grace, exit 0 (a second
  signal stops waiting). Once every source of files has ended, the same; exit 1 if every
  source failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from worker.frames import Frame
from worker.health import Health
from worker.kafka.frame_codec import FrameEncoder
from worker.kafka.producer import ResilientProducer
from worker.metrics import Metrics
from worker.runtime import Runtime
from worker.sources.base import Source
from worker.sources.context import SourceContextBase

log = logging.getLogger("vbw.ingest")

_REPORT_S = 10.0  # progress line period


class _IngestCtx(SourceContextBase):
    """What one source thread sees in edge mode: frames are encoded here and handed to the producer."""

    def __init__(self, ingest: Ingest, source: Source) -> None:
        pc = ingest.cfg.pipeline
        super().__init__(
            source,
            ingest.runtime,
            ingest.metrics,
            ingest.image_size,
            high_water=pc.high_water,
            low_water=pc.low_water,
        )
        self._ing = ingest
        self._encoder = FrameEncoder(ingest.cfg.ingest.format, ingest.cfg.ingest.quality)
        self._resets: dict[str, str] = {}

    def emit(self, frame: Frame) -> bool:
        ing = self._ing
        sid = frame.stream_id
        self.received(frame)
        while ing.pending() >= ing.max_pending:
            if self.source.live or self.stopping():
                self.dropped(frame, "overload" if not self.stopping() else "shutdown")
                return False
            self.wait(0.005)
        t0 = time.perf_counter()
        key, value, headers = self._encoder.encode(frame, reset=self._resets.pop(sid, None))
        ing.metrics.stage_seconds("encode_jpeg", time.perf_counter() - t0)
        ing.send(key, value, headers, frame.capture_time)
        return True

    def stream_reset(self, stream_id: str, reason: str, emit_partial: bool = True) -> None:
        self._resets[stream_id] = reason  # the stream's next frame carries it (vbw-reset)

    def drop_streams(self, stream_ids: Iterable[str], reason: str) -> None:
        pass  # no window state at the edge

    def load(self) -> float:
        return min(1.0, self._ing.pending() / self._ing.max_pending)


class Ingest:
    def __init__(
        self,
        cfg: Any,
        image_size: tuple[int, int],
        sources: list[Source] | None = None,
        install_signals: bool = True,
    ) -> None:
        self.cfg = cfg
        self.image_size = image_size
        self.metrics = Metrics(cfg.metrics.per_stream_labels)
        self.runtime = Runtime(
            log,
            grace_s=cfg.pipeline.shutdown_grace_s,
            health=Health(cfg.metrics.wedged_after_s),
            install_signals=install_signals,
        )
        self.health = self.runtime.health
        self.topic = cfg.ingest.topic
        self.max_pending = cfg.ingest.producer.max_pending
        self._sources_arg = sources
        self._lock = threading.Lock()  # the producer is owned by whoever holds this
        self._producer: ResilientProducer | None = None
        self._last_report = 0.0
        self.published = 0
        self.failed = 0

    @property
    def metrics_port(self) -> int | None:
        return self.runtime.http_port

    # -- producer, shared by the source threads under one lock -------------------------------
    def pending(self) -> int:
        p = self._producer
        return 0 if p is None else p.pending

    def send(self, key: bytes, value: bytes, headers: list, capture_time: float) -> None:
        def done(err: str | None) -> None:
            if err is None:
                self.published += 1
                self.metrics.published.labels(self.topic).inc()
                self.metrics.ingest_publish_latency.observe(max(0.0, time.time() - capture_time))
            else:
                self.failed += 1
                self.metrics.publish_errors.labels(self.topic).inc()
                log.error("frame of %s not published: %s", key.decode(errors="replace"), err)

        with self._lock:
            assert self._producer is not None
            self._producer.send(self.topic, key, value, headers, done)

    def stop(self, reason: str = "stop requested") -> None:
        self.runtime.stop(reason)

    # -- run ----------------------------------------------------------------------------------
    def run(self) -> int:
        return self.runtime.run(self._start, self._shutdown, tick=self._tick)

    def _start(self) -> None:
        from worker.sources import build_source

        cfg = self.cfg
        if cfg.metrics.enabled:
            self.runtime.serve_http(cfg.metrics.host, cfg.metrics.port, self.metrics.registry)
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
            self.runtime.start_source(s, _IngestCtx(self, s))
            log.info("source %s -> %s (%s)", s.describe(), self.topic, cfg.kafka.describe())
        self._last_report = time.monotonic()

    def _tick(self) -> None:
        assert self._producer is not None
        with self._lock:
            self._producer.poll()
        if time.monotonic() - self._last_report > _REPORT_S:
            self._last_report = time.monotonic()
            log.info(
                "published %d frames, %d pending, %d failed", self.published, self.pending(), self.failed
            )

    def _shutdown(self) -> int:
        log.info("stopping: %s", self.runtime.stop_reason)
        ok = self.runtime.shutdown(self._flush)
        self.runtime.close()
        log.info(
            "stopped: %d frames published, %d failed%s",
            self.published,
            self.failed,
            "" if ok else ", some unacked",
        )
        return self.runtime.exit_code(ok)

    def _flush(self) -> bool:
        """After the sources: every frame sent is acked, or the grace ends."""
        assert self._producer is not None
        with self._lock:
            ok = self._producer.flush(max(0.1, self.runtime.remaining()))
            self._producer.close(timeout=1.0)
        return ok
