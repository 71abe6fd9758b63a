"""Where compiled TensorRT plans live, and which plan fits which machine.

A plan is only valid for the TensorRT build and the GPU architecture that compiled it, for the
exact ONNX bytes it was parsed from, and for the shapes of its optimisation profile. All of that
goes into the key, so a different machine or a new model misses the cache instead of loading a
plan that fails (or worse, runs with the wrong graph). Pure file bookkeeping: no TensorRT import.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

PLAN_CACHE_ENV = "VBW_PLAN_CACHE"


@dataclass(frozen=True)
class Profile:
    """Optimisation profile over the batch dimension only: kernels tuned for `opt`, valid in [min, max]."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(
                f"batch profile needs 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}"
            )

    def scaled(self, factor: int) -> Profile:
        """The frame encoder's profile: each window brings up to `factor` (= T) frames."""
        return Profile(self.min, self.opt * factor, self.max * factor)

    def __str__(self) -> str:
        return f"{self.min}-{self.opt}-{self.max}"


@dataclass(frozen=True)
class PlanKey:
    trt_version: str  # tensorrt.__version__ of the builder
    compute_capability: tuple[int, int]  # (major, minor) of the GPU
    onnx_sha256: str  # of the exact graph file parsed
    precision: str  # fp32 | fp16 | int8 (already baked into the ONNX; kept for readable names)
    profile: Profile

    def digest(self) -> str:
        doc = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(doc.encode()).hexdigest()[:16]

    def filename(self, graph: str) -> str:
        major, minor = self.compute_capability
        return (
            f"{graph}.{self.precision}.trt{self.trt_version}.sm{major}{minor}"
            f".b{self.profile}.{self.digest()}.plan"
        )


def default_cache_dir() -> Path:
    env = os.environ.get(PLAN_CACHE_ENV)
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vbw" / "plans"


def timing_cache_name(trt_version: str, compute_capability: tuple[int, int]) -> str:
    """Timing caches are only valid for the same TensorRT build and GPU."""
    major, minor = compute_capability
    return f"timing.trt{trt_version}.sm{major}{minor}.cache"


def _atomic_write(path: Path, data: bytes) -> None:
    """Readers (another worker starting) never see half a plan."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class PlanCache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, key: PlanKey, graph: str) -> Path:
        return self.root / key.filename(graph)

    def load(self, key: PlanKey, graph: str) -> bytes | None:
        p = self.path(key, graph)
        return p.read_bytes() if p.is_file() else None

    def store(self, key: PlanKey, graph: str, plan: bytes) -> Path:
        p = self.path(key, graph)
        _atomic_write(p, plan)
        meta = {**asdict(key), "graph": graph, "bytes": len(plan)}
        _atomic_write(p.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode())
        return p

    def invalidate(self, key: PlanKey, graph: str) -> None:
        """Drop a plan the runtime refused to deserialise, so the next start does not retry it."""
        p = self.path(key, graph)
        p.unlink(missing_ok=True)
        p.with_suffix(".json").unlink(missing_ok=True)

    def timing_cache_path(self, trt_version: str, compute_capability: tuple[int, int]) -> Path:
        return self.root / timing_cache_name(trt_version, compute_capability)

    def load_timing_cache(self, trt_version: str, compute_capability: tuple[int, int]) -> bytes:
        p = self.timing_cache_path(trt_version, compute_capability)
        return p.read_bytes() if p.is_file() else b""

    def store_timing_cache(self, trt_version: str, compute_capability: tuple[int, int], data: bytes) -> Path:
        p = self.timing_cache_path(trt_version, compute_capability)
        _atomic_write(p, data)
        return p
