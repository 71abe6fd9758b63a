"""A kafka-python producer that survives its own fatal states, keeping every unacked message.

kafka-python's idempotent producer can enter a state it never leaves: after a broker restart
it gets UnknownProducerId, then InitProducerId fails, and every later send fails (seen with
Tansu, see test-services.md). Timeouts while the broker is down leave sequence gaps with the
same effect. So: every message stays in `_pending` until its ack; a failure other than one
that resending cannot fix marks the producer broken, and the owner thread's next `poll()`
closes it, builds a new one and resends everything still pending, in the original order.
A rebuild is retried with backoff while the brokers are unreachable.

Callbacks (`on_done(None)` on ack, `on_done("reason")` on a permanent failure) run exactly once
per message, on the producer's I/O thread or on the owner thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka import errors as kerr

from contracts.types import DeliveryCallback, Headers
from worker.kafka.config import KafkaConnectionConfig, ProducerTuning

log = logging.getLogger(__name__)

# Errors that resending the same bytes cannot fix: the message fails, the producer stays.
_PERMANENT = (
    kerr.MessageSizeTooLargeError,
    kerr.RecordListTooLargeError,
    kerr.InvalidRecordError,
    kerr.CorruptRecordError,
    kerr.InvalidTopicError,
    kerr.TopicAuthorizationFailedError,
)


@dataclass(slots=True)
class _Pending:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    on_done: DeliveryCallback
    generation: int = -1  # producer generation it was last sent on


class ResilientProducer:
    """Owned by one thread (the sink thread, or the source thread for dead letters)."""

    def __init__(
        self,
        connection: KafkaConnectionConfig,
        tuning: ProducerTuning,
        name: str,
        factory: Callable[..., Any] = KafkaProducer,
    ) -> None:
        self.connection = connection
        self.tuning = tuning
        self.name = name
        self._factory = factory
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}  # insertion order = send order
        self._next_id = 0
        self._producer: Any = None
        self._generation = 0
        self._broken = True  # no producer yet: build on first use
        self._retry_at = 0.0
        self._backoff = 0.5
        self._closed = False
        self.recreations = 0  # producers rebuilt after a failure (the first build not counted)
        self.resent = 0  # messages sent again on a rebuilt producer
        self.last_error: str | None = None

    # -- public -------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, on_done: DeliveryCallback
    ) -> None:
        """Queue one message; `on_done` fires once, when it is acked or has failed for good.

        Blocks (serving `poll`) while `max_pending` messages are unacked: backpressure.
        """
        if self._closed:
            raise RuntimeError(f"producer {self.name} is closed")
        while self.pending >= self.tuning.max_pending:
            self.poll()
            time.sleep(0.005)
        with self._lock:
            mid = self._next_id
            self._next_id += 1
            msg = _Pending(topic, key, value, headers, on_done)
            self._pending[mid] = msg
        self.poll()
        if not self._broken:
            self._send(mid, msg)

    def poll(self) -> None:
        """Owner thread's hook: rebuild a broken producer and resend what is pending."""
        if self._closed or not self._broken or time.monotonic() < self._retry_at:
            return
        self._rebuild()

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is pending (acked or failed), rebuilding as needed. True if empty."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            self.poll()
            producer = self._producer
            if producer is not None and not self._broken:
                try:
                    producer.flush(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
                except kerr.KafkaTimeoutError:
                    pass
                except kerr.KafkaError as e:
                    self._mark_broken(f"flush: {e}")
            else:
                time.sleep(0.02)
        return self.pending == 0

    def close(self, timeout: float = 5.0) -> None:
        """Close the producer. Messages still pending are failed with reason 'closed'."""
        if self._closed:
            return
        self._closed = True
        if self._producer is not None:
            self._close_producer(self._producer, timeout)
            self._producer = None
        with self._lock:
            left = list(self._pending.values())
            self._pending.clear()
        for msg in left:
            msg.on_done(f"{self.name}: producer closed before the ack")

    # -- internals ----------------------------------------------------------------------------
    def _send(self, mid: int, msg: _Pending) -> None:
        gen = self._generation
        msg.generation = gen
        try:
            fut = self._producer.send(msg.topic, key=msg.key, value=msg.value, headers=msg.headers)
        except _PERMANENT as e:
            self._finish(mid, gen, f"{msg.topic}: {type(e).__name__}: {e}")
            return
        except (kerr.KafkaError, AssertionError, OSError) as e:
            # Fatal producer state, metadata timeout (topic gone), closed sender...: rebuild and resend.
            self._mark_broken(f"send to {msg.topic}: {type(e).__name__}: {e}")
            return
        fut.add_callback(self._on_ack, mid, gen)
        fut.add_errback(self._on_error, mid, gen)

    def _on_ack(self, mid: int, gen: int, _meta: Any) -> None:
        self._backoff = 0.5  # the producer works: the next failure is retried quickly again
        self._finish(mid, gen, None)

    def _on_error(self, mid: int, gen: int, exc: BaseException) -> None:
        with self._lock:
            msg = self._pending.get(mid)
        if msg is None or msg.generation != gen:
            return  # already acked, or resent on a newer producer
        if isinstance(exc, _PERMANENT):
            self._finish(mid, gen, f"{msg.topic}: {type(exc).__name__}: {exc}")
        else:
            self._mark_broken(f"{msg.topic}: {type(exc).__name__}: {exc}")

    def _finish(self, mid: int, gen: int, error: str | None) -> None:
        with self._lock:
            msg = self._pending.get(mid)
            if msg is None or msg.generation != gen:
                return
            del self._pending[mid]
        msg.on_done(error)

    def _mark_broken(self, why: str) -> None:
        with self._lock:
            if self._broken:
                return
            self._broken = True
            self.last_error = why
            # a producer that fails again right after a rebuild is rebuilt more and more slowly
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, 10.0)
        log.warning(
            "kafka producer %s failed (%s); it will be rebuilt and unacked messages resent", self.name, why
        )

    def _rebuild(self) -> None:
        old, self._producer = self._producer, None
        if old is not None:
            self._close_producer(old, 1.0)
            self.recreations += 1
        try:
            kwargs = {
                **self.connection.kafka_python(),
                **self.tuning.kafka_python(),
                "client_id": f"{self.connection.client_id}-{self.name}",
            }
            self._producer = self._factory(**kwargs)
        except (kerr.KafkaError, OSError, ValueError) as e:  # brokers unreachable, TLS files...: retry
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, 10.0)
            self.last_error = f"cannot build producer: {type(e).__name__}: {e}"
            log.warning("kafka producer %s: %s (retry in %.1fs)", self.name, self.last_error, self._backoff)
            return
        with self._lock:
            self._generation += 1
            self._broken = False
            resend = list(self._pending.items())
        if old is not None and resend:
            log.info("kafka producer %s rebuilt; resending %d unacked messages", self.name, len(resend))
            self.resent += len(resend)
        for mid, msg in resend:
            if self._broken:
                break
            self._send(mid, msg)

    @staticmethod
    def _close_producer(producer: Any, timeout: float) -> None:
        try:
            producer.close(timeout=timeout)
        except Exception as e:  # a broken producer may fail to close cleanly; it is discarded anyway
            log.debug("closing a failed producer: %s", e)
