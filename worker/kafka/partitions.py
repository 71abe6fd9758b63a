"""What one Kafka consumer knows about its partitions, behind one lock.

`PartitionState` owns, per partition: the offset book (held records, commit points), the
streams met on it, the commit floor (offsets handed on that the pipeline refused), the rewind
flag (log lost, read again from the start) and, per stream, the window-grid aligner. It also
decides when a partition's consumer-lag series may be set. No Kafka client, no pipeline: the
source asks, this object answers, and the source does the I/O.

Note on locking: the state is shared between the source thread (records, feedback, commits,
lag checks) and kafka-python's network thread, which runs the rebalance listener
(`revoke_prepare`, `assign`) whenever the group rebalances, not only inside `poll()`. Every
field is read and written only while holding `self._lock`, and every public method takes it
for its whole body, so each method is one atomic step and a caller never holds it itself. The
lock is never held across I/O (decode, emit, commits, seeks, the pipeline's controls): methods
return what to do and the caller does it after. Two consequences the callers rely on:

- A partition leaves the book (`assign`, lost) under the lock, and its lag is set
  (`observe_highwater`) only under the lock while the partition is in the book; so once a lost
  partition's series has been removed (`take_lost`), a lag check racing the revoke cannot
  bring it back.
- Records of a partition lost between `arrive` and `take_frame`/`hold` are not ours any more:
  those methods say so (False) instead of raising, and the record is not handed on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from worker.kafka.align import StreamAligner
from worker.kafka.offsets import TP, OffsetBook


class LagMetrics(Protocol):
    def consumer_lag(self, topic: str, partition: int, lag: int) -> None: ...


class FrameTake(NamedTuple):
    held: bool  # hand the frame on (held until released); False: skipped, or not ours any more
    first_on_partition: bool  # the stream was not known on this partition until now


@dataclass(frozen=True)
class Assignment:
    """What an assignment changed, for the listener to act on outside the lock."""

    kept: frozenset[TP]
    lost: frozenset[TP]
    new: frozenset[TP]
    seeks: dict[TP, int] = field(default_factory=dict)  # kept partitions: carry on from here


@dataclass(frozen=True)
class Lost:
    """Partitions gone to another member since the last call, and the streams read from them."""

    partitions: tuple[TP, ...] = ()
    streams: tuple[str, ...] = ()


class PartitionState:
    def __init__(self, aligner: StreamAligner | None = None) -> None:
        self._lock = threading.Lock()
        self._book = OffsetBook()
        self._aligner = aligner
        self._streams_of: dict[TP, set[str]] = {}
        self._revoked: set[TP] = set()  # revoked, not yet re-assigned or given up
        self._lost_parts: list[TP] = []  # lost partitions not yet taken by the source thread
        self._lost_streams: list[str] = []
        self._floor: dict[TP, int] = {}  # the lowest offset the pipeline refused, per partition
        self._rewinding: set[TP] = set()  # sent back to the start after a lost log

    # -- records (source thread) ---------------------------------------------------------------
    def arrive(self, tp: TP, offset: int) -> bool:
        """A record was read. True if its partition was never announced (now tracked).

        Raises `OffsetRegression` when it lies below the read position: `reset_partition`."""
        with self._lock:
            unannounced = tp not in self._book
            if unannounced:
                self._book.assign(tp, None)
            self._book.check(tp, offset)
            return unannounced

    def reset_partition(self, tp: TP, offset: int) -> list[str]:
        """The partition's log restarted below our position: forget its holds, floor and streams
        and read on from `offset`. Returns the streams whose windows must be closed."""
        with self._lock:
            self._book.reset(tp, offset)
            self._floor.pop(tp, None)
            self._rewinding.discard(tp)
            streams = sorted(self._streams_of.pop(tp, set()))
            if self._aligner is not None:
                self._aligner.forget(streams)
            return streams

    def stream_restarted(self, stream_id: str) -> None:
        """The edge restarted the stream (reset header): its next run starts on the grid again."""
        with self._lock:
            if self._aligner is not None:
                self._aligner.forget([stream_id])

    def take_frame(self, tp: TP, offset: int, stream_id: str, seq: int) -> FrameTake:
        """A decoded frame: hold it (to hand on) or skip it (before the stream's window grid)."""
        with self._lock:
            if tp not in self._book:
                return FrameTake(False, False)
            streams = self._streams_of.setdefault(tp, set())
            first = stream_id not in streams
            streams.add(stream_id)
            if self._aligner is not None and not self._aligner.admit(stream_id, seq):
                self._book.skip(tp, offset)
                return FrameTake(False, first)
            self._book.hold(tp, offset)
            return FrameTake(True, first)

    def hold(self, tp: TP, offset: int) -> bool:
        """Hold a record until `release` (a dead letter in flight). False if not ours any more."""
        with self._lock:
            if tp not in self._book:
                return False
            self._book.hold(tp, offset)
            return True

    def skip(self, tp: TP, offset: int) -> None:
        """A record that needs nothing downstream: only the position moves."""
        with self._lock:
            if tp in self._book:
                self._book.skip(tp, offset)

    def refused(self, tp: TP, offset: int) -> None:
        """The pipeline refused a held frame (stopping): never commit at or past it."""
        with self._lock:
            self._floor.setdefault(tp, offset)

    def release(self, refs: Iterable[tuple[str, int, int]]) -> None:
        """Held records no longer needed (pipeline feedback, dead letters acked)."""
        with self._lock:
            for topic, partition, offset in refs:
                self._book.release((topic, partition), offset)

    # -- commits and lag (source thread) ----------------------------------------------------
    def _point(self, tp: TP) -> int | None:
        point, floor = self._book.commit_point(tp), self._floor.get(tp)
        return point if point is None or floor is None else min(point, floor)

    def due_commits(self) -> dict[TP, int]:
        """Commit points (floors applied) that moved past what is committed."""
        with self._lock:
            return self._book.due(self._floor)

    def committed(self, points: dict[TP, int]) -> None:
        """The broker acked these commits."""
        with self._lock:
            for tp, offset in points.items():
                self._book.mark_committed(tp, offset)

    def commit_points(self) -> dict[TP, int | None]:
        with self._lock:
            return {tp: self._point(tp) for tp in self._book.assigned()}

    def partitions(self) -> list[TP]:
        with self._lock:
            return self._book.assigned()

    def observe_highwater(self, tp: TP, highwater: int, metrics: LagMetrics) -> int | None:
        """Set the partition's lag, if it is still ours. Our position past the log's end means the
        broker lost the log: returns that position the first time (rewind to the start), and
        None otherwise; the rewind ends with `reset_partition` when its first record comes."""
        with self._lock:
            pos = self._book.position(tp)
            if pos is None:
                return None
            if pos > highwater:
                if tp in self._rewinding:
                    return None
                self._rewinding.add(tp)
                return pos
            metrics.consumer_lag(tp[0], tp[1], highwater - pos)
            return None

    # -- rebalance (network thread) -----------------------------------------------------------
    def revoke_prepare(self, tps: Iterable[TP], commit: bool = True) -> dict[TP, int]:
        """Partitions are being revoked (or were lost: `commit=False`). Returns the commit points
        to commit before giving them up; what is kept or lost is settled by `assign`."""
        with self._lock:
            tps = set(tps)
            self._revoked |= tps
            if not commit:
                return {}
            points = {tp: self._point(tp) for tp in tps}
            return {tp: p for tp, p in points.items() if p is not None}

    def assign(self, assigned: Iterable[TP]) -> Assignment:
        """The new assignment. Kept partitions carry on from our position; lost ones are
        forgotten (their streams and series go at the next `take_lost`); new ones start from the
        group's committed offset."""
        with self._lock:
            assigned = set(assigned)
            kept, lost = self._revoked & assigned, self._revoked - assigned
            self._revoked.clear()
            for tp in lost:
                self._book.revoke(tp)
                self._floor.pop(tp, None)
                self._rewinding.discard(tp)
                self._lost_parts.append(tp)
                self._lost_streams.extend(self._streams_of.pop(tp, ()))
            # A kept partition is sought back to our position, which undoes a rewind in progress
            # (a lost log): forget the rewind so the next high-watermark check asks for it again.
            self._rewinding -= kept
            new = assigned - kept - set(self._book.assigned())
            for tp in new:
                self._book.assign(tp, None)
            seeks = {tp: pos for tp in kept if (pos := self._book.position(tp)) is not None}
            return Assignment(frozenset(kept), frozenset(lost), frozenset(new), seeks)

    # -- source thread, after each poll ------------------------------------------------------
    def take_lost(self) -> Lost:
        """Partitions lost since the last call and their streams (window state to drop, series
        to remove); the aligner forgets those streams."""
        with self._lock:
            parts, self._lost_parts = tuple(self._lost_parts), []
            streams, self._lost_streams = tuple(sorted(set(self._lost_streams))), []
            if streams and self._aligner is not None:
                self._aligner.forget(streams)
            return Lost(parts, streams)
