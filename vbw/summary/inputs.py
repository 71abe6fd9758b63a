"""Where events come from: JSONL files (a file, or every *.jsonl file under a directory) or a
Kafka topic read from its beginning to its end. Each document comes with where it was read
(`file:line`, `topic/partition@offset`), so a bad one can be named."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contracts.errors import VbwError

Located = tuple[str, Any]  # (where, decoded JSON document)


class InputError(VbwError, RuntimeError):
    """The events cannot be read at all (no such file, no such topic, broker unreachable)."""


def jsonl_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*.jsonl") if p.is_file())
    if path.is_file():
        return [path]
    raise InputError(f"{path}: no such file or directory")


def read_jsonl(path: Path, bad: list[str]) -> Iterator[Located]:
    """Documents of every line; a line that is not JSON is reported in `bad` and skipped (a
    file being written may end in half a line)."""
    for f in jsonl_files(path):
        try:
            with f.open("r", encoding="utf-8", errors="replace") as lines:
                for n, line in enumerate(lines, 1):
                    if not line.strip():
                        continue
                    try:
                        yield f"{f}:{n}", json.loads(line)
                    except json.JSONDecodeError as e:
                        bad.append(f"{f}:{n}: not JSON ({e.msg})")
        except OSError as e:
            raise InputError(f"{f}: {e.strerror or e}") from e


def read_topic(
    topic: str, client: dict[str, Any], bad: list[str], timeout_s: float = 60.0
) -> Iterator[Located]:
    """Every record of every partition of `topic`, from the beginning to the end it has when read.

    The end of a partition is the high watermark its fetch responses report, not ListOffsets
    (which some brokers, Tansu among them, answer short). No consumer group: nothing is committed.
    """
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(
            enable_auto_commit=False, group_id=None, auto_offset_reset="earliest", **client
        )
    except KafkaError as e:
        raise InputError(f"kafka {client.get('bootstrap_servers')}: {e}", retriable=e.retriable) from e
    try:
        yield from _read_to_end(consumer, topic, bad, time.monotonic() + timeout_s, timeout_s)
    except KafkaError as e:
        raise InputError(f"kafka topic {topic!r}: {e}", retriable=e.retriable) from e
    finally:
        consumer.close()


def _read_to_end(
    consumer: Any, topic: str, bad: list[str], deadline: float, timeout_s: float
) -> Iterator[Located]:
    from kafka import TopicPartition

    partitions = None
    while not partitions:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            if time.monotonic() > deadline:
                raise InputError(f"kafka topic {topic!r}: not found within {timeout_s:.0f} s", retriable=True)
            time.sleep(0.2)
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    at_end: set[Any] = set()
    while len(at_end) < len(tps):
        if time.monotonic() > deadline:
            behind = sorted(tp.partition for tp in tps if tp not in at_end)
            raise InputError(
                f"kafka topic {topic!r}: partitions {behind} not read to their end in {timeout_s:.0f} s",
                retriable=True,
            )
        for tp, records in consumer.poll(timeout_ms=500).items():
            for r in records:
                where = f"{tp.topic}/{tp.partition}@{r.offset}"
                try:
                    doc = json.loads(r.value)
                except (TypeError, ValueError) as e:  # None value (a tombstone), not UTF-8, not JSON
                    bad.append(f"{where}: not JSON ({e})")
                    continue
                yield where, doc
        for tp in tps:
            hw = consumer.highwater(tp)
            if hw is not None and consumer.position(tp) >= hw:
                at_end.add(tp)
