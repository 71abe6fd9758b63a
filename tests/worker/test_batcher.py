"""Dynamic batcher: pure, driven by an explicit clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.batcher import Batcher


def test_full_batch_goes_at_once():
    b = Batcher[int](max_batch=3, max_delay=1.0)
    for i in range(7):
        b.add(i, now=0.0)
    assert b.ready(0.0) == [[0, 1, 2], [3, 4, 5]]
    assert len(b) == 1
    assert b.deadline() == 1.0
    assert b.ready(0.99) == []
    assert b.ready(1.0) == [[6]]
    assert b.deadline() is None


def test_delay_counts_from_oldest():
    b = Batcher[str](max_batch=8, max_delay=0.02)
    b.add("a", 0.0)
    b.add("b", 0.015)
    assert b.ready(0.019) == []
    assert b.ready(0.02) == [["a", "b"]]


def test_keys_do_not_mix_and_come_oldest_first():
    b = Batcher[int](max_batch=2, max_delay=0.5)
    b.add(1, 0.0, key=16)
    b.add(2, 0.1, key=5)
    b.add(3, 0.2, key=16)
    assert b.ready(0.2) == [[1, 3]]
    b.add(4, 0.3, key=5)
    assert b.ready(0.3) == [[2, 4]]


def test_zero_delay_never_waits():
    b = Batcher[int](max_batch=4, max_delay=0.0)
    b.add(1, 5.0)
    assert b.ready(5.0) == [[1]]


def test_flush_everything():
    b = Batcher[int](max_batch=2, max_delay=10)
    for i in range(5):
        b.add(i, float(i), key=i % 2)
    assert b.flush() == [[0, 2], [1, 3], [4]]
    assert len(b) == 0


@settings(max_examples=200, deadline=None)
@given(
    arrivals=st.lists(st.tuples(st.floats(0, 0.05), st.integers(0, 2)), max_size=60),
    max_batch=st.integers(1, 8),
    max_delay=st.floats(0, 0.1),
)
def test_properties(arrivals, max_batch, max_delay):
    """Nothing lost or duplicated, FIFO per key, never over max_batch, never past its deadline."""
    b = Batcher[tuple[int, int]](max_batch, max_delay)
    now, out = 0.0, []
    for i, (dt, key) in enumerate(arrivals):
        # the driver polls at the deadline, as the pipeline does
        dl = b.deadline()
        if dl is not None and dl <= now + dt:
            for batch in b.ready(dl):
                out.append((dl, batch))
        now += dt
        b.add((i, key), now, key=key)
        for batch in b.ready(now):
            out.append((now, batch))
    for batch in b.flush():
        out.append((None, batch))
    items = [x for _, batch in out for x in batch]
    assert sorted(items) == [(i, k) for i, (_, k) in enumerate(arrivals)]
    for _, batch in out:
        assert 1 <= len(batch) <= max_batch
        assert len({k for _, k in batch}) == 1
    for key in range(3):
        seq = [i for i, k in items if k == key]
        assert seq == sorted(seq)
