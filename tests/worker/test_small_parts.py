"""Sampler, backoff, redaction, reference counts: the small pure parts."""

from __future__ import annotations

import itertools
import logging
import random

from hypothesis import given
from hypothesis import strategies as st

from media.sampling import FpsSampler
from worker.backoff import Backoff
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
