"""Engine throughput: one backend/precision/batch cell of `vbw bench engine`.

Workloads, each timed after warm-up calls, as the median of repeats taken in turn:

- frames       encode_frames on B frames                                -> frames/s
- steps        encode_steps on B frames (token from features + prev)    -> frames/s
- windows      encode_token_windows on B windows of T cached tokens     -> windows/s
- incremental  B windows each advancing by S frames, what the worker does per step:
               encode_frames(B*S) + encode_steps(B*S) + encode_token_windows(B)
               (every frame through the frame and motion encoders once)
- whole        infer_windows on B clips of T frames (the one whole_window graph where the
               precision has one): every window recomputes all T frames
- recompute    encode_frames(B*T) + encode_windows(B): whole-window recompute through the
               stage graphs (the only whole-window path at precisions without a whole graph)

For the last three, "stream frames/s" is B*S frames of video consumed per step / step time: how
fast a video can be followed. incremental / whole is the incremental path's gain, T/S at most
(reached when the per-window transformer costs nothing next to T frames' per-frame work).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from engines.base import Engine, window_predecessors


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
    steps_per_s: float  # motion encoder alone, B frames per call
    windows_per_s: float  # encode_token_windows alone, B windows per call
    incremental_windows_per_s: float
    incremental_stream_frames_per_s: float
    whole_windows_per_s: float  # infer_windows
    whole_stream_frames_per_s: float
    recompute_windows_per_s: float  # encode_frames(B*T) + encode_windows(B)
    recompute_stream_frames_per_s: float

    @property
    def incremental_gain(self) -> float:
        """Incremental over whole-window recompute (infer_windows)."""
        return self.incremental_stream_frames_per_s / self.whole_stream_frames_per_s

    @property
    def recompute_gain(self) -> float:
        """Incremental over recompute through the stage graphs."""
        return self.incremental_stream_frames_per_s / self.recompute_stream_frames_per_s

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "incremental_gain": self.incremental_gain,
            "recompute_gain": self.recompute_gain,
        }


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
    if not 1 <= stride <= t:
        raise ValueError(f"stride must be in 1..T={t}, got {stride}")
    rng = np.random.default_rng(seed)
    clips = rng.integers(0, 256, (batch, t, h, w, 3), dtype=np.uint8)
    frames = np.ascontiguousarray(clips[:, 0])  # B frames
    feats = engine.encode_frames(clips.reshape(batch * t, h, w, 3)).reshape(batch, t, -1)
    prev = window_predecessors(feats)
    tokens = engine.encode_steps(feats.reshape(batch * t, -1), prev.reshape(batch * t, -1))
    tokens = tokens.reshape(batch, t, -1)
    first = np.ascontiguousarray(feats[:, 0])
    # Per step, each window's S newest frames: their pixels, and the frames before them (prev).
    new_frames = np.ascontiguousarray(clips[:, t - stride :].reshape(batch * stride, h, w, 3))
    new_prev = np.ascontiguousarray(prev[:, t - stride :].reshape(batch * stride, -1))

    def incremental() -> None:
        f = engine.encode_frames(new_frames)
        engine.encode_steps(f, new_prev)
        engine.encode_token_windows(first, tokens)

    def recompute() -> None:
        f = engine.encode_frames(clips.reshape(batch * t, h, w, 3))
        engine.encode_windows(f.reshape(batch, t, -1))

    timed = measure_interleaved(
        {
            "frames": lambda: engine.encode_frames(frames),
            "steps": lambda: engine.encode_steps(first, first),
            "windows": lambda: engine.encode_token_windows(first, tokens),
            "incremental": incremental,
            "whole": lambda: engine.infer_windows(clips),
            "recompute": recompute,
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
        steps_per_s=batch / sec["steps"],
        windows_per_s=batch / sec["windows"],
        incremental_windows_per_s=batch / sec["incremental"],
        incremental_stream_frames_per_s=batch * stride / sec["incremental"],
        whole_windows_per_s=batch / sec["whole"],
        whole_stream_frames_per_s=batch * stride / sec["whole"],
        recompute_windows_per_s=batch / sec["recompute"],
        recompute_stream_frames_per_s=batch * stride / sec["recompute"],
    )
