"""Every Prometheus metric the worker exports, in one registry (names as in the design).

Per-stream labels can be switched off (`metrics.per_stream_labels: false`) for large fleets:
the `stream` label then always reads "all", so the series count no longer grows with cameras.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

ALL_STREAMS = "all"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self, per_stream_labels: bool = True, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.per_stream_labels = per_stream_labels
        r = self.registry
        self.frames_received = Counter(
            "vbw_frames_received_total",
            "Frames handed to the pipeline (after fps sampling)",
            ["stream"],
            registry=r,
        )
        self.frames_dropped = Counter(
            "vbw_frames_dropped_total",
            "Frames dropped before entering a window, by reason",
            ["stream", "reason"],
            registry=r,
        )
        self.decode_errors = Counter(
            "vbw_decode_errors_total", "Open, demux and decode failures", ["stream"], registry=r
        )
        self.windows_emitted = Counter(
            "vbw_windows_emitted_total",
            "Windows sent to the sinks (complete and partial)",
            ["stream"],
            registry=r,
        )
        self.windows_dropped = Counter(
            "vbw_windows_dropped_total",
            "Partial windows dropped, by what closed them",
            ["reason"],
            registry=r,
        )
        self.windows_partial = Counter(
            "vbw_windows_partial_total",
            "Partial windows emitted anyway, by policy (padded|emitted) and what closed them",
            ["policy", "reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "vbw_batch_size", "Windows per encode_windows call", buckets=_BATCH_BUCKETS, registry=r
        )
        self.stage = Histogram(
            "vbw_stage_seconds",
            "Time per call of a stage: decode (per frame), encode_frames, encode_windows (per batch), publish (per window, to ack)",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "vbw_end_to_end_latency_seconds",
            "Capture of a window's newest frame to the ack of its last sink",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "vbw_queue_depth", "Items waiting in a pipeline queue", ["queue"], registry=r
        )
        self.stream_up_g = Gauge(
            "vbw_stream_up", "1 while the stream delivers frames", ["stream"], registry=r
        )
        self.reconnects = Counter(
            "vbw_stream_reconnects_total",
            "Reconnect attempts after a lost or stalled stream",
            ["stream"],
            registry=r,
        )
        self.kafka_lag = Gauge(
            "vbw_kafka_consumer_lag", "Messages behind the partition end", ["topic", "partition"], registry=r
        )
        self.published = Counter("vbw_published_total", "Windows acked by a sink", ["topic"], registry=r)
        self.publish_errors = Counter(
            "vbw_publish_errors_total", "Windows a sink failed to deliver", ["topic"], registry=r
        )
        self.engine_info = Info("vbw_engine", "The loaded model and runtime", registry=r)

    def stream(self, stream_id: str) -> str:
        return stream_id if self.per_stream_labels else ALL_STREAMS

    def register_stream(self, stream_id: str) -> None:
        """Create the stream's series at 0, so dashboards see it before the first event."""
        s = self.stream(stream_id)
        self.frames_received.labels(s)
        self.decode_errors.labels(s)
        self.windows_emitted.labels(s)
        self.reconnects.labels(s)
        self.stream_up_g.labels(s)

    def watch_queue(self, name: str, depth: Callable[[], float]) -> None:
        self.queue_depth.labels(name).set_function(depth)

    # -- SourceMetrics (worker.sources.base) --------------------------------------------------
    def stream_up(self, stream_id: str, up: bool) -> None:
        self.stream_up_g.labels(self.stream(stream_id)).set(1 if up else 0)

    def reconnect(self, stream_id: str) -> None:
        self.reconnects.labels(self.stream(stream_id)).inc()

    def decode_error(self, stream_id: str) -> None:
        self.decode_errors.labels(self.stream(stream_id)).inc()

    def frame_dropped(self, stream_id: str, reason: str, n: int = 1) -> None:
        self.frames_dropped.labels(self.stream(stream_id), reason).inc(n)

    def stage_seconds(self, stage: str, seconds: float) -> None:
        self.stage.labels(stage).observe(seconds)
