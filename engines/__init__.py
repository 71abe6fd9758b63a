"""Inference runtimes behind one interface (engines.base.Engine).

`load_engine` imports a backend only when asked for it: the ONNX Runtime default never
imports torch, tensorrt or pycuda.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.base import Engine, EngineInfo, EngineUnavailable

BACKENDS = ("onnxruntime", "torch", "tensorrt")

__all__ = ["BACKENDS", "Engine", "EngineInfo", "EngineUnavailable", "load_engine"]


def load_engine(
    model_dir: str | Path, backend: str = "onnxruntime", precision: str = "fp32", **options: Any
) -> Engine:
    """Open the model in `model_dir` with the given backend. Raises EngineUnavailable with a reason."""
    if backend == "onnxruntime":
        from engines.onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(model_dir, precision=precision, **options)
    if backend == "torch":
        from engines.torch_engine import TorchEngine

        return TorchEngine(model_dir, precision=precision, **options)
    if backend == "tensorrt":
        from engines.tensorrt_engine import TensorRTEngine

        return TensorRTEngine(model_dir, precision=precision, **options)
    raise EngineUnavailable(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
