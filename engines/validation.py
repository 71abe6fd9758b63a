"""Checks every engine applies to its inputs and to the model directory it opens.

Shape and dtype mistakes surface here as one-line ValueErrors naming what was expected,
not as a backend's stack trace from deep inside a graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contracts.graph import (
    CHECKPOINT_NAME,
    FEATURES,
    FRAME_ENCODER,
    MANIFEST_NAME,
    MOTION_ENCODER,
    WINDOW_ENCODER,
)
from engines.manifest import ModelDirError, ModelManifest, load_manifest


def check_frames(frames: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    h, w = image_size
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (h, w, 3):
        raise ValueError(f"frames must be uint8 [N, {h}, {w}, 3], got {frames.dtype} {list(frames.shape)}")
    return np.ascontiguousarray(frames)


def check_windows(x: np.ndarray, num_frames: int, dim: int, name: str = FEATURES) -> np.ndarray:
    """Windows of per-frame vectors (features or tokens): float32 [B, T, dim]."""
    if x.ndim != 3 or x.shape[1:] != (num_frames, dim):
        raise ValueError(f"{name} must be [B, {num_frames}, {dim}], got {list(x.shape)}")
    return np.ascontiguousarray(x, dtype=np.float32)


def check_rows(x: np.ndarray, dim: int, name: str = FEATURES) -> np.ndarray:
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} must be [N, {dim}], got {list(x.shape)}")
    return np.ascontiguousarray(x, dtype=np.float32)


def check_steps(features: np.ndarray, prev: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """encode_steps' inputs: two [N, D] arrays with the same N."""
    features, prev = check_rows(features, dim), check_rows(prev, dim, "prev")
    if features.shape[0] != prev.shape[0]:
        raise ValueError(
            f"prev must have one row per frame: {prev.shape[0]} rows for {features.shape[0]} frames"
        )
    return features, prev


def check_clips(clips: np.ndarray, num_frames: int, image_size: tuple[int, int]) -> np.ndarray:
    h, w = image_size
    want = (num_frames, h, w, 3)
    if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[1:] != want:
        raise ValueError(
            f"clips must be uint8 [B, {num_frames}, {h}, {w}, 3], got {clips.dtype} {list(clips.shape)}"
        )
    return np.ascontiguousarray(clips)


def open_model(
    model_dir: str | Path, precision: str | None, verify: bool = True
) -> tuple[Path, ModelManifest]:
    """Manifest of `model_dir` (sha256-checked), checking it has graphs for `precision` if given."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(f"{model_dir}: model directory does not exist")
    manifest = load_manifest(model_dir, verify=verify)
    if precision is None:
        return model_dir, manifest
    graphs = manifest.graphs.get(precision)
    if not graphs or not {FRAME_ENCODER, WINDOW_ENCODER} <= graphs.keys():
        raise ModelDirError(
            f"{model_dir}: no {precision} frame/window graphs in model.json "
            f"(precisions present: {', '.join(manifest.graphs) or 'none'})"
        )
    if MOTION_ENCODER not in graphs or manifest.token_dim is None:
        raise ModelDirError(
            f"{model_dir}: {MANIFEST_NAME} has no {precision} {MOTION_ENCODER} graph or no token_dim: it "
            "was exported before per-frame motion tokens; re-export it with `vbw export --checkpoint "
            f"{model_dir / (manifest.checkpoint or CHECKPOINT_NAME)} --out {model_dir}`"
        )
    return model_dir, manifest
