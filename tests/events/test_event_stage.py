"""EventStage (worker/events.py) and the ledger's event path (worker/delivery.py), without threads:
events per window, checkpoints and extra holds for streams that replay, restore and skip, breaks
through the order gate, in-order checkpoints, failures that keep frames held."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from worker.config import BatchingConfig, WindowsConfig
from worker.delivery import DeliveryLedger
from worker.event_messages import EventMessage, EventModelRef
from worker.events import Checkpoint, EventBatch, EventStage, MemoryStateStore, resolve_rules
from worker.events_config import EventsConfig
from worker.frames import Frame, Window
from worker.inference_stage import InferenceStage, StreamReset
from worker.messages import LabelScore, ModelRef, WindowMessage
from worker.metrics import Metrics
from worker.segmenter import Rule
from worker.sinks.base import DeliveryCallback, Sink, WindowResult
from worker.sources.base import FramesReleased

REPO = Path(__file__).resolve().parents[2]
SCHEMA = jsonschema.Draft202012Validator(json.loads((REPO / "schemas" / "vbw.event.v1.json").read_text()))
LABELS = ("a", "b", "c")
RULES = {"a": Rule(on=0.6, off=0.4, k=2, m=2)}
T, S = 4, 2


def result(sid: str, k: int, score: float, refs: bool = True, start0: int = 0) -> WindowResult:
    """The k-th window of a run: starts S frames apart, T frames, 5 fps."""
    start = start0 + k * S
    w = Window(
        stream_id=sid,
        index=k,
        start_seq=start,
        end_seq=start + T - 1,
        start_pts=start / 5,
        end_pts=(start + T - 1) / 5,
        frames=T,
        complete=True,
        capture_time=1000.0 + (start + T - 1) / 5,
        source_refs=[("frames", 0, start + i) for i in range(T)] if refs else [],
        window_id=f"{sid}-w{start}",
    )
    scores = np.array([score, 1.0 - score, 0.0], np.float32)
    msg = WindowMessage(
        window_id=w.window_id,
        stream_id=sid,
        index=k,
        start_seq=w.start_seq,
        end_seq=w.end_seq,
        start_pts=w.start_pts,
        end_pts=w.end_pts,
        frames=T,
        complete=True,
        capture_time=w.capture_time,
        labels=[LabelScore(label="a", score=float(score))],
        model=ModelRef(name="m", version="1", backend="x", precision="fp32"),
        latency_ms=0.0,
        worker="w",
        produced_at="2026-01-01T00:00:00Z",
    )
    return WindowResult(message=msg, embedding=np.ones(2, np.float32), scores=scores, window=w)


def stage(store=None, metrics=None, every: int = 8, snapshot=None) -> EventStage:
    return EventStage(
        RULES,
        LABELS,
        size=T,
        stride=S,
        max_gap=0,
        model=EventModelRef(name="m", version="1"),
        metrics=metrics or Metrics(),
        store=store,
        snapshot=snapshot,
        checkpoint_every=every,
    )


def run(st: EventStage, sid: str, scores: list[float], refs: bool = True, start0: int = 0):
    batches, holds = [], []
    for k, x in enumerate(scores):
        b, h = st.window(result(sid, k, x, refs, start0))
        holds.append(h)
        if b is not None:
            batches.append(b)
    return batches, holds


def test_a_stream_that_does_not_replay_gets_events_only():
    m = Metrics()
    st = stage(MemoryStateStore(), m)
    batches, holds = run(st, "cam1/door", [0.1, 0.9, 0.9, 0.9, 0.1, 0.1], refs=False)
    assert not any(holds)
    assert [e.type for b in batches for e in b.events] == ["start", "end"]
    assert all(b.checkpoint is None and not b.cover for b in batches)
    start = batches[0].events[0]
    SCHEMA.validate(json.loads(start.to_json()))
    assert (start.stream_id, start.source_id, start.zone, start.label) == ("cam1/door", "cam1", "door", "a")
    assert start.start_window_id == "cam1/door-w2" and start.windows == 2
    # the first window's first frame (seq 2) less half a stride (2 frames at 5 fps)...
    assert start.start_time == pytest.approx(1000.0 + 2 / 5 - 0.2)
    assert start.start_pts == pytest.approx(2 / 5 - 0.2)
    # ...to the last window's last frame (seq 7), plus a frame and half a stride
    assert start.end_pts == pytest.approx(7 / 5 + 0.2 + 0.2)
    get = m.registry.get_sample_value
    assert get("vbw_events_total", {"stream": "cam1/door", "label": "a", "type": "start"}) == 1
    assert get("vbw_events_total", {"stream": "cam1/door", "label": "a", "type": "update"}) == 0
    assert get("vbw_segments_open", {"stream": "cam1/door", "label": "a"}) == 0


def test_dirty_windows_hold_their_frames_until_a_checkpoint_covers_them():
    st = stage(MemoryStateStore(), every=3)
    # idle, pending, start, open x4, off x2 (end), idle
    scores = [0.1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1]
    batches, holds = run(st, "cam", scores)
    assert holds[0] == [] and holds[-1] == []  # clean: idle before and after
    assert all(holds[k] for k in range(1, 9))
    kinds = [([e.type for e in b.events], b.checkpoint is not None) for b in batches]
    # the start, a periodic checkpoint after 3 dirty windows, the end
    assert kinds == [(["start"], True), ([], True), (["end"], True)]
    covered = [r for b in batches for r in b.cover]
    assert sorted(covered) == sorted(r for h in holds for r in h)  # every extra hold is covered once
    assert batches[-1].checkpoint.state["tracks"] == {}  # idle again


def test_going_back_to_idle_without_events_checkpoints_too():
    st = stage(MemoryStateStore())
    batches, holds = run(st, "cam", [0.9, 0.1, 0.1])  # pending, then idle: no event
    assert [b.events for b in batches] == [[]] and batches[0].checkpoint is not None
    assert batches[0].cover == holds[0] + holds[1]


def test_restore_skips_applied_windows_and_goes_on_with_the_same_events():
    scores = [0.1, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1]
    ref_batches, _ = run(stage(MemoryStateStore()), "cam", scores)
    want = [e.to_json() for b in ref_batches for e in b.events]

    store = MemoryStateStore()
    first = stage(store)
    got: list[str] = []
    for k in range(4):  # up to the window after the start; its checkpoint is saved
        b, _ = first.window(result("cam", k, scores[k]))
        if b is not None:
            got += [e.to_json() for e in b.events]
            if b.checkpoint is not None:
                store.write(b.checkpoint, lambda err: None)
    second = stage(store)  # a restart: replays from window 1 (its frames were not committed)
    for k in range(1, len(scores)):
        b, _ = second.window(result("cam", k, scores[k]))
        got += [e.to_json() for e in b.events] if b is not None else []
    assert second.skipped == 2  # windows 1 and 2 were in the saved state
    assert sorted(set(got)) == sorted(want)


def test_restore_reads_again_for_a_partition_assigned_again():
    class Counting(MemoryStateStore):
        def __init__(self) -> None:
            super().__init__()
            self.fresh: list[bool] = []

        def restore(self, stream_id, frames, fresh):
            self.fresh.append(fresh)
            return super().restore(stream_id, frames, fresh)

    store = Counting()
    st = stage(store)
    st.window(result("cam0", 0, 0.1))
    st.window(result("cam1", 0, 0.1))  # the same partition: what was read serves
    st.drop("cam0")  # revoked...
    st.window(result("cam0", 5, 0.1))  # ...and assigned again: read again
    assert store.fresh == [True, False, True]


def test_a_break_ends_segments_and_a_replayed_break_is_skipped():
    store = MemoryStateStore()
    st = stage(store)
    run(st, "cam", [0.9, 0.9, 0.9])
    batch, holds = st.close("cam", ("frames", 0, 7), 7)  # a reset before frame 7
    assert [e.type for e in batch.events] == ["end"] and batch.events[0].end_reason == "break"
    assert holds == [("frames", 0, 7)] and ("frames", 0, 7) in batch.cover
    # a restored state past the break (its last window starts at 8 >= 7): a replayed break
    st2 = stage(store)
    store.saved["cam"] = Checkpoint("cam", ("frames", 0), (8, 0), _open_state(8))
    assert st2.close("cam", ("frames", 0, 7), 7) == (None, [])
    assert st2.skipped == 1


def test_an_open_segment_keeps_its_anchor_held_until_a_later_checkpoint():
    # A break may wait for the stream's next frame (a reset off the grid); the frames between are
    # skipped without a hold. The first frame of the last checkpointed window of a stream that is
    # not idle stays held, so the commit cannot pass a break the saved state lacks.
    store = MemoryStateStore()
    st = stage(store, every=1)
    batches, holds = run(st, "cam", [0.9, 0.9, 0.9])  # pending, start, open: a checkpoint each
    covered = [r for b in batches for r in b.cover]
    anchor = holds[2][0]  # window 2's first frame
    assert sorted([*covered, anchor]) == sorted(r for h in holds for r in h)
    # the break (idle again) lets the anchor go with its own checkpoint
    batch, _ = st.close("cam", ("frames", 0, 9), 9)
    assert anchor in batch.cover
    # a replay of the restored open state anchors on its first skipped window
    again = stage(store)
    store.saved["cam"] = Checkpoint("cam", ("frames", 0), (8, 0), _open_state(8))
    b, extra = again.window(result("cam", 1, 0.9))
    assert b is None and again.skipped == 1 and extra == [("frames", 0, 2)]
    b, extra = again.window(result("cam", 2, 0.9))  # skipped, already anchored
    assert b is None and extra == []


def _open_state(start: int) -> dict:
    st = stage(MemoryStateStore())
    run(st, "cam", [0.9, 0.9, 0.9, 0.9, 0.9], start0=start - 8)
    return st._streams["cam"].seg.to_dict()


def test_drop_forgets_and_lets_go_of_extra_holds():
    m = Metrics()
    st = stage(MemoryStateStore(), m, every=100)
    _, holds = run(st, "cam", [0.9, 0.9, 0.9])
    assert m.registry.get_sample_value("vbw_segments_open", {"stream": "cam", "label": "a"}) == 1
    refs = st.drop("cam")
    # the start's checkpoint covered windows 0-1; window 2 was not covered yet; and the anchor of
    # the open segment, the first frame of the checkpoint's last window (1), held until a later one
    assert refs == holds[2] + [holds[1][0]]
    assert m.registry.get_sample_value("vbw_segments_open", {"stream": "cam", "label": "a"}) == 0
    assert st.streams() == []


def test_snapshot_hook_is_called_when_the_peak_changes():
    saved = []

    def snap(sid: str, w: Window) -> str:
        saved.append(w.window_id)
        return f"{sid}/{w.window_id}.jpg"

    st = stage(snapshot=snap)
    batches, _ = run(st, "cam", [0.7, 0.9, 0.8, 0.95, 0.1, 0.1], refs=False)
    end = batches[-1].events[0]
    assert saved == ["cam-w0", "cam-w2", "cam-w6"]
    assert end.snapshot == "cam/cam-w6.jpg" and end.peak_window_id == "cam-w6"


def test_resolve_rules_in_model_order_and_unknown_labels_refused():
    cfg = EventsConfig(labels=["c", "a"], rules={"c": {"on_threshold": 0.7}})
    rules = resolve_rules(cfg, LABELS)
    assert (
        list(rules) == ["a", "c"]
        and rules["c"].on == 0.7
        and rules["a"].on == EventsConfig().default.on_threshold
    )
    assert list(resolve_rules(EventsConfig(), ("none", "a"))) == ["a"]  # `none` is never of interest
    with pytest.raises(ValueError, match="not labels of the model: z"):
        resolve_rules(EventsConfig(labels=["z"]), LABELS)


# -- the ledger ----------------------------------------------------------------------------------
class Later(Sink):
    def __init__(self, name: str = "events") -> None:
        self.name, self.takes_events = name, True
        self.waiting: list[tuple[EventMessage, DeliveryCallback]] = []

    def publish(self, result, done):  # pragma: no cover - an event sink
        raise AssertionError("windows to an event sink")

    def publish_event(self, event, done):
        self.waiting.append((event, done))

    def flush(self, timeout):
        return not self.waiting

    def close(self):
        pass


class LaterStore(MemoryStateStore):
    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[Checkpoint, DeliveryCallback]] = []

    def write(self, checkpoint, done):
        self.pending.append((checkpoint, done))


def test_ledger_checkpoints_in_order_after_the_events_then_releases():
    released: list = []
    ledger = DeliveryLedger(Metrics(), lambda sid: released.append)
    st = stage(MemoryStateStore())
    batches, holds = run(st, "cam", [0.9, 0.9, 0.9, 0.1, 0.1])
    for h in holds:
        ledger.hold(h)
    sink, store = Later(), LaterStore()
    for b in batches:
        ledger.publish_events(b, [sink])
    assert ledger.pump(store) == 0 and not store.pending  # nothing acked yet
    (_, done_start), (_, done_end) = sink.waiting
    done_end(None)  # the end acked first: its checkpoint still waits for the start's
    assert ledger.pump(store) == 0
    done_start(None)
    assert ledger.pump(store) == 2
    assert [ck.position for ck, _ in store.pending] == sorted(ck.position for ck, _ in store.pending)
    for _, done in store.pending:
        done(None)
    freed = [r for item in released if isinstance(item, FramesReleased) for r in item.refs]
    assert sorted(freed) == sorted({r for h in holds for r in h})  # only the extra holds were there
    assert ledger.events_in_flight() == 0


def test_ledger_a_failed_event_keeps_the_stream_held_other_streams_go_on():
    ledger = DeliveryLedger(Metrics(), lambda sid: None)
    sink, store = Later(), LaterStore()
    ev_a = run(stage(MemoryStateStore()), "a", [0.9, 0.9])[0]
    ev_b = run(stage(MemoryStateStore()), "b", [0.9, 0.9])[0]
    for b in ev_a + ev_b:
        ledger.publish_events(b, [sink])
    (_, done_a), (_, done_b) = sink.waiting
    done_a("broker said no")
    done_b(None)
    ledger.pump(store)
    assert [ck.stream_id for ck, _ in store.pending] == ["b"]
    assert ledger.events_in_flight() == 2  # a's batch stays, b's checkpoint is in flight


def test_ledger_windows_settle_when_every_sink_takes_events_only():
    delivered: list = []
    ledger = DeliveryLedger(Metrics(), lambda sid: delivered.append)
    r = result("cam", 0, 0.5)
    ledger.hold(r.window.source_refs)
    ledger.publish(r, [])
    assert ledger.in_flight() == 0 and any(isinstance(x, FramesReleased) for x in delivered)


# -- through the inference stage ------------------------------------------------------------------
def test_a_reset_reaches_the_segmenter_behind_the_windows_cut_before_it():
    from fake_engine import FakeEngine

    class Level(FakeEngine):
        def encode_frames(self, frames):
            v = frames.reshape(len(frames), -1)[:, 0].astype(np.float32) / 255
            return np.stack([v, np.zeros_like(v)], 1)

        def encode_steps(self, features, prev):
            return features.astype(np.float32)

        def encode_tokens(self, tokens):
            a = tokens[:, :, 0].mean(1)
            return np.stack([a, 1 - a, 0 * a], 1).astype(np.float32), np.ones((len(a), 2), np.float32)

    engine = Level(num_frames=T)
    ev = stage()
    clock = [0.0]
    inf = InferenceStage(
        engine,
        WindowsConfig(stride=S),
        BatchingConfig(max_batch=8, max_delay_ms=1000.0, frame_max_batch=1, frame_max_delay_ms=0),
        metrics=Metrics(),
        worker_id="w",
        top_k=1,
        clock=lambda: clock[0],
        events=ev,
    )
    img = np.full((2, 2, 3), 255, np.uint8)
    out = inf.feed([Frame("cam", i, i / 5, 1000 + i / 5, img) for i in range(8)])
    assert not out.results  # the windows wait in the batcher (max_delay 1 s)
    out = inf.feed([StreamReset("cam", "reconnect")])  # the reset waits behind them in the gate
    clock[0] = 2.0
    out = inf.feed([])
    assert len(out.results) == 3
    kinds = [e.type for b in out.events for e in b.events]
    assert kinds == ["start", "end"]  # the end came after every window of the run
    assert isinstance(out.events[0], EventBatch)


def test_suspend_saves_the_state_without_events_so_the_last_commit_moves():
    store = MemoryStateStore()
    st = stage(store, every=100)
    _, holds = run(st, "cam", [0.9, 0.9, 0.9, 0.9])  # open; windows 2-3 not covered by a checkpoint
    batch = st.suspend("cam")
    # it covers windows 2-3 and the start's anchor (window 1's first frame), but the segment is
    # still open: window 3's first frame stays held as the new anchor, so the last commit stays
    # before any break read after it and not yet applied (docs/events.md)
    assert batch is not None and batch.events == []
    assert sorted(batch.cover) == sorted([*holds[2], *holds[3][1:], holds[1][0]])
    assert batch.checkpoint.state["tracks"]["a"]["phase"] == "open" and st.streams() == []
    store.write(batch.checkpoint, lambda err: None)
    again = stage(store)  # the next run goes on from there: no new start, the end when it comes
    b, _ = again.window(result("cam", 4, 0.1))
    assert b is None and again.skipped == 0
    b, _ = again.window(result("cam", 5, 0.1))
    assert [e.type for e in b.events] == ["end"] and b.events[0].windows == 4
    assert stage(MemoryStateStore()).suspend("nobody") is None
