"""The segmenter (worker/segmenter.py): hysteresis per label, breaks, updates, its JSON state.

Property tests compare the state machine against a reference written the other way round (scan
the scores for k windows at or above `on`, then for m below `off`), and check that cutting a run
anywhere, saving the state as JSON and going on in a new segmenter changes nothing.
"""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.segmenter import END_BREAK, END_OFF, Rule, StreamSegmenter, WindowView, breaks_between

T, S = 16, 4  # window size and stride of the windows made below


def win(i: int, score: float | dict[str, float], *, start0: int = 0, fps: float = 5.0) -> WindowView:
    """The i-th window of a run starting at seq start0: starts S frames apart, T frames long."""
    start = start0 + i * S
    scores = score if isinstance(score, dict) else {"a": score}
    return WindowView(
        window_id=f"w{start}",
        start_seq=start,
        end_seq=start + T - 1,
        time=1000.0 + (start + T / 2) / fps,
        pts=(start + T / 2) / fps,
        scores=scores,
    )


def seg(rule: Rule | None = None, **kw) -> StreamSegmenter:
    return StreamSegmenter({"a": rule or Rule(on=0.6, off=0.4, k=2, m=2, **kw)}, size=T, stride=S)


def feed(s: StreamSegmenter, scores: list[float], start0: int = 0) -> list[tuple[int, object]]:
    out = []
    for i, x in enumerate(scores):
        out += [(i, e) for e in s.apply(win(i, x, start0=start0))]
    return out


def test_starts_after_k_windows_and_ends_after_m_below_off():
    s = seg()
    evs = feed(s, [0.1, 0.7, 0.5, 0.8, 0.9, 0.5, 0.3, 0.45, 0.3, 0.2, 0.9])
    # 0.7 then 0.5 (< on): not started; 0.8, 0.9 start it at window 4 (first = window 3)
    (i0, start), (i1, end) = evs
    assert (i0, start.type, start.first.window_id, start.count) == (4, "start", "w12", 2)
    assert start.update == 0 and start.reason is None
    # 0.5 (>= off) extends; 0.3 below; 0.45 back above off: the 0.3 rejoins; 0.3, 0.2: ends at 9
    assert (i1, end.type, end.reason) == (9, "end", END_OFF)
    assert end.first.window_id == "w12" and end.last.window_id == "w28"  # window 7 (0.45)
    assert end.count == 5 and end.mean == pytest.approx((0.8 + 0.9 + 0.5 + 0.3 + 0.45) / 5)
    assert end.peak == 0.9 and end.peak_at.window_id == "w16"
    assert not s.open_labels() and not s.idle  # the final 0.9 starts a new pending one
    assert s.tracks["a"].phase == "pending"


def test_k1_starts_on_the_first_window_and_min_duration_waits():
    s = seg(Rule(on=0.5, off=0.5, k=1, m=1))
    assert [e.type for _, e in feed(s, [0.9])] == ["start"]
    s = seg(Rule(on=0.5, off=0.5, k=1, m=1, min_duration_s=2.0))  # windows are 0.8 s apart
    evs = feed(s, [0.9, 0.9, 0.9, 0.9, 0.1])
    assert [(i, e.type) for i, e in evs] == [(3, "start"), (4, "end")]  # 3 * 0.8 s >= 2 s


def test_periodic_updates_in_stream_time_then_end_counts_them():
    s = seg(Rule(on=0.5, off=0.5, k=1, m=1, update_every_s=2.0))
    evs = feed(s, [0.9] * 8 + [0.1])
    assert [(i, e.type, e.update) for i, e in evs] == [
        (0, "start", 0),
        (3, "update", 1),  # 2.4 s after the start
        (6, "update", 2),
        (8, "end", 2),
    ]


def test_close_ends_open_segments_and_forgets_pending_ones():
    s = StreamSegmenter({"a": Rule(0.6, 0.4, 2, 2), "b": Rule(0.6, 0.4, 3, 2)}, size=T, stride=S)
    for i in range(2):
        s.apply(win(i, {"a": 0.9, "b": 0.9}))
    assert s.open_labels() == ["a"] and s.tracks["b"].phase == "pending"
    (end,) = s.close()
    assert (end.type, end.label, end.reason) == ("end", "a", END_BREAK)
    assert s.idle and s.close() == []


def test_a_gap_in_seqs_is_a_break_and_a_run_never_is():
    s = seg()
    feed(s, [0.9, 0.9, 0.9])
    assert s.open_labels() == ["a"]
    # the next window of the run would start at seq 12; one starting at 40 follows a break
    evs = s.apply(win(0, 0.9, start0=40))
    assert [(e.type, e.reason) for e in evs] == [("end", END_BREAK)]
    assert s.tracks["a"].phase == "pending"  # the new window counts for a new segment


@pytest.mark.parametrize(
    "stride, size, max_gap", [(4, 16, 0), (4, 16, 2), (16, 16, 0), (20, 8, 1), (1, 16, 3)]
)
def test_breaks_between_never_inside_a_run(stride, size, max_gap):
    # consecutive windows of a run, with up to max_gap seqs missing between any two frames
    rng = random.Random(stride * 100 + size + max_gap)
    seqs, s = [], 0
    for _ in range(400):
        seqs.append(s)
        s += 1 + rng.randint(0, max_gap)
    starts = list(range(0, len(seqs) - size, stride))
    for a, b in itertools.pairwise(starts):
        prev = WindowView("p", seqs[a], seqs[a + size - 1], 0, 0, {})
        nxt = WindowView("n", seqs[b], seqs[b + size - 1], 0, 0, {})
        assert not breaks_between(prev, nxt, size=size, stride=stride, max_gap=max_gap)
    assert len(starts) > 10
    # a break with contiguous seqs: the next window starts after the last frame of the previous
    prev = WindowView("p", 100, 100 + size - 1, 0, 0, {})
    nxt = WindowView("n", 100 + size, 100 + 2 * size - 1, 0, 0, {})
    assert breaks_between(prev, nxt, size=size, stride=stride, max_gap=max_gap) == (
        size > stride * (max_gap + 1)
    )


