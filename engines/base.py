"""The one interface every inference runtime implements.

Inference is incremental: everything that depends on one frame (and its predecessor) runs once
per frame, and only the transformer runs per window.

    encode_frames   uint8 [N, H, W, 3]          -> features [N, D]   once per frame
    encode_steps    features [N, D], prev [N, D] -> tokens [N, d]     once per frame: the frame's
                    token from its features and the change since the previous frame of its window
    encode_tokens   tokens [B, T, d]             -> scores, embedding  once per window

A window's first token sees no change (prev = the frame itself), so a token cached from a
stream cannot serve as token 0; `encode_token_windows` recomputes that one. `encode_windows`
(features of whole windows) and `infer_windows` (pixels of whole windows, one graph) give the
same results and stay for padded windows, benchmarks and parity tests.
All inputs are uint8 RGB; normalisation lives inside the graphs. All outputs are float32.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from contracts.errors import VbwError
from contracts.graph import TOKENS
from engines.manifest import ModelManifest
from engines.text import TextTokenizer
from engines.validation import check_rows, check_windows


def window_predecessors(features: np.ndarray) -> np.ndarray:
    """Each frame's predecessor in windows of [B, T, D] features (encode_steps' `prev`): the
    frame before it, and for a window's first frame the frame itself."""
    return np.concatenate([features[:, :1], features[:, :-1]], axis=1)


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
    token_dim: int  # d, width of the per-frame tokens the transformer reads
    embed_dim: int  # E
    max_batch: int  # largest window batch the engine was sized for

    @classmethod
    def of_model(
        cls,
        m: ModelManifest,
        *,
        backend: str,
        precision: str,
        device: str,
        max_batch: int,
        token_dim: int | None = None,
    ) -> EngineInfo:
        """What every backend reports of the model it opened, plus how it runs it."""
        return cls(
            name=m.name,
            version=m.version,
            backend=backend,
            precision=precision,
            device=device,
            labels=tuple(m.labels),
            multi_label=m.multi_label,
            num_frames=m.num_frames,
            image_size=tuple(m.image_size),
            feature_dim=m.feature_dim,
            token_dim=token_dim if token_dim is not None else m.token_dim,
            embed_dim=m.embed_dim,
            max_batch=max_batch,
        )


class TextUnavailable(VbwError, ValueError):
    """The model has no text encoder (trained without the text stage, or exported before it):
    `encode_text` and prompt labels need a model directory with `text_encoder.onnx`."""


class Engine(ABC):
    metadata: EngineInfo
    # Set by engines whose model has a text side (engines.text.TextTokenizer).
    text_tokenizer: TextTokenizer | None = None

    @abstractmethod
    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> float32 [N, D]."""

    @abstractmethod
    def encode_steps(self, features: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """float32 [N, D], [N, D] -> float32 [N, d]: each frame's token given the previous frame
        of its window (pass the frame itself where there is none)."""

    @abstractmethod
    def encode_tokens(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 [B, T, d] -> (scores float32 [B, C], embedding float32 [B, E], L2-normalised)."""

    @abstractmethod
    def infer_windows(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [B, T, H, W, 3] -> (scores [B, C], embedding [B, E]) in one graph."""

    @property
    def has_text(self) -> bool:
        return self.text_tokenizer is not None

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Sentences -> float32 [N, E], L2-normalised, in the space of the window embedding
        (`encode_tokens`' second output): a caption and a window compare by dot product."""
        if self.text_tokenizer is None:
            raise TextUnavailable(
                f"model {self.metadata.name} {self.metadata.version} has no text encoder; "
                "train it with the text stage (`vbw train`) and export it again"
            )
        ids = self.text_tokenizer.encode(texts)
        if len(ids) == 0:
            return np.zeros((0, self.metadata.embed_dim), np.float32)
        return np.ascontiguousarray(self._encode_ids(ids), dtype=np.float32)

    def _encode_ids(self, ids: np.ndarray) -> np.ndarray:
        """int64 token ids [N, L] -> [N, E]: the text_encoder graph (engines with a text side)."""
        raise NotImplementedError

    def encode_token_windows(
        self, first_features: np.ndarray, tokens: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Windows from cached per-frame tokens [B, T, d]; token 0 is recomputed from the first
        frame's features [B, D] as a frame with no predecessor."""
        m = self.metadata
        tokens = check_windows(tokens, m.num_frames, m.token_dim, TOKENS)
        first = check_rows(first_features, m.feature_dim, "first_features")
        if first.shape[0] != tokens.shape[0]:
            raise ValueError(f"{first.shape[0]} first_features for {tokens.shape[0]} windows")
        tokens = tokens.copy()
        tokens[:, 0] = self.encode_steps(first, first)
        return self.encode_tokens(tokens)

    def encode_windows(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 [B, T, D] -> (scores [B, C], embedding [B, E]): steps then tokens."""
        m = self.metadata
        features = check_windows(features, m.num_frames, m.feature_dim)
        b, t, d = features.shape
        prev = window_predecessors(features)
        tokens = self.encode_steps(features.reshape(b * t, d), prev.reshape(b * t, d))
        return self.encode_tokens(tokens.reshape(b, t, -1))

    def warmup(self) -> None:
        """Run every stage once at the largest batch so the first real request is not slow."""
        h, w = self.metadata.image_size
        t = self.metadata.num_frames
        b = self.metadata.max_batch
        feats = self.encode_frames(np.zeros((min(b * t, 64), h, w, 3), np.uint8))
        self.encode_steps(feats, feats)
        self.encode_token_windows(
            np.zeros((b, feats.shape[1]), np.float32), np.zeros((b, t, self.metadata.token_dim), np.float32)
        )

    def close(self) -> None:  # noqa: B027 - optional hook, most engines hold nothing to free
        """Free device memory and threads."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EngineUnavailable(VbwError, RuntimeError):
    """The requested backend cannot run here (package missing, no GPU...). The message says why.
    Not retriable: another backend, an install or another machine is needed."""
