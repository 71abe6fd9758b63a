"""Zero-shot labels changed while running (a config reload of `engine.labels`), without threads:
InferenceStage.set_prompts switches every stream at one window boundary (windows cut before it
keep the old labels, the rest get the new ones), none lost or twice, no gap, the model kept; and
the segmenter ends a stream's open segments (break) at its first window under other names."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from fake_engine import FakeEngine, TextFakeEngine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engines.base import TextUnavailable
from worker.config import BatchingConfig, WindowsConfig
from worker.event_messages import EventModelRef
from worker.events import EventStage, resolve_rules
from worker.events_config import EventsConfig
from worker.frames import Frame
from worker.inference_stage import InferenceStage, StageOutput
from worker.metrics import Metrics
from worker.prompt_labels import PromptLabels

WALL = 1_700_000_000.0
T, STRIDE = 4, 2
OLD = {"east": "east wind", "north": "north wind"}
NEW = {"westward": "west wind", "up": "north wind", "east": "east wind"}


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


def frame(sid: str, seq: int) -> Frame:
    img = np.random.default_rng([ord(sid[-1]), seq]).integers(0, 255, (2, 2, 3), dtype=np.uint8)
    return Frame(sid, seq, seq / 5, WALL - 1.0, img)


def make_stage(engine: FakeEngine, max_batch: int, delay_ms: float, events: EventStage | None = None):
    clock = Clock()
    stage = InferenceStage(
        engine,
        WindowsConfig(stride=STRIDE, partial="pad"),
        BatchingConfig(max_batch=max_batch, max_delay_ms=delay_ms, frame_max_batch=4, frame_max_delay_ms=0),
        metrics=Metrics(),
        worker_id="w-test",
        top_k=3,
        clock=clock,
        wall_clock=lambda: WALL,
        events=events,
        prompts=OLD,
    )
    return stage, clock


def check_switch(
    outs: list[StageOutput], engine: FakeEngine, last_before: dict[str, int], fed: dict[str, int]
):
    """Per stream: every window once, in order, none missing; labels old then new (one switch);
    a complete window is old iff it was cut before the change; scores are its label set's."""
    old_pl, new_pl = PromptLabels.encode(engine, OLD), PromptLabels.encode(engine, NEW)
    by_labels = {tuple(old_pl.labels): old_pl, tuple(new_pl.labels): new_pl}
    assert not [e for o in outs for e in o.retired]  # the model stays
    for sid, n in fed.items():
        res = [r for o in outs for r in o.results if r.message.stream_id == sid]
        assert [r.message.index for r in res] == list(range(len(res)))
        starts = [r.window.start_seq for r in res]
        assert starts == sorted(set(starts)) and starts[:1] == [0]
        assert res[-1].window.end_seq == n - 1  # the last frame is in a window: no gap at the end
        kinds = ["old" if r.labels == tuple(OLD) else "new" for r in res]
        assert all(r.labels in by_labels for r in res)
        assert kinds == sorted(kinds, key=lambda k: k == "new"), kinds  # old..., new...
        for r in res:
            if r.message.complete:
                assert (r.labels == tuple(OLD)) == (r.window.end_seq <= last_before.get(sid, -1)), (
                    sid,
                    kinds,
                )
            np.testing.assert_allclose(r.scores, by_labels[r.labels].scores(r.embedding[None])[0], rtol=1e-5)
            assert {ls.label for ls in r.message.labels} <= set(r.labels)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_batch=st.integers(1, 5),
    delay_ms=st.sampled_from([0.0, 1000.0]),
    steps=st.lists(st.lists(st.sampled_from(["s1", "s2"]), min_size=0, max_size=5), min_size=2, max_size=14),
    change_at=st.integers(0, 14),
    ticks=st.lists(st.booleans(), min_size=14, max_size=14),
)
def test_each_stream_switches_at_one_window_boundary(max_batch, delay_ms, steps, change_at, ticks):
    engine = TextFakeEngine(num_frames=T)
    stage, clock = make_stage(engine, max_batch, delay_ms)
    fed: dict[str, int] = {}
    last_before: dict[str, int] = {}
    outs: list[StageOutput] = []
    for i, step in enumerate(steps):
        if i == min(change_at, len(steps) - 1):
            last_before = {s: n - 1 for s, n in fed.items()}
            assert stage.set_prompts(NEW)
            assert stage.labels == tuple(NEW)
        frames = []
        for sid in step:
            frames.append(frame(sid, fed.get(sid, 0)))
            fed[sid] = fed.get(sid, 0) + 1
        if ticks[i]:
            clock.t += 2.0  # a delayed window batch falls due
        outs.append(stage.feed(frames))
    outs.append(stage.close())
    assert not stage.swapping and stage.waiting() == 0
    check_switch(outs, engine, last_before, fed)


def test_windows_waiting_in_the_batcher_keep_the_old_labels():
    engine = TextFakeEngine(num_frames=T)
    stage, _ = make_stage(engine, max_batch=8, delay_ms=1000.0)
    out = stage.feed([frame("s1", i) for i in range(6)])  # two windows cut, waiting for a fuller batch
    assert not out.results and stage.waiting() == 2
    assert stage.set_prompts(NEW)
    assert stage.swapping  # the old labels are needed until those two leave
    with pytest.raises(RuntimeError, match="handing streams over"):
        stage.set_prompts(OLD)  # one change at a time (the pipeline waits for `swapping` to clear)
    out2 = stage.feed([frame("s1", i) for i in range(6, 10)])
    out3 = stage.close()
    res = [r for o in (out, out2, out3) for r in o.results]
    assert [r.labels for r in res] == [tuple(OLD)] * 2 + [tuple(NEW)] * (len(res) - 2)
    assert not stage.swapping and not out3.retired


