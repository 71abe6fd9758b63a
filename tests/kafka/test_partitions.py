"""PartitionState: the Kafka source's partition bookkeeping, without a broker."""

from __future__ import annotations

import threading

import pytest

from worker.kafka.align import StreamAligner
from worker.kafka.offsets import OffsetRegression
from worker.kafka.partitions import FrameTake, Lost, PartitionState
from worker.metrics import Metrics

P0, P1, P2 = ("frames", 0), ("frames", 1), ("frames", 2)


def lag(metrics: Metrics, tp: tuple[str, int]) -> float | None:
    return metrics.registry.get_sample_value(
        "vbw_kafka_consumer_lag", {"topic": tp[0], "partition": str(tp[1])}
    )


def assigned(*tps: tuple[str, int]) -> PartitionState:
    state = PartitionState()
    state.assign(tps)
    return state


def test_frames_are_held_until_released_and_commits_follow():
    state = assigned(P0)
    assert state.arrive(P0, 5) is False  # announced by the assignment
    assert state.take_frame(P0, 5, "cam", 0) == FrameTake(held=True, first_on_partition=True)
    state.arrive(P0, 6)
    assert state.take_frame(P0, 6, "cam", 1) == FrameTake(held=True, first_on_partition=False)
    assert state.due_commits() == {P0: 5}
    state.release([("frames", 0, 6)])
    assert state.due_commits() == {P0: 5}  # offset 5 still held
    state.release([("frames", 0, 5)])
    assert state.due_commits() == {P0: 7}
    state.committed({P0: 7})
    assert state.due_commits() == {}
    assert state.commit_points() == {P0: 7}


def test_a_record_below_the_position_raises_and_reset_starts_the_partition_over():
    state = PartitionState(StreamAligner(stride=4))
    state.assign([P0])
    for offset, seq in ((10, 4), (11, 5)):
        state.arrive(P0, offset)
        state.take_frame(P0, offset, "cam", seq)
    state.refused(P0, 11)
    with pytest.raises(OffsetRegression) as e:
        state.arrive(P0, 0)
    assert (e.value.tp, e.value.offset, e.value.position) == (P0, 0, 12)
    assert state.reset_partition(P0, 0) == ["cam"]  # their windows are closed by the source
    assert state.arrive(P0, 0) is False
    # the aligner forgot the stream: its next run waits for the grid again (seq 6 is off it)
    assert state.take_frame(P0, 0, "cam", 6) == FrameTake(held=False, first_on_partition=True)
    assert state.due_commits() == {P0: 1}  # old holds and the floor went with the old log


def test_an_unannounced_partition_is_tracked_from_its_first_record():
    state = PartitionState()
    assert state.arrive(P1, 3) is True
    assert state.arrive(P1, 3) is False
    assert state.take_frame(P1, 3, "cam", 0).held
    assert state.partitions() == [P1]


def test_a_refused_frame_caps_every_commit():
    state = assigned(P0)
    for o in range(4):
        state.arrive(P0, o)
        state.take_frame(P0, o, "cam", o)
    state.refused(P0, 2)
    state.refused(P0, 3)  # the first refusal is the floor
    state.release([("frames", 0, o) for o in range(4)])
    assert state.due_commits() == {P0: 2}
    assert state.revoke_prepare([P0]) == {P0: 2}
    assert state.commit_points() == {P0: 2}


def test_rebalance_keeps_loses_and_adds_partitions():
    state = assigned(P0, P1)
    for tp, stream in ((P0, "cam-a"), (P1, "cam-b")):
        state.arrive(tp, 7)
        state.take_frame(tp, 7, stream, 0)
    assert state.revoke_prepare([P0, P1]) == {P0: 7, P1: 7}  # held: commit up to them only
    change = state.assign([P0, P2])
    assert (change.kept, change.lost, change.new) == ({P0}, {P1}, {P2})
    assert change.seeks == {P0: 8}  # kept: carry on from our own position
    assert sorted(state.partitions()) == [P0, P2]
    assert state.take_lost() == Lost(partitions=(P1,), streams=("cam-b",))
    assert state.take_lost() == Lost()  # taken once
    # a record of the lost partition read before the revoke is not ours any more
    assert state.take_frame(P1, 8, "cam-b", 1) == FrameTake(False, False)
    assert state.hold(P1, 8) is False
    state.skip(P1, 8)
    assert P1 not in state.commit_points()


