"""Per-frame tokens cached from a sliding stream give the same windows as whole-window recompute.

The worker computes each frame's token once, with the stream's previous frame as `prev`, and
reuses it in every window that holds the frame; only a window's first token differs (it must
see no change), and `encode_token_windows` recomputes that one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines import load_engine
from engines.manifest import load_manifest

STRIDE = 4


def _stream(model_dir: Path, windows: int, seed: int = 11) -> np.ndarray:
    m = load_manifest(model_dir, verify=False)
    h, w = m.image_size
    n = m.num_frames + (windows - 1) * STRIDE
    # A bright square drifting over a noisy background, so consecutive frames differ a little.
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 40, (n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        x, y = (3 + i) % (w - 8), (5 + 2 * i) % (h - 8)
        frames[i, y : y + 8, x : x + 8] = (220, 180, 60)
    return frames


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_cached_stream_tokens_equal_whole_windows(tiny_model_dir: Path, backend: str) -> None:
    frames = _stream(tiny_model_dir, windows=4)
    with load_engine(tiny_model_dir, backend, "fp32") as engine:
        t = engine.metadata.num_frames
        feats = engine.encode_frames(frames)
        # Token of stream frame i, prev = stream frame i-1 (frame 0: itself), computed once.
        tokens = engine.encode_steps(feats, np.concatenate([feats[:1], feats[:-1]]))
        assert tokens.shape == (len(frames), engine.metadata.token_dim) and tokens.dtype == np.float32
        starts = list(range(0, len(frames) - t + 1, STRIDE))
        got = engine.encode_token_windows(feats[starts], np.stack([tokens[s : s + t] for s in starts]))
        by_features = engine.encode_windows(np.stack([feats[s : s + t] for s in starts]))
        whole = engine.infer_windows(np.stack([frames[s : s + t] for s in starts]))
    for g, f, w in zip(got, by_features, whole, strict=True):
        assert g.shape[0] == len(starts)
        assert np.abs(g - f).max() <= 1e-4
        assert np.abs(g - w).max() <= 1e-4


def test_onnxruntime_steps_and_tokens_match_torch(tiny_model_dir: Path) -> None:
    frames = _stream(tiny_model_dir, windows=2)
    with (
        load_engine(tiny_model_dir, "onnxruntime", "fp32") as ort_engine,
        load_engine(tiny_model_dir, "torch", "fp32") as ref,
    ):
        feats = ref.encode_frames(frames)
        prev = np.concatenate([feats[:1], feats[:-1]])
        want = ref.encode_steps(feats, prev)
        assert np.abs(ort_engine.encode_steps(feats, prev) - want).max() <= 1e-4
        t = ref.metadata.num_frames
        windows = np.stack([want[:t], want[-t:]])
        for got, ref_out in zip(ort_engine.encode_tokens(windows), ref.encode_tokens(windows), strict=True):
            assert got.dtype == np.float32 and np.abs(got - ref_out).max() <= 1e-4


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_cached_tokens_equal_their_own_whole_windows(
    tiny_model_dir: Path, precision: str
) -> None:
    """The same graphs either way, so the incremental path is exact at every precision."""
    frames = _stream(tiny_model_dir, windows=3, seed=12)
    with load_engine(tiny_model_dir, "onnxruntime", precision) as engine:
        t = engine.metadata.num_frames
        feats = engine.encode_frames(frames)
        tokens = engine.encode_steps(feats, np.concatenate([feats[:1], feats[:-1]]))
        starts = list(range(0, len(frames) - t + 1, STRIDE))
        got, _ = engine.encode_token_windows(feats[starts], np.stack([tokens[s : s + t] for s in starts]))
        want, _ = engine.encode_windows(np.stack([feats[s : s + t] for s in starts]))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_step_and_token_inputs_get_one_line_errors(tiny_model_dir: Path) -> None:
    with load_engine(tiny_model_dir) as engine:
        m = engine.metadata
        d, k, t = m.feature_dim, m.token_dim, m.num_frames
        with pytest.raises(ValueError, match=rf"features must be \[N, {d}\]"):
            engine.encode_steps(np.zeros((2, d + 1), np.float32), np.zeros((2, d + 1), np.float32))
        with pytest.raises(ValueError, match="prev must have one row per frame: 3 rows for 2 frames"):
            engine.encode_steps(np.zeros((2, d), np.float32), np.zeros((3, d), np.float32))
        with pytest.raises(ValueError, match=rf"tokens must be \[B, {t}, {k}\]"):
            engine.encode_tokens(np.zeros((1, t - 1, k), np.float32))
        with pytest.raises(ValueError, match="1 first_features for 2 windows"):
            engine.encode_token_windows(np.zeros((1, d), np.float32), np.zeros((2, t, k), np.float32))
        with pytest.raises(ValueError, match=rf"first_features must be \[N, {d}\]"):
            engine.encode_token_windows(np.zeros((2, d + 1), np.float32), np.zeros((2, t, k), np.float32))
