"""The window index: one LanceDB table of windows keyed by `window_id`, and one of snapshots.

Why LanceDB (docs/search.md has the measurements): embedded (a directory, no server), the
fastest of the candidates at 100k windows with a stream + time filter, and the same client
works on object storage (`s3://bucket/index`) where one machine's disk is not enough.

- `upsert` is a merge on `window_id`: a replayed window replaces itself, so the count does not
  change. When it returns, the write is committed (a new table version) and, for a local
  directory, flushed to disk (`sync_filesystem`): the caller may then commit its Kafka offsets.
- `retention_s` bounds the index: each `maintain()` deletes the windows that ended before
  now - retention_s (and their snapshots).
- Snapshots live in their own table, keyed by window id: an event's snapshot may arrive before
  or after its window (two topics), and either order ends in the same state.
- Every `compact_every` writes, `maintain()` compacts the small files that streaming writes
  leave (query time grows with their number), indexes the filter's columns (scalar indexes on
  stream and times) and drops versions older than `keep_versions_s` (a search that opened an
  older version keeps working for that long).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from contracts.errors import VbwError
from search.query import Filter, sql_string, where
from search.records import IndexedWindow, Snapshot

log = logging.getLogger("vbw.search")

WINDOWS = "windows"
SNAPSHOTS = "snapshots"


class IndexStoreError(VbwError, RuntimeError):
    """The index cannot be opened or written (path, permissions, another dimension)."""


@dataclass(frozen=True, slots=True)
class Hit:
    window_id: str
    stream_id: str
    start_time: float
    end_time: float
    start_pts: float
    end_pts: float
    model_version: str
    score: float  # cosine similarity, 1 = same direction
    snapshot: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}


def _schema(dim: int) -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("window_id", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim)),
            pa.field("stream_id", pa.string()),
            pa.field("start_time", pa.float64()),
            pa.field("end_time", pa.float64()),
            pa.field("start_pts", pa.float64()),
            pa.field("end_pts", pa.float64()),
            pa.field("model_name", pa.string()),
            pa.field("model_version", pa.string()),
        ]
    )


def _snapshot_schema() -> Any:
    import pyarrow as pa

    return pa.schema([pa.field("window_id", pa.string(), nullable=False), pa.field("snapshot", pa.string())])


def dedupe_last(items: Sequence[Any], key: str = "window_id") -> list[Any]:
    """Keep the last of each id, in first-seen order: one merge must not hold a key twice."""
    last: dict[str, Any] = {}
    for it in items:
        last.pop(getattr(it, key), None)
        last[getattr(it, key)] = it
    return list(last.values())


class WindowIndex:
    def __init__(
        self,
        uri: str | Path,
        compact_every: int = 200,
        keep_versions_s: float = 600.0,
        retention_s: float | None = None,
        sync: bool = True,
    ) -> None:
        try:
            import lancedb
        except ImportError as e:  # the `search` extra is not installed (a run-time-only install)
            raise IndexStoreError(
                f"the search index needs LanceDB: pip install 'vbw[search]' ({e.name or e})"
            ) from None

        self.uri = str(uri)
        self.compact_every = compact_every
        self.keep_versions = timedelta(seconds=keep_versions_s)
        self.retention_s = retention_s
        # Object stores are durable once a PUT returns; a local directory needs a flush to disk.
        self.sync = sync and "://" not in self.uri
        self._writes = 0
        try:
            self.db = lancedb.connect(self.uri)
        except Exception as e:
            raise IndexStoreError(f"index {self.uri}: cannot open: {e}") from e
        self._windows = self._open(WINDOWS)
        self._snapshots = self._open(SNAPSHOTS)

    def _open(self, name: str) -> Any:
        try:
            return self.db.open_table(name)
        except (FileNotFoundError, ValueError):
            return None

    @property
    def dim(self) -> int | None:
        if self._windows is None:
            return None
        return int(self._windows.schema.field("vector").type.list_size)

    # -- writes ---------------------------------------------------------------------------------

    def upsert(self, windows: Sequence[IndexedWindow]) -> None:
        if not windows:
            return
        import pyarrow as pa

        rows = dedupe_last(windows)
        dim = rows[0].vector.shape[0]
        if self._windows is None:
            self._windows = self.db.create_table(WINDOWS, schema=_schema(dim), exist_ok=True)
        if dim != self.dim or any(w.vector.shape[0] != dim for w in rows):
            raise IndexStoreError(f"index {self.uri}: vectors of dim {self.dim}, got {dim}")
        data = pa.table(
            {
                "window_id": [w.window_id for w in rows],
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.concatenate([w.vector for w in rows]), pa.float32()), dim
                ),
                "stream_id": [w.stream_id for w in rows],
                "start_time": [w.start_time for w in rows],
                "end_time": [w.end_time for w in rows],
                "start_pts": [w.start_pts for w in rows],
                "end_pts": [w.end_pts for w in rows],
                "model_name": [w.model_name for w in rows],
                "model_version": [w.model_version for w in rows],
            },
            schema=_schema(dim),
        )
        self._merge(self._windows, data)

    def put_snapshots(self, snaps: Sequence[Snapshot]) -> None:
        if not snaps:
            return
        import pyarrow as pa

        rows = dedupe_last(snaps)
        if self._snapshots is None:
            self._snapshots = self.db.create_table(SNAPSHOTS, schema=_snapshot_schema(), exist_ok=True)
        data = pa.table(
            {"window_id": [s.window_id for s in rows], "snapshot": [s.snapshot for s in rows]},
            schema=_snapshot_schema(),
        )
        self._merge(self._snapshots, data)

    def _merge(self, table: Any, data: Any) -> None:
        table.merge_insert("window_id").when_matched_update_all().when_not_matched_insert_all().execute(data)
        if self.sync:
            sync_filesystem(Path(self.uri))
        self._writes += 1
        if self.compact_every and self._writes % self.compact_every == 0:
            self.maintain()

    def expire(self, now: float | None = None) -> int:
        """Delete the windows that ended more than `retention_s` ago (and their snapshots);
        returns how many windows went. A replay of an expired window brings it back until the
        next expiry: the retention is a bound on size, not a filter."""
        if self.retention_s is None or self._windows is None:
            return 0
        cutoff = (time.time() if now is None else now) - self.retention_s
        before = self._windows.count_rows()
        self._windows.delete(f"end_time < {cutoff!r}")
        gone = before - self._windows.count_rows()
        if gone and self._snapshots is not None:
            ids = self._windows.search().select(["window_id"]).limit(None).to_arrow()["window_id"]
            keep = set(ids.to_pylist())
            stale = [
                r
                for r in self._snapshots.search().limit(None).to_arrow()["window_id"].to_pylist()
                if r not in keep
            ]
            for i in range(0, len(stale), 1000):
                self._snapshots.delete(
                    "window_id IN (" + ", ".join(sql_string(x) for x in stale[i : i + 1000]) + ")"
                )
        return gone

    def maintain(self) -> None:
        """Expire old windows, compact small files, bring the scalar indexes up to date, drop
        old versions."""
        gone = self.expire()
        if gone:
            log.info("search index %s: %d windows past the retention deleted", self.uri, gone)
        if self._windows is not None and self._windows.count_rows():
            self._ensure_scalar_indexes(self._windows)
        for t in (self._windows, self._snapshots):
            if t is not None:
                t.optimize(cleanup_older_than=self.keep_versions)

    @staticmethod
    def _ensure_scalar_indexes(table: Any) -> None:
        """The filter's columns, indexed (once; `optimize` adds later rows to them): a stream and
        time filter then reads the matching rows instead of scanning three columns of every
        window (p50 17 -> 10 ms at 100k windows, interleaved A/B here; docs/search.md)."""
        from lancedb.index import Bitmap, BTree

        have = {tuple(i.columns) for i in table.list_indices()}
        for column, config in (
            ("stream_id", Bitmap()),  # few distinct values (cameras), many rows each
            ("start_time", BTree()),
            ("end_time", BTree()),
            ("window_id", BTree()),  # get() and the merge of upserts look windows up by id
        ):
            if (column,) not in have:
                table.create_index(column, config=config)

    # -- reads ----------------------------------------------------------------------------------

    def count(self) -> int:
        return 0 if self._windows is None else int(self._windows.count_rows())

    def size_bytes(self) -> int:
        """Bytes on disk (a local index; 0 for an object-store URI)."""
        root = Path(self.uri)
        if "://" in self.uri or not root.is_dir():
            return 0
        return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())

    def get(self, window_id: str) -> IndexedWindow | None:
        if self._windows is None:
            return None
        rows = (
            self._windows.search()
            .where(f"window_id = {sql_string(window_id)}", prefilter=True)
            .limit(1)
            .to_list()
        )
        if not rows:
            return None
        r = rows[0]
        return IndexedWindow(
            window_id=r["window_id"],
            stream_id=r["stream_id"],
            start_time=r["start_time"],
            end_time=r["end_time"],
            start_pts=r["start_pts"],
            end_pts=r["end_pts"],
            model_name=r["model_name"],
            model_version=r["model_version"],
            vector=np.asarray(r["vector"], np.float32),
        )

    def snapshots(self, window_ids: Sequence[str]) -> dict[str, str]:
        if self._snapshots is None or not window_ids:
            return {}
        ids = ", ".join(sql_string(i) for i in window_ids)
        rows = (
            self._snapshots.search()
            .where(f"window_id IN ({ids})", prefilter=True)
            .limit(len(window_ids))
            .to_list()
        )
        return {r["window_id"]: r["snapshot"] for r in rows}

    def search(self, vector: np.ndarray, k: int = 10, flt: Filter | None = None) -> list[Hit]:
        """The k windows nearest to `vector` (cosine) among those the filter keeps, best first."""
        if self._windows is None:
            return []
        v = np.asarray(vector, np.float32).reshape(-1)
        if v.shape[0] != self.dim:
            raise IndexStoreError(f"index {self.uri}: query of dim {v.shape[0]}, index holds dim {self.dim}")
        q = self._windows.search(v, vector_column_name="vector").distance_type("cosine")
        expr = where(flt or Filter())
        if expr:
            q = q.where(expr, prefilter=True)
        rows = (
            q.select(
                [
                    "window_id",
                    "stream_id",
                    "start_time",
                    "end_time",
                    "start_pts",
                    "end_pts",
                    "model_version",
                    "_distance",
                ]
            )
            .limit(k)
            .to_list()
        )
        snaps = self.snapshots([r["window_id"] for r in rows])
        return [
            Hit(
                window_id=r["window_id"],
                stream_id=r["stream_id"],
                start_time=r["start_time"],
                end_time=r["end_time"],
                start_pts=r["start_pts"],
                end_pts=r["end_pts"],
                model_version=r["model_version"],
                score=1.0 - float(r["_distance"]),
                snapshot=snaps.get(r["window_id"]),
            )
            for r in rows
        ]

    def close(self) -> None:
        # LanceDB holds no server or lock; every write is already committed.
        self._windows = self._snapshots = None


def sync_filesystem(path: Path) -> None:
    """Flush the filesystem holding `path` to disk (Linux syncfs; elsewhere os.sync).

    LanceDB writes a table version with plain writes and renames, no fsync (strace: none), so a
    write that returned can still be lost with the machine's power, after its Kafka offsets were
    committed. Hand-written because LanceDB has no durability option: one syncfs per write (a
    poll's batch) flushes its data files and manifest together.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        if _syncfs is not None:
            if _syncfs(fd) != 0:
                raise OSError(ctypes.get_errno(), f"syncfs {path}")
        else:
            os.sync()
    finally:
        os.close(fd)


def _load_syncfs() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_syncfs = _load_syncfs()


def default_uri() -> str:
    """$VBW_INDEX__DB (the env override of `index.db`), else ~/.local/share/vbw/index."""
    return os.environ.get("VBW_INDEX__DB") or str(Path.home() / ".local" / "share" / "vbw" / "index")
