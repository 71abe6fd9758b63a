"""The `vbw index` loop: read a batch, write it, then commit it; count and log what is skipped.

At least once: a batch's offsets are committed only after `WindowIndex.upsert` returned (the
rows are committed on disk). A crash in between re-reads the batch, and the upsert by
`window_id` makes the second write a no-op in content and count. Single-threaded on purpose:
poll, write and commit in one thread keep that order without locks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from search.inputs import Bad, Batch
from search.metrics import IndexMetrics
from search.records import BadMessage
from search.store import WindowIndex

log = logging.getLogger("vbw.search.index")

#: bad-message lines per progress period before they are only counted
BAD_LOG_BURST = 20


class Indexer:
    def __init__(self, index: WindowIndex, metrics: IndexMetrics, progress_s: float = 10.0) -> None:
        self.index = index
        self.metrics = metrics
        self.progress_s = progress_s
        self.windows_written = 0
        self.snapshots_written = 0
        self.bad = 0
        self._t0 = time.monotonic()
        self._last_progress = self._t0
        self._bad_logged = 0
        self._bad_held = 0
        self._lag_series: set[tuple[str, str]] = set()
        self.metrics.windows.set(index.count())
        self.metrics.size_bytes.set(index.size_bytes())

    def write(self, batch: Batch) -> None:
        """Write one batch, then commit it. Raises (without committing) if the write fails."""
        self._refuse_other_dims(batch)
        for b in batch.bad:
            self.bad += 1
            self.metrics.bad.labels(b.error.reason).inc()
            if self._bad_logged < BAD_LOG_BURST:
                self._bad_logged += 1
                log.warning("vbw index: skipped %s: %s", b.where, b.error)
            else:
                self._bad_held += 1
        if batch.windows or batch.snapshots:
            t = time.perf_counter()
            self.index.upsert(batch.windows)
            self.index.put_snapshots(batch.snapshots)
            self.metrics.write_seconds.observe(time.perf_counter() - t)
            self.metrics.written.labels("window").inc(len(batch.windows))
            self.metrics.written.labels("snapshot").inc(len(batch.snapshots))
            self.windows_written += len(batch.windows)
            self.snapshots_written += len(batch.snapshots)
            self.metrics.windows.set(self.index.count())  # table metadata: cheap
            if batch.windows:
                newest = max(w.end_time for w in batch.windows)
                self.metrics.lag_seconds.set(max(0.0, time.time() - newest))
        batch.commit()
        self._report_lag(batch)
        self.progress()

    def _report_lag(self, batch: Batch) -> None:
        """Lag of the partitions this indexer owns now; a partition that moved to another indexer
        loses its series here (its new owner reports it), as the worker's lag does."""
        if batch.lag is None:
            return
        now = {(t, str(p)) for t, p in batch.lag}
        for gone in self._lag_series - now:
            self.metrics.consumer_lag.remove(*gone)
        for (topic, partition), lag in batch.lag.items():
            self.metrics.consumer_lag.labels(topic, str(partition)).set(lag)
        self._lag_series = now

    def _refuse_other_dims(self, batch: Batch) -> None:
        """One index holds one vector size: windows of another (a model with another embed_dim
        published to the same topic) are bad messages, skipped, not a write that fails for ever."""
        dim = self.index.dim or (batch.windows[0].vector.shape[0] if batch.windows else None)
        keep = []
        for w in batch.windows:
            if w.vector.shape[0] == dim:
                keep.append(w)
            else:
                detail = f"window {w.window_id} of {w.stream_id} (model {w.model_version}): dim {w.vector.shape[0]}, the index holds {dim}; index it into another --db"
                batch.bad.append(Bad(f"window {w.window_id}", BadMessage("wrong-dim", detail)))
        batch.windows = keep

    def progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < self.progress_s:
            return
        self._last_progress = now
        count = self.index.count()
        self.metrics.windows.set(count)
        self.metrics.size_bytes.set(self.index.size_bytes())
        elapsed = max(1e-9, now - self._t0)
        held = f" ({self._bad_held} more not logged)" if self._bad_held else ""
        log.info(
            "vbw index: %d windows written (%.0f/s), %d snapshots, %d bad%s; the index holds %d",
            self.windows_written,
            self.windows_written / elapsed,
            self.snapshots_written,
            self.bad,
            held,
            count,
        )
        self._bad_logged = self._bad_held = 0

    def run(
        self,
        batches: Iterable[Batch],
        stopping: Callable[[], bool] = lambda: False,
        idle_exit_s: float | None = None,
    ) -> None:
        """Write every batch until the input ends, `stopping()`, or nothing came for `idle_exit_s`."""
        last_data = time.monotonic()
        for batch in batches:
            self.write(batch)
            if len(batch):
                last_data = time.monotonic()
            elif idle_exit_s is not None and time.monotonic() - last_data >= idle_exit_s:
                log.info("vbw index: nothing new for %.0f s, stopping", idle_exit_s)
                break
            if stopping():
                break
        self.progress(force=True)
