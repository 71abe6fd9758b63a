"""The shipped model through ONNX Runtime on CPU against torch FP32, on realistic generated clips.

FP32: max abs diff of scores <= 1e-4. FP16: top-1 agreement >= 99%. INT8: >= 97%.
The clips come from the project's clip generator with a seed the INT8 calibration never saw.
BENCHMARKS.md's parity figures: `VBW_PARITY_CLIPS=1024 pytest tests/engines/test_shipped_parity.py -s`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines import load_engine
from engines.base import window_predecessors
from engines.manifest import load_manifest

N_CLIPS = int(os.environ.get("VBW_PARITY_CLIPS", "256"))
SEED = 20_261_123  # not the export's calibration seeds (1234, 1235)


def _in_chunks(fn: Callable[[np.ndarray], Any], x: np.ndarray, size: int = 64) -> tuple[np.ndarray, ...]:
    """fn over x in chunks of `size` rows (bounded memory at VBW_PARITY_CLIPS=1024), outputs joined."""
    parts = [fn(x[i : i + size]) for i in range(0, len(x), size)]
    parts = [p if isinstance(p, tuple) else (p,) for p in parts]
    return tuple(np.concatenate(outs) for outs in zip(*parts, strict=True))


@pytest.fixture(scope="module")
def clips(default_model_dir: Path) -> np.ndarray:
    pytest.importorskip("media.clips", reason="clip generator not available")
    from build_engine.export import calibration_clips
    from videobert.model import load_checkpoint

    m = load_manifest(default_model_dir)
    model = load_checkpoint(str(default_model_dir / m.checkpoint))
    return calibration_clips(model, N_CLIPS, SEED)


@pytest.fixture(scope="module")
def reference(default_model_dir: Path, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with load_engine(default_model_dir, "torch", "fp32") as ref:
        (feats,) = _in_chunks(ref.encode_frames, clips.reshape(-1, *clips.shape[2:]), 1024)
        feats = feats.reshape(*clips.shape[:2], -1)
        scores, _ = _in_chunks(ref.encode_windows, feats)
    return feats, scores


def test_fp32_scores_within_1e4(default_model_dir: Path, clips: np.ndarray, reference: tuple) -> None:
    _, want = reference
    b, t = clips.shape[:2]
    with load_engine(default_model_dir, "onnxruntime", "fp32") as engine:
        got, _ = _in_chunks(engine.infer_windows, clips)
        (feats,) = _in_chunks(engine.encode_frames, clips.reshape(-1, *clips.shape[2:]), 1024)
        feats = feats.reshape(b, t, -1)
        inc, _ = _in_chunks(engine.encode_windows, feats)
        # The worker's path: per-frame tokens (prev = the frame before, within the clip here).
        prev = window_predecessors(feats)
        tokens = engine.encode_steps(feats.reshape(b * t, -1), prev.reshape(b * t, -1))
        cached, _ = engine.encode_token_windows(feats[:, 0], tokens.reshape(b, t, -1))
    diffs = [float(np.abs(x - want).max()) for x in (got, inc, cached)]
    print(f"fp32 max abs diff of scores vs torch on {b} clips (whole, stages, cached tokens): {diffs}")
    assert max(diffs) <= 1e-4


@pytest.mark.parametrize(("precision", "min_agreement"), [("fp16", 0.99), ("int8", 0.97)])
def test_reduced_precision_top1_agreement(
    default_model_dir: Path, clips: np.ndarray, reference: tuple, precision: str, min_agreement: float
) -> None:
    _, want = reference
    with load_engine(default_model_dir, "onnxruntime", precision) as engine:
        got, emb = _in_chunks(engine.infer_windows, clips)
    agreement = float((got.argmax(1) == want.argmax(1)).mean())
    print(f"{precision} top-1 agreement with torch fp32 on {len(clips)} clips: {agreement:.4f}")
    assert agreement >= min_agreement
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=5e-3)


def test_incremental_equals_whole_window(default_model_dir: Path, clips: np.ndarray) -> None:
    sub = clips[:16]
    b, t = sub.shape[:2]
    with load_engine(default_model_dir) as engine:
        feats = engine.encode_frames(sub.reshape(b * t, *sub.shape[2:])).reshape(b, t, -1)
        inc = engine.encode_windows(feats)
        whole = engine.infer_windows(sub)
    for a, w in zip(inc, whole, strict=True):
        np.testing.assert_allclose(a, w, atol=1e-5)
