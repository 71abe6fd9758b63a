"""torch reference engine: CPU here; its CUDA tests run where a GPU is and skip with the reason elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engines import EngineUnavailable, load_engine
from engines.manifest import load_manifest

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def _clips(model_dir: Path, n: int) -> np.ndarray:
    m = load_manifest(model_dir, verify=False)
    h, w = m.image_size
    return np.random.default_rng(3).integers(0, 256, (n, m.num_frames, h, w, 3), dtype=np.uint8)


def test_cpu_reference_stages_compose(tiny_model_dir: Path) -> None:
    clips = _clips(tiny_model_dir, 3)
    with load_engine(tiny_model_dir, "torch", device="cpu") as engine:
        assert (engine.metadata.backend, engine.metadata.device) == ("torch", "cpu")
        feats = engine.encode_frames(clips.reshape(-1, *clips.shape[2:]))
        assert feats.dtype == np.float32 and feats.shape == (24, 32)
        inc = engine.encode_windows(feats.reshape(3, 8, -1))
        whole = engine.infer_windows(clips)
        engine.warmup()
    for a, w in zip(inc, whole, strict=True):
        np.testing.assert_allclose(a, w, atol=1e-5)


def test_unavailable_configurations_say_why(tiny_model_dir: Path) -> None:
    with pytest.raises(EngineUnavailable, match="fp32 or fp16"):
        load_engine(tiny_model_dir, "torch", "int8")
    if not torch.cuda.is_available():
        with pytest.raises(EngineUnavailable, match="no CUDA GPU"):
            load_engine(tiny_model_dir, "torch", device="cuda")
        with pytest.raises(EngineUnavailable, match="fp16 needs a CUDA device"):
            load_engine(tiny_model_dir, "torch", "fp16")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(("precision", "atol"), [("fp32", 1e-4), ("fp16", 2e-2)])
def test_cuda_matches_cpu(tiny_model_dir: Path, precision: str, atol: float) -> None:
    clips = _clips(tiny_model_dir, 8)
    with (
        load_engine(tiny_model_dir, "torch", "fp32", device="cpu") as cpu,
        load_engine(tiny_model_dir, "torch", precision, device="cuda") as gpu,
    ):
        assert gpu.metadata.device.startswith("cuda")
        want, got = cpu.infer_windows(clips), gpu.infer_windows(clips)
    for a, w in zip(got, want, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, w, atol=atol)


@pytest.mark.gpu
@needs_cuda
def test_cuda_shipped_model_matches_onnxruntime(default_model_dir: Path) -> None:
    clips = _clips(default_model_dir, 32)
    with (
        load_engine(default_model_dir) as ort_engine,
        load_engine(default_model_dir, "torch", device="cuda") as gpu,
    ):
        assert np.abs(gpu.infer_windows(clips)[0] - ort_engine.infer_windows(clips)[0]).max() <= 1e-4