def test_lost_membership_commits_nothing_and_forgets_at_the_next_assign():
    state = assigned(P0)
    state.arrive(P0, 0)
    state.take_frame(P0, 0, "cam", 0)
    assert state.revoke_prepare([P0], commit=False) == {}
    assert state.assign([]).lost == {P0}
    assert state.take_lost() == Lost((P0,), ("cam",))


def test_lag_is_set_only_for_partitions_still_ours_and_a_lost_log_rewinds_once():
    metrics = Metrics()
    state = assigned(P0, P1)
    assert state.observe_highwater(P0, 50, metrics) is None  # position unknown: nothing to say
    state.arrive(P0, 10)
    state.skip(P0, 10)
    assert state.observe_highwater(P0, 50, metrics) is None
    assert lag(metrics, P0) == 39
    assert state.observe_highwater(P0, 5, metrics) == 11  # past the log's end: rewind
    assert state.observe_highwater(P0, 5, metrics) is None  # asked already
    state.reset_partition(P0, 0)
    state.arrive(P0, 0)
    state.skip(P0, 0)
    assert state.observe_highwater(P0, 5, metrics) is None
    assert lag(metrics, P0) == 4
    # P1 is lost; a lag check after that sets nothing, so a removed series stays removed
    state.arrive(P1, 0)
    state.skip(P1, 0)
    state.revoke_prepare([P0, P1])
    state.assign([P0])
    metrics.consumer_lag_gone(*state.take_lost().partitions[0])
    assert state.observe_highwater(P1, 9, metrics) is None
    assert lag(metrics, P1) is None


def test_a_rewind_undone_by_a_rebalance_is_asked_for_again():
    """The broker lost its log; the rewind was asked for, then a rebalance kept the partition and
    sought it back to our position past the log's end. Without a second rewind the consumer waits
    there for ever (seen once under load: no frame after a broker restart)."""
    metrics = Metrics()
    state = assigned(P0)
    state.arrive(P0, 10)
    state.skip(P0, 10)
    assert state.observe_highwater(P0, 5, metrics) == 11  # past the log's end: rewind
    state.revoke_prepare([P0])
    assignment = state.assign([P0])
    assert assignment.kept == {P0} and assignment.seeks == {P0: 11}  # back to our position
    assert state.observe_highwater(P0, 5, metrics) == 11  # so the rewind is asked for again


def test_source_and_network_threads_interleave_without_errors():
    """The rebalance listener runs at any time: records keep flowing while partitions move."""
    state = assigned(P0, P1)
    stop = threading.Event()
    errors: list[BaseException] = []

    def rebalance() -> None:
        try:
            while not stop.is_set():
                state.revoke_prepare([P0, P1])
                state.assign([P0])
                state.revoke_prepare([P0])
                state.assign([P0, P1])
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    t = threading.Thread(target=rebalance, daemon=True)
    t.start()
    offset = 0
    try:
        for offset in range(20_000):
            for tp in (P0, P1):
                try:
                    state.arrive(tp, offset)
                except OffsetRegression as e:  # P1 came back as new: its position is unknown
                    state.reset_partition(e.tp, e.offset)
                if state.take_frame(tp, offset, f"cam-{tp[1]}", offset).held:
                    state.release([(*tp, offset)])
            state.take_lost()
            state.due_commits()
    finally:
        stop.set()
        t.join(10)
    assert not errors, errors
    assert state.commit_points()[P0] == offset + 1
