"""Every Prometheus metric the worker exports, in one registry (names as in the design).

Per-stream labels can be switched off (`metrics.per_stream_labels: false`) for large fleets:
the `stream` label then always reads "all", so the series count no longer grows with cameras.
`vbw_stream_up{stream="all"}` is then 1 only while every known stream is up, and
`vbw_streams_known` / `vbw_streams_up` say how many are down in either mode.

Label sets known up front (drop reasons, partial-window kinds) exist at 0 from the start, so a
healthy worker's panels read 0 rather than "No data".
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

ALL_STREAMS = "all"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
# One bucket per size up to 16, so ceil(histogram_quantile(...)) of integer sizes is exact (with
# (0,1] as the first bucket a plain quantile of batches of 1 interpolates to 0.9); coarser above.
_BATCH_BUCKETS = (*range(1, 17), 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)

# Why a frame is dropped before it enters a window (vbw_frames_dropped_total{reason}).
FRAME_DROP_REASONS = ("overload", "late", "out_of_order", "bad_image", "engine_error", "shutdown")
# What closed a stream's windows and cut a partial one (vbw_windows_{dropped,partial}_total{reason});
# windows_dropped also counts whole batches lost to "engine_error".
WINDOW_CLOSE_REASONS = (
    "gap",
    "loop",
    "eos",
    "error",
    "reconnect",
    "offset_reset",
    "engine_error",
    "shutdown",
    "model_swap",  # a stream with no frame for long during a model swap (worker.model_swap)
)
PARTIAL_POLICIES = ("padded", "emitted")
EVENT_TYPES = ("start", "update", "end")


class Metrics:
    def __init__(self, per_stream_labels: bool = True, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.per_stream_labels = per_stream_labels
        self._up: dict[str, bool] = {}  # stream id -> up, for the streams this process reads itself
        self._up_lock = threading.Lock()
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
        self.windows_dropped.labels("invalid_message")  # a window whose message cannot be valid
        for reason in WINDOW_CLOSE_REASONS:
            self.windows_dropped.labels(reason)
            for policy in PARTIAL_POLICIES:
                self.windows_partial.labels(policy, reason)
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
        # Ingest pods: another quantity than end_to_end (a frame, not a window), so another name.
        self.ingest_publish_latency = Histogram(
            "vbw_ingest_publish_latency_seconds",
            "vbw ingest: capture of a frame to the broker's ack of its message",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "vbw_queue_depth", "Items waiting in a pipeline queue", ["queue"], registry=r
        )
        self.stream_up_g = Gauge(
            "vbw_stream_up",
            'Per stream: 1 while it delivers frames. stream="all" (no per-stream labels): 1 only while every stream does',
            ["stream"],
            registry=r,
        )
        self.streams_known = Gauge(
            "vbw_streams_known",
            "Streams this process reads: files, cameras, keys of its Kafka partitions",
            registry=r,
        )
        self.streams_up = Gauge(
            "vbw_streams_up", "Streams of vbw_streams_known delivering frames", registry=r
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
        self.kafka_dead_letters = Counter(
            "vbw_kafka_dead_letters_total",
            "Frame messages that were not frames, by input topic and reason",
            ["topic", "reason"],
            registry=r,
        )
        self.published = Counter("vbw_published_total", "Windows acked by a sink", ["topic"], registry=r)
        self.publish_errors = Counter(
            "vbw_publish_errors_total", "Windows a sink failed to deliver", ["topic"], registry=r
        )
        self.engine_info = Info("vbw_engine", "The loaded model and runtime", registry=r)
        # Hot model swaps (worker.model_swap): switched | failed | unchanged.
        self.model_swaps = Counter(
            "vbw_model_swaps_total", "Hot model swap requests, by result", ["result"], registry=r
        )
        for result in ("switched", "relabelled", "failed", "unchanged"):  # relabelled: engine.labels only
            self.model_swaps.labels(result)
        # Segments (worker.events): events made, by type, and segments open now.
        self.events = Counter(
            "vbw_events_total",
            "Segment events made, by stream, label and type (start|update|end)",
            ["stream", "label", "type"],
            registry=r,
        )
        self.segments_open = Gauge(
            "vbw_segments_open", "Segments open now (started, not yet ended)", ["stream", "label"], registry=r
        )

    def stream(self, stream_id: str) -> str:
        return stream_id if self.per_stream_labels else ALL_STREAMS

    def register_stream(self, stream_id: str) -> None:
        """Create the stream's series at 0, so dashboards see it before the first event (a
        stream registered again keeps its state)."""
        s = self.stream(stream_id)
        self.frames_received.labels(s)
        for reason in FRAME_DROP_REASONS:
            self.frames_dropped.labels(s, reason)
        self.decode_errors.labels(s)
        self.windows_emitted.labels(s)
        self.reconnects.labels(s)
        with self._up_lock:
            self._up.setdefault(stream_id, False)
            self._publish_up(s)

    def _publish_up(self, label: str) -> None:
        """Set the up gauges from self._up (caller holds _up_lock)."""
        if self.per_stream_labels:
            self.stream_up_g.labels(label).set(1 if self._up.get(label) else 0)
        else:  # min over the streams: "all" must not read up while one of them is down
            self.stream_up_g.labels(ALL_STREAMS).set(1 if all(self._up.values()) else 0)
        self.streams_known.set(len(self._up))
        self.streams_up.set(sum(self._up.values()))

    def register_events(self, stream_id: str, label: str) -> None:
        """The stream's event series of one label of interest at 0 (events panel, open segments)."""
        s = self.stream(stream_id)
        for kind in EVENT_TYPES:
            self.events.labels(s, label, kind)
        self.segments_open.labels(s, label)

    def register_dead_letters(self, topics: Iterable[str], reasons: Iterable[str]) -> None:
        """Kafka source: vbw_kafka_dead_letters_total at 0 for each input topic and reason, so the
        dead-letter panel reads 0 and VbwKafkaDeadLetters sees the first one as an increase."""
        reasons = list(reasons)
        for topic in topics:
            for reason in reasons:
                self.kafka_dead_letters.labels(topic, reason)

    def watch_queue(self, name: str, depth: Callable[[], float]) -> None:
        self.queue_depth.labels(name).set_function(depth)

    # -- SourceMetrics (worker.sources.base) --------------------------------------------------
    def stream_up(self, stream_id: str, up: bool) -> None:
        with self._up_lock:
            self._up[stream_id] = up
            self._publish_up(self.stream(stream_id))

    def reconnect(self, stream_id: str) -> None:
        self.reconnects.labels(self.stream(stream_id)).inc()

    def decode_error(self, stream_id: str) -> None:
        self.decode_errors.labels(self.stream(stream_id)).inc()

    def frame_dropped(self, stream_id: str, reason: str, n: int = 1) -> None:
        self.frames_dropped.labels(self.stream(stream_id), reason).inc(n)

    def stage_seconds(self, stage: str, seconds: float) -> None:
        self.stage.labels(stage).observe(seconds)

    def stream_gone(self, stream_id: str) -> None:
        """The stream is no longer this process's to report (its Kafka partition went to another
        worker, which reports it now): its up state and series go, rather than reading 0."""
        with self._up_lock:
            if self._up.pop(stream_id, None) is None:
                return
            if self.per_stream_labels or not self._up:
                with contextlib.suppress(KeyError):
                    self.stream_up_g.remove(self.stream(stream_id))
                self.streams_known.set(len(self._up))
                self.streams_up.set(sum(self._up.values()))
            else:  # "all" now covers the streams left
                self._publish_up(ALL_STREAMS)

    def forget_stream(self, stream_id: str) -> None:
        """A stream removed at runtime (stream API, config reload): its series go with it, so 100
        cameras added and removed do not leave 100 stale series (with per-stream labels only)."""
        self.stream_gone(stream_id)
        if not self.per_stream_labels:
            return
        for c in (self.frames_received, self.decode_errors, self.windows_emitted, self.reconnects):
            with contextlib.suppress(KeyError):
                c.remove(stream_id)
        for reason in FRAME_DROP_REASONS:
            with contextlib.suppress(KeyError):
                self.frames_dropped.remove(stream_id, reason)
        labels = {
            s.labels["label"]
            for fam in self.segments_open.collect()
            for s in fam.samples
            if s.labels.get("stream") == stream_id
        }
        for label in labels:
            with contextlib.suppress(KeyError):
                self.segments_open.remove(stream_id, label)
            for kind in EVENT_TYPES:
                with contextlib.suppress(KeyError):
                    self.events.remove(stream_id, label, kind)

    def consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self.kafka_lag.labels(topic, str(partition)).set(lag)

    def consumer_lag_gone(self, topic: str, partition: int) -> None:
        """The partition went to another group member: a stale series here would double the lag."""
        with contextlib.suppress(KeyError):
            self.kafka_lag.remove(topic, str(partition))

    def dead_letter(self, topic: str, reason: str) -> None:
        self.kafka_dead_letters.labels(topic, reason).inc()
