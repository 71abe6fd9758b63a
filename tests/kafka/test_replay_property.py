"""At-least-once, end to end but pure: offset book + stream aligner + the real window assembler.

A partition carries several interleaved streams. The worker crashes at random points (pending
windows are lost, only the last commit survives) and replays from its commit point. Whatever the
crash points, ack order and commit timing, every window of an uninterrupted run must have been
delivered at least once, and nothing but those windows (same window_ids) is ever delivered.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.kafka.align import StreamAligner
from worker.kafka.offsets import OffsetBook
from worker.windows import FrameMeta, SlidingWindowAssembler

TP = ("frames", 0)
FEATURE = np.zeros(2, np.float32)


@dataclass
class Worker:
    """The pipeline's delivery bookkeeping, reduced to what decides commits."""

    size: int
    stride: int
    start: int
    book: OffsetBook = field(default_factory=OffsetBook)
    aligner: StreamAligner | None = None
    assemblers: dict[str, SlidingWindowAssembler] = field(default_factory=dict)
    pending: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)  # window id -> refs
    in_buffer: set[tuple[str, int, int]] = field(default_factory=set)
    window_refs: dict[tuple[str, int, int], int] = field(default_factory=dict)  # unacked windows per frame
    committed: int = 0

    def __post_init__(self) -> None:
        self.aligner = StreamAligner(self.stride)
        self.book.assign(TP, self.start, committed=self.start)
        self.committed = self.start

    def _maybe_release(self, ref: tuple[str, int, int]) -> None:
        if ref not in self.in_buffer and self.window_refs.get(ref, 0) == 0:
            self.window_refs.pop(ref, None)
            self.book.release(TP, ref[2])

    def read(self, offset: int, stream: str, seq: int) -> list[str]:
        assert self.aligner is not None
        if not self.aligner.admit(stream, seq):
            self.book.skip(TP, offset)
            return []
        ref = (*TP, offset)
        self.book.hold(TP, offset)
        self.in_buffer.add(ref)
        asm = self.assemblers.setdefault(
            stream, SlidingWindowAssembler(stream, self.size, self.stride, max_gap=0, partial="drop")
        )
        step = asm.push(FrameMeta(seq=seq, pts=float(seq), capture_time=0.0, ref=ref), FEATURE)
        for w in step.windows:
            self.pending[w.window_id] = list(w.source_refs)
            for r in w.source_refs:
                self.window_refs[r] = self.window_refs.get(r, 0) + 1
        for r in step.released:
            self.in_buffer.discard(r)
            self._maybe_release(r)
        return [w.window_id for w in step.windows]

    def ack(self, wid: str) -> None:
        for r in self.pending.pop(wid):
            self.window_refs[r] -= 1
            self._maybe_release(r)

    def commit(self) -> None:
        point = self.book.commit_point(TP)
        assert point is not None and point >= self.committed
        self.committed = point


def reference_windows(messages: list[tuple[str, int]], size: int, stride: int) -> set[str]:
    w = Worker(size, stride, 0)
    out: set[str] = set()
    for offset, (stream, seq) in enumerate(messages):
        out.update(w.read(offset, stream, seq))
    return out


@st.composite
def inputs(draw):
    n_streams = draw(st.integers(1, 3))
    order = draw(st.lists(st.integers(0, n_streams - 1), min_size=1, max_size=120))
    starts = [draw(st.integers(0, 6)) for _ in range(n_streams)]
    nxt = list(starts)
    messages = []
    for s in order:
        messages.append((f"cam{s}", nxt[s]))
        nxt[s] += 1
    size = draw(st.integers(1, 6))
    stride = draw(st.integers(1, 7))
    crashes = sorted(draw(st.lists(st.integers(0, len(messages) - 1), max_size=3)))
    return messages, size, stride, crashes


@settings(max_examples=300, deadline=None)
@given(case=inputs(), seed=st.integers(0, 2**32 - 1))
def test_every_window_delivered_at_least_once_with_stable_ids(case, seed):
    messages, size, stride, crashes = case
    rng = random.Random(seed)
    expected = reference_windows(messages, size, stride)
    delivered: dict[str, int] = {}

    start = 0
    for crash_at in [*crashes, None]:
        worker = Worker(size, stride, start)
        end = len(messages) if crash_at is None else max(crash_at, start)
        for offset in range(start, end):
            stream, seq = messages[offset]
            worker.read(offset, stream, seq)
            # the sinks ack some pending windows, in any order
            for wid in list(worker.pending):
                if rng.random() < 0.5:
                    worker.ack(wid)
                    delivered[wid] = delivered.get(wid, 0) + 1
            if rng.random() < 0.3:
                worker.commit()
        if crash_at is None:  # clean end: drain the sinks, commit
            for wid in list(worker.pending):
                worker.ack(wid)
                delivered[wid] = delivered.get(wid, 0) + 1
            worker.commit()
        # a crash loses pending windows and everything after the last commit
        start = worker.committed

    assert set(delivered) <= expected, "a replay cut a window the uninterrupted run never had"
    assert expected <= set(delivered), f"missing windows: {len(expected - set(delivered))}"
