"""Sliding windows over one stream's frame features. Pure: no threads, no clocks, no I/O.

Each stream has one `SlidingWindowAssembler`, a small state machine in the manner of Quix
Streams' window classes:

    EMPTY ──frame──> FILLING ──T-th frame──> emit window, slide by S ──> FILLING ...
      ^                 │ (S > T: SKIPPING the S-T frames between windows)
      └─close(reason)───┘  gap > max_gap, reconnect, end of stream, revoke, shutdown

Counting frames from the last close, window k holds frames [k*S, k*S + T - 1]. A window is
emitted the moment its last frame arrives. Closing decides the fate of the one partial window
(the frames after the last complete window's start that no complete window covered) by the
policy: drop, pad (repeat the last frame's features up to T) or emit (shorter input). Nothing
ever spans a close, so no window spans a gap or a reconnect.

The assembler keeps a ring buffer of the features of the last T frames, and of their tokens
(the engine's per-frame step: a frame's token depends on it and its predecessor), so every
frame goes through the frame encoder and the step once however small the stride is.
`predecessor_features` says which frame a token's predecessor is: the previous frame of the
same window. A window's first token has none and is recomputed by the engine, so the one case
where the stream's previous frame is not the window's (after a close or a skip) never matters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from contracts.types import SourceRef
from worker.frames import Window
from worker.messages import window_id

PartialPolicy = Literal["drop", "pad", "emit"]


@dataclass(frozen=True, slots=True)
class FrameMeta:
    seq: int
    pts: float
    capture_time: float
    ref: SourceRef | None = None


@dataclass(slots=True)
class Step:
    """What one push/close produced. The caller turns `events` into counters."""

    windows: list[Window] = field(default_factory=list)
    # refs of frames that left the ring buffer (still held by any windows they are in)
    released: list[SourceRef] = field(default_factory=list)
    # (what, reason): what is partial_dropped | partial_padded | partial_emitted | out_of_order
    events: list[tuple[str, str]] = field(default_factory=list)


class SlidingWindowAssembler:
    def __init__(
        self,
        stream_id: str,
        size: int,
        stride: int,
        *,
        max_gap: int = 0,
        partial: PartialPolicy = "drop",
        min_partial_frames: int = 1,
        model_version: str = "0",
    ):
        if size < 1 or stride < 1:
            raise ValueError(f"window size and stride must be >= 1 (got T={size}, S={stride})")
        self.stream_id = stream_id
        self.size = size
        self.stride = stride
        self.max_gap = max_gap
        self.partial = partial
        self.min_partial_frames = min_partial_frames
        self.model_version = model_version
        self.index = 0  # windows emitted by this assembler, complete or partial
        self.last_seq: int | None = None  # survives closes: seqs are never reused
        # Ring buffer holding the frames of the next window, oldest at `_head`.
        self._feats: np.ndarray | None = None
        self._tokens: np.ndarray | None = None
        self._has_token = np.zeros(size, bool)
        self._metas: list[FrameMeta | None] = [None] * size
        self._head = 0
        self._count = 0
        self._skip = 0  # frames still to pass over before the next window starts (S > T)
        self._emitted_since_close = False
        self._active = False  # at least one frame since the last close

    # -- state -------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        if not self._active:
            return "EMPTY"
        return "SKIPPING" if self._skip else "FILLING"

    @property
    def buffered(self) -> int:
        return self._count

    @property
    def first_seq(self) -> int | None:
        """Seq of the oldest buffered frame (the next window's first), None when none is."""
        m = self._metas[self._head] if self._count else None
        return m.seq if m is not None else None

    def buffered_refs(self) -> list[SourceRef]:
        return [m.ref for m in self._iter_metas() if m is not None and m.ref is not None]

    def fork(self, model_version: str) -> SlidingWindowAssembler:
        """A copy with the same cutting state (buffered frames, index, grid, skip) and none of
        their features: fed the same frames as this one, it cuts the same windows, and those
        whose frames all came after the fork carry only the features pushed into the copy.
        A hot model swap (worker.model_swap) feeds the new encoder's features to a fork."""
        f = SlidingWindowAssembler(
            self.stream_id,
            self.size,
            self.stride,
            max_gap=self.max_gap,
            partial=self.partial,
            min_partial_frames=self.min_partial_frames,
            model_version=model_version,
        )
        f.index, f.last_seq = self.index, self.last_seq
        f._metas = list(self._metas)
        f._head, f._count, f._skip = self._head, self._count, self._skip
        f._emitted_since_close, f._active = self._emitted_since_close, self._active
        return f

    # -- transitions -------------------------------------------------------------------------
    def newest_feature(self) -> np.ndarray | None:
        """Features of the newest buffered frame: the predecessor of the next one appended."""
        if not self._count or self._feats is None:
            return None
        return self._feats[(self._head + self._count - 1) % self.size]

    def push(self, meta: FrameMeta, feature: np.ndarray, token: np.ndarray | None = None) -> Step:
        """Add one frame's features (and its token, if the engine made one); returns the windows
        it completed (at most one)."""
        step = Step()
        if self.last_seq is not None and meta.seq <= self.last_seq:
            step.events.append(("out_of_order", "out_of_order"))
            if meta.ref is not None:
                step.released.append(meta.ref)
            return step
        if self._active and self.last_seq is not None and meta.seq - self.last_seq - 1 > self.max_gap:
            self._close_into(step, "gap", emit_partial=True)
        self.last_seq = meta.seq
        self._active = True
        if self._skip:
            self._skip -= 1
            if meta.ref is not None:
                step.released.append(meta.ref)
            return step
        self._append(meta, feature, token)
        if self._count == self.size:
            self._emit(step, self._count, complete=True)
            self._slide(step)
        return step

    def close(self, reason: str, emit_partial: bool = True) -> Step:
        """End of a run of frames (reset, EOS, shutdown): settle the partial window, empty the buffer."""
        step = Step()
        self._close_into(step, reason, emit_partial)
        return step

    def drop(self) -> Step:
        """Forget everything buffered, emitting nothing and counting nothing (Kafka revoke)."""
        step = Step()
        step.released.extend(self.buffered_refs())
        self._reset_buffer()
        return step

    # -- internals ---------------------------------------------------------------------------
    def _iter_metas(self):
        for i in range(self._count):
            yield self._metas[(self._head + i) % self.size]

    def _append(self, meta: FrameMeta, feature: np.ndarray, token: np.ndarray | None) -> None:
        if self._feats is None:
            self._feats = np.zeros((self.size, feature.shape[-1]), np.float32)
        if token is not None and self._tokens is None:
            self._tokens = np.zeros((self.size, token.shape[-1]), np.float32)
        pos = (self._head + self._count) % self.size
        self._feats[pos] = feature
        self._metas[pos] = meta
        if self._tokens is not None:
            self._has_token[pos] = token is not None
            if token is not None:
                self._tokens[pos] = token
        self._count += 1

    def _gather(self, n: int, pad_to: int) -> np.ndarray | None:
        if self._feats is None:  # a fork's window of frames it saw no features of (worker.model_swap)
            return None
        idx = (self._head + np.arange(n)) % self.size
        feats = self._feats[idx]
        if pad_to > n:  # repeat the last real frame: the model never saw zero features
            feats = np.concatenate([feats, np.repeat(feats[-1:], pad_to - n, axis=0)])
        return feats

    def _gather_tokens(self, n: int) -> np.ndarray | None:
        """Tokens of a complete window, or None where any frame came without one. (A padded
        frame's token would be a still frame's, not a copy of the last one's: such windows go
        through the engine's features path instead.)"""
        if self._tokens is None:
            return None
        idx = (self._head + np.arange(n)) % self.size
        return self._tokens[idx] if self._has_token[idx].all() else None

    def _emit(self, step: Step, n: int, complete: bool) -> None:
        metas = [m for m in self._iter_metas()][:n]
        first, last = metas[0], metas[-1]
        assert first is not None and last is not None
        pad_to = self.size if (complete or self.partial == "pad") else n
        wid = window_id(self.stream_id, first.seq, self.model_version, None if complete else n)
        step.windows.append(
            Window(
                stream_id=self.stream_id,
                index=self.index,
                start_seq=first.seq,
                end_seq=last.seq,
                start_pts=first.pts,
                end_pts=last.pts,
                frames=n,
                complete=complete,
                capture_time=last.capture_time,
                features=self._gather(n, pad_to),
                tokens=self._gather_tokens(n) if complete else None,
                source_refs=[m.ref for m in metas if m is not None and m.ref is not None],
                window_id=wid,
            )
        )
        self.index += 1
        self._emitted_since_close = True

    def _pop_left(self, step: Step, n: int) -> None:
        for _ in range(min(n, self._count)):
            meta = self._metas[self._head]
            if meta is not None and meta.ref is not None:
                step.released.append(meta.ref)
            self._metas[self._head] = None
            self._head = (self._head + 1) % self.size
            self._count -= 1

    def _slide(self, step: Step) -> None:
        if self.stride <= self.size:
            self._pop_left(step, self.stride)
        else:
            self._pop_left(step, self._count)
            self._skip = self.stride - self.size

    def _close_into(self, step: Step, reason: str, emit_partial: bool) -> None:
        n = self._count
        # Frames of the buffer already inside the last complete window (S < T overlap).
        covered = max(0, self.size - self.stride) if self._emitted_since_close else 0
        if n > covered:  # some frames would be in no window at all without the partial one
            if not emit_partial or self.partial == "drop" or n < self.min_partial_frames:
                step.events.append(("partial_dropped", reason))
            else:
                self._emit(step, n, complete=False)
                step.events.append(("partial_padded" if self.partial == "pad" else "partial_emitted", reason))
        self._pop_left(step, n)
        self._reset_buffer()

    def _reset_buffer(self) -> None:
        self._metas = [None] * self.size
        self._head = 0
        self._count = 0
        self._skip = 0
        self._emitted_since_close = False
        self._active = False


def predecessor_features(
    stream_ids: Sequence[str],
    seqs: Sequence[int],
    features: np.ndarray,
    assembler_of: Callable[[str], SlidingWindowAssembler | None],
) -> np.ndarray:
    """For a batch of frames (in arrival order, not yet pushed), the features of each one's
    predecessor in its window: the newest frame its stream's assembler holds, or the batch's
    previous frame of the same stream; the frame itself where there is none. Frames the
    assembler will refuse (seq not after the stream's last) get themselves and are nobody's
    predecessor."""
    prev = features.copy()
    newest: dict[str, tuple[int | None, np.ndarray | None]] = {}
    for i, (sid, seq) in enumerate(zip(stream_ids, seqs, strict=True)):
        if sid not in newest:
            a = assembler_of(sid)
            newest[sid] = (None, None) if a is None else (a.last_seq, a.newest_feature())
        last_seq, feat = newest[sid]
        if last_seq is not None and seq <= last_seq:
            continue  # out of order: dropped by push
        if feat is not None:
            prev[i] = feat
        newest[sid] = (seq, features[i])
    return prev
