"""The vector engines `vbw search` could use, driven the same way for `vbw bench search --candidates`.

Each adapter takes the same synthetic windows (unit vectors, a stream and a time span) and
answers the same query: k nearest by cosine among one stream's windows in a time range. Only
the engine chosen (docs/search.md) is a dependency of the project; the others are imported
here when asked for and reported as missing otherwise.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class Batch:
    ids: list[str]
    vectors: np.ndarray  # float32 [n, dim], unit rows
    streams: list[str]
    start_times: np.ndarray  # float64 [n]
    end_times: np.ndarray


class Candidate(Protocol):
    name: str

    def open(self, path: Path, dim: int) -> None: ...
    def upsert(self, batch: Batch) -> None: ...
    def finish(self) -> None: ...
    def query(self, vector: np.ndarray, stream: str, since: float, until: float, k: int) -> list[str]: ...
    def close(self) -> None: ...


class QdrantLocal:
    """qdrant-client's local mode, `QdrantClient(path=...)`: the same client as a Qdrant server."""

    name = "qdrant-local"

    def open(self, path: Path, dim: int) -> None:
        from qdrant_client import QdrantClient, models

        self.m = models
        self.client = QdrantClient(path=str(path))
        self.client.create_collection(
            "windows", vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
        )

    def upsert(self, batch: Batch) -> None:
        m = self.m
        points = [
            m.PointStruct(
                id=i,
                vector=v.tolist(),
                payload={"stream": s, "start_time": float(a), "end_time": float(b)},
            )
            for i, v, s, a, b in zip(
                batch.ids, batch.vectors, batch.streams, batch.start_times, batch.end_times, strict=True
            )
        ]
        self.client.upsert("windows", points=points, wait=True)

    def finish(self) -> None:
        pass

    def query(self, vector: np.ndarray, stream: str, since: float, until: float, k: int) -> list[str]:
        m = self.m
        flt = m.Filter(
            must=[
                m.FieldCondition(key="stream", match=m.MatchValue(value=stream)),
                m.FieldCondition(key="end_time", range=m.Range(gte=since)),
                m.FieldCondition(key="start_time", range=m.Range(lte=until)),
            ]
        )
        res = self.client.query_points("windows", query=vector.tolist(), query_filter=flt, limit=k)
        return [str(p.id) for p in res.points]

    def close(self) -> None:
        self.client.close()


class MilvusLite:
    """Milvus Lite (`MilvusClient("file.db")`): the same pymilvus client as a Milvus cluster."""

    name = "milvus-lite"

    def open(self, path: Path, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        path.mkdir(parents=True, exist_ok=True)
        self.client = MilvusClient(str(path / "milvus.db"))
        schema = self.client.create_schema(auto_id=False)
        schema.add_field("window_id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("stream", DataType.VARCHAR, max_length=256)
        schema.add_field("start_time", DataType.DOUBLE)
        schema.add_field("end_time", DataType.DOUBLE)
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type="COSINE")
        self.client.create_collection("windows", schema=schema, index_params=index)

    def upsert(self, batch: Batch) -> None:
        rows = [
            {"window_id": i, "vector": v.tolist(), "stream": s, "start_time": float(a), "end_time": float(b)}
            for i, v, s, a, b in zip(
                batch.ids, batch.vectors, batch.streams, batch.start_times, batch.end_times, strict=True
            )
        ]
        self.client.upsert("windows", rows)

    def finish(self) -> None:
        self.client.flush("windows")

    def query(self, vector: np.ndarray, stream: str, since: float, until: float, k: int) -> list[str]:
        res = self.client.search(
            "windows",
            data=[vector.tolist()],
            filter=f'stream == "{stream}" and end_time >= {since!r} and start_time <= {until!r}',
            limit=k,
            output_fields=["window_id"],
            search_params={"metric_type": "COSINE"},
        )
        return [str(h["window_id"]) for h in res[0]]

    def close(self) -> None:
        self.client.close()


class LanceDb:
    """LanceDB embedded (`lancedb.connect(dir)`); its remote client needs LanceDB Cloud/Enterprise."""

    name = "lancedb"

    def open(self, path: Path, dim: int) -> None:
        import lancedb
        import pyarrow as pa

        self.pa = pa
        self.db = lancedb.connect(str(path))
        self.schema = pa.schema(
            [
                pa.field("window_id", pa.string()),
                pa.field("vector", pa.list_(pa.float32(), dim)),
                pa.field("stream", pa.string()),
                pa.field("start_time", pa.float64()),
                pa.field("end_time", pa.float64()),
            ]
        )
        self.table = self.db.create_table("windows", schema=self.schema)

    def upsert(self, batch: Batch) -> None:
        pa = self.pa
        dim = batch.vectors.shape[1]
        data = pa.table(
            {
                "window_id": batch.ids,
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(batch.vectors.reshape(-1), pa.float32()), dim
                ),
                "stream": batch.streams,
                "start_time": batch.start_times,
                "end_time": batch.end_times,
            },
            schema=self.schema,
        )
        (
            self.table.merge_insert("window_id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(data)
        )

    def finish(self) -> None:
        self.table.optimize()

    def query(self, vector: np.ndarray, stream: str, since: float, until: float, k: int) -> list[str]:
        q = (
            self.table.search(vector, vector_column_name="vector")
            .metric("cosine")
            .where(
                f"stream = '{stream}' AND end_time >= {since!r} AND start_time <= {until!r}", prefilter=True
            )
            .select(["window_id", "_distance"])
            .limit(k)
        )
        return [r["window_id"] for r in q.to_list()]

    def close(self) -> None:
        pass


CANDIDATES = {c.name: c for c in (QdrantLocal, MilvusLite, LanceDb)}


def make(name: str) -> Candidate:
    try:
        return CANDIDATES[name]()
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; one of {', '.join(CANDIDATES)}") from None


def wipe(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def names() -> Sequence[str]:
    return list(CANDIDATES)
