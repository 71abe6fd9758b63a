"""Offset bookkeeping for at-least-once delivery: pure, no Kafka client, no threads.

The commit point of a partition is the lowest offset still held, or, when nothing is held,
the next offset to read. A record is held from the moment the source hands it on (a frame to
the pipeline, a bad message to the dead-letter topic) until it is released: the pipeline
releases a frame once it has left every window buffer and every window that used it has been
acked by all sinks; the dead-letter producer releases a bad message once its copy is acked.
Records that need nothing downstream are `skip`ped: they only move the read position.

Committing the commit point therefore never skips a frame that a published window still lacks:
after a crash the group re-reads from there, and the window ring buffers are rebuilt from the
same frames, so repeated windows carry the same window_id.

Offsets arrive in increasing order per partition (that is how a consumer reads), so the held
offsets form a queue: releases may come in any order, and the queue's head is popped while it
is released. That keeps every call O(1) amortised.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from contracts.errors import VbwError
from contracts.types import TP


class OffsetRegression(VbwError, ValueError):
    """A record arrived below the read position: the partition was reset (broker lost its log,
    or an out-of-range reset). Raised by `OffsetBook.check` (and by `hold`/`skip`, which check
    first); the Kafka source catches it and resets the partition's book and its streams."""

    retriable = True  # the source recovers: it resets the partition and reads on

    def __init__(self, tp: TP, offset: int, position: int) -> None:
        super().__init__(f"{tp[0]}[{tp[1]}]: offset {offset} is below the read position {position}")
        self.tp, self.offset, self.position = tp, offset, position


@dataclass
class _Partition:
    position: int | None  # next offset to read; None until known (no committed offset yet)
    committed: int | None = None  # last commit point known to be committed
    held: deque[int] = field(default_factory=deque)  # increasing offsets, head = oldest held
    live: set[int] = field(default_factory=set)  # held offsets not yet released

    def commit_point(self) -> int | None:
        return self.held[0] if self.held else self.position

    def pop_released_head(self) -> None:
        held, live = self.held, self.live
        while held and held[0] not in live:
            held.popleft()


class OffsetBook:
    """Per-partition read positions, held records and commit points of one consumer."""

    def __init__(self) -> None:
        self._parts: dict[TP, _Partition] = {}
        #: releases for records this book does not hold (revoked partition, reset, duplicate)
        self.stale_releases = 0

    # -- assignment -------------------------------------------------------------------------
    def assign(self, tp: TP, position: int | None, committed: int | None = None) -> None:
        """Start (or restart) bookkeeping for a partition read from `position`."""
        self._parts[tp] = _Partition(position=position, committed=committed)

    def revoke(self, tp: TP) -> int | None:
        """Forget a partition; returns its commit point at that moment (commit it first)."""
        part = self._parts.pop(tp, None)
        return None if part is None else part.commit_point()

    def reset(self, tp: TP, position: int) -> None:
        """The partition's log restarted below our position: drop every hold, read on from `position`.

        Nothing committed on the old log means anything on the new one, so `committed` is cleared.
        """
        self._parts[tp] = _Partition(position=position)

    def assigned(self) -> list[TP]:
        return list(self._parts)

    def __contains__(self, tp: object) -> bool:
        return tp in self._parts

    # -- records ----------------------------------------------------------------------------
    def check(self, tp: TP, offset: int) -> None:
        """Raise `OffsetRegression` if a record at `offset` would go back past the read position."""
        part = self._parts.get(tp)
        if part is not None and part.position is not None and offset < part.position:
            raise OffsetRegression(tp, offset, part.position)

    def _advance(self, tp: TP, offset: int) -> _Partition:
        part = self._parts.get(tp)
        if part is None:
            raise KeyError(f"{tp[0]}[{tp[1]}]: offset {offset} from a partition not assigned")
        self.check(tp, offset)
        part.position = offset + 1
        return part

    def hold(self, tp: TP, offset: int) -> None:
        """A record was handed on and is needed until `release`."""
        part = self._advance(tp, offset)
        part.held.append(offset)
        part.live.add(offset)

    def skip(self, tp: TP, offset: int) -> None:
        """A record that needs nothing downstream: it only moves the position."""
        self._advance(tp, offset)

    def release(self, tp: TP, offset: int) -> bool:
        """A held record is no longer needed. False (and counted) if this book does not hold it."""
        part = self._parts.get(tp)
        if part is None or offset not in part.live:
            self.stale_releases += 1
            return False
        part.live.discard(offset)
        part.pop_released_head()
        return True

    # -- commits ----------------------------------------------------------------------------
    def position(self, tp: TP) -> int | None:
        part = self._parts.get(tp)
        return None if part is None else part.position

    def commit_point(self, tp: TP) -> int | None:
        part = self._parts.get(tp)
        return None if part is None else part.commit_point()

    def held_count(self, tp: TP) -> int:
        part = self._parts.get(tp)
        return 0 if part is None else len(part.live)

    def due(self, floors: Mapping[TP, int] | None = None) -> dict[TP, int]:
        """Commit points that moved past the last committed offset, per partition.

        `floors` caps a partition's point (offsets handed on that the consumer refused)."""
        out: dict[TP, int] = {}
        for tp, part in self._parts.items():
            point = part.commit_point()
            floor = None if floors is None else floors.get(tp)
            if point is not None and floor is not None:
                point = min(point, floor)
            if point is not None and (part.committed is None or point > part.committed):
                out[tp] = point
        return out

    def mark_committed(self, tp: TP, offset: int) -> None:
        """The broker acked a commit of `offset` (ignored if stale or for a partition since lost)."""
        part = self._parts.get(tp)
        if part is not None and (part.committed is None or offset > part.committed):
            part.committed = offset
