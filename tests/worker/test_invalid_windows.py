"""A window whose outputs cannot make a valid vbw.window/v1 message (a NaN pts or score, a NaN
embedding) is dropped by the inference stage: counted as `invalid_message`, logged, never handed
to the sinks, and its frames let go so the source's commit point moves on."""

from __future__ import annotations

import logging
import math
from collections import Counter

import numpy as np
from fake_engine import FakeEngine

from worker.config import BatchingConfig, WindowsConfig
from worker.frames import Frame
from worker.inference_stage import InferenceStage, StageOutput
from worker.metrics import Metrics
from worker.sinks.base import INVALID_REASON

WALL = 1_700_000_000.0


class NanEngine(FakeEngine):
    """Scores or embeddings of every window are NaN (an fp16 overflow, a broken model)."""

    def __init__(self, what: str) -> None:
        super().__init__(num_frames=4)
        self.what = what

    def encode_tokens(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, emb = super().encode_tokens(tokens)
        if self.what == "scores":
            scores[:, 1] = np.nan
        else:
            emb[:] = np.nan
        return scores, emb


def run(engine: FakeEngine, frames: list[Frame]) -> tuple[StageOutput, Metrics]:
    metrics = Metrics()
    stage = InferenceStage(
        engine,
        WindowsConfig(stride=2, partial="drop"),
        BatchingConfig(max_batch=4, max_delay_ms=0.0, frame_max_batch=3, frame_max_delay_ms=0.0),
        metrics=metrics,
        worker_id="w-test",
        top_k=2,
        clock=lambda: 100.0,
        wall_clock=lambda: WALL,
    )
    out = StageOutput()
    for part in (stage.feed(frames), stage.close()):
        out.results += part.results
        out.held += part.held
        out.released += part.released
    return out, metrics


def frames(sid: str, n: int, nan_pts_at: int | None = None) -> list[Frame]:
    rng = np.random.default_rng(7)
    return [
        Frame(
            sid,
            seq,
            math.nan if seq == nan_pts_at else seq / 5,
            WALL - 1.0,
            rng.integers(0, 255, (2, 2, 3), dtype=np.uint8),
            source_ref=("frames", 0, seq),
        )
        for seq in range(n)
    ]


def dropped(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("vbw_windows_dropped_total", {"reason": INVALID_REASON}) or 0.0


def holds_left(out: StageOutput) -> Counter:
    """Holds not given back, once every published window is acked (which releases its refs)."""
    left = Counter(out.held)
    for _sid, refs in out.released:
        left.subtract(refs)
    for r in out.results:
        left.subtract(r.window.source_refs)
    return +left


def test_a_window_ending_on_a_nan_pts_is_dropped_counted_and_released(caplog):
    with caplog.at_level(logging.WARNING, logger="vbw.sinks"):
        out, metrics = run(FakeEngine(num_frames=4), frames("cam", 8, nan_pts_at=3))
    # windows start at 0, 2, 4: only [0..3] ends on the NaN (pts enter a message at the ends)
    assert [r.message.start_seq for r in out.results] == [2, 4]
    assert dropped(metrics) == 1
    (line,) = [r.getMessage() for r in caplog.records if "not a valid vbw.window/v1" in r.getMessage()]
    assert "stream cam" in line and "end_pts" in line and "seq 0-3" in line
    assert not holds_left(out), "the dropped window's frames must not stay held"


def test_nan_scores_or_embeddings_publish_nothing(caplog):
    for what in ("scores", "embedding"):
        out, metrics = run(NanEngine(what), frames("cam", 10))
        assert out.results == [], what
        assert dropped(metrics) == 4, what  # windows at 0, 2, 4, 6
        assert not holds_left(out), what
