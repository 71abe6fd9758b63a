"""Compile the exported ONNX graphs into TensorRT plans (TensorRT 10.x / 11 Python API).

Precision is not a builder setting here: the network is created strongly typed, so FP16 and
INT8 come from the FP16 / Q-DQ ONNX that `vbw export` wrote, and one code path serves 10.12+
and 11 (11 removed the FP16/INT8 builder flags and calibrators). Only the batch dimension has
an optimisation profile; T and the image size are fixed in the graphs.

API references (TensorRT Python API):
- Builder, NetworkDefinitionCreationFlag.STRONGLY_TYPED:
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html
- OnnxParser: https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/parsers/Onnx/pyOnnx.html
- IBuilderConfig.create_timing_cache / set_timing_cache, ITimingCache.serialize:
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/BuilderConfig.html
  https://docs.nvidia.com/deeplearning/tensorrt/10.16.1/performance/builder-performance.html
- IOptimizationProfile.set_shape(name, min, opt, max):
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/OptimizationProfile.html
tensorrt and pycuda are imported lazily: neither installs on a CPU-only machine.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from contracts.errors import VbwError
from contracts.graph import FRAME_ENCODER, MOTION_ENCODER, TEXT_ENCODER, WHOLE_WINDOW, WINDOW_ENCODER
from engines.base import EngineUnavailable
from engines.manifest import ModelManifest, sha256_file
from engines.plan_cache import PlanCache, PlanKey, Profile

DEFAULT_WORKSPACE_BYTES = 1 << 30


class PlanBuildError(VbwError, RuntimeError):
    """TensorRT could not parse or compile a graph; the message carries the parser's errors.
    Not retriable: the same graph on the same TensorRT fails the same way."""


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except ImportError as e:
        raise EngineUnavailable(
            f"tensorrt not installed ({e}); install the 'tensorrt' extra on a machine with an NVIDIA GPU"
        ) from e
    return tensorrt


def import_pycuda() -> ModuleType:
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise EngineUnavailable(f"pycuda not installed ({e}); it builds from source against CUDA") from e
    return cuda


def gpu_compute_capability(cuda: ModuleType, device: int = 0) -> tuple[int, int]:
    """(major, minor) of GPU `device`; EngineUnavailable when there is no usable GPU."""
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as e:  # pycuda raises its own LogicError/RuntimeError when no driver is present
        raise EngineUnavailable(f"no CUDA GPU: CUDA driver initialisation failed ({e})") from e
    if count <= device:
        raise EngineUnavailable(f"no CUDA GPU {device}: {count} device(s) visible")
    major, minor = cuda.Device(device).compute_capability()
    return int(major), int(minor)


def graph_profiles(
    manifest: ModelManifest, precision: str, windows: Profile
) -> dict[str, tuple[str, Profile]]:
    """ONNX file and batch profile per graph: the frame and motion encoders' batch is frames
    (up to T per window, when whole windows go through them), the others' windows."""
    graphs = manifest.graphs[precision]
    frames = windows.scaled(manifest.num_frames)
    out = {
        FRAME_ENCODER: (graphs[FRAME_ENCODER], frames),
        MOTION_ENCODER: (graphs[MOTION_ENCODER], frames),
        WINDOW_ENCODER: (graphs[WINDOW_ENCODER], windows),
    }
    if WHOLE_WINDOW in graphs:
        out[WHOLE_WINDOW] = (graphs[WHOLE_WINDOW], windows)
    if TEXT_ENCODER in graphs and manifest.text is not None:  # prompts: a window batch's worth
        out[TEXT_ENCODER] = (graphs[TEXT_ENCODER], windows)
    return out


def plan_key(
    trt: ModuleType, cc: tuple[int, int], onnx_path: Path, precision: str, profile: Profile
) -> PlanKey:
    return PlanKey(
        trt_version=trt.__version__,
        compute_capability=cc,
        onnx_sha256=sha256_file(onnx_path),
        precision=precision,
        profile=profile,
    )


