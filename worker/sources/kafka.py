"""The Kafka frames source: a consumer group member feeding the pipeline, at-least-once.

One thread (the pipeline's source thread) owns the kafka-python consumer; nothing else calls it.
Each loop turn: apply rebalance results, take the pipeline's delivery feedback (released frames)
into the offset book, commit what moved (asynchronously, every `commit_interval_s`), pause or
resume partitions on backpressure, then `poll()` and hand frames on. Inference never runs here,
so `poll()` keeps the group membership alive.

- Offsets: see `worker.kafka.offsets`. A frame is held from `emit` until the pipeline releases it
  (out of every window buffer, every window using it acked by all sinks); a bad message is held
  until its dead-letter copy is acked. Only the lowest held offset is ever committed.
- Rebalances (`AsyncConsumerRebalanceListener`, on the client's network thread): on revoke,
  commit each partition's commit point with `await consumer.commit_async(...)`. On assign,
  partitions we keep (eager rebalances revoke everything, then hand most of it back) carry on
  from our own position with their window state; partitions we lost have their streams dropped
  from the pipeline and their bookkeeping forgotten; new partitions start from the group's
  committed offset, so their window state is rebuilt from the frames after it.
- A partition whose offsets go backwards (the broker lost its log and the consumer reset) is
  reset: its streams' windows are closed without a partial window, the book starts over.
- Shutdown: stop reading, keep the group alive and take feedback until the pipeline has
  flushed its sinks (`ctx.drained()`), then commit synchronously and leave the group.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka import errors as kerr
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from worker.kafka.align import StreamAligner
from worker.kafka.config import KafkaConnectionConfig, KafkaSourceConfig, ProducerTuning
from worker.kafka.dlq import dead_letter_record
from worker.kafka.frame_codec import H_RESET, BadFrame, FrameDecoder, header
from worker.kafka.offsets import TP, OffsetBook
from worker.kafka.producer import ResilientProducer
from worker.sources.base import FramesReleased, Source, SourceContext, WindowDelivery

log = logging.getLogger("vbw.kafka.source")

_POLL_MS = 100


class _RateLimitedLog:
    """Bad input is logged one line per message, but at most `burst` lines per `period` seconds."""

    def __init__(self, burst: int = 20, period: float = 10.0) -> None:
        self.burst, self.period = burst, period
        self._window_start = 0.0
        self._count = 0
        self._suppressed = 0

    def warning(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._window_start > self.period:
            if self._suppressed:
                log.warning(
                    "%d more bad frame messages not logged in the last %.0fs", self._suppressed, self.period
                )
            self._window_start, self._count, self._suppressed = now, 0, 0
        if self._count < self.burst:
            self._count += 1
            log.warning(msg, *args)
        else:
            self._suppressed += 1


def _dead_letter_counter(metrics: Any) -> Any:
    """vbw_kafka_dead_letters_total{topic,reason}, on the worker's registry when there is one."""
    from prometheus_client import REGISTRY, Counter

    registry = getattr(metrics, "registry", None) or REGISTRY
    name = "vbw_kafka_dead_letters_total"
    existing = getattr(registry, "_names_to_collectors", {}).get(name)
    if existing is not None:
        return existing
    return Counter(
        name,
        "Frame messages that were not frames, by input topic and reason",
        ["topic", "reason"],
        registry=registry,
    )


