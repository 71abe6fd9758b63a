"""A numpy Engine for tests of the machinery around the engine (no model files, no ONNX).

Deterministic and cheap; it takes windows of any length (like an engine with a variable T), and
fails on demand: `fail_frames` / `fail_windows` are how many of the next calls raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from engines.base import Engine, EngineInfo, window_predecessors


class FakeEngine(Engine):
    def __init__(self, num_frames: int = 4, max_batch: int = 8, image_size: tuple[int, int] = (2, 2)):
        self.metadata = EngineInfo(
            name="fake",
            version="1",
            backend="fake",
            precision="fp32",
            device="cpu",
            labels=("a", "b", "c"),
            multi_label=False,
            num_frames=num_frames,
            image_size=image_size,
            feature_dim=2,
            token_dim=2,
            embed_dim=2,
            max_batch=max_batch,
        )
        self.fail_frames = 0
        self.fail_windows = 0
        self.window_batches: list[tuple[str, int]] = []  # (path, batch size) per window call

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        if self.fail_frames:
            self.fail_frames -= 1
            raise RuntimeError("frames boom")
        x = frames.reshape(len(frames), -1).astype(np.float32)
        return np.stack([x.mean(1), x[:, 0]], axis=1)

    def encode_steps(self, features: np.ndarray, prev: np.ndarray) -> np.ndarray:
        return (features + 0.5 * (features - prev)).astype(np.float32)

    def encode_tokens(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = tokens.mean(1)
        logits = np.stack([m[:, 0], m[:, 1], m[:, 0] - m[:, 1]], axis=1) / 64
        scores = np.exp(logits - logits.max(1, keepdims=True))
        scores /= scores.sum(1, keepdims=True)
        emb = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-6)
        return scores.astype(np.float32), emb.astype(np.float32)

    def infer_windows(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b, t = clips.shape[:2]
        feats = self.encode_frames(clips.reshape(b * t, *clips.shape[2:])).reshape(b, t, -1)
        return self._from_features(feats)

    def encode_token_windows(
        self, first_features: np.ndarray, tokens: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        self._window_call("tokens", len(tokens))
        return super().encode_token_windows(first_features, tokens)

    def encode_windows(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._window_call("features", len(features))
        return self._from_features(features)

    def _from_features(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b, t, d = features.shape  # any T: the stage may emit short partial windows
        prev = window_predecessors(features)
        tokens = self.encode_steps(features.reshape(b * t, d), prev.reshape(b * t, d))
        return self.encode_tokens(tokens.reshape(b, t, -1))

    def _window_call(self, path: str, n: int) -> None:
        if self.fail_windows:
            self.fail_windows -= 1
            raise RuntimeError("windows boom")
        self.window_batches.append((path, n))


class TextFakeEngine(FakeEngine):
    """FakeEngine with a text side (2-d, like its embedding): a sentence's vector is fixed by its
    first word."""

    VECTORS: ClassVar[dict[str, tuple[float, float]]] = {
        "east": (1.0, 0.0),
        "north": (0.0, 1.0),
        "west": (-1.0, 0.0),
    }

    @property
    def has_text(self) -> bool:
        return True

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([self.VECTORS[t.split()[0]] for t in texts], np.float32)
