"""Hot model swap without threads: InferenceStage.begin_swap and worker.model_swap.Handover, with
two numpy engines whose frame encoders differ (a window analysed with features of the wrong
encoder gets other scores) and a clock the test moves."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from fake_engine import FakeEngine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.config import BatchingConfig, WindowsConfig
from worker.frames import Frame
from worker.inference_stage import DropStreams, InferenceStage, StageOutput, StreamReset
from worker.metrics import Metrics
from worker.model_swap import Handover, incompatibilities
from worker.windows import FrameMeta, SlidingWindowAssembler

WALL = 1_700_000_000.0
T = 4


class NewEngine(FakeEngine):
    """The "retrained" model: same shape, another frame encoder and version."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.metadata = self.metadata.model_copy(update={"version": "2"})
        self.closed = False

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        x = frames.reshape(len(frames), -1).astype(np.float32)
        return np.stack([x.max(1) - x.min(1), 3.0 * x[:, -1]], axis=1)

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def image(sid: str, seq: int) -> np.ndarray:
    return np.random.default_rng([ord(sid[0]), seq]).integers(0, 255, (2, 2, 3), dtype=np.uint8)


def frame(sid: str, seq: int) -> Frame:
    return Frame(sid, seq, seq / 5, WALL - 1.0, image(sid, seq), source_ref=("frames", ord(sid[0]), seq))


def make_stage(
    *,
    stride: int = 2,
    partial: str = "pad",
    max_gap: int = 0,
    max_batch: int = 4,
    max_delay_ms: float = 0.0,
    frame_max_batch: int = 3,
    frame_max_delay_ms: float = 0.0,
    handover_timeout_s: float = 60.0,
) -> tuple[InferenceStage, FakeEngine, Clock]:
    engine, clock = FakeEngine(num_frames=T), Clock()
    stage = InferenceStage(
        engine,
        WindowsConfig(stride=stride, partial=partial, max_gap=max_gap),
        BatchingConfig(
            max_batch=max_batch,
            max_delay_ms=max_delay_ms,
            frame_max_batch=frame_max_batch,
            frame_max_delay_ms=frame_max_delay_ms,
        ),
        metrics=Metrics(),
        worker_id="w-test",
        top_k=3,
        clock=clock,
        wall_clock=lambda: WALL,
        handover_timeout_s=handover_timeout_s,
    )
    return stage, engine, clock


@dataclass
class Run:
    """Everything the stage put out, and the frames fed per stream."""

    outs: list[StageOutput] = field(default_factory=list)
    fed: dict[str, list[int]] = field(default_factory=dict)

    def feed(self, stage: InferenceStage, items: list) -> None:
        for i in items:
            if isinstance(i, Frame):
                self.fed.setdefault(i.stream_id, []).append(i.seq)
        self.outs.append(stage.feed(items))

    def results(self, sid: str) -> list:
        return [r for o in self.outs for r in o.results if r.message.stream_id == sid]

    def retired(self) -> list:
        return [e for o in self.outs for e in o.retired]


def expected_scores(engine: FakeEngine, sid: str, seqs: list[int], partial: str) -> np.ndarray:
    clip = np.stack([image(sid, s) for s in seqs])
    if len(seqs) < T and partial == "pad":
        clip = np.concatenate([clip, np.repeat(clip[-1:], T - len(seqs), axis=0)])
    return engine.infer_windows(clip[None])[0][0]


def check_stream(run: Run, sid: str, engines: dict[str, FakeEngine], partial: str, after: int | None) -> None:
    """In order, none missing or twice, one model change at most, old before new, and each
    window's scores those of the model its message names, computed from its own frames.
    `after`: the last seq fed before the swap (None: none); windows starting later are new."""
    res = run.results(sid)
    assert [r.message.index for r in res] == list(range(len(res)))
    versions = [r.message.model.version for r in res]
    assert versions == sorted(versions), versions  # "1"... then "2"...
    fed = run.fed[sid]
    for r in res:
        m = r.message
        seqs = [s for s in fed if m.start_seq <= s <= m.end_seq]
        assert len(seqs) == m.frames
        want = expected_scores(engines[m.model.version], sid, seqs, partial)
        np.testing.assert_allclose(r.scores, want, rtol=1e-5, atol=1e-6)
        if after is None or m.start_seq > after:
            assert m.model.version == "2", (sid, m.index, m.start_seq, after)


