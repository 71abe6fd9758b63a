"""Reference counts of frames that carry a `source_ref` (Kafka offsets). Pure.

A frame is held once while it sits in its stream's window buffer and once per emitted window that
used it, until every sink acked that window. When its count falls to zero it is "released": no
buffer and no unacked window needs it, so its offset may be committed.
"""

from __future__ import annotations

from collections.abc import Iterable

from contracts.types import SourceRef


class RefCounts:
    def __init__(self) -> None:
        self._counts: dict[SourceRef, int] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def hold(self, refs: Iterable[SourceRef]) -> None:
        c = self._counts
        for r in refs:
            c[r] = c.get(r, 0) + 1

    def release(self, refs: Iterable[SourceRef]) -> list[SourceRef]:
        """Drop one hold of each ref; returns those that reached zero, in the order given.
        A ref that was never held is returned at once (it was needed by nothing)."""
        c = self._counts
        freed = []
        for r in refs:
            n = c.get(r, 0) - 1
            if n > 0:
                c[r] = n
            else:
                c.pop(r, None)
                freed.append(r)
        return freed

    def held(self, ref: SourceRef) -> int:
        return self._counts.get(ref, 0)