def build_plan(
    trt: ModuleType,
    onnx_path: Path,
    profile: Profile,
    timing_cache: bytes = b"",
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    allow_tf32: bool = True,
) -> tuple[bytes, bytes]:
    """(serialized plan, updated timing cache) for one ONNX graph."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Strongly typed: tensor types come from the ONNX (FP16 casts, Q/DQ). Deprecated but accepted
    # (ignored) in TensorRT 11, where every network is strongly typed.
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = 0 if strongly_typed is None else 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PlanBuildError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if not allow_tf32 and tf32 is not None:
        # TF32 (on by default) would round FP32 matmuls to a 10-bit mantissa: the FP32 plan is
        # the exact one, parity-tested against torch; FP16/INT8 plans are the fast ones.
        config.clear_flag(tf32)
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        tail = tuple(tensor.shape)[1:]
        if any(d < 0 for d in tail):
            raise PlanBuildError(
                f"{onnx_path}: input {tensor.name} has dynamic non-batch dims {tuple(tensor.shape)}"
            )
        opt_profile.set_shape(tensor.name, (profile.min, *tail), (profile.opt, *tail), (profile.max, *tail))
    config.add_optimization_profile(opt_profile)
    # An empty buffer creates a fresh cache; a mismatching one (other TensorRT build or GPU) is
    # rejected by TensorRT rather than trusted, and the cache file is keyed to avoid that anyway.
    cache = config.create_timing_cache(timing_cache)
    config.set_timing_cache(cache, ignore_mismatch=False)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise PlanBuildError(
            f"{onnx_path}: TensorRT failed to build a plan (profile {profile}); see its log above"
        )
    return bytes(plan), bytes(config.get_timing_cache().serialize())


def _log(msg: str) -> None:
    print(f"[tensorrt] {msg}", file=sys.stderr, flush=True)


def obtain_plan(
    trt: ModuleType,
    cache: PlanCache,
    key: PlanKey,
    graph: str,
    onnx_path: Path,
    rebuild: bool = False,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
) -> tuple[bytes, bool]:
    """(plan, built_now): the cached plan for `key`, compiling and storing it if absent or `rebuild`."""
    if not rebuild:
        plan = cache.load(key, graph)
        if plan is not None:
            return plan, False
    _log(
        f"building {graph} {key.precision} plan (batch {key.profile}) from {onnx_path.name}; cached for later starts"
    )
    t0 = time.perf_counter()
    timing = cache.load_timing_cache(key.trt_version, key.compute_capability)
    plan, timing = build_plan(
        trt, onnx_path, key.profile, timing, workspace_bytes, allow_tf32=key.precision != "fp32"
    )
    cache.store_timing_cache(key.trt_version, key.compute_capability, timing)
    path = cache.store(key, graph, plan)
    _log(f"built {path.name} in {time.perf_counter() - t0:.1f} s")
    return plan, True


@dataclass
class BuiltPlan:
    graph: str
    path: Path
    built: bool  # False: already in the cache
    seconds: float


def build_model_plans(
    model_dir: Path,
    manifest: ModelManifest,
    precision: str,
    windows: Profile,
    cache: PlanCache,
    device: int = 0,
    rebuild: bool = False,
) -> list[BuiltPlan]:
    """Compile (or find) every plan of `precision` for this machine's GPU; `vbw build-engine`."""
    trt = import_tensorrt()
    cc = gpu_compute_capability(import_pycuda(), device)
    done = []
    for graph, (filename, profile) in graph_profiles(manifest, precision, windows).items():
        onnx_path = model_dir / filename
        key = plan_key(trt, cc, onnx_path, precision, profile)
        t0 = time.perf_counter()
        _, built = obtain_plan(trt, cache, key, graph, onnx_path, rebuild=rebuild)
        done.append(BuiltPlan(graph, cache.path(key, graph), built, time.perf_counter() - t0))
    return done