def test_state_round_trips_through_json_exactly():
    s = seg(Rule(on=0.6, off=0.4, k=2, m=3, update_every_s=1.0))
    feed(s, [0.9, 0.95, 0.3, 0.7, 0.2])
    doc = json.loads(json.dumps(s.to_dict()))
    t = seg(Rule(on=0.6, off=0.4, k=2, m=3, update_every_s=1.0))
    t.load(doc)
    assert t.to_dict() == s.to_dict()
    assert t.position() == s.position()
    rest = [0.1, 0.1, 0.1]
    assert [e for _, e in feed(s, rest, start0=20)] == [e for _, e in feed(t, rest, start0=20)]


# -- the reference ----------------------------------------------------------------------------
def reference(scores: list[float], rule: Rule, pts: list[float]) -> list[tuple]:
    """(type, emitted at window, first, last, count, mean, peak) of each start and end, found by
    scanning: a segment starts at the first i with scores[i..j] >= on for j - i + 1 >= k and
    pts[j] - pts[i] >= min_duration; it ends at the first run of m windows below off after j,
    its last window being the one before that run; or at the end of the input (a break)."""
    out, i, n = [], 0, len(scores)
    while i < n:
        if scores[i] < rule.on:
            i += 1
            continue
        j = i
        while (
            j < n
            and scores[j] >= rule.on
            and not (j - i + 1 >= rule.k and pts[j] - pts[i] >= rule.min_duration_s - 1e-9)
        ):
            j += 1
        if j == n:
            break
        if scores[j] < rule.on:
            i = j + 1 if j > i else i + 1
            continue
        out.append(("start", j, i, j, j - i + 1))
        last, below, e = j, 0, j + 1
        while e < n and below < rule.m:
            if scores[e] >= rule.off:
                last, below = e, 0
            else:
                below += 1
            e += 1
        window = scores[i : last + 1]
        stats = (len(window), sum(window) / len(window), max(window))
        if below >= rule.m:
            out.append(("end", e - 1, i, last, *stats, END_OFF))
            i = e
        else:
            out.append(("end", None, i, last, *stats, END_BREAK))
            break
    return out


def machine(scores: list[float], rule: Rule, cut: int | None = None) -> list[tuple]:
    """The segmenter over the same windows, optionally saved as JSON at `cut` and restored."""
    s = seg(rule)
    out = []
    for i, x in enumerate(scores):
        if cut is not None and i == cut:
            doc = json.loads(json.dumps(s.to_dict()))
            s = seg(rule)
            s.load(doc)
        for e in s.apply(win(i, x)):
            idx = {w.window_id: k for k, w in enumerate(win(k, 0.0) for k in range(len(scores)))}
            first, last = idx[e.first.window_id], idx[e.last.window_id]
            if e.type == "start":
                out.append(("start", i, first, last, e.count))
            elif e.type == "end":
                out.append(("end", i, first, last, e.count, e.mean, e.peak, e.reason))
    for e in s.close():
        idx = {win(k, 0.0).window_id: k for k in range(len(scores))}
        out.append(
            ("end", None, idx[e.first.window_id], idx[e.last.window_id], e.count, e.mean, e.peak, e.reason)
        )
    return out


def _norm(events: list[tuple]) -> list[tuple]:
    return [tuple(round(x, 9) if isinstance(x, float) else x for x in e) for e in events]


rules = st.builds(
    lambda on, gap, k, m, md: Rule(on=on, off=max(0.0, on - gap), k=k, m=m, min_duration_s=md),
    st.sampled_from([0.3, 0.5, 0.6, 0.8]),
    st.sampled_from([0.0, 0.1, 0.2, 0.3]),
    st.integers(1, 4),
    st.integers(1, 4),
    st.sampled_from([0.0, 0.0, 1.0, 2.5]),
)
score_lists = st.lists(st.sampled_from([0.0, 0.2, 0.35, 0.45, 0.55, 0.65, 0.75, 0.9, 1.0]), max_size=60)


@settings(max_examples=300, deadline=None)
@given(scores=score_lists, rule=rules)
def test_matches_the_reference(scores, rule):
    pts = [win(i, 0.0).pts for i in range(len(scores))]
    assert _norm(machine(scores, rule)) == _norm(reference(scores, rule, pts))


@settings(max_examples=200, deadline=None)
@given(scores=score_lists, rule=rules, data=st.data())
def test_a_json_save_and_restore_anywhere_changes_nothing(scores, rule, data):
    cut = data.draw(st.integers(0, max(0, len(scores))))
    assert _norm(machine(scores, rule, cut)) == _norm(machine(scores, rule))


def test_rule_checks_its_thresholds():
    with pytest.raises(ValueError):
        Rule(on=0.4, off=0.6)
    with pytest.raises(ValueError):
        Rule(on=0.6, off=0.4, k=0)
    assert not math.isnan(Rule(on=0.6, off=0.6).on)