def test_handover_switches_at_one_boundary_with_overlapping_windows() -> None:
    stage, old, _ = make_stage(stride=2, frame_max_batch=1)
    new = NewEngine(num_frames=T)
    run = Run()
    for seq in range(5):  # windows [0..3]; frames 2, 3, 4 buffered
        run.feed(stage, [frame("a", seq)])
    stage.begin_swap(new)
    assert stage.swapping and stage.engine is new
    for seq in range(5, 12):
        run.feed(stage, [frame("a", seq)])
    run.outs.append(stage.close())
    res = run.results("a")
    # windows start at 0, 2, 4 (old: 2 and 4 hold frames from before the swap), 6, 8 (new)
    assert [(r.message.start_seq, r.message.model.version) for r in res] == [
        (0, "1"), (2, "1"), (4, "1"), (6, "2"), (8, "2"),
    ]  # fmt: skip
    assert run.retired() == [old]
    assert stage.engines() == [new] and not stage.swapping
    check_stream(run, "a", {"1": old, "2": new}, "pad", after=4)


def test_an_empty_stream_and_a_new_stream_switch_at_once() -> None:
    stage, old, _ = make_stage(stride=4, frame_max_batch=1)
    run = Run()
    for seq in range(4):  # one whole window, nothing buffered after it
        run.feed(stage, [frame("a", seq)])
    stage.begin_swap(new := NewEngine(num_frames=T))
    assert run.outs[-1].retired == [] and stage.swapping
    run.feed(stage, [])  # nothing hands over and no old window waits: the old model goes
    assert run.retired() == [old] and not stage.swapping
    for seq in range(4, 8):
        run.feed(stage, [frame("a", seq), frame("b", seq)])
    assert [r.message.model.version for r in run.results("a")] == ["1", "2"]
    assert [r.message.model.version for r in run.results("b")] == ["2"]
    check_stream(run, "b", {"1": old, "2": new}, "pad", after=None)


def test_a_stream_without_frames_is_closed_after_the_timeout() -> None:
    stage, old, clock = make_stage(stride=2, frame_max_batch=1, handover_timeout_s=60.0)
    run = Run()
    for seq in range(3):
        run.feed(stage, [frame("a", seq)])
    stage.begin_swap(new := NewEngine(num_frames=T))
    clock.t += 59.0
    run.feed(stage, [])
    assert stage.swapping and not run.retired()
    clock.t += 1.0
    run.feed(stage, [])  # closed: its partial window (pad) by the old model
    run.feed(stage, [])
    assert run.retired() == [old]
    assert [(r.message.frames, r.message.model.version) for r in run.results("a")] == [(3, "1")]
    for seq in range(3, 7):
        run.feed(stage, [frame("a", seq)])
    assert [r.message.model.version for r in run.results("a")] == ["1", "2"]
    assert (
        stage.metrics.registry.get_sample_value(
            "vbw_windows_partial_total", {"policy": "padded", "reason": "model_swap"}
        )
        == 1.0
    )
    assert new.closed is False


def test_incompatible_models() -> None:
    a = FakeEngine(num_frames=4).metadata
    assert incompatibilities(a, a, events=True) == []
    b = FakeEngine(num_frames=8, image_size=(4, 4)).metadata
    assert len(incompatibilities(a, b, events=False)) == 2
    c = a.model_copy(update={"labels": ("x", "y", "z")})
    assert incompatibilities(a, c, events=False) == []
    assert incompatibilities(a, c, events=True)


def test_fork_cuts_the_same_windows() -> None:
    a = SlidingWindowAssembler("s", 4, 3, max_gap=1, partial="emit")
    f = np.ones(2, np.float32)
    for seq in (0, 1, 2, 3, 4):
        a.push(FrameMeta(seq, 0.0, 0.0), f)
    h = Handover(a, "2", since=0.0)
    assert h.after_seq == 4 and not h.done
    cuts = []
    for seq in (5, 7, 8, 9, 10, 13):  # a gap of 2 (> max_gap) at 13 closes
        step, is_new = h.push(FrameMeta(seq, 0.0, 0.0), (f, None), (2 * f, None))
        cuts += [
            (w.start_seq, w.end_seq, n, float(w.features[-1, 0]))
            for w, n in zip(step.windows, is_new, strict=True)
        ]
    step, is_new = h.close("eos")
    cuts += [
        (w.start_seq, w.end_seq, n, float(w.features[-1, 0]))
        for w, n in zip(step.windows, is_new, strict=True)
    ]
    assert cuts == [(3, 7, False, 1.0), (7, 10, True, 2.0), (13, 13, True, 2.0)]
    assert h.done