def test_classifier_and_prompts_switch_both_ways_and_unchanged_is_a_no_op():
    engine = TextFakeEngine(num_frames=T)
    stage, _ = make_stage(engine, max_batch=1, delay_ms=0.0)
    assert not stage.set_prompts(dict(OLD))  # the same prompts: nothing changes
    assert stage.set_prompts(None) and stage.labels == ("a", "b", "c")
    assert not stage.set_prompts({})
    out = stage.feed([frame("s1", i) for i in range(4)])
    assert [r.labels for r in out.results] == [("a", "b", "c")]
    assert stage.set_prompts(NEW)
    out = stage.feed([frame("s1", i) for i in range(4, 6)])
    assert [r.labels for r in out.results] == [tuple(NEW)]
    assert {ls.label for ls in out.results[0].message.labels} <= set(NEW)


def test_a_model_without_a_text_encoder_refuses_and_keeps_its_labels():
    stage, _ = make_stage(TextFakeEngine(num_frames=T), max_batch=1, delay_ms=0.0)
    stage._engines[0] = FakeEngine(num_frames=T)  # the same stage on a vision-only model
    with pytest.raises(TextUnavailable):
        stage.set_prompts(NEW)
    assert stage.labels == tuple(OLD) and not stage.swapping


# -- segment events ---------------------------------------------------------------------------------
RULE = {"on_threshold": 0.6, "off_threshold": 0.4, "start_windows": 1, "end_windows": 1}


def event_stage(labels: Sequence[str], cfg: EventsConfig) -> EventStage:
    return EventStage(
        resolve_rules(cfg, labels),
        labels,
        size=T,
        stride=STRIDE,
        max_gap=0,
        model=EventModelRef(name="fake", version="1"),
        metrics=Metrics(),
        resolve=lambda names: resolve_rules(cfg, names),
    )


def test_new_prompt_names_end_open_segments_at_each_streams_boundary():
    cfg = EventsConfig.model_validate({"default": RULE})
    engine = TextFakeEngine(num_frames=T)
    stage, clock = make_stage(engine, max_batch=8, delay_ms=1000.0, events=event_stage(list(OLD), cfg))
    outs = [stage.feed([frame(s, i) for i in range(6) for s in ("s1", "s2")])]
    clock.t += 2.0  # the windows cut so far leave; the prompts' sharp softmax opens a segment in each stream
    outs.append(stage.feed([]))
    outs.append(stage.feed([frame(s, i) for i in range(6, 8) for s in ("s1", "s2")]))
    assert stage.waiting() == 2  # one window per stream waits, cut under the old names
    assert stage.set_prompts(NEW)
    outs.append(stage.feed([frame(s, i) for i in range(8, 14) for s in ("s1", "s2")]))
    outs.append(stage.close())
    for sid in ("s1", "s2"):
        res = [r for o in outs for r in o.results if r.message.stream_id == sid]
        events = [e for o in outs for b in o.events for e in b.events if e.stream_id == sid]
        old = [r for r in res if r.labels == tuple(OLD)]
        first_new = res[len(old)]
        assert len(old) == 3 and all(r.labels == tuple(NEW) for r in res[len(old) :])
        # no segment straddles the boundary: old names' end with the last old window, at a break
        for e in events:
            assert e.end_seq <= old[-1].window.end_seq or e.start_seq >= first_new.window.start_seq, e
        at_boundary = [e for e in events if e.type == "end" and e.end_seq == old[-1].window.end_seq]
        assert at_boundary and all(e.end_reason == "break" and e.label in OLD for e in at_boundary)
        assert any(e.type == "start" and e.start_seq >= first_new.window.start_seq for e in events)


def test_same_names_new_sentences_keep_segments_going():
    ev = event_stage(["east", "north"], EventsConfig.model_validate({"default": RULE}))
    ev.set_labels(("east", "north"))  # a sentence changed: the names are the same
    assert ev.labels == ("east", "north")
    with pytest.raises(ValueError, match="not labels of the model"):
        event_stage(["east"], EventsConfig.model_validate({"default": RULE, "labels": ["east"]})).set_labels(
            ("west",)
        )


# -- a reload in a running pipeline ---------------------------------------------------------------
def test_a_reload_with_prompts_on_a_model_without_text_is_rejected(tmp_path, labelled_clips):
    import yaml

    from worker.config import load_config
    from worker.pipeline import Pipeline

    raw = {
        "sources": [{"type": "file", "id": "cam", "path": str(labelled_clips["grow"]), "loop": True}],
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "w.jsonl")}],
        "metrics": {"enabled": False},
        "api": {"watch_config": False},
    }
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump(raw))
    p = Pipeline(load_config(path), engine=FakeEngine(num_frames=T), install_signals=False, config_path=path)
    p.run_in_background()
    try:
        assert p.wait_started(120)
        path.write_text(yaml.safe_dump({**raw, "engine": {"labels": {"prompts": NEW}}}))
        out = p.reloader.reload("test")
        assert out.result == "rejected", out
        assert [pr.path for pr in out.problems] == ["engine.labels"]
        assert "text encoder" in str(out.problems[0])
        assert p.cfg.engine.labels is None  # the running config is kept
        assert p.metrics.registry.get_sample_value("vbw_model_swaps_total", {"result": "relabelled"}) == 0
    finally:
        p.stop()
        p.join(60)
