"""Issue 9 finding 10: each stream's windows leave the InferenceStage in start order, whatever mix
of complete (cached-token path), padded and short partial (features path) windows, and whatever
batch sizes, delays and clock steps. Also: every window leaves exactly once."""

from __future__ import annotations

import numpy as np
from fake_engine import FakeEngine
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.config import BatchingConfig, WindowsConfig
from worker.frames import Frame
from worker.inference_stage import DropStreams, InferenceStage, StreamReset
from worker.metrics import Metrics

IMAGE = np.zeros((2, 2, 3), np.uint8)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@st.composite
def scenarios(draw):
    """Interleaved streams with gaps, resets and drops, cut into feed() calls with clock steps."""
    n_streams = draw(st.integers(1, 3))
    nxt = [0] * n_streams
    items: list = []
    for _ in range(draw(st.integers(1, 80))):
        s = draw(st.integers(0, n_streams - 1))
        sid = f"cam{s}"
        kind = draw(st.sampled_from(["frame"] * 12 + ["gap"] * 2 + ["reset", "reset_no_partial", "drop"]))
        if kind == "reset":
            items.append(StreamReset(sid, "eos"))
        elif kind == "reset_no_partial":
            items.append(StreamReset(sid, "reconnect", emit_partial=False))
        elif kind == "drop":
            items.append(DropStreams((sid,), "revoked"))
        else:
            if kind == "gap":
                nxt[s] += draw(st.integers(2, 5))
            items.append(Frame(sid, nxt[s], nxt[s] / 5, 0.0, IMAGE))
            nxt[s] += 1
    # cut the items into feed() calls, each after a clock step (0, inside or past the delays)
    steps = st.sampled_from([0.0, 0.001, 0.004, 0.02, 0.1])
    calls, i = [], 0
    while i < len(items):
        k = draw(st.integers(1, 6))
        calls.append((draw(steps), items[i : i + k]))
        i += k
        if draw(st.booleans()):  # a turn with nothing new, only time passing
            calls.append((draw(steps), []))
    cfg = dict(
        size=draw(st.integers(2, 5)),
        stride=draw(st.integers(1, 6)),
        max_gap=draw(st.integers(0, 1)),
        partial=draw(st.sampled_from(["pad", "emit", "drop"])),
        max_batch=draw(st.integers(1, 4)),
        max_delay=draw(st.sampled_from([0.0, 0.002, 0.01, 0.05])),
        frame_max_batch=draw(st.integers(1, 5)),
        frame_max_delay=draw(st.sampled_from([0.0, 0.003, 0.05])),
    )
    return cfg, calls


def run(cfg: dict, calls: list) -> list:
    clock = Clock()
    stage = InferenceStage(
        FakeEngine(num_frames=cfg["size"], max_batch=8),
        WindowsConfig(stride=cfg["stride"], max_gap=cfg["max_gap"], partial=cfg["partial"]),
        BatchingConfig(
            max_batch=cfg["max_batch"],
            max_delay_ms=cfg["max_delay"] * 1000,
            frame_max_batch=cfg["frame_max_batch"],
            frame_max_delay_ms=cfg["frame_max_delay"] * 1000,
        ),
        metrics=Metrics(),
        worker_id="w",
        top_k=1,
        clock=clock,
        wall_clock=lambda: 0.0,
    )
    out = []
    for step, items in calls:
        clock.t += step
        out += stage.feed(items).results
    out += stage.close().results
    assert stage.waiting() == 0
    return [r.message for r in out]


@settings(max_examples=300, deadline=None)
@given(case=scenarios())
def test_each_streams_windows_leave_in_start_order(case):
    cfg, calls = case
    msgs = run(cfg, calls)
    for sid in {m.stream_id for m in msgs}:
        starts = [m.start_seq for m in msgs if m.stream_id == sid]
        assert starts == sorted(starts), f"{sid} left as {starts}"
        assert len(set(starts)) == len(starts)  # seqs never repeat, so neither do window starts
    # the same windows as one frame at a time, one window at a time (nothing lost or added)
    one_by_one = {**cfg, "max_batch": 1, "max_delay": 0.0, "frame_max_batch": 1, "frame_max_delay": 0.0}
    flat = [(0.0, [it]) for _, items in calls for it in items]
    assert sorted(m.window_id for m in msgs) == sorted(m.window_id for m in run(one_by_one, flat))
