"""Dynamic batching across streams, in the manner of Triton's dynamic batcher. Pure: the caller
passes the clock in, so it is tested without threads or sleeps.

Items wait in FIFO order per shape key (windows of different lengths cannot share a batch). A
batch is released as soon as `max_batch` items of one key wait, or when the oldest item of a key
has waited `max_delay` seconds, whichever comes first. `max_delay = 0` means no waiting at all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    def __init__(self, max_batch: int, max_delay: float):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_delay < 0:
            raise ValueError(f"max_delay must be >= 0, got {max_delay}")
        self.max_batch = max_batch
        self.max_delay = max_delay
        self._queues: dict[Hashable, deque[tuple[float, T]]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, item: T, now: float, key: Hashable = None) -> None:
        self._queues.setdefault(key, deque()).append((now, item))
        self._size += 1

    def deadline(self) -> float | None:
        """Clock time at which the oldest waiting item must go, or None when empty."""
        oldest = [q[0][0] for q in self._queues.values() if q]
        return min(oldest) + self.max_delay if oldest else None

    def ready(self, now: float) -> list[list[T]]:
        """Batches due now: every full batch, and the head of any key whose oldest item timed out.
        Batches come out oldest first."""
        out: list[tuple[float, list[T]]] = []
        for q in self._queues.values():
            while q and (len(q) >= self.max_batch or now - q[0][0] >= self.max_delay):
                out.append(self._take(q))
        self._gc()
        out.sort(key=lambda tb: tb[0])
        return [b for _, b in out]

    def flush(self) -> list[list[T]]:
        """Everything still waiting, in batches of at most max_batch, oldest first."""
        out: list[tuple[float, list[T]]] = []
        for q in self._queues.values():
            while q:
                out.append(self._take(q))
        self._gc()
        out.sort(key=lambda tb: tb[0])
        return [b for _, b in out]

    def _take(self, q: deque[tuple[float, T]]) -> tuple[float, list[T]]:
        n = min(self.max_batch, len(q))
        first = q[0][0]
        batch = [q.popleft()[1] for _ in range(n)]
        self._size -= n
        return first, batch

    def _gc(self) -> None:
        for k in [k for k, q in self._queues.items() if not q]:
            del self._queues[k]
