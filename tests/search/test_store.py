"""The embedded index for real (LanceDB in a temporary directory): upsert by id, exact filtered
k-NN, like-a-window, snapshots in either order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search import find
from search.query import BadQuery, Filter
from search.records import IndexedWindow, Snapshot, window
from search.store import IndexStoreError, WindowIndex


def windows(n: int, streams: int = 3, dim: int = 8, seed: int = 0, version: str = "1") -> list[IndexedWindow]:
    rng = np.random.default_rng(seed)
    return [
        window(
            f"w{seed}-{i}",
            f"cam{i % streams}",
            i * 0.5,
            i * 0.5 + 2.0,
            1000.0 + i,
            "m",
            version,
            rng.normal(size=dim),
        )
        for i in range(n)
    ]


def exact(ws: list[IndexedWindow], v: np.ndarray, k: int, f: Filter) -> list[str]:
    keep = [
        w
        for w in ws
        if (f.stream is None or w.stream_id == f.stream)
        and (f.since is None or w.end_time >= f.since)
        and (f.until is None or w.start_time <= f.until)
        and (f.exclude_id is None or w.window_id != f.exclude_id)
    ]
    v = v / np.linalg.norm(v)
    keep.sort(key=lambda w: -float(w.vector @ v))
    return [w.window_id for w in keep[:k]]


def test_replay_changes_nothing(tmp_path):
    ix = WindowIndex(tmp_path / "ix")
    ws = windows(50)
    ix.upsert(ws)
    before = {h.window_id: h for h in ix.search(ws[0].vector, 50)}
    ix.upsert(ws[10:30])  # a replay after a crash
    ix.upsert(ws[:5] + ws[:5])  # and duplicates within one write
    assert ix.count() == 50
    after = {h.window_id: h for h in ix.search(ws[0].vector, 50)}
    assert after == before
    reopened = WindowIndex(tmp_path / "ix")
    assert reopened.count() == 50 and reopened.dim == 8


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 12),
    stream=st.sampled_from([None, "cam0", "cam2", "nope"]),
    since=st.one_of(st.none(), st.floats(995, 1050)),
    span=st.one_of(st.none(), st.floats(0, 40)),
)
def test_filtered_search_is_exact(tmp_path_factory, seed, k, stream, since, span):
    ws = windows(60, seed=seed)
    ix = WindowIndex(tmp_path_factory.mktemp("ix"))
    ix.upsert(ws)
    until = None if since is None or span is None else since + span
    f = Filter(stream=stream, since=since, until=until)
    q = np.random.default_rng(seed + 1).normal(size=8).astype(np.float32)
    hits = ix.search(q, k, f)
    assert [h.window_id for h in hits] == exact(ws, q, k, f)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    for h in hits:
        w = next(w for w in ws if w.window_id == h.window_id)
        assert h.score == pytest.approx(float(w.vector @ (q / np.linalg.norm(q))), abs=1e-5)


def test_like_leaves_itself_out_and_keeps_its_model_version(tmp_path):
    ix = WindowIndex(tmp_path / "ix")
    old, new = windows(20, version="1"), windows(20, seed=1, version="2")
    # an almost identical window under another model version: another space, never an answer
    twin = window("twin", "cam0", 0, 2, 1000, "m", "2", old[3].vector + 1e-3)
    ix.upsert(old + new + [twin])
    hits = find.like(ix, old[3].window_id, 5, Filter())
    assert old[3].window_id not in [h.window_id for h in hits]
    assert {h.model_version for h in hits} == {"1"}
    assert [h.window_id for h in hits] == exact(old, old[3].vector, 5, Filter(exclude_id=old[3].window_id))
    with pytest.raises(BadQuery, match="not in the index"):
        find.like(ix, "no-such-window", 5, Filter())


def test_snapshot_arrives_before_or_after_its_window(tmp_path):
    ix = WindowIndex(tmp_path / "ix")
    ws = windows(5)
    ix.put_snapshots([Snapshot(ws[1].window_id, "snap/early.jpg")])  # the event came first
    ix.upsert(ws)
    ix.put_snapshots([Snapshot(ws[2].window_id, "snap/late.jpg")])
    got = {h.window_id: h.snapshot for h in ix.search(ws[0].vector, 5)}
    assert got[ws[1].window_id] == "snap/early.jpg"
    assert got[ws[2].window_id] == "snap/late.jpg"
    assert got[ws[0].window_id] is None


def test_text_search_through_an_encoder(tmp_path):
    """`find.by_text` with an encoder of the window space (until the shipped model has one, a
    fixed map of sentences to directions): the nearest window of the encoder's model version."""
    ix = WindowIndex(tmp_path / "ix")
    ws = windows(30)
    ix.upsert([*ws, window("other-model", "cam0", 0, 2, 1000, "m", "9", ws[7].vector)])

    class Encoder:
        def encode_text(self, texts):
            return np.stack([ws[7].vector if "left" in t else ws[8].vector for t in texts])

    hits = find.by_text(ix, Encoder(), "a small red square moving left", 3, Filter(model_version="1"))
    assert hits[0].window_id == ws[7].window_id and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert "other-model" not in [h.window_id for h in hits]
    with pytest.raises(BadQuery):
        find.by_text(ix, Encoder(), "  ", 3, Filter())


