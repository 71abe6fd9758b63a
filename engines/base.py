"""The one interface every inference runtime implements.

Two stages make inference incremental: `encode_frames` runs once per frame, and its features
wait in the stream's ring buffer; `encode_windows` runs once per window over T cached features.
`infer_windows` is the whole-window path, kept for benchmarks and parity tests.
All inputs are uint8 RGB; normalisation lives inside the graphs. All outputs are float32.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from pydantic import BaseModel, ConfigDict


class EngineInfo(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str  # model name
    version: str  # model version
    backend: str  # onnxruntime | torch | tensorrt
    precision: str  # fp32 | fp16 | int8
    device: str  # cpu | cuda:0 ...
    labels: tuple[str, ...]
    multi_label: bool
    num_frames: int  # T
    image_size: tuple[int, int]  # (H, W)
    feature_dim: int  # D
    embed_dim: int  # E
    max_batch: int  # largest window batch the engine was sized for


class Engine(ABC):
    metadata: EngineInfo

    @abstractmethod
    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> float32 [N, D]."""

    @abstractmethod
    def encode_windows(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 [B, T, D] -> (scores float32 [B, C], embedding float32 [B, E], L2-normalised)."""

    @abstractmethod
    def infer_windows(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [B, T, H, W, 3] -> (scores [B, C], embedding [B, E]) in one graph."""

    def warmup(self) -> None:
        """Run every stage once at the largest batch so the first real request is not slow."""
        h, w = self.metadata.image_size
        t = self.metadata.num_frames
        b = self.metadata.max_batch
        feats = self.encode_frames(np.zeros((min(b * t, 64), h, w, 3), np.uint8))
        self.encode_windows(np.zeros((b, t, feats.shape[1]), np.float32))

    def close(self) -> None:  # noqa: B027 - optional hook, most engines hold nothing to free
        """Free device memory and threads."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EngineUnavailable(RuntimeError):
    """The requested backend cannot run here (package missing, no GPU...). The message says why."""
