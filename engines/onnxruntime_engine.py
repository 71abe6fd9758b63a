"""ONNX Runtime engine: the CPU default (CUDA / TensorRT execution providers where installed).

One InferenceSession per stage graph (frame, motion, window encoders; the whole-window graph
opened on first use). Threads are set explicitly and idle intra-op threads do
not spin by default, so a worker's decode threads keep their cores.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from contracts.graph import (
    CLIPS,
    FEATURES,
    FRAME_ENCODER,
    FRAMES,
    INPUT_IDS,
    MOTION_ENCODER,
    PREV_FEATURES,
    TEXT_ENCODER,
    TOKENS,
    WHOLE_WINDOW,
    WINDOW_ENCODER,
)
from engines.base import Engine, EngineInfo, EngineUnavailable
from engines.manifest import ModelDirError
from engines.text import TextTokenizer
from engines.validation import check_clips, check_frames, check_steps, check_windows, open_model

OPT_LEVELS = ("disable", "basic", "extended", "all")
# Short names accepted for `providers`; "auto" = the fastest one this onnxruntime build has.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
AUTO_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_providers(requested: str | list[str] | tuple[str, ...], available: list[str]) -> list[str]:
    """Map the user's provider choice onto ONNX Runtime names; raise EngineUnavailable if absent."""
    if requested == "auto":
        return [p for p in AUTO_ORDER if p in available]
    names = [requested] if isinstance(requested, str) else list(requested)
    resolved = [PROVIDER_ALIASES.get(n.lower(), n) for n in names]
    missing = [p for p in resolved if p not in available]
    if missing:
        raise EngineUnavailable(
            f"onnxruntime: execution provider {missing[0]} not available in this build "
            f"(available: {', '.join(available)})"
        )
    if "CPUExecutionProvider" not in resolved:
        resolved.append("CPUExecutionProvider")  # fallback for ops the accelerator lacks
    return resolved


class OnnxRuntimeEngine(Engine):
    def __init__(
        self,
        model_dir: str | Path,
        precision: str = "fp32",
        *,
        intra_op_threads: int | None = None,
        inter_op_threads: int = 1,
        allow_spinning: bool = False,
        graph_optimization: str = "all",
        providers: str | list[str] = "cpu",
        max_batch: int = 32,
        verify: bool = True,
        **unknown: Any,
    ):
        if unknown:
            raise TypeError(f"onnxruntime engine: unknown options {sorted(unknown)}")
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise EngineUnavailable(f"onnxruntime not installed: {e}") from e
        if graph_optimization not in OPT_LEVELS:
            raise ValueError(f"graph_optimization must be one of {OPT_LEVELS}, got {graph_optimization!r}")
        self.model_dir, self.manifest = open_model(model_dir, precision, verify)
        self._providers = resolve_providers(providers, ort.get_available_providers())

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads or default_threads()
        opts.inter_op_num_threads = inter_op_threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[graph_optimization]
        self._ort = ort
        self._opts = opts
        graphs = self.manifest.graphs[precision]
        self._frame = self._session(graphs[FRAME_ENCODER])
        self._motion = self._session(graphs[MOTION_ENCODER])
        self._window = self._session(graphs[WINDOW_ENCODER])
        self._whole_file = graphs.get(WHOLE_WINDOW)
        self._whole: Any = None  # opened on first infer_windows: the worker never needs it
        self._text: Any = None
        if self.manifest.text is not None and TEXT_ENCODER in graphs:
            self._text = self._session(graphs[TEXT_ENCODER])
            self.text_tokenizer = TextTokenizer(
                self.model_dir / self.manifest.text.tokenizer, self.manifest.text.max_len
            )

        m = self.manifest
        accel = self._frame.get_providers()[0]
        self.metadata = EngineInfo.of_model(
            m,
            backend="onnxruntime",
            precision=precision,
            device="cpu" if accel == "CPUExecutionProvider" else "cuda:0",
            max_batch=max_batch,
        )

    def _session(self, filename: str) -> Any:
        path = self.model_dir / filename
        try:
            return self._ort.InferenceSession(str(path), self._opts, providers=self._providers)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types
            raise ModelDirError(f"{path}: onnxruntime cannot load it: {e}") from e

    @property
    def providers(self) -> list[str]:
        return list(self._frame.get_providers())

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        frames = check_frames(frames, self.metadata.image_size)
        return self._frame.run(None, {FRAMES: frames})[0]

    def encode_steps(self, features: np.ndarray, prev: np.ndarray) -> np.ndarray:
        features, prev = check_steps(features, prev, self.metadata.feature_dim)
        return self._motion.run(None, {FEATURES: features, PREV_FEATURES: prev})[0]

    def encode_tokens(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self.metadata
        tokens = check_windows(tokens, m.num_frames, m.token_dim, TOKENS)
        scores, embedding = self._window.run(None, {TOKENS: tokens})
        return scores, embedding

    def infer_windows(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self.metadata
        clips = check_clips(clips, m.num_frames, m.image_size)
        if self._whole_file is None:
            # No whole-window graph at this precision: the same computation through both stages.
            b, t = clips.shape[:2]
            feats = self.encode_frames(clips.reshape(b * t, *clips.shape[2:]))
            return self.encode_windows(feats.reshape(b, t, -1))
        if self._whole is None:
            self._whole = self._session(self._whole_file)
        scores, embedding = self._whole.run(None, {CLIPS: clips})
        return scores, embedding

    def _encode_ids(self, ids: np.ndarray) -> np.ndarray:
        return self._text.run(None, {INPUT_IDS: ids})[0]

    def close(self) -> None:
        self._frame = self._motion = self._window = self._whole = self._text = None