# -- the property -----------------------------------------------------------------------------
STREAMS = ("a", "b", "c")

op = st.one_of(
    st.tuples(st.just("frame"), st.sampled_from(STREAMS), st.integers(0, 2)),  # gap before it
    st.tuples(st.just("reset"), st.sampled_from(STREAMS), st.just(0)),
    st.tuples(st.just("tick"), st.just(""), st.integers(0, 30)),  # ms
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(st.lists(op, min_size=1, max_size=4), min_size=1, max_size=40),
    swap_at=st.integers(0, 40),
    stride=st.integers(1, 6),
    partial=st.sampled_from(["pad", "drop"]),
    max_gap=st.integers(0, 1),
    max_batch=st.integers(1, 4),
    max_delay_ms=st.sampled_from([0.0, 10.0]),
    frame_max_batch=st.integers(1, 4),
    frame_max_delay_ms=st.sampled_from([0.0, 10.0]),
)
def test_every_stream_switches_model_at_one_window_boundary(
    ops, swap_at, stride, partial, max_gap, max_batch, max_delay_ms, frame_max_batch, frame_max_delay_ms
) -> None:
    stage, old, clock = make_stage(
        stride=stride,
        partial=partial,
        max_gap=max_gap,
        max_batch=max_batch,
        max_delay_ms=max_delay_ms,
        frame_max_batch=frame_max_batch,
        frame_max_delay_ms=frame_max_delay_ms,
    )
    new = NewEngine(num_frames=T)
    run = Run()
    seq = dict.fromkeys(STREAMS, -1)
    after: dict[str, int | None] = dict.fromkeys(STREAMS)
    swapped = False
    for n, group in enumerate(ops):
        if n == swap_at:
            stage.begin_swap(new)
            swapped = True
            after = {s: (v if v >= 0 else None) for s, v in seq.items()}
        items: list = []
        for kind, sid, arg in group:
            if kind == "frame":
                seq[sid] += 1 + arg
                items.append(frame(sid, seq[sid]))
            elif kind == "reset":
                items.append(StreamReset(sid, "eos"))
            else:
                clock.t += arg / 1000
        run.feed(stage, items)
    run.outs.append(stage.close())
    engines = {"1": old, "2": new}
    for sid in STREAMS:
        if sid in run.fed:
            check_stream(run, sid, engines, partial, after[sid] if swapped else 10**9)
        if not swapped:
            assert {r.message.model.version for r in run.results(sid)} <= {"1"}
    # the old model is handed back exactly once, after its last window
    assert run.retired() == ([old] if swapped else [])
    assert stage.engines() == ([new] if swapped else [old])
    # window ids differ by model: a replay through the new model is not taken for the old one's
    ids = [r.message.window_id for o in run.outs for r in o.results]
    assert len(ids) == len(set(ids))


def test_a_revoked_stream_ends_its_handover_and_lets_its_frames_go() -> None:
    stage, old, _ = make_stage(stride=2, frame_max_batch=1)
    run = Run()
    for seq in range(5):
        run.feed(stage, [frame("a", seq), frame("b", seq)])
    stage.begin_swap(NewEngine(num_frames=T))
    run.outs.append(stage.feed([DropStreams(("a",), "revoked")]))
    released = [r for sid, refs in run.outs[-1].released if sid == "a" for r in refs]
    assert sorted(r[2] for r in released) == [2, 3, 4]  # the buffered frames, once each
    assert stage.swapping  # "b" still hands over
    for seq in range(5, 9):
        run.feed(stage, [frame("b", seq)])
    assert run.retired() == [old]


def test_segment_events_name_the_new_model_after_a_swap() -> None:
    from worker.event_messages import EventModelRef
    from worker.events import EventStage

    engine = FakeEngine(num_frames=T)
    events = EventStage(
        {},
        engine.metadata.labels,
        size=T,
        stride=2,
        max_gap=0,
        model=EventModelRef(name="fake", version="1"),
        metrics=Metrics(),
    )
    stage = InferenceStage(
        engine,
        WindowsConfig(stride=2),
        BatchingConfig(),
        metrics=Metrics(),
        worker_id="w",
        top_k=3,
        events=events,
    )
    stage.begin_swap(NewEngine(num_frames=T))
    assert events.model == EventModelRef(name="fake", version="2")
