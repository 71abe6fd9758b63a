"""Output topics: labels (one `vbw.window/v1` JSON document per window), embeddings, and events
(one `vbw.event/v1` JSON document per segment event, `payload: events`).

Both are keyed by stream id (a stream's windows stay in order on one partition) and carry the
window id in a `window_id` header, so a consumer can join the two topics and drop the repeats
that at-least-once delivery allows. Embedding values are raw little-endian float32 or float16,
readable with `numpy.frombuffer(value, dtype=headers["dtype"])`; `dim` says how many.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from contracts.types import DeliveryCallback, Headers
from worker.config import VbwConfig
from worker.event_messages import EventMessage
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
        # The time span, so an index (`vbw index`) needs only this topic, not a join with labels.
        ("vbw-start-pts", repr(msg.start_pts).encode()),
        ("vbw-end-pts", repr(msg.end_pts).encode()),
        ("vbw-capture-time", repr(msg.capture_time).encode()),
    ]
    return msg.stream_id.encode(), vec.tobytes(), headers


def event_record(event: EventMessage, worker: str, produced_at: str) -> tuple[bytes, bytes, Headers]:
    """Key = stream id; the value is the same bytes on every repeat, who and when are headers."""
    headers = [
        ("event_id", event.event_id.encode()),
        ("vbw-event-id", event.event_id.encode()),
        ("content-type", b"application/json"),
        ("vbw-schema", event.schema_.encode()),
        ("vbw-worker", worker.encode()),
        ("vbw-produced-at", produced_at.encode()),
    ]
    return event.stream_id.encode(), event.to_json().encode(), headers


class KafkaTopicSink(Sink):
    """One output topic on its own resilient producer (rebuilt and resent after a fatal state)."""

    def __init__(
        self, cfg: KafkaSinkConfig, connection: KafkaConnectionConfig, worker_id: str = "vbw"
    ) -> None:
        self.cfg = cfg
        self.connection = connection
        self.name = cfg.sink_name
        self.takes_events = cfg.payload == "events"
        self.worker_id = worker_id
        self.producer: ResilientProducer | None = None

    @classmethod
    def from_config(cls, sc: KafkaSinkConfig, cfg: VbwConfig) -> KafkaTopicSink:
        return cls(sc, cfg.kafka, cfg.worker_id())  # always there: the section has defaults

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

    def publish_event(self, event: EventMessage, done: DeliveryCallback) -> None:
        assert self.producer is not None, "open() first"
        produced = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        key, value, headers = event_record(event, self.worker_id, produced)
        self.producer.send(self.cfg.topic, key, value, headers, done)

    def poll(self) -> None:
        if self.producer is not None:
            self.producer.poll()

    def flush(self, timeout: float) -> bool:
        return True if self.producer is None else self.producer.flush(timeout)

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close()
