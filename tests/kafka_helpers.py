"""Helpers for the Kafka tests: paced frame publishers, an output-topic reader, worker configs.

(At the top of tests/, not in tests/kafka/: a module there could not be imported without
shadowing the kafka-python package.)
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from services.tansu import FAST_GROUP

from worker.frames import Frame
from worker.messages import window_id


def synthetic_image(stream: int, seq: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """A moving bar: cheap, deterministic, different per stream and frame."""
    h, w = size
    img = np.full((h, w, 3), 30 + 40 * stream, np.uint8)
    x = (seq * 3 + stream * 7) % w
    img[:, max(0, x - 4) : x + 4] = 230
    return img


class FramePublisher(threading.Thread):
    """Publishes `n` frames per stream (seq 0..n-1) as JPEG frame messages, paced to `fps` per stream."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        streams: list[str],
        n: int,
        fps: float = 0.0,
        bad_every: int = 0,
        bad_messages: list[tuple] | None = None,
        start_seq: int = 0,
    ) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.streams, self.n, self.fps = bootstrap, topic, streams, n, fps
        self.bad_every = bad_every
        self.bad_messages = list(bad_messages or [])
        self.start_seq = start_seq
        self.sent = 0
        self.bad_sent = 0
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._pause = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        from kafka import KafkaProducer

        from worker.kafka.frame_codec import FrameEncoder

        enc = FrameEncoder("jpeg")
        producer = None
        try:
            producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, enable_idempotence=False)
            t0 = time.monotonic()
            for seq in range(self.start_seq, self.start_seq + self.n):
                if self._halt.is_set():
                    break
                if self.fps:
                    delay = t0 + (seq - self.start_seq) / self.fps - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                for i, s in enumerate(self.streams):
                    key, value, headers = enc.encode(
                        Frame(s, seq, seq / 8.0, time.time(), synthetic_image(i, seq))
                    )
                    producer.send(self.topic, key=key, value=value, headers=headers)
                    self.sent += 1
                    if self.bad_every and self.bad_messages and self.sent % self.bad_every == 0:
                        k, v, h = self.bad_messages.pop()
                        producer.send(self.topic, key=k, value=v, headers=list(h))
                        self.bad_sent += 1
            while self.bad_messages:  # whatever is left goes at the end
                k, v, h = self.bad_messages.pop()
                producer.send(self.topic, key=k, value=v, headers=list(h))
                self.bad_sent += 1
            producer.flush(30)
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            if producer is not None:
                producer.close(timeout=5)


def expected_windows(
    streams: list[str], n: int, size: int, stride: int, version: str, start: int = 0
) -> set[str]:
    """Complete windows of streams with contiguous seqs start..start+n-1, on the stride grid."""
    first = -(-start // stride) * stride
    return {window_id(s, k, version) for s in streams for k in range(first, start + n - size + 1, stride)}


class TopicReader(threading.Thread):
    """Reads a topic from the beginning, continuously, with a real confluent-kafka consumer."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.messages: list[Any] = []
        self.lock = threading.Lock()
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"reader-{self.topic}-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "allow.auto.create.topics": False,
            }
        )
        try:
            md = c.list_topics(self.topic, timeout=10)
            c.assign([TopicPartition(self.topic, p, 0) for p in md.topics[self.topic].partitions])
            while not self._halt.is_set():
                msg = c.poll(0.2)
                if msg is None or msg.error():
                    continue
                with self.lock:
                    self.messages.append(msg)
        finally:
            c.close()

    def snapshot(self) -> list[Any]:
        with self.lock:
            return list(self.messages)

    def docs(self) -> list[dict]:
        return [json.loads(m.value()) for m in self.snapshot()]

    def ids(self) -> set[str]:
        return {dict(m.headers())["window_id"].decode() for m in self.snapshot()}


def worker_config(
    bootstrap: str,
    model_dir: Path,
    *,
    topics: tuple[str, ...] = ("frames",),
    group: str = "workers",
    dlq: str | None = "dlq",
    stride: int = 4,
    worker_id: str = "w1",
    embeddings_dtype: str = "float32",
    **source_extra: Any,
) -> dict[str, Any]:
    return {
        "sources": [
            {
                "type": "kafka",
                "id": "frames",
                "topics": list(topics),
                "group_id": group,
                "dead_letter_topic": dlq,
                "commit_interval_s": 0.2,
                **FAST_GROUP,
                **source_extra,
            }
        ],
        "windows": {"stride": stride},
        "engine": {"model_dir": str(model_dir), "backend": "onnxruntime", "precision": "fp32", "threads": 1},
        "sinks": [
            {"type": "kafka", "topic": "labels"},
            {"type": "kafka", "topic": "emb", "payload": "embeddings", "dtype": embeddings_dtype},
        ],
        "kafka": {"bootstrap_servers": [bootstrap]},
        "pipeline": {"shutdown_grace_s": 15, "worker_id": worker_id},
        "logging": {"level": "INFO"},
    }


def escaped_errors(stderr: str) -> list[str]:
    """Log records of the worker with a traceback or a failed thread/source, leaving out kafka-python's
    own records (it logs the connection resets it handles with a traceback)."""
    import re

    records: list[str] = []
    for line in stderr.splitlines():
        if re.match(r"^\d{4}-\d\d-\d\d ", line) or not records:
            records.append(line)
        else:
            records[-1] += "\n" + line
    bad = []
    for r in records:
        head = r.split("\n", 1)[0]
        if re.match(r"^\S+ \S+ \S+\s+kafka\.", head):
            continue
        if "Traceback" in r or " failed: " in head or "thread ended" in head:
            bad.append(r)
    return bad
