"""The segment-state changelog: a compacted topic of each stream's latest segmenter checkpoint.

As Kafka Streams keeps its state stores, vbw keeps the segmenter's state (worker.events) in a
topic with `cleanup.policy=compact`: key = stream id, value = the checkpoint's JSON
(worker.events.Checkpoint.to_doc), default partitioner. Compaction keeps the latest record per
stream. docs/events.md says why this makes events at-least-once.

- `write` (sink thread) sends a checkpoint on a `ResilientProducer`; the ledger calls it only once
  every event up to that checkpoint is acked, and releases the frames it covers on the ack.
- `restore` (inference thread) reads the whole topic from the beginning to its end, and keeps per
  stream the checkpoint with the highest position (a replay or a previous owner of the stream
  may have written older ones later). It reads again when asked for a stream of a partition
  just assigned (`fresh`), so it sees what the previous owner saved before its revoke commit.
  The end of a partition is the high watermark of its fetch responses, not ListOffsets (which
  Tansu answers short). A restore that cannot finish raises: going on without the state would
  break the delivery promise, so the worker stops and is restarted.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka import errors as kerr

from contracts.errors import VbwError
from contracts.types import TP, DeliveryCallback
from worker.events import Checkpoint
from worker.kafka.config import KafkaConnectionConfig, ProducerTuning
from worker.kafka.producer import ResilientProducer

log = logging.getLogger("vbw.events")


class ChangelogError(VbwError):
    """The changelog topic could not be read to its end (missing topic, brokers down too long)."""

    retriable = True


class ChangelogStore:
    """StateStore (worker.events) on a compacted Kafka topic."""

    def __init__(
        self,
        topic: str,
        connection: KafkaConnectionConfig,
        tuning: ProducerTuning | None = None,
        *,
        restore_timeout_s: float = 60.0,
        consumer_factory: Any = KafkaConsumer,
    ) -> None:
        self.topic = topic
        self.name = topic
        self.connection = connection
        self.tuning = tuning or ProducerTuning(linger_ms=5, batch_size=64 << 10)
        self.restore_timeout_s = restore_timeout_s
        self._consumer_factory = consumer_factory
        self._producer: ResilientProducer | None = None
        self._consumer: Any = None
        self._cache: dict[str, Checkpoint] | None = None
        self.reads = 0  # full reads of the topic (tests, logs)

    # -- sink thread ------------------------------------------------------------------------------
    def open(self) -> None:
        self._producer = ResilientProducer(self.connection, self.tuning, name=f"changelog-{self.topic}")
        self._producer.poll()  # connect now: a wrong bootstrap shows at start, in the log

    def write(self, checkpoint: Checkpoint, done: DeliveryCallback) -> None:
        assert self._producer is not None, "open() first"
        value = json.dumps(checkpoint.to_doc(), separators=(",", ":")).encode()
        headers = [("content-type", b"application/json"), ("vbw-schema", b"vbw.segment-state/v1")]
        self._producer.send(self.topic, checkpoint.stream_id.encode(), value, headers, done)

    def poll(self) -> None:
        if self._producer is not None:
            self._producer.poll()

    def flush(self, timeout: float) -> bool:
        return True if self._producer is None else self._producer.flush(timeout)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception as e:  # closing is best effort
                log.debug("changelog consumer close: %s", e)
            self._consumer = None

    # -- inference thread -------------------------------------------------------------------------
    def restore(self, stream_id: str, frames: TP, fresh: bool) -> Checkpoint | None:
        if fresh or self._cache is None:
            self._cache = self._read_all()
        return self._cache.get(stream_id)

    def _read_all(self) -> dict[str, Checkpoint]:
        t0 = time.monotonic()
        deadline = t0 + self.restore_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                out = self._read_to_end(deadline)
                self.reads += 1
                log.info(
                    "changelog %s: read %d stream states in %.2f s",
                    self.topic,
                    len(out),
                    time.monotonic() - t0,
                )
                return out
            except (kerr.KafkaError, OSError, AssertionError) as e:  # brokers away: try again
                last_error = e
                self._drop_consumer()
                time.sleep(0.5)
        raise ChangelogError(
            f"changelog topic {self.topic!r}: not read to its end within {self.restore_timeout_s:.0f} s"
            + (f" ({type(last_error).__name__}: {last_error})" if last_error else "")
        )

    def _read_to_end(self, deadline: float) -> dict[str, Checkpoint]:
        if self._consumer is None:
            self._consumer = self._consumer_factory(
                **self.connection.kafka_python(),
                client_id=f"{self.connection.client_id}-changelog",
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                allow_auto_create_topics=False,
            )
        c = self._consumer
        parts = c.partitions_for_topic(self.topic)
        while not parts:
            if time.monotonic() > deadline:
                raise ChangelogError(
                    f"changelog topic {self.topic!r} does not exist (create it with cleanup.policy=compact)"
                )
            time.sleep(0.2)
            parts = c.partitions_for_topic(self.topic)
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        states: dict[str, Checkpoint] = {}
        at_end: set[TopicPartition] = set()
        while len(at_end) < len(tps):
            if time.monotonic() > deadline:
                behind = sorted(tp.partition for tp in tps if tp not in at_end)
                raise ChangelogError(
                    f"changelog topic {self.topic!r}: partitions {behind} not read to their end"
                )
            for records in c.poll(timeout_ms=200).values():
                for r in records:
                    self._take(states, r)
            for tp in tps:
                hw = c.highwater(tp)
                if hw is not None and c.position(tp) >= hw:
                    at_end.add(tp)
        return states

    def _take(self, states: dict[str, Checkpoint], record: Any) -> None:
        key = record.key.decode("utf-8", "replace") if record.key else ""
        if record.value is None:  # a tombstone: the stream's state was deleted
            states.pop(key, None)
            return
        try:
            ck = Checkpoint.from_doc(json.loads(record.value))
        except (ValueError, KeyError, TypeError) as e:
            log.warning(
                "changelog %s[%d]@%d: not a segment checkpoint (%s); ignored",
                record.topic,
                record.partition,
                record.offset,
                e,
            )
            return
        old = states.get(ck.stream_id)
        if old is None or ck.position >= old.position:
            states[ck.stream_id] = ck

    def _drop_consumer(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception as e:  # best effort: a new one is built next
                log.debug("changelog consumer close: %s", e)
            self._consumer = None
