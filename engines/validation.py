"""Checks every engine applies to its inputs and to the model directory it opens.

Shape and dtype mistakes surface here as one-line ValueErrors naming what was expected,
not as a backend's stack trace from deep inside a graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.manifest import ModelDirError, ModelManifest, load_manifest


def check_frames(frames: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    h, w = image_size
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (h, w, 3):
        raise ValueError(f"frames must be uint8 [N, {h}, {w}, 3], got {frames.dtype} {list(frames.shape)}")
    return np.ascontiguousarray(frames)


def check_features(features: np.ndarray, num_frames: int, dim: int) -> np.ndarray:
    if features.ndim != 3 or features.shape[1:] != (num_frames, dim):
        raise ValueError(f"features must be [B, {num_frames}, {dim}], got {list(features.shape)}")
    return np.ascontiguousarray(features, dtype=np.float32)


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
    if not graphs or not {"frame_encoder", "window_encoder"} <= graphs.keys():
        raise ModelDirError(
            f"{model_dir}: no {precision} frame/window graphs in model.json "
            f"(precisions present: {', '.join(manifest.graphs) or 'none'})"
        )
    return model_dir, manifest
