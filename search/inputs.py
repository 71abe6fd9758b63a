"""Where `vbw index` reads from: JSONL files, or the embeddings (and events) topics.

Each input yields `Batch`es: the windows and snapshots parsed from one read, the bad messages
with where they were, and `commit()`, which the indexer calls only after the batch is written
to the index (Kafka: the offsets after the batch's last records; a file: nothing to commit, a
second run over it rewrites the same rows).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.config import IndexFileConfig
from search.records import BadMessage, IndexedWindow, Snapshot, from_event_value, from_kafka, from_line

log = logging.getLogger("vbw.search.index")


@dataclass(slots=True)
class Bad:
    where: str  # "topic[partition]@offset" or "file:line"
    error: BadMessage


@dataclass(slots=True)
class Batch:
    windows: list[IndexedWindow] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    bad: list[Bad] = field(default_factory=list)
    commit: Callable[[], None] = lambda: None
    # Messages behind, per (topic, partition) this consumer owns, after this batch (Kafka only;
    # None for a file).
    lag: dict[tuple[str, int], int] | None = None

    def __len__(self) -> int:
        return len(self.windows) + len(self.snapshots) + len(self.bad)

    def add(self, item: IndexedWindow | Snapshot | None) -> None:
        if isinstance(item, IndexedWindow):
            self.windows.append(item)
        elif isinstance(item, Snapshot):
            self.snapshots.append(item)


def read_jsonl(paths: Sequence[Path], batch_lines: int = 2000) -> Iterator[Batch]:
    """Window lines (sink `payload: embeddings`) and event lines, in batches of `batch_lines`."""
    for path in paths:
        batch = Batch()
        with path.open(encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    batch.add(from_line(line))
                except BadMessage as e:
                    batch.bad.append(Bad(f"{path}:{n}", e))
                if len(batch) >= batch_lines:
                    yield batch
                    batch = Batch()
        if len(batch):
            yield batch


class KafkaInput:
    """One consumer in the index group over the embeddings topic (and the events topic)."""

    def __init__(self, cfg: IndexFileConfig, consumer_factory: Any = None) -> None:
        from kafka import KafkaConsumer

        self.cfg = cfg
        s = cfg.index
        self.topics = [s.topic] + ([s.events_topic] if s.events_topic else [])
        factory = consumer_factory or KafkaConsumer
        self.consumer = factory(
            **cfg.kafka.kafka_python(),
            client_id=f"{cfg.kafka.client_id}-index",
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            allow_auto_create_topics=False,
            max_poll_records=s.max_poll_records,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
        )
        # No rebalance listener: offsets are committed right after each write, in this thread;
        # a partition revoked in between is re-read by its next owner, and rewriting is harmless.
        self.consumer.subscribe(topics=self.topics)
        log.info(
            "vbw index: reading %s as group %s (%s)", ",".join(self.topics), s.group_id, cfg.kafka.describe()
        )

    def poll(self, timeout_s: float = 1.0) -> Batch:
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata, TopicPartition

        records = self.consumer.poll(timeout_ms=int(timeout_s * 1000))
        batch = Batch()
        ends: dict[Any, int] = {}
        for tp, msgs in records.items():
            for m in msgs:
                try:
                    if tp.topic == self.cfg.index.topic:
                        batch.add(from_kafka(m.key, m.value, m.headers))
                    else:
                        batch.add(from_event_value(m.value))
                except BadMessage as e:
                    batch.bad.append(Bad(f"{tp.topic}[{tp.partition}]@{m.offset}", e))
            if msgs:
                ends[tp] = msgs[-1].offset + 1
        offsets = {
            TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(o, "", -1) for tp, o in ends.items()
        }

        def commit() -> None:
            if not offsets:
                return
            try:
                self.consumer.commit(offsets)
            except KafkaError as e:  # e.g. a rebalance took the partition: its next owner re-reads
                # the batch, and rewriting it changes nothing (upsert by window_id)
                log.warning("vbw index: offset commit failed, the batch will be read again: %s", e)

        batch.commit = commit
        batch.lag = {}
        for tp in self.consumer.assignment():
            hw = self.consumer.highwater(tp)
            if hw is not None:
                pos = ends.get(tp)
                if pos is None:
                    try:
                        pos = self.consumer.position(tp, timeout_ms=100)
                    except Exception:  # no position yet: lag unknown this round
                        continue
                batch.lag[(tp.topic, tp.partition)] = max(0, hw - pos)
        return batch

    def close(self) -> None:
        try:
            self.consumer.close(autocommit=False)
        except Exception as e:  # closing a consumer whose broker is gone: nothing left to save
            log.warning("vbw index: consumer close: %s", e)
