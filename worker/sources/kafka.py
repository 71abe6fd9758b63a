"""The Kafka frames source: a consumer group member feeding the pipeline, at-least-once.

One thread (the pipeline's source thread) owns the kafka-python consumer; nothing else calls it.
Each loop turn: apply rebalance results, take the pipeline's delivery feedback (released frames)
into the partition state, commit what moved (asynchronously, every `commit_interval_s`), pause or
resume partitions on backpressure, then `poll()` and hand frames on. Inference never runs here,
so `poll()` keeps the group membership alive.

- Partition state and its locking rule (the rebalance listener runs on the client's network
  thread): `worker.kafka.partitions.PartitionState`. This module does the I/O around it.
- Offsets: see `worker.kafka.offsets`. A frame is held from `emit` until the pipeline releases it
  (out of every window buffer, every window using it acked by all sinks); a bad message is held
  until its dead-letter copy is acked. Only the lowest held offset is ever committed.
- Rebalances: on revoke, commit each partition's commit point. On assign, partitions we keep
  carry on from our own position with their window state; partitions we lost have their
  streams dropped and their `vbw_stream_up` and lag series removed (the new owner reports
  them); new ones start from the group's committed offset. A stream is up from its first frame
  on a partition we own.
- Offsets going backwards (`OffsetRegression`: the broker lost its log) reset the partition: its
  streams' windows are closed without a partial window, the book starts over. A topic whose id
  changed (recreated, or a broker back with empty storage) is reset the same way at once and read
  from the start: its new offsets could otherwise look like a continuation of the old ones.
- Shutdown: stop reading, keep the group alive and take feedback until the pipeline has
  flushed its sinks (`ctx.drained()`), then commit synchronously and leave the group.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka import errors as kerr
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from worker.backoff import Backoff
from worker.config import VbwConfig
from worker.kafka.align import StreamAligner
from worker.kafka.config import KafkaConnectionConfig, KafkaSourceConfig, ProducerTuning
from worker.kafka.dlq import RateLimitedLog, dead_letter_record
from worker.kafka.frame_codec import H_RESET, BadFrame, FrameDecoder, Reason, header
from worker.kafka.offsets import TP, OffsetRegression
from worker.kafka.partitions import PartitionState
from worker.kafka.producer import ResilientProducer
from worker.sources.base import FramesReleased, Source, SourceContext, SourceRef, WindowDelivery

log = logging.getLogger("vbw.kafka.source")

_POLL_MS = 100


class _Listener(AsyncConsumerRebalanceListener):
    """Runs on kafka-python's network thread, whenever the group rebalances."""

    def __init__(self, source: KafkaFrameSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        src = self.source
        offsets = _offsets(src.state.revoke_prepare((tp.topic, tp.partition) for tp in revoked))
        if not offsets:
            return
        try:
            await src._consumer.commit_async(offsets)
            src._commit_done(offsets)
            log.info("rebalance: committed %s before giving partitions up", _fmt(offsets))
        except Exception as e:  # the group moved on without us: the next owner re-reads a bit more
            msg = "rebalance: commit on revoke failed (%s: %s); uncommitted frames will be re-read"
            log.warning(msg, type(e).__name__, e)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.source._assign({(tp.topic, tp.partition) for tp in assigned})

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        # Membership was lost: committing is no longer allowed; just forget at the next assign.
        self.source.state.revoke_prepare(((tp.topic, tp.partition) for tp in lost), commit=False)


def _offsets(points: dict[TP, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {TopicPartition(*tp): OffsetAndMetadata(point, "", -1) for tp, point in points.items()}


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
        # partition state, shared with the rebalance listener (its lock rule is in partitions.py)
        self.state = PartitionState(StreamAligner(stride, max_gap) if cfg.align_windows else None)
        self._dlq_done: deque[tuple[TP, int, str | None]] = deque()
        self._last_commit = 0.0
        self._paused = False
        self._topic_ids: dict[str, Any] = {}  # topic -> its id (uuid) when last seen
        self.bad_log = RateLimitedLog(log)
        # counters, for tests and the log line at exit
        self.frames = 0
        self.dead_letters = 0
        self.windows_failed = 0

    @classmethod
    def from_config(cls, source_cfg: KafkaSourceConfig, cfg: VbwConfig) -> KafkaFrameSource:
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
        decoder = FrameDecoder(tuple(ctx.image_size), self.cfg.max_message_bytes)  # type: ignore[arg-type]
        ctx.metrics.register_dead_letters(self.cfg.topics, [r.value for r in Reason])
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
                self._apply_lost(ctx)
                for records in batch.values():
                    for rec in records:
                        self._handle(ctx, decoder, dlq, rec)
                        if ctx.stopping():
                            break
            self._drain(ctx, dlq)
        finally:
            self._close(consumer, dlq)

    def _connect(self, ctx: SourceContext) -> Any:
        backoff = Backoff(initial_s=0.5, max_s=10.0)
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
            except (kerr.KafkaError, OSError, ValueError) as e:  # brokers down, TLS files, a secret not yet
                delay = backoff.next_delay()
                log.warning(
                    "kafka source %s: cannot connect: %s: %s (retry in %.1fs)",
                    self.id,
                    type(e).__name__,
                    e,
                    delay,
                )
                ctx.wait(delay)
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
        try:
            if self.state.arrive(tp, rec.offset):
                log.info(
                    "kafka source %s: %s[%d] read without an assignment event; tracking it", self.id, *tp
                )
        except OffsetRegression as e:
            self._reset_partition(ctx, e)
        t0 = time.perf_counter()
        out = decoder.decode(rec.key, rec.value, rec.headers, rec.timestamp, ref)
        ctx.metrics.stage_seconds("decode", time.perf_counter() - t0)
        if isinstance(out, BadFrame):
            self._bad(ctx, dlq, rec, out)
            return
        reset = header(rec.headers, H_RESET)
        if reset is not None:  # the edge restarted this stream (reconnect, loop): no window spans it
            self.state.stream_restarted(out.stream_id)
            ctx.stream_reset(out.stream_id, reset.decode("utf-8", "replace") or "reset")
        took = self.state.take_frame(tp, rec.offset, out.stream_id, out.seq)
        if took.first_on_partition:  # up while its partition is ours; `_apply_lost` takes it down
            ctx.metrics.stream_up(out.stream_id, True)
        if not took.held:  # before the stream's window grid, or the partition is gone
            return
        self.frames += 1
        if not ctx.emit(out):  # stopping: never commit at or past a frame the pipeline refused
            self.state.refused(tp, rec.offset)

    def _bad(self, ctx: SourceContext, dlq: ResilientProducer | None, rec: Any, bad: BadFrame) -> None:
        tp, offset, ref = (rec.topic, rec.partition), rec.offset, (rec.topic, rec.partition, rec.offset)
        self.dead_letters += 1
        ctx.metrics.dead_letter(rec.topic, bad.reason.value)
        self.bad_log.warning("kafka source %s: bad frame message %s", self.id, bad)
        if rec.key:
            with contextlib.suppress(UnicodeDecodeError):
                ctx.metrics.decode_error(rec.key.decode("utf-8"))
        if dlq is None:
            self.state.skip(tp, offset)
            return
        if not self.state.hold(tp, offset):
            return  # the partition went to another member, which reads this record again
        key, value, headers = dead_letter_record(rec.key, rec.value, rec.headers, bad, ref, self.worker_id)

        def done(err: str | None) -> None:  # called from dlq.poll(), in this thread
            self._dlq_done.append((tp, offset, err))

        dlq.send(self.cfg.dead_letter_topic, key, value, headers, done)

    def _reset_partition(self, ctx: SourceContext, e: OffsetRegression) -> None:
        (topic, partition), offset = e.tp, e.offset
        log.warning(
            "kafka source %s: %s[%d] went back from offset %d to %d (broker lost its log?); "
            "closing its streams' windows and starting over",
            self.id, topic, partition, e.position, offset,
        )  # fmt: skip
        for s in self.state.reset_partition(e.tp, offset):
            ctx.stream_reset(s, "offset_reset", emit_partial=False)

    # -- loop upkeep ------------------------------------------------------------------------
    def _housekeeping(self, ctx: SourceContext, dlq: ResilientProducer | None) -> None:
        self._apply_lost(ctx)
        self._take_feedback(ctx)
        if dlq is not None:
            dlq.poll()
        now = time.monotonic()
        if now - self._last_commit >= self.cfg.commit_interval_s:
            self._last_commit = now
            self._commit(sync=False)
            self._check_partitions(ctx)
        self._flow_control(ctx)

    def _take_feedback(self, ctx: SourceContext) -> None:
        released: list[SourceRef] = []
        for item in ctx.take_feedback():
            if isinstance(item, FramesReleased):
                released.extend(item.refs)
            elif isinstance(item, WindowDelivery) and not item.ok:
                self.windows_failed += 1  # its frames stay held: re-read after a restart
        while self._dlq_done:
            tp, offset, err = self._dlq_done.popleft()
            if err is not None:
                log.error(
                    "kafka source %s: dead letter %s[%d]@%d not delivered: %s", self.id, *tp, offset, err
                )
            released.append((*tp, offset))
        self.state.release(released)

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

    def _commit(self, sync: bool) -> None:
        offsets = _offsets(self.state.due_commits())
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
        self.state.committed({(tp.topic, tp.partition): om.offset for tp, om in offsets.items()})

    def _check_partitions(self, ctx: SourceContext) -> None:
        """Lag per partition, and a log that restarted below our position.

        Our position can never pass the high watermark of a sane log. If it does, the broker lost
        the log (restarted empty, topic recreated) and, unlike Apache Kafka, may answer fetches
        beyond its end with nothing rather than OffsetOutOfRange: read it again from the start;
        the offsets going back then reset the partition's bookkeeping and its streams.
        """
        consumer = self._consumer
        assigned = consumer.assignment()
        self._check_topic_ids(ctx, assigned)
        for topic, partition in self.state.partitions():
            tp = TopicPartition(topic, partition)
            hw = consumer.highwater(tp) if tp in assigned else None
            if hw is None:
                continue
            pos = self.state.observe_highwater((topic, partition), hw, ctx.metrics)
            if pos is not None:
                log.warning(
                    "kafka source %s: %s[%d] ends at %d, below our position %d: the log was lost; "
                    "reading it again from the start",
                    self.id, topic, partition, hw, pos,
                )  # fmt: skip
                consumer.seek_to_beginning(tp)

    def _check_topic_ids(self, ctx: SourceContext, assigned: set[TopicPartition]) -> None:
        """A topic whose id changed was deleted and created again (or the broker came back empty):
        its new log shares nothing with the old one but offset numbers. Our position can then be
        a valid offset of the new log (the producers wrote as much again before we fetched), so
        neither the high watermark nor going back would show it: reset its partitions now and
        read the new logs from the start, before an old position is committed into them."""
        # kafka-python keeps topic ids (KIP-516) in its cluster metadata and offers no public
        # accessor on the consumer; without one (an older client) this check is skipped.
        cluster = getattr(getattr(self._consumer, "_client", None), "cluster", None)
        topic_id = getattr(cluster, "topic_id", None)
        if topic_id is None:
            return
        for topic in self.cfg.topics:
            now = topic_id(topic)
            if now is None:
                continue
            before = self._topic_ids.get(topic)
            self._topic_ids[topic] = now
            if before is None or before == now:
                continue
            for tp in sorted((tp for tp in assigned if tp.topic == topic), key=lambda tp: tp.partition):
                log.warning(
                    "kafka source %s: topic %s was recreated (id %s -> %s); %s[%d] is a new log: "
                    "closing its streams' windows and reading it from the start",
                    self.id, topic, before, now, topic, tp.partition,
                )  # fmt: skip
                for s in self.state.reset_partition((topic, tp.partition), 0):
                    ctx.stream_reset(s, "offset_reset", emit_partial=False)
                self._consumer.seek_to_beginning(tp)

    # -- rebalance --------------------------------------------------------------------------
    def _assign(self, assigned: set[TP]) -> None:
        """Network thread: settle the assignment; kept partitions carry on where we were."""
        change = self.state.assign(assigned)
        for tp, pos in change.seeks.items():  # the window state is still ours
            self._consumer.seek(TopicPartition(*tp), pos)
        if change.lost or change.new:
            log.info(
                "kafka source %s: assignment: +%s -%s (kept %d)",
                self.id, sorted(change.new), sorted(change.lost), len(change.kept),
            )  # fmt: skip

    def _apply_lost(self, ctx: SourceContext) -> None:
        """Source thread: drop the window state and the series of what went to another member."""
        lost = self.state.take_lost()
        if lost.streams:
            ctx.drop_streams(lost.streams, "revoked")
        for s in lost.streams:  # its new owner reports it now; a 0 here would fire VbwStreamDown
            ctx.metrics.stream_gone(s)
        for topic, partition in lost.partitions:  # likewise: a stale lag would double the group's
            ctx.metrics.consumer_lag_gone(topic, partition)

    # -- shutdown ---------------------------------------------------------------------------
    def _drain(self, ctx: SourceContext, dlq: ResilientProducer | None) -> None:
        """Stopped reading; wait for the pipeline's last acks, then commit for good."""
        consumer = self._consumer
        parts = consumer.assignment()
        if parts:
            consumer.pause(*parts)
        deadline = time.monotonic() + self.drain_timeout_s
        while time.monotonic() < deadline and not ctx.drained():
            self._apply_lost(ctx)
            self._take_feedback(ctx)
            if dlq is not None:
                dlq.poll()
            try:
                consumer.poll(timeout_ms=50)  # paused: no records, but the group stays joined
            except kerr.KafkaError:
                time.sleep(0.05)
        if dlq is not None:
            dlq.flush(max(0.5, deadline - time.monotonic()))
        self._take_feedback(ctx)
        self._commit(sync=True)
        points = self.state.commit_points()
        log.info(
            "kafka source %s: stopped after %d frames, %d dead letters; committed %s",
            self.id, self.frames, self.dead_letters,
            ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(points.items())) or "nothing",
        )  # fmt: skip

    def _close(self, consumer: Any, dlq: ResilientProducer | None) -> None:
        if dlq is not None:
            dlq.close(timeout=2.0)
        try:
            consumer.close(autocommit=False, timeout_ms=5000)
        except Exception as e:
            log.warning("kafka source %s: close: %s: %s", self.id, type(e).__name__, e)
