"""Engine throughput: one backend/precision/batch cell of `vbw bench engine`.

Four workloads, each timed after warm-up calls, as the median of repeats taken in turn:

- frames       encode_frames on B frames                        -> frames/s
- windows      encode_windows on B windows of T cached features -> windows/s
- incremental  B windows each advancing by S frames: encode_frames(B*S) + encode_windows(B),
               the worker's path (each frame through the frame encoder once)
- whole        infer_windows on B clips of T frames: every window recomputes all T frames

For the last two, "stream frames/s" is B*S frames of video consumed per step / step time: how
fast a video can be followed. Their ratio is the incremental path's gain (about T/S when the
frame encoder dominates).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from engines.base import Engine


@dataclass
class Timing:
    seconds_per_call: float  # median over repeats
    calls_per_repeat: int
    repeats: int


def measure(fn: Callable[[], object], repeats: int = 5, warmup: int = 2, min_time: float = 0.2) -> Timing:
    """Median seconds per call of `fn`; warm-up calls excluded, each repeat lasts >= `min_time`."""
    return measure_interleaved({"fn": fn}, repeats, warmup, min_time)["fn"]


def measure_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 2, min_time: float = 0.2
) -> dict[str, Timing]:
    """`measure` for several workloads, their repeats taken in turn (A B C A B C ...), so a change
    in machine load (other processes) falls on all of them alike rather than on whichever ran last."""
    calls: dict[str, int] = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        t0 = time.perf_counter()
        fn()
        calls[name] = max(1, int(min_time / max(time.perf_counter() - t0, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            samples[name].append((time.perf_counter() - t0) / calls[name])
    return {name: Timing(statistics.median(samples[name]), calls[name], repeats) for name in fns}


@dataclass
class CellResult:
    backend: str
    precision: str
    batch: int
    num_frames: int  # T
    stride: int  # S
    frames_per_s: float  # frame encoder alone, B frames per call
    windows_per_s: float  # window encoder alone, B windows per call
    incremental_windows_per_s: float
    incremental_stream_frames_per_s: float
    whole_windows_per_s: float
    whole_stream_frames_per_s: float

    @property
    def incremental_gain(self) -> float:
        return self.incremental_stream_frames_per_s / self.whole_stream_frames_per_s

    def to_dict(self) -> dict:
        return {**asdict(self), "incremental_gain": self.incremental_gain}


def bench_cell(
    engine: Engine,
    batch: int,
    stride: int,
    repeats: int = 5,
    warmup: int = 2,
    min_time: float = 0.2,
    seed: int = 0,
) -> CellResult:
    m = engine.metadata
    t, (h, w) = m.num_frames, m.image_size
    rng = np.random.default_rng(seed)
    clips = rng.integers(0, 256, (batch, t, h, w, 3), dtype=np.uint8)
    frames = clips[:, 0]  # B frames
    new_frames = np.ascontiguousarray(clips[:, :stride].reshape(batch * stride, h, w, 3))
    feats = engine.encode_frames(clips.reshape(batch * t, h, w, 3)).reshape(batch, t, -1)

    def incremental() -> None:
        engine.encode_frames(new_frames)
        engine.encode_windows(feats)

    timed = measure_interleaved(
        {
            "frames": lambda: engine.encode_frames(frames),
            "windows": lambda: engine.encode_windows(feats),
            "incremental": incremental,
            "whole": lambda: engine.infer_windows(clips),
        },
        repeats,
        warmup,
        min_time,
    )
    sec = {k: v.seconds_per_call for k, v in timed.items()}
    return CellResult(
        backend=m.backend,
        precision=m.precision,
        batch=batch,
        num_frames=t,
        stride=stride,
        frames_per_s=batch / sec["frames"],
        windows_per_s=batch / sec["windows"],
        incremental_windows_per_s=batch / sec["incremental"],
        incremental_stream_frames_per_s=batch * stride / sec["incremental"],
        whole_windows_per_s=batch / sec["whole"],
        whole_stream_frames_per_s=batch * stride / sec["whole"],
    )
