"""`vbw bench search`: ingest rate and query latency of a vector engine over N synthetic windows.

The windows look like the index's: unit vectors of the model's embedding size drawn around a few
label directions (so neighbours are not uniform noise), `streams` cameras with one window per
`stride_s` each, back to back in time. Ingest upserts them in batches of `batch` (the way `vbw
index` writes a poll's worth) and counts until the engine says they are durable. Each query
asks for the k nearest windows of one random stream in a random time range covering
`range_fraction` of the recording (the filter `vbw search --stream S --since T --until T`
sends), with a vector near a random stored one; the answer is checked against numpy's exact one
(recall@k), so an engine that ignores the filter or loses points shows up.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vbw.bench.search_candidates import Batch, Candidate


@dataclass(frozen=True, slots=True)
class Corpus:
    ids: list[str]
    vectors: np.ndarray  # float32 [n, dim], unit rows
    streams: list[str]
    stream_index: np.ndarray  # int [n]
    start_times: np.ndarray
    end_times: np.ndarray
    t0: float
    t1: float

    def batches(self, size: int) -> Iterator[Batch]:
        for i in range(0, len(self.ids), size):
            j = i + size
            yield Batch(
                self.ids[i:j],
                self.vectors[i:j],
                self.streams[i:j],
                self.start_times[i:j],
                self.end_times[i:j],
            )


def make_corpus(
    n: int, dim: int, streams: int, stride_s: float = 0.8, window_s: float = 3.2, seed: int = 0
) -> Corpus:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(16, dim))
    vectors = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    stream_index = np.arange(n) % streams
    step = np.arange(n) // streams
    t0 = 1.7e9
    start = t0 + step * stride_s
    ids = [str(uuid.UUID(int=int(x) + 1, version=4)) for x in rng.integers(0, 2**62, n)]
    return Corpus(
        ids=ids,
        vectors=vectors,
        streams=[f"cam{s:03d}" for s in stream_index],
        stream_index=stream_index,
        start_times=start,
        end_times=start + window_s,
        t0=t0,
        t1=float(start[-1] + window_s),
    )


@dataclass(frozen=True, slots=True)
class Query:
    vector: np.ndarray
    stream: str
    since: float
    until: float
    expected: list[str]  # exact answer (numpy), best first


def make_queries(corpus: Corpus, count: int, k: int, range_fraction: float, seed: int = 1) -> list[Query]:
    rng = np.random.default_rng(seed)
    span = corpus.t1 - corpus.t0
    out = []
    for _ in range(count):
        s = int(rng.integers(0, corpus.stream_index.max() + 1))
        since = corpus.t0 + float(rng.uniform(0, span * (1 - range_fraction)))
        until = since + span * range_fraction
        v = corpus.vectors[int(rng.integers(0, len(corpus.ids)))] + 0.3 * rng.normal(
            size=corpus.vectors.shape[1]
        )
        v = (v / np.linalg.norm(v)).astype(np.float32)
        mask = (corpus.stream_index == s) & (corpus.end_times >= since) & (corpus.start_times <= until)
        idx = np.flatnonzero(mask)
        best = idx[np.argsort(-(corpus.vectors[idx] @ v), kind="stable")[:k]]
        out.append(Query(v, f"cam{s:03d}", since, until, [corpus.ids[i] for i in best]))
    return out


@dataclass(frozen=True, slots=True)
class SearchBenchResult:
    engine: str
    windows: int
    dim: int
    streams: int
    ingest_s: float
    ingest_rate: float  # windows per second, durable
    queries: int
    p50_ms: float
    p95_ms: float
    recall: float  # mean recall@k against the exact answer
    replay_changed: bool | None  # upserting the first batch again changed the count (None: not checked)


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    return float(np.percentile(np.asarray(xs), q))


def run(
    engine: Candidate,
    path: Path,
    corpus: Corpus,
    queries: list[Query],
    k: int,
    batch: int = 1000,
    progress: Callable[[str], None] = lambda s: None,
) -> SearchBenchResult:
    dim = corpus.vectors.shape[1]
    engine.open(path, dim)
    try:
        t = time.perf_counter()
        done = 0
        for b in corpus.batches(batch):
            engine.upsert(b)
            done += len(b.ids)
            if done % (batch * 20) == 0:
                progress(f"{engine.name}: {done} windows in {time.perf_counter() - t:.1f} s")
        engine.finish()
        ingest_s = time.perf_counter() - t
        replay_changed = None
        count = getattr(engine, "count", None)
        if count is not None:  # a replay of the first batch must not add windows
            before = count()
            engine.upsert(next(corpus.batches(batch)))
            replay_changed = count() != before
        for q in queries[: min(5, len(queries))]:  # warm caches and lazy loads
            engine.query(q.vector, q.stream, q.since, q.until, k)
        lat, recalls = [], []
        for q in queries:
            t = time.perf_counter()
            got = engine.query(q.vector, q.stream, q.since, q.until, k)
            lat.append((time.perf_counter() - t) * 1000)
            recalls.append(len(set(got) & set(q.expected)) / max(1, len(q.expected)))
    finally:
        engine.close()
    return SearchBenchResult(
        engine=engine.name,
        windows=len(corpus.ids),
        dim=dim,
        streams=int(corpus.stream_index.max() + 1),
        ingest_s=ingest_s,
        ingest_rate=len(corpus.ids) / ingest_s,
        queries=len(queries),
        p50_ms=percentile(lat, 50),
        p95_ms=percentile(lat, 95),
        recall=statistics.fmean(recalls) if recalls else float("nan"),
        replay_changed=replay_changed,
    )


class ProjectIndex:
    """The index `vbw index` writes and `vbw search` reads (search.store.WindowIndex), driven
    through its own records and filter: what the figures in BENCHMARKS.md are of."""

    name = "vbw-index"

    def __init__(self, compact_every: int = 0, compact_at_end: bool = True) -> None:
        # Default: no compaction while ingesting, once at the end (`vbw index --jsonl` does that).
        # `compact_every` as `vbw index` from Kafka (index.compact_every) measures the live state.
        self.compact_every = compact_every
        self.compact_at_end = compact_at_end

    def open(self, path: Path, dim: int) -> None:
        from search.store import WindowIndex

        self.index = WindowIndex(path, compact_every=self.compact_every)

    def upsert(self, batch: Batch) -> None:
        from search.records import IndexedWindow

        self.index.upsert(
            [
                IndexedWindow(i, s, float(a), float(b), 0.0, float(b - a), "bench", "1", v)
                for i, v, s, a, b in zip(
                    batch.ids, batch.vectors, batch.streams, batch.start_times, batch.end_times, strict=True
                )
            ]
        )

    def finish(self) -> None:
        if self.compact_at_end:
            self.index.maintain()

    def count(self) -> int:
        return self.index.count()

    def query(self, vector: np.ndarray, stream: str, since: float, until: float, k: int) -> list[str]:
        from search.query import Filter

        return [
            h.window_id for h in self.index.search(vector, k, Filter(stream=stream, since=since, until=until))
        ]

    def close(self) -> None:
        self.index.close()
