"""Sampler, backoff, redaction, reference counts: the small pure parts."""

from __future__ import annotations

import itertools
import logging
import random

from hypothesis import given
from hypothesis import strategies as st

from media.sampling import FpsSampler
from worker.backoff import Backoff, ReconnectPolicy, Recovery
from worker.logs import JsonLinesFormatter, RedactingFilter
from worker.redact import redact_text, redact_url
from worker.refs import RefCounts


def test_sampler_25_to_5():
    s = FpsSampler(5)
    kept = [i for i in range(100) if s.keep(i / 25)]
    assert kept == list(range(0, 100, 5))


def test_sampler_uneven_rate_is_right_on_average():
    s = FpsSampler(8)
    kept = [i for i in range(300) if s.keep(i / 30)]
    assert len(kept) == 80
    assert set(b - a for a, b in itertools.pairwise(kept)) <= {3, 4}


def test_sampler_none_keeps_all_and_restarts_on_rewind():
    assert all(FpsSampler(None).keep(t) for t in (0, 0, 1, -5))
    s = FpsSampler(1)
    assert s.keep(10.0) and not s.keep(10.5) and s.keep(0.0)  # looped file: starts again


def test_sampler_no_burst_after_pause():
    s = FpsSampler(5)
    assert s.keep(0.0)
    assert s.keep(10.0)
    assert not s.keep(10.04)
    assert s.keep(10.2)


@given(st.lists(st.floats(0.001, 0.5), min_size=1, max_size=200), st.floats(0.5, 30))
def test_sampler_never_faster_than_target_on_average(deltas, fps):
    s, t, kept = FpsSampler(fps), 0.0, []
    for d in deltas:
        t += d
        if s.keep(t):
            kept.append(t)
    # one tick of the 1/fps clock keeps at most one frame
    assert len(kept) <= (kept[-1] - kept[0]) * fps + 1 + 1e-6
    # and no frame is skipped when frames are sparser than ticks
    if min(deltas[1:], default=1) >= 1 / fps:
        assert len(kept) == len(deltas)