class _Listener(AsyncConsumerRebalanceListener):
    """Runs on kafka-python's network thread while the source thread is inside poll()."""

    def __init__(self, source: KafkaFrameSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        src = self.source
        offsets = src._revoke_prepare({(tp.topic, tp.partition) for tp in revoked})
        if not offsets:
            return
        try:
            await src._consumer.commit_async(offsets)
            src._commit_done(offsets)
            log.info("rebalance: committed %s before giving partitions up", _fmt(offsets))
        except Exception as e:  # the group moved on without us: the next owner re-reads a bit more
            log.warning(
                "rebalance: commit on revoke failed (%s: %s); uncommitted frames will be re-read",
                type(e).__name__,
                e,
            )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.source._assign({(tp.topic, tp.partition) for tp in assigned})

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        # Membership was lost: committing is no longer allowed; just forget at the next assign.
        self.source._revoke_prepare({(tp.topic, tp.partition) for tp in lost}, commit=False)


def _fmt(offsets: dict[TopicPartition, OffsetAndMetadata]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]@{om.offset}" for tp, om in sorted(offsets.items()))


class KafkaFrameSource(Source):
    live = False  # emit blocks when the pipeline is full; we also pause partitions on congestion
    finite = False
    emit_partial_on_stop = False  # unfinished windows are rebuilt from uncommitted offsets
    commits_after_drain = True  # keep running after stop until the sinks flushed, then commit

    def __init__(
        self,
        cfg: KafkaSourceConfig,
        connection: KafkaConnectionConfig,
        *,
        stride: int,
        max_gap: int = 0,
        worker_id: str = "vbw",
        drain_timeout_s: float = 10.0,
        consumer_factory: Any = KafkaConsumer,
    ) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.connection = connection
        self.worker_id = worker_id
        self.drain_timeout_s = drain_timeout_s
        self._consumer_factory = consumer_factory
        self._consumer: Any = None
        self._lock = threading.Lock()  # book and partition maps: source thread + network thread
        self.book = OffsetBook()
        self.aligner = StreamAligner(stride, max_gap) if cfg.align_windows else None
        self._streams_of: dict[TP, set[str]] = {}
        self._revoked: set[TP] = set()
        self._to_drop: list[str] = []  # streams of lost partitions, dropped by the source thread
        self._floor: dict[TP, int] = {}  # offsets handed to emit() that the pipeline refused
        self._rewinding: set[TP] = set()  # partitions sent back to the start after a lost log
        self._dlq_done: deque[tuple[TP, int, str | None]] = deque()
        self._last_commit = 0.0
        self._paused = False
        self.bad_log = _RateLimitedLog()
        # counters, for tests and the log line at exit
        self.frames = 0
        self.dead_letters = 0
        self.windows_failed = 0

    @classmethod
    def from_config(cls, source_cfg: KafkaSourceConfig, cfg: Any) -> KafkaFrameSource:
        if getattr(cfg, "kafka", None) is None:
            raise ValueError(f"source {source_cfg.id}: a kafka source needs the top-level `kafka` section")
        return cls(
            source_cfg,
            cfg.kafka,
            stride=cfg.windows.stride,
            max_gap=cfg.windows.max_gap,
            worker_id=cfg.worker_id(),
            drain_timeout_s=cfg.pipeline.shutdown_grace_s,
        )

    def stream_ids(self) -> list[str]:
        return []  # streams are the keys we will meet

    def describe(self) -> str:
        return f"kafka:{self.id} topics={','.join(self.cfg.topics)} group={self.cfg.group_id} via {self.connection.describe()}"

    # -- the thread -------------------------------------------------------------------------
    def run(self, ctx: SourceContext) -> None:
        self._dead_letters = _dead_letter_counter(ctx.metrics)
        self._lag = getattr(ctx.metrics, "kafka_lag", None)
        decoder = FrameDecoder(tuple(ctx.image_size), self.cfg.max_message_bytes)  # type: ignore[arg-type]
        dlq = self._dlq_producer()
        consumer = self._connect(ctx)
        if consumer is None:
            return
        try:
            while not ctx.stopping():
                try:
                    self._housekeeping(ctx, dlq)
                    batch = consumer.poll(timeout_ms=_POLL_MS, max_records=self.cfg.max_poll_records)
                except (kerr.KafkaError, AssertionError) as e:
                    # Broker gone, coordinator moved, assignment changed under us (IllegalState):
                    # the client recovers by itself; we go round again.
                    log.warning("kafka source %s: %s: %s", self.id, type(e).__name__, e)
                    ctx.wait(0.5)
                    continue
                self._apply_drops(ctx)
                for records in batch.values():
                    for rec in records:
                        self._handle(ctx, decoder, dlq, rec)
                        if ctx.stopping():
                            break
            self._drain(ctx, dlq)
        finally:
            self._close(consumer, dlq)

    def _connect(self, ctx: SourceContext) -> Any:
        delay = 0.5
        while not ctx.stopping():
            try:
                consumer = self._consumer_factory(
                    **self.connection.kafka_python(),
                    client_id=f"{self.connection.client_id}-{self.id}",
                    group_id=self.cfg.group_id,
                    enable_auto_commit=False,
                    auto_offset_reset=self.cfg.auto_offset_reset,
                    allow_auto_create_topics=False,
                    max_poll_records=self.cfg.max_poll_records,
                    max_partition_fetch_bytes=self.cfg.max_partition_fetch_bytes,
                    fetch_max_bytes=max(50 << 20, self.cfg.max_partition_fetch_bytes),
                    session_timeout_ms=self.cfg.session_timeout_ms,
                    heartbeat_interval_ms=self.cfg.heartbeat_interval_ms,
                    max_poll_interval_ms=self.cfg.max_poll_interval_ms,
                    bootstrap_timeout_ms=5000,  # retried below, without blocking shutdown for long
                )
                consumer.subscribe(topics=list(self.cfg.topics), listener=_Listener(self))
                self._consumer = consumer
                log.info("kafka source %s: subscribed (%s)", self.id, self.describe())
                return consumer
            except (
                kerr.KafkaError,
                OSError,
                ValueError,
            ) as e:  # brokers down, TLS files, a secret not there yet
                log.warning(
                    "kafka source %s: cannot connect: %s: %s (retry in %.1fs)",
                    self.id,
                    type(e).__name__,
                    e,
                    delay,
                )
                ctx.wait(delay)
                delay = min(delay * 2, 10.0)
        return None

    def _dlq_producer(self) -> ResilientProducer | None:
        if not self.cfg.dead_letter_topic:
            return None
        return ResilientProducer(
            self.connection, ProducerTuning(linger_ms=5, batch_size=64 << 10), name=f"{self.id}-dlq"
        )

    # -- per record -------------------------------------------------------------------------
    def _handle(
        self, ctx: SourceContext, decoder: FrameDecoder, dlq: ResilientProducer | None, rec: Any
    ) -> None:
        tp: TP = (rec.topic, rec.partition)
        ref = (rec.topic, rec.partition, rec.offset)
        with self._lock:
            if tp not in self.book:  # the client hands us a partition the listener did not announce
                log.info(
                    "kafka source %s: %s[%d] read without an assignment event; tracking it", self.id, *tp
                )
                self.book.assign(tp, None)
            pos = self.book.position(tp)
        if pos is not None and rec.offset < pos:
            self._reset_partition(ctx, tp, rec.offset, pos)
        t0 = time.perf_counter()
        out = decoder.decode(rec.key, rec.value, rec.headers, rec.timestamp, ref)
        ctx.metrics.stage_seconds("decode", time.perf_counter() - t0)
        if isinstance(out, BadFrame):
            self._bad(ctx, dlq, rec, tp, ref, out)
            return
        reset = header(rec.headers, H_RESET)
        if reset is not None:  # the edge restarted this stream (reconnect, loop): no window spans it
            with self._lock:
                if self.aligner is not None:
                    self.aligner.forget([out.stream_id])
            ctx.stream_reset(out.stream_id, reset.decode("utf-8", "replace") or "reset")
        with self._lock:
            self._streams_of.setdefault(tp, set()).add(out.stream_id)
            if self.aligner is not None and not self.aligner.admit(out.stream_id, out.seq):
                self.book.skip(tp, rec.offset)  # before the stream's first window start
                return
            self.book.hold(tp, rec.offset)
        self.frames += 1
        if not ctx.emit(out):  # stopping: never commit at or past a frame the pipeline refused
            with self._lock:
                self._floor.setdefault(tp, rec.offset)

    def _bad(
        self,
        ctx: SourceContext,
        dlq: ResilientProducer | None,
        rec: Any,
        tp: TP,
        ref: tuple[str, int, int],
        bad: BadFrame,
    ) -> None:
        self.dead_letters += 1
        self._dead_letters.labels(rec.topic, bad.reason.value).inc()
        self.bad_log.warning("kafka source %s: bad frame message %s", self.id, bad)
        if rec.key:
            with contextlib.suppress(UnicodeDecodeError):
                ctx.metrics.decode_error(rec.key.decode("utf-8"))
        if dlq is None:
            with self._lock:
                self.book.skip(tp, rec.offset)
            return
        with self._lock:
            self.book.hold(tp, rec.offset)
        key, value, headers = dead_letter_record(rec.key, rec.value, rec.headers, bad, ref, self.worker_id)
        offset = rec.offset
        dlq.send(
            self.cfg.dead_letter_topic,
            key,
            value,
            headers,
            lambda err: self._dlq_done.append((tp, offset, err)),
        )

    def _reset_partition(self, ctx: SourceContext, tp: TP, offset: int, pos: int) -> None:
        log.warning(
            "kafka source %s: %s[%d] went back from offset %d to %d (broker lost its log?); "
            "closing its streams' windows and starting over",
            self.id, tp[0], tp[1], pos, offset,
        )  # fmt: skip
        with self._lock:
            self.book.reset(tp, offset)
            self._floor.pop(tp, None)
            self._rewinding.discard(tp)
            streams = sorted(self._streams_of.pop(tp, set()))
            if self.aligner is not None:
                self.aligner.forget(streams)
        for s in streams:
            ctx.stream_reset(s, "offset_reset", emit_partial=False)

    # -- loop upkeep ------------------------------------------------------------------------
    def _housekeeping(self, ctx: SourceContext, dlq: ResilientProducer | None) -> None:
        self._apply_drops(ctx)
        self._take_feedback(ctx)
        if dlq is not None:
            dlq.poll()
        now = time.monotonic()
        if now - self._last_commit >= self.cfg.commit_interval_s:
            self._last_commit = now
            self._commit(sync=False)
            self._check_partitions()
        self._flow_control(ctx)

    def _take_feedback(self, ctx: SourceContext) -> None:
        items = ctx.take_feedback()
        done = []
        while self._dlq_done:
            done.append(self._dlq_done.popleft())
        with self._lock:
            for item in items:
                if isinstance(item, FramesReleased):
                    for topic, partition, offset in item.refs:
                        self.book.release((topic, partition), offset)
                elif isinstance(item, WindowDelivery) and not item.ok:
                    self.windows_failed += 1  # its frames stay held: re-read after a restart
            for tp, offset, err in done:
                if err is not None:
                    log.error(
                        "kafka source %s: dead letter %s[%d]@%d not delivered: %s",
                        self.id,
                        tp[0],
                        tp[1],
                        offset,
                        err,
                    )
                self.book.release(tp, offset)

    def _flow_control(self, ctx: SourceContext) -> None:
        consumer = self._consumer
        parts = consumer.assignment()  # a copy; pause() of one revoked meanwhile raises IllegalState
        if ctx.congested():
            if parts:
                consumer.pause(*parts)  # also pauses partitions assigned since the last pause
            self._paused = True
        elif self._paused:
            if parts:
                consumer.resume(*parts)
            self._paused = False

    def _due(self) -> dict[TopicPartition, OffsetAndMetadata]:
        with self._lock:
            due = self.book.due()
            out = {}
            for tp, point in due.items():
                floor = self._floor.get(tp)
                if floor is not None:
                    point = min(point, floor)
                out[TopicPartition(*tp)] = OffsetAndMetadata(point, "", -1)
            return out

    def _commit(self, sync: bool) -> None:
        offsets = self._due()
        if not offsets:
            return
        consumer = self._consumer
        try:
            if sync:
                consumer.commit(offsets, timeout_ms=5000)
                self._commit_done(offsets)
            else:
                consumer.commit_async(
                    offsets,
                    callback=lambda offs, resp: (
                        None if isinstance(resp, BaseException) else self._commit_done(offs)
                    ),
                )
        except (kerr.KafkaError, AssertionError) as e:  # rebalancing, coordinator moved: retried next time
            log.info(
                "kafka source %s: commit %s deferred: %s: %s", self.id, _fmt(offsets), type(e).__name__, e
            )

    def _commit_done(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        with self._lock:
            for tp, om in offsets.items():
                self.book.mark_committed((tp.topic, tp.partition), om.offset)

    def _check_partitions(self) -> None:
        """Lag per partition, and a log that restarted below our position.

        Our position can never pass the high watermark of a sane log. If it does, the broker lost
        the log (restarted empty, topic recreated) and, unlike Apache Kafka, may answer fetches
        beyond its end with nothing rather than OffsetOutOfRange: read it again from the start;
        the offsets going back then reset the partition's bookkeeping and its streams.
        """
        consumer = self._consumer
        assigned = consumer.assignment()
        with self._lock:
            parts = [(tp, self.book.position(tp)) for tp in self.book.assigned()]
        for (topic, partition), pos in parts:
            tp = TopicPartition(topic, partition)
            if tp not in assigned:
                continue
            hw = consumer.highwater(tp)
            if hw is None or pos is None:
                continue
            if pos > hw:
                if (topic, partition) in self._rewinding:
                    continue  # asked already; the reset happens when its first record comes
                self._rewinding.add((topic, partition))
                log.warning(
                    "kafka source %s: %s[%d] ends at %d, below our position %d: the log was lost; "
                    "reading it again from the start",
                    self.id, topic, partition, hw, pos,
                )  # fmt: skip
                consumer.seek_to_beginning(tp)
            elif self._lag is not None:
                with self._lock:  # a revoke meanwhile removed its series: do not bring it back
                    if (topic, partition) in self.book:
                        self._lag.labels(topic, str(partition)).set(hw - pos)

    # -- rebalance (network thread) -----------------------------------------------------------
    def _revoke_prepare(self, tps: set[TP], commit: bool = True) -> dict[TopicPartition, OffsetAndMetadata]:
        with self._lock:
            self._revoked |= tps
            if not commit:
                return {}
            out = {}
            for tp in tps:
                point = self.book.commit_point(tp)
                floor = self._floor.get(tp)
                if floor is not None and point is not None:
                    point = min(point, floor)
                if point is not None:
                    out[TopicPartition(*tp)] = OffsetAndMetadata(point, "", -1)
            return out

    def _assign(self, assigned: set[TP]) -> None:
        consumer = self._consumer
        with self._lock:
            kept = self._revoked & assigned
            lost = self._revoked - assigned
            self._revoked.clear()
            for tp in lost:
                self.book.revoke(tp)
                self._floor.pop(tp, None)
                self._to_drop.extend(self._streams_of.pop(tp, ()))
                if self._lag is not None:
                    # Its new owner reports it now; a stale series here would double the group's lag.
                    with contextlib.suppress(KeyError):
                        self._lag.remove(tp[0], str(tp[1]))
            new = assigned - kept - set(self.book.assigned())
            for tp in new:
                self.book.assign(tp, None)
            seeks = [(tp, self.book.position(tp)) for tp in kept]
        for tp, pos in seeks:
            if pos is not None:  # carry on where we were; the window state is still ours
                consumer.seek(TopicPartition(*tp), pos)
        if lost or new:
            log.info(
                "kafka source %s: assignment: +%s -%s (kept %d)",
                self.id, sorted(new), sorted(lost), len(kept),
            )  # fmt: skip

    def _apply_drops(self, ctx: SourceContext) -> None:
        with self._lock:
            drops, self._to_drop = self._to_drop, []
            if drops and self.aligner is not None:
                self.aligner.forget(drops)
        if drops:
            ctx.drop_streams(sorted(set(drops)), "revoked")

    # -- shutdown ---------------------------------------------------------------------------
    def _drain(self, ctx: SourceContext, dlq: ResilientProducer | None) -> None:
        """Stopped reading; wait for the pipeline's last acks, then commit for good."""
        consumer = self._consumer
        parts = consumer.assignment()
        if parts:
            consumer.pause(*parts)
        drained = getattr(ctx, "drained", None)
        deadline = time.monotonic() + self.drain_timeout_s
        while time.monotonic() < deadline and not (drained is not None and drained()):
            self._apply_drops(ctx)
            self._take_feedback(ctx)
            if dlq is not None:
                dlq.poll()
            try:
                consumer.poll(timeout_ms=50)  # paused: no records, but the group stays joined
            except kerr.KafkaError:
                time.sleep(0.05)
            if drained is None and not self._has_inflight():
                break
        if dlq is not None:
            dlq.flush(max(0.5, deadline - time.monotonic()))
        self._take_feedback(ctx)
        self._commit(sync=True)
        with self._lock:
            points = {tp: self.book.commit_point(tp) for tp in self.book.assigned()}
        log.info(
            "kafka source %s: stopped after %d frames, %d dead letters; committed %s",
            self.id, self.frames, self.dead_letters,
            ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(points.items())) or "nothing",
        )  # fmt: skip

    def _has_inflight(self) -> bool:
        with self._lock:
            return any(self.book.held_count(tp) for tp in self.book.assigned())

    def _close(self, consumer: Any, dlq: ResilientProducer | None) -> None:
        if dlq is not None:
            dlq.close(timeout=2.0)
        try:
            consumer.close(autocommit=False, timeout_ms=5000)
        except Exception as e:
            log.warning("kafka source %s: close: %s: %s", self.id, type(e).__name__, e)
