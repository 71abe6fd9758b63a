"""Sliding-window assembler: unit tests and hypothesis properties against a set-based reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.messages import window_id
from worker.windows import FrameMeta, SlidingWindowAssembler, predecessor_features


def feed(asm: SlidingWindowAssembler, events):
    """events: int seq (a frame) or ("close", reason). Returns (windows, released, events)."""
    wins, released, evs = [], [], []
    for i, e in enumerate(events):
        if isinstance(e, tuple):
            step = asm.close(e[1])
        else:
            step = asm.push(
                FrameMeta(e, e / 25, 1000 + e, ("t", 0, e)), np.array([float(e), float(i)], np.float32)
            )
        wins += step.windows
        released += step.released
        evs += step.events
    return wins, released, evs


def reference(events, size, stride, max_gap, partial, min_partial=1):
    """Expected windows as (seqs tuple, complete), from the definition, not the state machine."""
    segments, cur, last = [], [], None
    for e in events:
        if isinstance(e, tuple):
            segments.append(cur)
            cur = []
            continue
        if last is not None and e <= last:
            continue  # out of order: rejected
        if cur and e - last - 1 > max_gap:
            segments.append(cur)
            cur = []
        cur.append(e)
        last = e
    segments.append(cur)
    out = []
    for seg in segments:
        n = len(seg)
        covered = set()
        k = 0
        while k * stride + size <= n:
            w = tuple(seg[k * stride : k * stride + size])
            out.append((w, True))
            covered.update(w)
            k += 1
        tail = tuple(seg[k * stride :])
        if tail and set(tail) - covered and partial != "drop" and len(tail) >= min_partial:
            out.append((tail, False))
    return out


def test_basic_sliding():
    asm = SlidingWindowAssembler("cam", 4, 2, model_version="v1")
    wins, _, _ = feed(asm, list(range(10)))
    assert [(w.start_seq, w.end_seq) for w in wins] == [(0, 3), (2, 5), (4, 7), (6, 9)]
    assert all(w.complete and w.frames == 4 and w.features.shape == (4, 2) for w in wins)
    assert [w.index for w in wins] == [0, 1, 2, 3]
    np.testing.assert_array_equal(wins[1].features[:, 0], [2, 3, 4, 5])
    assert wins[0].window_id == window_id("cam", 0, "v1")
    assert wins[0].capture_time == 1003
    assert wins[0].source_refs == [("t", 0, s) for s in range(4)]


def test_gap_closes_and_partial_policies():
    events = [0, 1, 2, 3, 4, 5, 9, 10]  # gap after 5
    for policy, want in [
        ("drop", [(0, 3, True)]),
        ("pad", [(0, 3, True), (4, 5, False), (9, 10, False)]),
        ("emit", [(0, 3, True), (4, 5, False), (9, 10, False)]),
    ]:
        asm = SlidingWindowAssembler("cam", 4, 4, partial=policy)
        wins, _, evs = feed(asm, [*events, ("close", "eos")])
        assert [(w.start_seq, w.end_seq, w.complete) for w in wins] == want, policy
        kinds = [e for e in evs if e[0].startswith("partial")]
        assert [r for _, r in kinds] == ["gap", "eos"], policy
        if policy == "pad":
            assert wins[1].features.shape == (4, 2)
            np.testing.assert_array_equal(wins[1].features[:, 0], [4, 5, 5, 5])
        if policy == "emit":
            assert wins[1].features.shape == (2, 2)


def test_max_gap_tolerates_small_holes():
    asm = SlidingWindowAssembler("cam", 4, 4, max_gap=1)
    wins, _, _ = feed(asm, [0, 2, 3, 5, 7])
    assert [(w.start_seq, w.end_seq, w.frames) for w in wins] == [(0, 5, 4)]


def test_stride_larger_than_window_skips_frames():
    asm = SlidingWindowAssembler("cam", 2, 5)
    wins, released, _ = feed(asm, list(range(12)))
    assert [(w.start_seq, w.end_seq) for w in wins] == [(0, 1), (5, 6), (10, 11)]
    assert sorted(r[2] for r in released) == list(range(12))


def test_partial_fully_covered_is_not_a_loss():
    # T=4 S=2: after 0..5 the buffer holds 4,5, both already inside window 2..5.
    asm = SlidingWindowAssembler("cam", 4, 2, partial="pad")
    wins, _, evs = feed(asm, [*range(6), ("close", "eos")])
    assert [(w.start_seq, w.end_seq) for w in wins] == [(0, 3), (2, 5)]
    assert evs == []


def test_out_of_order_rejected_and_released():
    asm = SlidingWindowAssembler("cam", 4, 4)
    _, released, evs = feed(asm, [5, 3])
    assert evs == [("out_of_order", "out_of_order")]
    assert released == [("t", 0, 3)]


def test_drop_forgets_without_counting():
    asm = SlidingWindowAssembler("cam", 4, 4, partial="emit")
    feed(asm, [0, 1])
    step = asm.drop()
    assert step.windows == [] and step.events == [] and len(step.released) == 2
    assert asm.state == "EMPTY"


def test_min_partial_frames():
    asm = SlidingWindowAssembler("cam", 8, 8, partial="pad", min_partial_frames=3)
    wins, _, evs = feed(asm, [0, 1, ("close", "eos")])
    assert wins == [] and evs == [("partial_dropped", "eos")]


# -- properties ---------------------------------------------------------------------------------

event_lists = st.lists(
    st.one_of(
        st.integers(min_value=1, max_value=3).map(lambda d: ("step", d)),  # seq advance (>1 = hole)
        st.just(("close", "reconnect")),
        st.just(("back", 2)),  # an out-of-order frame
    ),
    max_size=120,
)


def materialise(raw):
    events, seq = [], -1
    for kind, v in raw:
        if kind == "step":
            seq += v
            events.append(seq)
        elif kind == "back":
            events.append(max(0, seq - v))
        else:
            events.append(("close", v))
    events.append(("close", "eos"))
    return events


@settings(max_examples=300, deadline=None)
@given(
    raw=event_lists,
    size=st.integers(1, 6),
    stride=st.integers(1, 8),
    max_gap=st.integers(0, 2),
    partial=st.sampled_from(["drop", "pad", "emit"]),
    min_partial=st.integers(1, 3),
)
def test_windows_match_reference(raw, size, stride, max_gap, partial, min_partial):
    events = materialise(raw)
    asm = SlidingWindowAssembler(
        "s", size, stride, max_gap=max_gap, partial=partial, min_partial_frames=min_partial
    )
    wins, released, evs = feed(asm, events)
    got = [(tuple(int(x) for x in w.features[: w.frames, 0]), w.complete) for w in wins]
    # every frame lands in exactly the windows it belongs to
    assert got == reference(events, size, stride, max_gap, partial, min_partial)
    for w in wins:
        seqs = [int(x) for x in w.features[: w.frames, 0]]
        assert (w.start_seq, w.end_seq) == (seqs[0], seqs[-1])
        assert w.source_refs == [("t", 0, s) for s in seqs]
        # no window spans a gap ...
        assert all(0 < b - a <= max_gap + 1 for a, b in itertools.pairwise(seqs))
        # ... or a close (reconnect): the event positions of its frames contain no close
        pos = [int(x) for x in w.features[: w.frames, 1]]
        assert not any(isinstance(events[i], tuple) for i in range(pos[0], pos[-1] + 1))
        # padding repeats the last real frame; emit keeps only real frames
        want_rows = size if (w.complete or partial == "pad") else w.frames
        assert w.features.shape[0] == want_rows
        assert (w.features[w.frames :, 0] == seqs[-1]).all()
    # every frame leaves the buffer exactly once, rejected ones included
    frames = [e for e in events if not isinstance(e, tuple)]
    assert sorted(r[2] for r in released) == sorted(frames)
    assert asm.state == "EMPTY" and asm.buffered == 0
    # ids are stable across runs and unique within one
    again, _, _ = feed(
        SlidingWindowAssembler(
            "s", size, stride, max_gap=max_gap, partial=partial, min_partial_frames=min_partial
        ),
        events,
    )
    assert [w.window_id for w in again] == [w.window_id for w in wins]
    assert len({w.window_id for w in wins}) == len(wins)
    # every partial window is counted, as emitted/padded or dropped
    n_partial_events = sum(1 for e in evs if e[0].startswith("partial_"))
    n_partial_windows = sum(1 for w in wins if not w.complete)
    assert n_partial_events >= n_partial_windows
    assert sum(1 for e in evs if e[0] in ("partial_padded", "partial_emitted")) == n_partial_windows


@pytest.mark.parametrize("size,stride", [(16, 4), (16, 16), (8, 3)])
def test_ring_buffer_bounded(size, stride):
    asm = SlidingWindowAssembler("s", size, stride)
    for i in range(1000):
        asm.push(FrameMeta(i, i, i), np.zeros(4, np.float32))
        assert asm.buffered < size


def test_predecessor_features_within_a_batch_and_from_the_buffer():
    asm = SlidingWindowAssembler("a", 4, 2)
    asm.push(FrameMeta(0, 0, 0), np.array([0.0], np.float32))
    asm.push(FrameMeta(1, 0, 0), np.array([1.0], np.float32))
    feats = np.array([[2.0], [10.0], [3.0], [1.5], [11.0]], np.float32)
    prev = predecessor_features(["a", "b", "a", "a", "b"], [2, 0, 3, 1, 1], feats, {"a": asm}.get)
    # a:2 follows the buffer's newest (1); b:0 starts a stream (itself); a:3 follows a:2 in the
    # batch; a:1 is out of order (itself, and nobody's predecessor); b:1 follows b:0
    np.testing.assert_array_equal(prev[:, 0], [1.0, 10.0, 2.0, 1.5, 10.0])


def push_batches(asm: SlidingWindowAssembler, events, cuts: set[int]):
    """Feed frames in batches split at `cuts` (and at every close, as the pipeline does), with a
    stand-in engine step: token = (seq, predecessor's seq)."""
    wins, batch = [], []

    def flush():
        if not batch:
            return
        feats = np.array([[float(s)] for s in batch], np.float32)
        prev = predecessor_features(["s"] * len(batch), batch, feats, lambda _: asm)
        for seq, f, p in zip(batch, feats, prev, strict=True):
            wins.extend(asm.push(FrameMeta(seq, 0.0, 0.0), f, np.array([f[0], p[0]], np.float32)).windows)
        batch.clear()

    for i, e in enumerate(events):
        if isinstance(e, tuple):
            flush()
            wins.extend(asm.close(e[1]).windows)
        else:
            batch.append(e)
            if i in cuts:
                flush()
    flush()
    return wins


@settings(max_examples=300, deadline=None)
@given(
    raw=event_lists,
    size=st.integers(1, 6),
    stride=st.integers(1, 8),
    max_gap=st.integers(0, 2),
    partial=st.sampled_from(["drop", "pad"]),
    cuts=st.sets(st.integers(0, 130)),
)
def test_cached_tokens_see_their_windows_predecessor(raw, size, stride, max_gap, partial, cuts):
    """Every complete window carries tokens, and token i > 0 was made from the window's own frame
    i - 1, however the frames were batched: caching a token per frame is the whole-window math."""
    events = materialise(raw)
    asm = SlidingWindowAssembler("s", size, stride, max_gap=max_gap, partial=partial)
    for w in push_batches(asm, events, cuts):
        if not w.complete:
            assert w.tokens is None  # padded: the features path
            continue
        assert w.tokens is not None and w.tokens.shape == (size, 2)
        seqs = w.features[:, 0]
        np.testing.assert_array_equal(w.tokens[:, 0], seqs)
        np.testing.assert_array_equal(w.tokens[1:, 1], seqs[:-1])