def test_backoff_grows_caps_and_jitters():
    b = Backoff(0.5, 4.0, 2.0, jitter=0.0)
    assert [b.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    b.reset()
    assert b.next_delay() == 0.5
    j = Backoff(1.0, 10.0, 2.0, jitter=0.5, rng=random.Random(1))
    d = [j.next_delay() for _ in range(50)]
    assert all(0.5 <= x <= 10.0 for x in d)
    assert len(set(d)) > 40


def test_reconnect_policy_probes_early_backs_off_late_and_counts_the_outage():
    p = ReconnectPolicy(0.5, 4.0, 2.0, jitter=0.0, probe_interval_s=0.25, probe_for_s=10.0)
    assert not p.in_outage and p.recovered(0.0) is None  # a first connect that worked: no line
    assert p.lost(100.0) == 0.25 and p.probing(100.0)
    # unreachable early in the outage: a probe every 0.25 s, only the first one reported
    early = [p.failed(100.0 + t, reached=False) for t in (0.25, 0.5, 0.75)]
    assert [(r.delay, r.report) for r in early] == [(0.25, True), (0.25, False), (0.25, False)]
    # the port answers but the RTSP open fails: backoff, reported each time, however early
    assert [p.failed(101.0, reached=True).delay for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]
    # past probe_for_s: backoff for the probes too, and reported
    assert not p.probing(110.0)
    late = p.failed(110.0, reached=False)
    assert late.delay == 4.0 and late.report
    rec = p.recovered(112.5)
    assert rec is not None and rec.outage_s == 12.5 and rec.attempts == 9
    assert not p.in_outage and p.backoff.attempts == 0
    # probe_for_s = 0 is the plain backoff of before, from the loss on
    b = ReconnectPolicy(0.5, 4.0, 2.0, jitter=0.0, probe_for_s=0.0)
    assert b.lost(0.0) == 0.5 and not b.probing(0.0)
    assert [b.failed(t, reached=False).delay for t in (1, 2, 3)] == [1.0, 2.0, 4.0]
    # a first connect that fails starts the outage at that failure
    c = ReconnectPolicy(jitter=0.0)
    assert c.failed(7.0, reached=True).report and c.probing(7.5)
    assert c.recovered(9.0) == Recovery(2.0, 2)


@given(
    st.lists(st.tuples(st.floats(0.0, 3.0), st.booleans()), max_size=60),
    st.floats(0.05, 2.0),
    st.floats(0.1, 60.0),
    st.floats(0.0, 1.0),
    st.integers(0, 2**32 - 1),
)
def test_reconnect_policy_bounds(events, probe_interval, max_s, jitter, seed):
    """Every delay is within the cap; while the camera is unreachable early in an outage the
    delay is at most the probe interval (min max_s); the outage's first failure is reported."""
    p = ReconnectPolicy(0.5, max_s, 2.0, jitter, probe_interval, 20.0, rng=random.Random(seed))
    now = 0.0
    first = p.lost(now)
    cap = min(probe_interval, max_s)
    assert cap * (1 - jitter) - 1e-9 <= first <= cap
    for i, (extra, reached) in enumerate(events):
        now += extra
        r = p.failed(now, reached)
        assert 0 < r.delay <= max_s + 1e-9
        if not reached and now < 20.0:
            assert cap * (1 - jitter) - 1e-9 <= r.delay <= cap + 1e-9
            assert r.report == (i == 0)
        else:
            assert r.report
        now += r.delay
    rec = p.recovered(now)
    assert rec is not None and rec.attempts == len(events) + 1 and abs(rec.outage_s - now) < 1e-9


@given(st.floats(0.0, 250.0), st.integers(0, 2**32 - 1))
def test_a_returning_camera_is_found_within_a_probe_interval(back_at, seed):
    """Camera down from t=0 to `back_at` (inside probe_for_s, default settings): the first probe
    after its return comes within probe_interval_s, whatever the outage's length."""
    p = ReconnectPolicy(rng=random.Random(seed))
    t = p.lost(0.0)
    while t < back_at:
        t += p.failed(t, reached=False).delay
    assert t - back_at <= p.probe_interval_s + 1e-9


def test_a_fleet_that_dropped_together_comes_back_spread_not_in_lockstep():
    """500 cameras lost at once (a switch rebooting) and back at once 5 s later: each finds its
    camera within a probe interval, and no 50 ms slot holds more than a fifth of them."""
    back_at, found = 5.0, []
    for seed in range(500):
        p = ReconnectPolicy(rng=random.Random(seed))
        t = p.lost(0.0)
        while t < back_at:
            t += p.failed(t, reached=False).delay
        found.append(t - back_at)
    assert max(found) <= 0.5
    assert max(found) - min(found) > 0.3
    slots = [int(f / 0.05) for f in found]
    assert max(slots.count(s) for s in set(slots)) < 100


def test_redact():
    assert (
        redact_url("rtsp://admin:hunter2@10.0.0.5:554/live?token=abc") == "rtsp://***@10.0.0.5:554/live?***"
    )
    assert redact_url("rtsp://cam/x") == "rtsp://cam/x"
    msg = "Server returned 401 for 'rtsp://u:p@h/a?k=v' and rtsps://x:y@z"
    out = redact_text(msg)
    assert "p@" not in out and "k=v" not in out and "x:y" not in out
    assert "rtsp://***@h/a?***" in out


def test_log_records_are_redacted_and_json():
    rec = logging.LogRecord("vbw", logging.ERROR, __file__, 1, "open %s failed", ("rtsp://u:pw@h/s",), None)
    rec.stream = "cam1"
    RedactingFilter().filter(rec)
    line = JsonLinesFormatter().format(rec)
    assert "pw" not in line and '"stream": "cam1"' in line and "***@h" in line


def test_refcounts():
    r = RefCounts()
    a, b = ("t", 0, 1), ("t", 0, 2)
    r.hold([a, b])  # in the buffer
    r.hold([a])  # in a window
    assert r.release([a, b]) == [b]  # left the buffer
    assert r.release([a]) == [a]  # window acked
    assert len(r) == 0
    assert r.release([("t", 1, 9)]) == [("t", 1, 9)]  # never held: free at once