def test_a_vector_of_another_size_is_refused(tmp_path):
    ix = WindowIndex(tmp_path / "ix")
    ix.upsert(windows(3))
    with pytest.raises(IndexStoreError, match="dim"):
        ix.upsert(windows(3, dim=4, seed=5))
    with pytest.raises(IndexStoreError, match="dim"):
        ix.search(np.ones(4), 3)


def test_compaction_keeps_every_window(tmp_path):
    ix = WindowIndex(tmp_path / "ix", compact_every=3)
    ws = windows(40)
    for i in range(0, 40, 4):
        ix.upsert(ws[i : i + 4])
    ix.maintain()
    assert ix.count() == 40
    assert [h.window_id for h in ix.search(ws[9].vector, 3)] == exact(ws, ws[9].vector, 3, Filter())


def test_filters_stay_exact_with_scalar_indexes_and_rows_added_after_them(tmp_path):
    """maintain() indexes stream and times; rows written later are not in those indexes until the
    next compaction, and a filter must still see both parts (and replays still replace)."""
    ix = WindowIndex(tmp_path / "ix")
    ws = windows(80, seed=3)
    ix.upsert(ws[:60])
    ix.maintain()
    ix.upsert(ws[50:])  # ten replays and twenty new windows, outside the indexes
    assert ix.count() == 80
    rng = np.random.default_rng(4)
    for stream, since, until in [("cam1", None, None), ("cam0", 1010.0, 1060.0), (None, 1055.0, None)]:
        f = Filter(stream=stream, since=since, until=until)
        q = rng.normal(size=8).astype(np.float32)
        assert [h.window_id for h in ix.search(q, 7, f)] == exact(ws, q, 7, f)
    ix.maintain()
    q = rng.normal(size=8).astype(np.float32)
    assert [h.window_id for h in ix.search(q, 7, Filter(stream="cam2"))] == exact(
        ws, q, 7, Filter(stream="cam2")
    )


def test_retention_deletes_old_windows_and_their_snapshots(tmp_path):
    ix = WindowIndex(tmp_path / "ix", retention_s=20.0)
    ws = windows(40)  # end times 1000 .. 1039
    ix.upsert(ws)
    ix.put_snapshots([Snapshot(ws[0].window_id, "old.jpg"), Snapshot(ws[39].window_id, "new.jpg")])
    assert ix.expire(now=1050.0) == 30  # ended before 1030
    assert ix.count() == 10
    assert ix.snapshots([ws[0].window_id, ws[39].window_id]) == {ws[39].window_id: "new.jpg"}
    assert {h.window_id for h in ix.search(ws[35].vector, 40)} == {w.window_id for w in ws[30:]}
    assert WindowIndex(tmp_path / "ix2").expire() == 0  # no retention, nothing deleted


def test_indexer_skips_windows_of_another_size_and_goes_on(tmp_path):
    """A model with another embed_dim on the same topic: its windows are bad messages
    (`wrong-dim`), counted; the batch's other windows are written and committed."""
    from search.indexer import Indexer
    from search.inputs import Batch
    from search.metrics import IndexMetrics

    ix = WindowIndex(tmp_path / "ix")
    metrics = IndexMetrics()
    committed = []
    indexer = Indexer(ix, metrics)
    indexer.write(Batch(windows=windows(5), commit=lambda: committed.append(1)))
    indexer.write(
        Batch(windows=windows(3, dim=4, seed=7) + windows(4, seed=8), commit=lambda: committed.append(2))
    )
    assert ix.count() == 9 and committed == [1, 2]
    assert metrics.bad.labels("wrong-dim")._value.get() == 3


def test_lag_series_follow_the_partitions_owned(tmp_path):
    from search.indexer import Indexer
    from search.inputs import Batch
    from search.metrics import IndexMetrics

    metrics = IndexMetrics()
    indexer = Indexer(WindowIndex(tmp_path / "ix"), metrics)

    def series() -> dict[tuple[str, str], float]:
        [fam] = [f for f in metrics.registry.collect() if f.name == "vbw_index_consumer_lag"]
        return {(s.labels["topic"], s.labels["partition"]): s.value for s in fam.samples}

    indexer.write(Batch(lag={("emb", 0): 5, ("emb", 1): 7}))
    assert series() == {("emb", "0"): 5, ("emb", "1"): 7}
    indexer.write(Batch(lag={("emb", 1): 0}))  # partition 0 moved to another indexer
    assert series() == {("emb", "1"): 0}
    indexer.write(Batch())  # a file batch says nothing about partitions
    assert series() == {("emb", "1"): 0}


def test_local_writes_are_flushed_to_disk(tmp_path):
    """LanceDB does not fsync (strace shows none): a local index syncs its filesystem after each
    write, before the caller commits offsets; an object store needs no flush."""
    from search.store import sync_filesystem

    assert WindowIndex(tmp_path / "ix").sync is True
    assert WindowIndex(tmp_path / "ix2", sync=False).sync is False
    sync_filesystem(tmp_path)  # raises OSError when the flush fails
    with pytest.raises(OSError):
        sync_filesystem(tmp_path / "missing")
