"""Output topics: labels (one `vbw.window/v1` JSON document per window) and embeddings.

Both are keyed by stream id (a stream's windows stay in order on one partition) and carry the
window id in a `window_id` header, so a consumer can join the two topics and drop the repeats
that at-least-once delivery allows. Embedding values are raw little-endian float32 or float16,
readable with `numpy.frombuffer(value, dtype=headers["dtype"])`; `dim` says how many.
"""

from __future__ import annotations

import numpy as np

from contracts.types import DeliveryCallback, Headers
from worker.config import VbwConfig
from worker.kafka.config import KafkaConnectionConfig, KafkaSinkConfig
from worker.kafka.producer import ResilientProducer
from worker.sinks.base import Sink, WindowResult

_LE = {"float32": "<f4", "float16": "<f2"}


def labels_record(result: WindowResult) -> tuple[bytes, bytes, Headers]:
    msg = result.message
    headers = [
        ("window_id", msg.window_id.encode()),
        ("vbw-window-id", msg.window_id.encode()),
        ("content-type", b"application/json"),
        ("vbw-schema", msg.schema_.encode()),
    ]
    return msg.stream_id.encode(), msg.to_json().encode(), headers


def embedding_record(result: WindowResult, dtype: str = "float32") -> tuple[bytes, bytes, Headers]:
    msg = result.message
    vec = np.ascontiguousarray(np.asarray(result.embedding).reshape(-1), dtype=_LE[dtype])
    headers = [
        ("window_id", msg.window_id.encode()),
        ("vbw-window-id", msg.window_id.encode()),
        ("content-type", b"application/octet-stream"),
        ("dtype", dtype.encode()),
        ("dim", str(vec.shape[0]).encode()),
        ("vbw-model", msg.model.name.encode()),
        ("vbw-model-version", msg.model.version.encode()),
    ]
    return msg.stream_id.encode(), vec.tobytes(), headers


class KafkaTopicSink(Sink):
    """One output topic on its own resilient producer (rebuilt and resent after a fatal state)."""

    def __init__(self, cfg: KafkaSinkConfig, connection: KafkaConnectionConfig) -> None:
        self.cfg = cfg
        self.connection = connection
        self.name = cfg.sink_name
        self.producer: ResilientProducer | None = None

    @classmethod
    def from_config(cls, sc: KafkaSinkConfig, cfg: VbwConfig) -> KafkaTopicSink:
        return cls(sc, cfg.kafka)  # always there: the section has defaults

    def open(self) -> None:
        self.producer = ResilientProducer(self.connection, self.cfg.producer, name=self.name)
        self.producer.poll()  # connect now, so a wrong bootstrap shows up at start, in the log

    def publish(self, result: WindowResult, done: DeliveryCallback) -> None:
        assert self.producer is not None, "open() first"
        if self.cfg.payload == "labels":
            key, value, headers = labels_record(result)
        else:
            key, value, headers = embedding_record(result, self.cfg.dtype)
        self.producer.send(self.cfg.topic, key, value, headers, done)

    def poll(self) -> None:
        if self.producer is not None:
            self.producer.poll()

    def flush(self, timeout: float) -> bool:
        return True if self.producer is None else self.producer.flush(timeout)

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close()
