"""Anchor each stream's window grid to its seq numbers, so a replay rebuilds the same windows.

The window assembler counts frames from the first frame after a close. After a crash the
consumer re-reads a partition from its commit point, which is the oldest frame needed by ANY
stream on that partition; for the other streams the replay starts a few frames early, and a
grid counted from there would cut different windows (new window_ids, and the windows that
were in flight never come back). So a run of frames may start only at a seq that is a multiple
of the stride: with contiguous seqs every window then starts at k*S whatever the read started
from, and repeats carry the same window_id. The cost is at most S-1 frames skipped when a
stream first appears or after a gap. Pure: no clocks, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable


class StreamAligner:
    def __init__(self, stride: int, max_gap: int = 0) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.stride = stride
        self.max_gap = max_gap
        self._last: dict[str, int] = {}  # last seq seen per stream
        self._armed: set[str] = set()  # streams waiting for an aligned seq to start a run

    def admit(self, stream_id: str, seq: int) -> bool:
        """True if the frame goes on to the windows; False if it is skipped (before the grid)."""
        last = self._last.get(stream_id)
        if last is not None and seq <= last:
            return True  # a duplicate or late frame: the assembler counts and releases it
        if last is None or seq - last - 1 > self.max_gap:
            self._armed.add(stream_id)  # a new run (first frame, or a gap the assembler will close)
        self._last[stream_id] = seq
        if stream_id in self._armed:
            if seq % self.stride:
                return False
            self._armed.discard(stream_id)
        return True

    def forget(self, stream_ids: Iterable[str]) -> None:
        """The streams' window state was dropped or reset: their next frame starts a new run."""
        for s in stream_ids:
            self._last.pop(s, None)
            self._armed.discard(s)
