"""The segment-state changelog (worker/kafka/changelog.py) on a real Tansu broker: checkpoints
written and acked, restore reads every partition to its end and keeps the latest position per
stream, a tombstone deletes, `fresh` reads again, a missing topic is an error."""

from __future__ import annotations

import threading

import pytest
from kafka import KafkaProducer

from worker.events import Checkpoint
from worker.kafka.changelog import ChangelogError, ChangelogStore
from worker.kafka.config import KafkaConnectionConfig


def write_all(store: ChangelogStore, cks: list[Checkpoint]) -> None:
    done = threading.Semaphore(0)
    errors: list[str] = []

    def cb(err: str | None) -> None:
        if err:
            errors.append(err)
        done.release()

    for ck in cks:
        store.write(ck, cb)
    assert store.flush(30)
    for _ in cks:
        assert done.acquire(timeout=30)
    assert not errors, errors


def ck(stream: str, seq: int, closes: int = 0, tag: str = "") -> Checkpoint:
    return Checkpoint(
        stream, ("frames", 0), (seq, closes), {"last": None, "closes": closes, "tracks": {}, "tag": tag}
    )


def test_write_then_restore_keeps_the_latest_position(broker):
    broker.create_topics({"state": 3})
    conn = KafkaConnectionConfig(bootstrap_servers=[broker.bootstrap])
    store = ChangelogStore("state", conn, restore_timeout_s=30)
    store.open()
    try:
        # a late write of an older state (a dead worker's) must not win over a newer one
        write_all(
            store,
            [
                ck("cam1", 8),
                ck("cam1", 12, tag="new"),
                ck("cam1", 4),
                ck("cam2", 3),
                ck("cam2", 3, 1, "closed"),
            ],
        )
        reader = ChangelogStore("state", conn, restore_timeout_s=30)
        got = reader.restore("cam1", ("frames", 0), fresh=True)
        assert got is not None and got.position == (12, 0) and got.state["tag"] == "new"
        assert reader.restore("cam2", ("frames", 1), fresh=False).state["tag"] == "closed"
        assert reader.restore("cam3", ("frames", 0), fresh=False) is None
        assert reader.reads == 1  # not fresh: what was read serves
        # a tombstone deletes the stream's state; a fresh restore sees it
        p = KafkaProducer(bootstrap_servers=broker.bootstrap)
        p.send("state", key=b"cam2", value=None)
        p.flush(10)
        p.close()
        assert reader.restore("cam2", ("frames", 1), fresh=True) is None
        assert reader.reads == 2
        reader.close()
    finally:
        store.close()


def test_an_empty_topic_restores_nothing_and_a_missing_one_is_an_error(broker):
    broker.create_topics({"state": 2})
    conn = KafkaConnectionConfig(bootstrap_servers=[broker.bootstrap])
    store = ChangelogStore("state", conn, restore_timeout_s=20)
    assert store.restore("cam1", ("frames", 0), fresh=True) is None
    store.close()
    missing = ChangelogStore("no-such-topic", conn, restore_timeout_s=2)
    with pytest.raises(ChangelogError, match="no-such-topic"):
        missing.restore("cam1", ("frames", 0), fresh=True)
    missing.close()
