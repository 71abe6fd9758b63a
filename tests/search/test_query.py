"""Filters and user times: pure functions, and the filter against the real index."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.query import BadQuery, Filter, parse_time, sql_string, where
from search.records import window
from search.store import WindowIndex


def test_where_joins_what_is_given():
    assert where(Filter()) is None
    assert where(Filter(stream="cam1")) == "stream_id = 'cam1'"
    f = Filter(stream="a'b", since=10.0, until=20.5, model_version="1.0", exclude_id="x")
    assert where(f) == (
        "stream_id = 'a''b' AND end_time >= 10.0 AND start_time <= 20.5 "
        "AND model_version = '1.0' AND window_id != 'x'"
    )


def test_parse_time_forms():
    now = 1_800_000_000.0
    assert parse_time("1764565200") == 1764565200.0
    assert parse_time("2026-12-01T05:00:00Z") == datetime(2026, 12, 1, 5, tzinfo=UTC).timestamp()
    assert parse_time("2026-12-01T05:00:00") == datetime(2026, 12, 1, 5, tzinfo=UTC).timestamp()
    assert parse_time("2026-12-01T06:00:00+01:00") == datetime(2026, 12, 1, 5, tzinfo=UTC).timestamp()
    assert parse_time("15m", now) == now - 900
    assert parse_time("-2h", now) == now - 7200
    assert parse_time("3d ago", now) == now - 3 * 86400
    for bad in ("yesterday", "nan", "12:00 tomorrow"):
        with pytest.raises(BadQuery):
            parse_time(bad)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=2, max_size=4, unique=True))
def test_any_stream_id_filters_exactly(tmp_path_factory, streams):
    """Quotes, SQL words, unicode: a stream filter keeps exactly that stream's windows."""
    ix = WindowIndex(tmp_path_factory.mktemp("ix"))
    rng = np.random.default_rng(0)
    ix.upsert(
        [window(f"w{i}", s, 0.0, 1.0, 100.0 + i, "m", "1", rng.normal(size=8)) for i, s in enumerate(streams)]
    )
    for i, s in enumerate(streams):
        hits = ix.search(rng.normal(size=8), 10, Filter(stream=s))
        assert [h.window_id for h in hits] == [f"w{i}"], (s, sql_string(s))
