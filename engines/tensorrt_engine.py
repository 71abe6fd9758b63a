"""TensorRT engine with pycuda, for NVIDIA GPUs (TensorRT 10.x / 11 runtime API).

- Plans come from the plan cache (engines/plan_cache.py), keyed by TensorRT version, GPU compute
  capability, ONNX sha256, precision and batch profile. A missing plan is compiled once and
  stored (logged), so later starts only deserialise; a plan that `deserialize_cuda_engine`
  refuses (None) is dropped and rebuilt once. `vbw build-engine` fills the cache ahead of time.
- One plan per stage graph: frame_encoder and motion_encoder (profiles over frames, T per
  window), window_encoder (over windows), and whole_window where the precision has one.
- Name-based I/O: `num_io_tensors`, `get_tensor_name`, `get_tensor_mode`, `get_tensor_dtype`;
  `set_input_shape` per input per call (the motion encoder has two: features, prev_features),
  `set_tensor_address` once (buffers never move), `execute_async_v3`.
- Page-locked host buffers and device buffers sized for the profile's max batch; copies in,
  inference and copies out are queued on one stream and synchronised once per call.
- The CUDA context belongs to the inference thread: the device's primary context is retained
  and pushed lazily by the first call, in the thread that makes it (no pycuda.autoinit), and
  every later call must come from that thread. `close()` pops and detaches it.

API references:
- https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Engine.html
- https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/ExecutionContext.html
- https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Runtime.html
- NVIDIA/TensorRT samples/python/common_runtime.py (buffers from get_tensor_profile_shape,
  set_tensor_address + execute_async_v3)
- pycuda: https://documen.tician.de/pycuda/driver.html (retain_primary_context, pagelocked_empty,
  mem_alloc, memcpy_htod_async / memcpy_dtoh_async, Stream)
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
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
from engines.plan_cache import PlanCache, Profile
from engines.text import TextTokenizer
from engines.validation import check_clips, check_frames, check_steps, check_windows, open_model


@dataclass
class _Binding:
    name: str
    is_input: bool
    host: np.ndarray  # page-locked, [max_batch, ...]
    device: Any  # pycuda DeviceAllocation


@dataclass
class _Stage:
    graph: str
    engine: Any  # trt.ICudaEngine
    context: Any  # trt.IExecutionContext
    max_batch: int
    inputs: list[_Binding]
    outputs: list[_Binding]


def _log(msg: str) -> None:
    print(f"[tensorrt] {msg}", file=sys.stderr, flush=True)


class TensorRTEngine(Engine):
    def __init__(
        self,
        model_dir: str | Path,
        precision: str = "fp32",
        *,
        device: int = 0,
        min_batch: int = 1,
        opt_batch: int = 8,
        max_batch: int = 32,
        cache_dir: str | Path | None = None,
        build_missing: bool = True,
        verify: bool = True,
        threads: int | None = None,  # accepted for a uniform worker config; the GPU does the work
        **unknown: Any,
    ):
        if unknown:
            raise TypeError(f"tensorrt engine: unknown options {sorted(unknown)}")
        del threads
        from engines.tensorrt_build import gpu_compute_capability, import_pycuda, import_tensorrt

        self._trt = import_tensorrt()
        self._cuda = import_pycuda()
        self._cc = gpu_compute_capability(self._cuda, device)
        self.model_dir, self.manifest = open_model(model_dir, precision, verify)
        self._device_index = device
        self._precision = precision
        self._windows = Profile(min_batch, opt_batch, max_batch)
        self._cache = PlanCache(cache_dir)
        self._build_missing = build_missing
        self._ctx: Any = None  # pycuda Context, owned by the inference thread
        self._thread: int | None = None
        self._stream: Any = None
        self._stages: dict[str, _Stage] = {}
        m = self.manifest
        if m.text is not None and TEXT_ENCODER in m.graphs[precision]:
            # The text_encoder plan is built with the others (graph_profiles), int64 ids in.
            self.text_tokenizer = TextTokenizer(self.model_dir / m.text.tokenizer, m.text.max_len)
        self.metadata = EngineInfo.of_model(
            m, backend="tensorrt", precision=precision, device=f"cuda:{device}", max_batch=max_batch
        )

    # -- set-up, in the inference thread --------------------------------------------------------

    def _ensure_ready(self) -> None:
        me = threading.get_ident()
        if self._ctx is not None:
            if me != self._thread:
                raise RuntimeError(
                    "tensorrt engine: called from a thread other than the one that owns its CUDA context; "
                    "call it from the inference thread only"
                )
            return
        cuda = self._cuda
        ctx = cuda.Device(self._device_index).retain_primary_context()
        ctx.push()
        self._ctx, self._thread = ctx, me
        try:
            self._stream = cuda.Stream()
            runtime = self._trt.Runtime(self._trt.Logger(self._trt.Logger.WARNING))
            from engines.tensorrt_build import graph_profiles

            for graph, (filename, profile) in graph_profiles(
                self.manifest, self._precision, self._windows
            ).items():
                self._stages[graph] = self._load_stage(runtime, graph, self.model_dir / filename, profile)
        except BaseException:
            self.close()
            raise

    def _load_stage(self, runtime: Any, graph: str, onnx_path: Path, profile: Profile) -> _Stage:
        from engines.tensorrt_build import obtain_plan, plan_key

        trt = self._trt
        key = plan_key(trt, self._cc, onnx_path, self._precision, profile)
        if not self._build_missing and self._cache.load(key, graph) is None:
            raise EngineUnavailable(
                f"no TensorRT plan {self._cache.path(key, graph)}; run `vbw build-engine --model {self.model_dir} "
                f"--precision {self._precision} --min {self._windows.min} --opt {self._windows.opt} "
                f"--max {self._windows.max}` on this machine"
            )
        plan, built = obtain_plan(trt, self._cache, key, graph, onnx_path)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None and not built:
            # A stale or damaged cached plan: drop it and compile once, never on every start.
            _log(f"cached plan {self._cache.path(key, graph).name} did not deserialise; rebuilding it")
            self._cache.invalidate(key, graph)
            plan, _ = obtain_plan(trt, self._cache, key, graph, onnx_path, rebuild=True)
            engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise EngineUnavailable(f"{onnx_path}: TensorRT could not deserialise the plan it just built")
        context = engine.create_execution_context()
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = list(engine.get_tensor_shape(name))
            shape[0] = profile.max  # only the batch dimension is dynamic
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            host = self._cuda.pagelocked_empty(tuple(shape), dtype)
            device = self._cuda.mem_alloc(host.nbytes)
            context.set_tensor_address(name, int(device))  # fixed for the engine's life
            (inputs if is_input else outputs).append(_Binding(name, is_input, host, device))
        return _Stage(graph, engine, context, profile.max, inputs, outputs)

    # -- inference --------------------------------------------------------------------------------

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run `graph` on its inputs by tensor name (one batch size), in chunks of at most the
        profile's max batch."""
        self._ensure_ready()
        stage = self._stages[graph]
        names = sorted(b.name for b in stage.inputs)
        if sorted(feeds) != names:
            raise ValueError(f"tensorrt {graph}: inputs {sorted(feeds)} given, the plan takes {names}")
        n = len(next(iter(feeds.values())))
        if n == 0:
            return [out.host[:0].astype(np.float32) for out in stage.outputs]
        results = [
            self._run_chunk(stage, {k: x[i : i + stage.max_batch] for k, x in feeds.items()})
            for i in range(0, n, stage.max_batch)
        ]
        return (
            [np.concatenate(parts) for parts in zip(*results, strict=True)]
            if len(results) > 1
            else results[0]
        )

    def _run_chunk(self, stage: _Stage, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        cuda, stream = self._cuda, self._stream
        b = len(next(iter(feeds.values())))
        for inp in stage.inputs:
            x = feeds[inp.name]
            np.copyto(inp.host[:b], x, casting="same_kind")
            stage.context.set_input_shape(inp.name, x.shape)
            cuda.memcpy_htod_async(inp.device, inp.host[:b], stream)
        if not stage.context.execute_async_v3(stream.handle):
            raise RuntimeError(f"tensorrt {stage.graph}: execute_async_v3 failed (batch {b})")
        for out in stage.outputs:
            cuda.memcpy_dtoh_async(out.host[:b], out.device, stream)
        stream.synchronize()  # once per batch
        # Copy out of the page-locked buffers: the next call overwrites them.
        return [out.host[:b].astype(np.float32, copy=True) for out in stage.outputs]

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        frames = check_frames(frames, self.metadata.image_size)
        return self._run(FRAME_ENCODER, {FRAMES: frames})[0]

    def encode_steps(self, features: np.ndarray, prev: np.ndarray) -> np.ndarray:
        features, prev = check_steps(features, prev, self.metadata.feature_dim)
        return self._run(MOTION_ENCODER, {FEATURES: features, PREV_FEATURES: prev})[0]

    def encode_tokens(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self.metadata
        tokens = check_windows(tokens, m.num_frames, m.token_dim, TOKENS)
        scores, embedding = self._run(WINDOW_ENCODER, {TOKENS: tokens})
        return scores, embedding

    def infer_windows(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self.metadata
        clips = check_clips(clips, m.num_frames, m.image_size)
        self._ensure_ready()
        if WHOLE_WINDOW not in self._stages:  # no whole-window graph at this precision
            b, t = clips.shape[:2]
            feats = self.encode_frames(clips.reshape(b * t, *clips.shape[2:]))
            return self.encode_windows(feats.reshape(b, t, -1))
        scores, embedding = self._run(WHOLE_WINDOW, {CLIPS: clips})
        return scores, embedding

    def _encode_ids(self, ids: np.ndarray) -> np.ndarray:
        return self._run(TEXT_ENCODER, {INPUT_IDS: ids})[0]

    def close(self) -> None:
        """Free buffers and release the CUDA context; call it from the inference thread."""
        if self._ctx is None:
            return
        pushed_here = threading.get_ident() != self._thread
        if pushed_here:
            self._ctx.push()  # free device memory under its own context
        try:
            if self._stream is not None:
                self._stream.synchronize()
            for stage in self._stages.values():
                for binding in (*stage.inputs, *stage.outputs):
                    binding.device.free()
            self._stages.clear()
            self._stream = None
        finally:
            self._ctx.pop()
            self._ctx.detach()
            self._ctx, self._thread = None, None
