"""The index's Prometheus metrics, in their own registry (served by `vbw index` on /metrics).

- `vbw_index_windows`: windows in the index (rows; a replay does not raise it).
- `vbw_index_size_bytes`: the index on disk.
- `vbw_index_lag_seconds`: at the last write, wall clock less the capture time of the newest
  window written: how far behind the cameras the searchable data is.
- `vbw_index_consumer_lag{topic,partition}`: messages not yet indexed (high watermark less
  position), as the worker's own consumer lag.
- `vbw_index_written_total{kind}` (window | snapshot), `vbw_index_bad_messages_total{reason}`,
  `vbw_index_write_seconds` (one batch's write, histogram).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from search.records import REASONS


class IndexMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.windows = Gauge("vbw_index_windows", "windows in the search index", registry=r)
        self.size_bytes = Gauge("vbw_index_size_bytes", "search index size on disk", registry=r)
        self.lag_seconds = Gauge(
            "vbw_index_lag_seconds",
            "at the last write: now less the capture time of the newest window written",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "vbw_index_consumer_lag",
            "messages of the embeddings/events topics not yet indexed",
            ["topic", "partition"],
            registry=r,
        )
        self.written = Counter("vbw_index_written", "records written to the index", ["kind"], registry=r)
        self.bad = Counter(
            "vbw_index_bad_messages", "messages skipped as not indexable", ["reason"], registry=r
        )
        self.write_seconds = Histogram(
            "vbw_index_write_seconds",
            "time to write one batch to the index",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        for kind in ("window", "snapshot"):
            self.written.labels(kind)
        for reason in REASONS:
            self.bad.labels(reason)
