"""InferenceStage without threads: frames and controls in, window results and ref bookkeeping out,
with a numpy engine and a clock the test moves."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import numpy as np
import pytest
from fake_engine import FakeEngine

from worker.config import BatchingConfig, WindowsConfig
from worker.frames import Frame
from worker.inference_stage import DropStreams, InferenceStage, StageOutput, StreamReset
from worker.metrics import Metrics

WALL = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make_stage(
    *,
    stride: int = 2,
    partial: str = "pad",
    max_gap: int = 0,
    max_batch: int = 4,
    max_delay_ms: float = 0.0,
    frame_max_batch: int = 3,
    frame_max_delay_ms: float = 0.0,
    engine: FakeEngine | None = None,
) -> tuple[InferenceStage, FakeEngine, Clock, Metrics]:
    engine = engine or FakeEngine(num_frames=4)
    clock, metrics = Clock(), Metrics()
    stage = InferenceStage(
        engine,
        WindowsConfig(stride=stride, partial=partial, max_gap=max_gap),
        BatchingConfig(
            max_batch=max_batch,
            max_delay_ms=max_delay_ms,
            frame_max_batch=frame_max_batch,
            frame_max_delay_ms=frame_max_delay_ms,
        ),
        metrics=metrics,
        worker_id="w-test",
        top_k=2,
        clock=clock,
        wall_clock=lambda: WALL,
    )
    return stage, engine, clock, metrics


def image(sid: str, seq: int) -> np.ndarray:
    return np.random.default_rng([ord(sid[0]), seq]).integers(0, 255, (2, 2, 3), dtype=np.uint8)


def frame(sid: str, seq: int, ref: bool = True) -> Frame:
    src = ("frames", ord(sid[0]), seq) if ref else None
    return Frame(sid, seq, seq / 5, WALL - 1.0, image(sid, seq), source_ref=src)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def merge(*outs: StageOutput) -> StageOutput:
    total = StageOutput()
    for o in outs:
        total.results += o.results
        total.held += o.held
        total.released += o.released
    return total


def test_frames_in_windows_out_with_messages_and_ref_bookkeeping():
    stage, engine, _clock, metrics = make_stage()
    out = stage.feed([frame("a", s) for s in range(9)])
    msgs = [r.message for r in out.results]
    assert [(m.start_seq, m.end_seq, m.complete, m.index) for m in msgs] == [
        (0, 3, True, 0),
        (2, 5, True, 1),
        (4, 7, True, 2),
    ]
    for r in out.results:
        m = r.message
        assert m.worker == "w-test" and m.model.name == "fake" and len(m.labels) == 2
        assert m.latency_ms == pytest.approx(1000.0)  # capture 1 s before the wall clock
        assert m.produced_at == datetime.fromtimestamp(WALL, UTC)
        assert r.window.features is None and r.window.tokens is None  # freed before the sinks
        # cached-token windows score like the whole window recomputed from its pixels
        clip = np.stack([image("a", s) for s in range(m.start_seq, m.end_seq + 1)])[None]
        want, want_emb = engine.infer_windows(clip)
        np.testing.assert_allclose(r.scores, want[0], rtol=1e-5)
        np.testing.assert_allclose(r.embedding, want_emb[0], rtol=1e-5)
        assert r.window.source_refs == [("frames", ord("a"), s) for s in range(m.start_seq, m.end_seq + 1)]
    # one hold per frame entering the buffer, one per frame of each window
    frames_held = [("frames", ord("a"), s) for s in range(9)]
    windows_held = [ref for r in out.results for ref in r.window.source_refs]
    assert sorted(out.held) == sorted(frames_held + windows_held)
    # the buffer let go of the frames no later window will use: 0..5 (slid out, stride 2)
    released = [ref for sid, refs in out.released for ref in refs if sid == "a"]
    assert released == [("frames", ord("a"), s) for s in range(6)]
    assert engine.window_batches and all(p == "tokens" for p, _ in engine.window_batches)
    assert sample(metrics, "vbw_batch_size_count") == len(engine.window_batches)
    assert sample(metrics, "vbw_stage_seconds_count", stage="encode_frames") == 3  # 9 frames / 3
    assert sample(metrics, "vbw_stage_seconds_count", stage="encode_windows") == len(engine.window_batches)


def test_windows_wait_for_a_batch_until_the_clock_says_so():
    stage, _, clock, _ = make_stage(max_batch=4, max_delay_ms=50)
    out = stage.feed([frame("a", s) for s in range(4)])  # one window: not a full batch
    assert out.results == [] and stage.waiting() == 1
    assert stage.deadline() == pytest.approx(clock.t + 0.05)
    clock.t += 0.049
    assert stage.feed([]).results == []
    clock.t += 0.002
    out = stage.feed([])
    assert [r.message.start_seq for r in out.results] == [0]
    assert stage.deadline() is None and stage.waiting() == 0


def test_frames_wait_for_a_frame_batch_and_a_control_flushes_them_first():
    stage, *_ = make_stage(frame_max_batch=8, frame_max_delay_ms=1000)
    out = stage.feed([frame("a", s) for s in range(3)])
    assert out.held == [] and stage.waiting() == 3  # not encoded yet
    out = stage.feed([StreamReset("a", "eos")])  # the frames before it go first, then the close
    assert [(r.message.frames, r.message.complete) for r in out.results] == [(3, False)]
    assert len(out.held) == 3 + 3


def test_reset_pads_or_drops_the_partial_window_and_counts_it():
    stage, _, _, metrics = make_stage()
    out = stage.feed([*(frame("a", s) for s in range(5)), StreamReset("a", "eos")])
    # 0..3 complete; the reset settles 2..4 (frame 4 is in no complete window): padded
    assert [(r.message.start_seq, r.message.frames, r.message.complete) for r in out.results] == [
        (0, 4, True),
        (2, 3, False),
    ]
    assert sample(metrics, "vbw_windows_partial_total", policy="padded", reason="eos") == 1
    out = stage.feed(
        [*(frame("a", s) for s in range(10, 13)), StreamReset("a", "reconnect", emit_partial=False)]
    )
    assert out.results == []
    assert sample(metrics, "vbw_windows_dropped_total", reason="reconnect") == 1
    # every buffered frame was let go by the close
    assert sorted(r for _, refs in out.released for r in refs) == [
        ("frames", ord("a"), s) for s in (10, 11, 12)
    ]


def test_gap_and_out_of_order_are_counted():
    stage, _, _, metrics = make_stage(partial="drop")
    out = stage.feed([frame("a", 0), frame("a", 1), frame("a", 5), frame("a", 4)])
    assert out.results == []
    assert sample(metrics, "vbw_windows_dropped_total", reason="gap") == 1
    assert sample(metrics, "vbw_frames_dropped_total", stream="a", reason="out_of_order") == 1
    released = [r for _, refs in out.released for r in refs]
    assert ("frames", ord("a"), 4) in released  # the late frame is needed by nothing


def test_drop_forgets_a_stream_without_windows_and_releases_its_buffer(caplog):
    stage, _, _, metrics = make_stage()
    with caplog.at_level(logging.INFO, logger="vbw.pipeline"):
        out = stage.feed(
            [*(frame("a", s) for s in range(3)), frame("b", 0), DropStreams(("a", "x"), "revoked")]
        )
    assert out.results == []
    assert ("a", [("frames", ord("a"), s) for s in range(3)]) in out.released
    assert any(r.getMessage() == "stream a: window state dropped (revoked)" for r in caplog.records)
    assert not any("stream x" in r.getMessage() for r in caplog.records)  # never had state
    assert sample(metrics, "vbw_windows_dropped_total", reason="revoked") == 0  # not counted
    out = stage.feed([frame("a", s) for s in range(3, 7)])  # a new run: index starts again
    assert [(r.message.start_seq, r.message.index) for r in out.results] == [(3, 0)]


def test_engine_error_on_frames_drops_them_and_closes_the_stream(caplog):
    stage, engine, _, metrics = make_stage(frame_max_batch=2)
    stage.feed([frame("a", 0), frame("a", 1)])
    engine.fail_frames = 1
    with caplog.at_level(logging.ERROR, logger="vbw.pipeline"):
        out = stage.feed([frame("a", 2), frame("a", 3)])
    assert sample(metrics, "vbw_frames_dropped_total", stream="a", reason="engine_error") == 2
    assert any(
        r.getMessage() == "encode_frames failed on 2 frames: RuntimeError: frames boom"
        for r in caplog.records
    )
    # the buffer (0, 1) was closed: a padded partial instead of a window bridging the hole
    assert [(r.message.start_seq, r.message.frames) for r in out.results] == [(0, 2)]
    assert sample(metrics, "vbw_windows_partial_total", policy="padded", reason="engine_error") == 1
    assert ("frames", ord("a"), 2) not in out.held  # never entered a buffer; stays held upstream


def test_engine_error_on_windows_drops_them_and_later_windows_still_leave(caplog):
    stage, engine, _, metrics = make_stage(max_batch=1)
    engine.fail_windows = 1
    with caplog.at_level(logging.ERROR, logger="vbw.pipeline"):
        out = stage.feed([frame("a", s) for s in range(8)])
    assert [r.message.start_seq for r in out.results] == [2, 4]  # window 0 was lost
    assert sample(metrics, "vbw_windows_dropped_total", reason="engine_error") == 1
    assert any(
        r.getMessage() == "encode_windows failed on 1 windows: RuntimeError: windows boom"
        for r in caplog.records
    )
    # its frames stay held: the window's holds were reported and nothing undoes them
    assert out.held.count(("frames", ord("a"), 0)) == 2


def test_close_settles_every_stream_by_its_sources_policy():
    stage, _, _, metrics = make_stage(max_delay_ms=1000, frame_max_batch=8, frame_max_delay_ms=1000)
    first = stage.feed([*(frame("file", s) for s in range(5)), *(frame("kafka", s) for s in range(5))])
    assert first.results == []  # everything still waits for a batch
    out = stage.close(lambda sid: sid != "kafka")
    got = sorted((r.message.stream_id, r.message.start_seq, r.message.complete) for r in out.results)
    assert got == [("file", 0, True), ("file", 2, False), ("kafka", 0, True)]
    released: dict[str, list[int]] = {}
    for sid, refs in merge(first, out).released:  # 8 of the 10 frames made a full batch
        released.setdefault(sid, []).extend(r[2] for r in refs)
    assert sorted(released["file"]) == [0, 1, 2, 3, 4]
    assert sorted(released["kafka"]) == [0, 1]  # slid out; 2..4 stay held for the replay
    assert sample(metrics, "vbw_windows_partial_total", policy="padded", reason="shutdown") == 1
    assert stage.waiting() == 0 and stage.deadline() is None


def test_a_complete_window_never_overtakes_an_older_padded_one():
    """Issue 9 finding 10: the complete windows' batch filled while the padded window (its own
    batch key, other engine path) waited, and the stream's windows left as 0, 2, 1."""
    stage, engine, clock, _ = make_stage(stride=4, max_batch=2, max_delay_ms=1000)
    out1 = stage.feed([frame("a", s) for s in range(4)])  # window 0: complete, waits for a batch
    out2 = stage.feed([frame("a", 4), frame("a", 5)])
    out3 = stage.feed([frame("a", s) for s in range(10, 14)])  # gap: 1 = (4, 5) padded; then 2 complete
    assert out1.results == out2.results == []
    assert [r.message.start_seq for r in out3.results] == [0]  # 2 was ready, but 1 is older
    assert ("tokens", 2) in engine.window_batches  # the full batch of complete windows did run
    clock.t += 1.0
    out4 = stage.feed([])
    assert [r.message.start_seq for r in out4.results] == [4, 10]


def test_unknown_items_are_refused():
    stage, *_ = make_stage()
    with pytest.raises(TypeError, match="not a frame or a control"):
        stage.feed([object()])
