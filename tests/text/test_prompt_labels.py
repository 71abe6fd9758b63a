"""Zero-shot labels: prompts encoded once, window scores from cosine similarity, in the stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_engine import FakeEngine, TextFakeEngine

from engines import load_engine
from engines.base import TextUnavailable
from worker.config import BatchingConfig, EngineConfig, WindowsConfig
from worker.frames import Frame
from worker.inference_stage import InferenceStage
from worker.metrics import Metrics
from worker.prompt_labels import PromptLabels


def test_scores_are_a_softmax_of_cosine_over_temperature() -> None:
    pl = PromptLabels.encode(TextFakeEngine(), {"e": "east wind", "n": "north wind"}, temperature=0.1)
    assert pl.labels == ["e", "n"]
    s = pl.scores(np.array([[1.0, 0.0], [0.6, 0.8]], np.float32))
    np.testing.assert_allclose(s.sum(1), 1.0, rtol=1e-6)
    want = np.exp(np.array([1.0, 0.0]) / 0.1)
    np.testing.assert_allclose(s[0], want / want.sum(), rtol=1e-5)
    assert s[1].argmax() == 1
    assert pl.same_prompts({"e": "east wind", "n": "north wind"})
    assert not pl.same_prompts({"n": "north wind", "e": "east wind"})  # order is the label order


def test_empty_prompts_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        PromptLabels.encode(TextFakeEngine(), {})
    with pytest.raises(ValueError, match="empty name or sentence"):
        EngineConfig.model_validate({"labels": {"prompts": {"a": " "}}})
    with pytest.raises(ValueError):
        EngineConfig.model_validate({"labels": {"prompts": {}}})
    assert EngineConfig().labels is None  # the classifier head by default


def test_a_model_without_text_cannot_take_prompts() -> None:
    with pytest.raises(TextUnavailable, match="no text encoder"):
        PromptLabels.encode(FakeEngine(), {"a": "x"})


def test_tiny_model_prompts_use_its_fitted_temperature(tiny_model_dir: Path) -> None:
    with load_engine(tiny_model_dir) as engine:
        pl = PromptLabels.encode(engine, {"l": "something moves left", "r": "something moves right"})
        assert pl.temperature == engine.manifest.text.prompt_temperature
        assert pl.vectors.shape == (2, engine.metadata.embed_dim)
        np.testing.assert_allclose(np.linalg.norm(pl.vectors, axis=1), 1.0, atol=1e-5)


def _stage(engine: FakeEngine, prompts: dict[str, str] | None) -> InferenceStage:
    return InferenceStage(
        engine,
        WindowsConfig(stride=4, partial="drop"),
        BatchingConfig(max_batch=4, max_delay_ms=0.0, frame_max_batch=4, frame_max_delay_ms=0.0),
        metrics=Metrics(),
        worker_id="w",
        top_k=3,
        wall_clock=lambda: 1_700_000_000.0,
        prompts=prompts,
    )


def _labels(stage: InferenceStage) -> list[list[str]]:
    rng = np.random.default_rng(0)
    frames = [
        Frame("s", i, i / 5, 1_700_000_000.0, rng.integers(0, 255, (2, 2, 3), dtype=np.uint8))
        for i in range(8)
    ]
    out = stage.feed(frames)
    out2 = stage.close()
    return [[ls.label for ls in r.message.labels] for r in [*out.results, *out2.results]]


def test_stage_labels_windows_by_prompts_and_a_new_set_replaces_them() -> None:
    engine = TextFakeEngine(num_frames=4)
    assert {lb for row in _labels(_stage(engine, None)) for lb in row} <= {"a", "b", "c"}
    stage = _stage(engine, {"e": "east", "w": "west"})
    rows = _labels(stage)
    assert rows and all(sorted(r) == ["e", "w"] for r in rows)
    # FakeEngine's embeddings have positive x (mean pixel, first pixel): east is nearer than west.
    assert all(r[0] == "e" for r in rows)
    stage = _stage(engine, {"e": "west", "w": "east"})  # the same names, the sentences swapped
    assert all(r[0] == "w" for r in _labels(stage))
    stage.set_prompts(None)
    assert {lb for row in _labels(stage) for lb in row} <= {"a", "b", "c"}


def test_a_model_swap_brings_its_config_prompts() -> None:
    stage = _stage(TextFakeEngine(num_frames=4), {"e": "east", "w": "west"})
    stage.begin_swap(TextFakeEngine(num_frames=4), {"x": "west", "y": "east"})
    rows = _labels(stage)  # a new stream: cut for the new model
    assert rows and all(sorted(r) == ["x", "y"] for r in rows) and all(r[0] == "y" for r in rows)


def test_segment_events_follow_prompt_labels(default_model_dir: Path, tmp_path: Path) -> None:
    """Events name the prompts (the demo's motions, three of them as prompts, 'nothing moves')."""
    import json

    from worker.config import parse_config
    from worker.pipeline import Pipeline

    if load_engine(default_model_dir).text_tokenizer is None:
        pytest.skip("the shipped model has no text encoder")
    repo = Path(__file__).resolve().parents[2]
    prompts = {
        "going_left": "something moves to the left",
        "growing": "something grows",
        "still": "nothing moves",
    }
    cfg = parse_config(
        {
            "sources": [{"type": "file", "id": "sample", "path": str(repo / "samples" / "demo.mp4")}],
            "sampling": {"fps": 5},
            "windows": {"stride": 4},
            "engine": {"model_dir": str(default_model_dir), "threads": 1, "labels": {"prompts": prompts}},
            "events": {"labels": ["going_left", "growing"]},
            "sinks": [
                {"type": "jsonl", "path": str(tmp_path / "w.jsonl")},
                {"type": "jsonl", "path": str(tmp_path / "e.jsonl"), "payload": "events", "name": "events"},
            ],
            "metrics": {"enabled": False},
        }
    )
    assert Pipeline(cfg, metrics=Metrics(), install_signals=False).run() == 0
    windows = [json.loads(line) for line in (tmp_path / "w.jsonl").read_text().splitlines()]
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert windows and all({ls["label"] for ls in w["labels"]} <= set(prompts) for w in windows)
    assert {e["label"] for e in events} == {"going_left", "growing"}, {e["label"] for e in events}
