"""Offset bookkeeping: unit tests and hypothesis properties against a plain reference model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.kafka.offsets import OffsetBook, OffsetRegression

TP = ("frames", 0)


def test_commit_point_is_oldest_held_then_position():
    book = OffsetBook()
    book.assign(TP, 10)
    assert book.commit_point(TP) == 10
    for o in (10, 11, 12):
        book.hold(TP, o)
    book.skip(TP, 13)
    assert book.commit_point(TP) == 10
    book.release(TP, 11)  # out of order: the head still holds
    assert book.commit_point(TP) == 10
    book.release(TP, 10)
    assert book.commit_point(TP) == 12
    book.release(TP, 12)
    assert book.commit_point(TP) == 14  # nothing held: the next offset to read


def test_unknown_position_commits_nothing_until_a_record():
    book = OffsetBook()
    book.assign(TP, None)
    assert book.commit_point(TP) is None
    assert book.due() == {}
    book.skip(TP, 5)
    assert book.due() == {TP: 6}


def test_due_only_when_moved_and_mark_committed():
    book = OffsetBook()
    book.assign(TP, 0, committed=0)
    assert book.due() == {}
    book.hold(TP, 0)
    book.hold(TP, 1)
    assert book.due() == {}  # still 0
    book.release(TP, 0)
    assert book.due() == {TP: 1}
    book.mark_committed(TP, 1)
    assert book.due() == {}
    book.mark_committed(TP, 0)  # a late ack of an older commit never moves it back
    assert book.due() == {}


def test_due_applies_floors_and_never_repeats_a_capped_commit():
    book = OffsetBook()
    book.assign(TP, 0, committed=0)
    for o in range(5):
        book.hold(TP, o)
    for o in range(5):
        book.release(TP, o)
    assert book.due({TP: 3}) == {TP: 3}  # the pipeline refused offset 3: never commit past it
    book.mark_committed(TP, 3)
    assert book.due({TP: 3}) == {}  # capped at what is committed: nothing new to commit
    assert book.due() == {TP: 5}


def test_stale_releases_are_counted_and_ignored():
    book = OffsetBook()
    book.assign(TP, 0)
    book.hold(TP, 0)
    assert not book.release(("frames", 1), 0)  # partition not assigned
    assert not book.release(TP, 7)  # never held
    assert book.release(TP, 0)
    assert not book.release(TP, 0)  # twice
    assert book.stale_releases == 3


def test_revoke_returns_commit_point_and_forgets():
    book = OffsetBook()
    book.assign(TP, 3)
    book.hold(TP, 3)
    book.hold(TP, 4)
    book.release(TP, 3)
    assert book.revoke(TP) == 4
    assert TP not in book
    assert not book.release(TP, 4)
    with pytest.raises(KeyError):
        book.hold(TP, 5)


def test_regression_raises_and_reset_starts_over():
    book = OffsetBook()
    book.assign(TP, 100, committed=100)
    book.hold(TP, 100)
    book.check(TP, 101)  # at or past the position: fine
    with pytest.raises(OffsetRegression) as e:
        book.check(TP, 3)
    assert (e.value.tp, e.value.offset, e.value.position) == (TP, 3, 101)  # what the source resets with
    assert "frames[0]" in str(e.value)
    with pytest.raises(OffsetRegression):
        book.hold(TP, 3)  # hold and skip check the same way
    with pytest.raises(OffsetRegression):
        book.skip(TP, 3)
    assert book.position(TP) == 101  # a refused record moves nothing
    book.reset(TP, 0)
    assert book.commit_point(TP) == 0
    book.hold(TP, 0)
    assert not book.release(TP, 100)  # the old log's hold is gone
    assert book.due() == {TP: 0}  # nothing committed on the new log yet


# -- properties ------------------------------------------------------------------------------
# A run: records 0..n-1 each either held or skipped; releases in any order, interleaved with reads.
ops = st.lists(st.tuples(st.booleans(), st.integers(0, 3)), min_size=0, max_size=80)


@settings(max_examples=300, deadline=None)
@given(ops=ops, seed=st.randoms(use_true_random=False))
def test_commit_point_never_passes_a_held_record_and_never_goes_back(ops, seed):
    """Reference: commit point = min(unreleased held) else next offset. Monotonic. Never beyond."""
    book = OffsetBook()
    start = 7
    book.assign(TP, start)
    held: set[int] = set()
    last_point = start
    for i, (hold, n_releases) in enumerate(ops):
        offset = start + i
        if hold:
            book.hold(TP, offset)
            held.add(offset)
        else:
            book.skip(TP, offset)
        for _ in range(n_releases):
            if not held:
                break
            victim = seed.choice(sorted(held))
            assert book.release(TP, victim)
            held.discard(victim)
        point = book.commit_point(TP)
        expected = min(held) if held else offset + 1
        assert point == expected
        assert all(point <= h for h in held)
        assert point >= last_point
        assert book.held_count(TP) == len(held)
        last_point = point
    # release the rest: the commit point reaches the read position
    for h in sorted(held, key=lambda _: seed.random()):
        book.release(TP, h)
    assert book.commit_point(TP) == start + len(ops)


@settings(max_examples=200, deadline=None)
@given(
    n_parts=st.integers(1, 3),
    script=st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from(["read", "release", "revoke"])), max_size=60
    ),
)
def test_partitions_are_independent_and_revoke_reassign_restarts_clean(n_parts, script):
    book = OffsetBook()
    tps = [("f", p) for p in range(n_parts)]
    pos = dict.fromkeys(tps, 0)
    held: dict[tuple[str, int], list[int]] = {tp: [] for tp in tps}
    for tp in tps:
        book.assign(tp, 0)
    for p, op in script:
        tp = tps[p % n_parts]
        if op == "read":
            book.hold(tp, pos[tp])
            held[tp].append(pos[tp])
            pos[tp] += 1
        elif op == "release" and held[tp]:
            book.release(tp, held[tp].pop(0))
        elif op == "revoke":
            point = book.revoke(tp)
            assert point == (held[tp][0] if held[tp] else pos[tp])
            # reassigned from what was committed: re-read from there, old holds forgotten
            book.assign(tp, point, committed=point)
            pos[tp] = point
            held[tp] = []
        for other in tps:
            want = held[other][0] if held[other] else pos[other]
            assert book.commit_point(other) == want
