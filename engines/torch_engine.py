"""torch engine: the reference. Runs the checkpoint in the model directory on CPU or CUDA.

FP32 everywhere; FP16 on CUDA through autocast (which keeps LayerNorm and softmax in FP32, as
the exported FP16 graph does). INT8 is the ONNX graphs' business (ONNX Runtime, TensorRT).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from contracts.graph import MANIFEST_NAME, TOKENS
from engines.base import Engine, EngineInfo, EngineUnavailable
from engines.manifest import ModelDirError
from engines.text import TextTokenizer
from engines.validation import check_clips, check_frames, check_steps, check_windows, open_model


class TorchEngine(Engine):
    def __init__(
        self,
        model_dir: str | Path,
        precision: str = "fp32",
        *,
        device: str = "cpu",
        threads: int | None = None,
        max_batch: int = 32,
        verify: bool = True,
        **unknown: Any,
    ):
        if unknown:
            raise TypeError(f"torch engine: unknown options {sorted(unknown)}")
        if precision not in ("fp32", "fp16"):
            raise EngineUnavailable(f"torch backend runs fp32 or fp16 (CUDA), not {precision}")
        try:
            import torch
        except ImportError as e:
            raise EngineUnavailable(f"torch not installed (pip install 'vbw[train]'): {e}") from e
        from videobert.model import load_checkpoint

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineUnavailable(f"torch backend: device {device!r} asked for but no CUDA GPU is visible")
        if precision == "fp16" and not device.startswith("cuda"):
            raise EngineUnavailable("torch backend: fp16 needs a CUDA device (device='cuda')")
        self.model_dir, self.manifest = open_model(model_dir, None, verify)
        if not self.manifest.checkpoint:
            raise ModelDirError(
                f"{self.model_dir}: {MANIFEST_NAME} names no checkpoint for the torch backend"
            )
        ckpt = self.model_dir / self.manifest.checkpoint
        if not ckpt.is_file():
            raise ModelDirError(f"{ckpt}: checkpoint missing")
        if threads:
            torch.set_num_threads(threads)  # process-wide: torch has no per-model thread pool
        self._torch = torch
        self._device = torch.device(device)
        try:
            self.model = load_checkpoint(str(ckpt), map_location=self._device)
        except (ValueError, RuntimeError) as e:
            raise ModelDirError(f"{ckpt}: cannot load: {e}") from e
        self._autocast = precision == "fp16"
        if self.manifest.text is not None and self.model.cfg.text is not None:
            self.text_tokenizer = TextTokenizer(
                self.model_dir / self.manifest.text.tokenizer, self.manifest.text.max_len
            )
        m = self.manifest
        self.metadata = EngineInfo.of_model(
            m,
            backend="torch",
            precision=precision,
            device=str(self._device),
            max_batch=max_batch,
            token_dim=self.model.cfg.d_model,
        )

    def _run(self, fn: Any, *xs: np.ndarray) -> Any:
        torch = self._torch
        with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=self._autocast):
            return fn(*(torch.from_numpy(x).to(self._device, non_blocking=True) for x in xs))

    def _numpy(self, t: Any) -> np.ndarray:
        return t.float().cpu().numpy()

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        frames = check_frames(frames, self.metadata.image_size)
        return self._numpy(self._run(self.model.frame_encoder, frames))

    def encode_steps(self, features: np.ndarray, prev: np.ndarray) -> np.ndarray:
        features, prev = check_steps(features, prev, self.metadata.feature_dim)
        return self._numpy(self._run(self.model.window_encoder.step, features, prev))

    def encode_tokens(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self.metadata
        tokens = check_windows(tokens, m.num_frames, m.token_dim, TOKENS)
        scores, embedding = self._run(self.model.window_encoder.forward_tokens, tokens)
        return self._numpy(scores), self._numpy(embedding)

    def infer_windows(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self.metadata
        clips = check_clips(clips, m.num_frames, m.image_size)
        scores, embedding = self._run(self.model, clips)
        return self._numpy(scores), self._numpy(embedding)

    def _encode_ids(self, ids: np.ndarray) -> np.ndarray:
        return self._numpy(self._run(self.model.encode_text, ids))

    def close(self) -> None:
        if self._device.type == "cuda":
            del self.model
            self._torch.cuda.empty_cache()
