"""`vbw bench pipeline`: how many live cameras this machine sustains, at what latency, and how
close the whole pipeline comes to its slowest stage.

1. Stage ceilings, each stage alone at full speed, all in source frames/s (the camera's frames,
   before fps sampling) so they compare directly:
   decode (demux + decode every frame + resize the sampled ones, one thread per core, as the
   sources do), encode_frames, assemble (window state machine), encode_windows, sink (JSONL).
2. End to end: unpaced file sources (they block instead of dropping) through the whole pipeline;
   its frames/s over the slowest ceiling is the efficiency figure.
3. Live capacity: N paced, looping file sources stand in for N cameras (a paced file drops
   frames, reason "late", once it is a second behind, as a camera's buffer would overflow). The
   largest N with no dropped frame over the measured interval is the figure; p50/p99 latency is
   capture (when the camera took the frame) to the sink's ack, at that N.
"""

from __future__ import annotations

import itertools
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worker.config import SamplingConfig, VbwConfig, parse_config
from worker.frames import Frame
from worker.metrics import Metrics
from worker.pipeline import Pipeline
from worker.runtime import Runtime
from worker.sinks.base import DeliveryCallback, Sink, WindowResult
from worker.sources.context import SourceContextBase
from worker.sources.file import FileSource
from worker.windows import FrameMeta, SlidingWindowAssembler


@dataclass
class BenchSpec:
    model_dir: Path
    backend: str = "onnxruntime"
    precision: str = "fp32"
    width: int = 640
    height: int = 360
    source_fps: float = 25.0
    fps: float = 5.0
    stride: int = 4
    video_seconds: float = 20.0
    kbps: int = 1000  # camera-like bitrate
    ceiling_seconds: float = 4.0
    e2e_seconds: float = 6.0
    rounds: int = 3
    parallel: int = 4  # source threads in the decode-ceiling and end-to-end runs
    trial_warmup: float = 6.0
    trial_seconds: float = 15.0
    max_streams: int = 256
    max_batch: int = 8
    max_delay_ms: float = 20.0
    threads: int | None = None

    @property
    def src_per_analysed(self) -> float:
        return self.source_fps / self.fps


@dataclass
class Trial:
    streams: int
    dropped: int
    drop_reasons: dict[str, int]
    windows: int
    p50_ms: float
    p99_ms: float
    sustained: bool


@dataclass
class BenchResult:
    spec: dict[str, Any]
    video: dict[str, Any]
    cores: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ceilings: dict[str, float] = field(default_factory=dict)  # source frames/s
    ceilings_native: dict[str, str] = field(default_factory=dict)
    e2e_fps: float = 0.0
    e2e_streams: int = 0
    e2e_rounds: list[float] = field(default_factory=list)
    trials: list[Trial] = field(default_factory=list)
    max_streams: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0

    @property
    def slowest(self) -> str:
        return min(self.ceilings, key=self.ceilings.__getitem__)

    @property
    def fraction(self) -> float:
        return self.e2e_fps / self.ceilings[self.slowest] if self.ceilings else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["slowest_stage"] = self.slowest
        d["fraction_of_slowest"] = round(self.fraction, 3)
        return d


# -- helpers ----------------------------------------------------------------------------------
def make_video(spec: BenchSpec, cache: Path) -> Path:
    """A camera-like H.264 clip of the project's generated content, made once and cached.

    Rendered and encoded in chunks: a 20 s 640x360 clip is 350 MB of raw frames.
    """
    from fractions import Fraction

    import av

    from media.clips import clip_rng, render_frames, sample_params

    name = f"bench_{spec.width}x{spec.height}_{spec.source_fps:g}fps_{spec.video_seconds:g}s_{spec.kbps}k.mp4"
    path = cache / name
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    params = sample_params("move_right", clip_rng(2026, 0))
    n = round(spec.video_seconds * spec.source_fps)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), mode="w") as out:
        st = out.add_stream("libx264", rate=Fraction(spec.source_fps).limit_denominator(1001))
        st.width, st.height, st.pix_fmt = spec.width, spec.height, "yuv420p"
        # Like a camera: a target bitrate, 2 s GOP, no B-frames.
        st.bit_rate = spec.kbps * 1000
        st.options = {
            "preset": "veryfast",
            "g": str(round(2 * spec.source_fps)),
            "bf": "0",
        }
        for start in range(0, n, 50):
            times = np.arange(start, min(n, start + 50)) / spec.source_fps
            for img in render_frames(params, spec.width, spec.height, times):
                for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    tmp.rename(path)
    return path


class _DiscardCtx(SourceContextBase):
    """Takes frames and throws them away: the decode stage alone."""

    frames = 0

    def emit(self, frame: Frame) -> bool:
        self.frames += 1
        return True

    def stream_reset(self, stream_id: str, reason: str, emit_partial: bool = True) -> None:
        pass

    def drop_streams(self, stream_ids: Any, reason: str) -> None:
        pass

    def load(self) -> float:
        return 0.0


def _rate(fn: Callable[[], int], seconds: float) -> float:
    """Items per second of `fn` (which returns the items it did) over about `seconds`."""
    fn()  # warm
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += fn()
    return n / (time.perf_counter() - t0)


class CollectSink(Sink):
    """Acks at once and records capture-to-ack latency (seconds) per window."""

    name = "bench"

    def __init__(self) -> None:
        self.latency: list[tuple[float, float]] = []  # (capture_time, latency)

    def publish(self, result: WindowResult, done: DeliveryCallback) -> None:
        now = time.time()
        self.latency.append((result.window.capture_time, now - result.window.capture_time))
        done(None)

    def flush(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        pass


def _counter(p: Pipeline, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for fam in p.metrics.registry.collect():
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def _config(spec: BenchSpec, sources: list[dict], **pipeline: Any) -> VbwConfig:
    return parse_config(
        {
            "sources": sources,
            "sampling": {"fps": spec.fps},
            "windows": {"stride": spec.stride},
            "batching": {"max_batch": spec.max_batch, "max_delay_ms": spec.max_delay_ms},
            "engine": {
                "model_dir": str(spec.model_dir),
                "backend": spec.backend,
                "precision": spec.precision,
            },
            "metrics": {"enabled": False},
            "logging": {"level": "WARNING"},
            "pipeline": {"worker_id": "bench", **pipeline},
        },
        "bench",
    )


# -- the three parts --------------------------------------------------------------------------
def decode_rate(spec: BenchSpec, video: Path, size: tuple[int, int]) -> float:
    """Source frames/s of `spec.parallel` looping unpaced sources whose frames are thrown away."""
    rt = Runtime(logging.getLogger("vbw.bench"), grace_s=20.0, install_signals=False)
    sampling = SamplingConfig(fps=spec.fps)
    metrics = Metrics()
    ctxs = []
    for i in range(spec.parallel):
        src = FileSource(f"d{i}", video, sampling, loop=True)
        ctxs.append(_DiscardCtx(src, rt, metrics, size))
        rt.start_source(src, ctxs[-1])
    time.sleep(1.0)
    n0, t0 = sum(c.frames for c in ctxs), time.perf_counter()
    time.sleep(spec.ceiling_seconds)
    n1, t1 = sum(c.frames for c in ctxs), time.perf_counter()
    rt.shutdown(lambda: True)  # the sources get half the grace to return
    rt.close()
    return (n1 - n0) / (t1 - t0) * spec.src_per_analysed


def stage_ceilings(spec: BenchSpec, video: Path, engine: Any, res: BenchResult) -> None:
    """Every stage but decode (measured in rounds with the end-to-end run, see run_bench)."""
    info = engine.metadata
    size = tuple(info.image_size)
    spa = spec.src_per_analysed

    fb = 32
    frames = np.random.default_rng(0).integers(0, 255, (fb, *size, 3), dtype=np.uint8)

    def encode_frames() -> int:  # what the pipeline's encode_frames stage does: features, then tokens
        feats = engine.encode_frames(frames)
        engine.encode_steps(feats, feats)
        return fb

    ef = _rate(encode_frames, spec.ceiling_seconds)
    res.ceilings["encode_frames"] = ef * spa
    res.ceilings_native["encode_frames"] = f"{ef:.0f} frames/s at batch {fb} (features + tokens)"

    t, d, dt = info.num_frames, info.feature_dim, info.token_dim
    feats = np.random.default_rng(1).standard_normal((4096, d)).astype(np.float32)
    toks = np.random.default_rng(1).standard_normal((4096, dt)).astype(np.float32)
    asm = SlidingWindowAssembler("s", t, spec.stride, model_version=info.version)
    seq = itertools.count()

    def assemble() -> int:
        for i in range(1000):
            asm.push(FrameMeta(next(seq), 0.0, 0.0), feats[i], toks[i])
        return 1000

    a = _rate(assemble, spec.ceiling_seconds / 2)
    res.ceilings["assemble"] = a * spa
    res.ceilings_native["assemble"] = f"{a:.0f} frames/s"

    wb = spec.max_batch
    first = np.random.default_rng(2).standard_normal((wb, d)).astype(np.float32)
    win = np.random.default_rng(2).standard_normal((wb, t, dt)).astype(np.float32)
    ew = _rate(lambda: (engine.encode_token_windows(first, win), wb)[1], spec.ceiling_seconds)
    res.ceilings["encode_windows"] = ew * spec.stride * spa
    res.ceilings_native["encode_windows"] = f"{ew:.0f} windows/s at batch {wb}"

    from worker.sinks.jsonl import JsonlSink

    with tempfile.TemporaryDirectory() as tmp:
        sink = JsonlSink(Path(tmp) / "bench.jsonl")
        sink.open()
        sample = _sample_result(engine)

        def publish() -> int:
            for _ in range(200):
                sink.publish(sample, lambda err: None)
            return 200

        sk = _rate(publish, spec.ceiling_seconds / 2)
        sink.close()
    res.ceilings["sink"] = sk * spec.stride * spa
    res.ceilings_native["sink"] = f"{sk:.0f} windows/s (JSONL file)"


def _sample_result(engine: Any) -> WindowResult:
    from datetime import UTC, datetime

    from worker.frames import Window
    from worker.messages import LabelScore, ModelRef, WindowMessage, window_id

    info = engine.metadata
    msg = WindowMessage(
        window_id=window_id("cam", 0, info.version),
        stream_id="cam",
        index=0,
        start_seq=0,
        end_seq=info.num_frames - 1,
        start_pts=0.0,
        end_pts=3.0,
        frames=info.num_frames,
        complete=True,
        capture_time=time.time(),
        labels=[LabelScore(label=lb, score=0.3) for lb in info.labels[:3]],
        model=ModelRef(name=info.name, version=info.version, backend=info.backend, precision=info.precision),
        latency_ms=10.0,
        worker="bench",
        produced_at=datetime.now(UTC),
    )
    w = Window("cam", 0, 0, info.num_frames - 1, 0.0, 3.0, info.num_frames, True, time.time())
    return WindowResult(
        message=msg, embedding=np.zeros(info.embed_dim, np.float32), scores=np.zeros(3), window=w
    )


def _run_pipeline(p: Pipeline) -> None:
    p.run_in_background()
    if not p.wait_started(60):
        raise RuntimeError("pipeline did not start")


def end_to_end_rate(spec: BenchSpec, video: Path, engine: Any) -> float:
    """Source frames/s through the whole pipeline from `spec.parallel` unpaced sources (they
    block, never drop): the pipeline's own ceiling."""
    n = spec.parallel
    cfg = _config(spec, [{"type": "file", "id": f"e{i}", "path": str(video), "loop": True} for i in range(n)])
    p = Pipeline(cfg, engine=engine, sinks=[CollectSink()], install_signals=False)
    _run_pipeline(p)
    time.sleep(2.0)

    def received() -> float:
        return sum(_counter(p, "vbw_frames_received_total").values())

    r0, t0 = received(), time.perf_counter()
    time.sleep(spec.e2e_seconds)
    r1, t1 = received(), time.perf_counter()
    p.stop("bench")
    p.join(30)
    return (r1 - r0) / (t1 - t0) * spec.src_per_analysed


def live_trial(spec: BenchSpec, video: Path, engine: Any, n: int, progress: Callable[[str], None]) -> Trial:
    sink = CollectSink()
    cfg = _config(
        spec,
        [
            {"type": "file", "id": f"cam{i:03d}", "path": str(video), "realtime": True, "loop": True}
            for i in range(n)
        ],
    )
    p = Pipeline(cfg, engine=engine, sinks=[sink], install_signals=False)
    _run_pipeline(p)
    time.sleep(spec.trial_warmup)
    d0 = _counter(p, "vbw_frames_dropped_total")
    t_start = time.time()
    time.sleep(spec.trial_seconds)
    t_end = time.time()
    d1 = _counter(p, "vbw_frames_dropped_total")
    p.stop("bench")
    p.join(30)
    reasons: dict[str, int] = {}
    for k, v in d1.items():
        dv = int(v - d0.get(k, 0.0))
        if dv:
            r = dict(k)["reason"]
            reasons[r] = reasons.get(r, 0) + dv
    lat = sorted(lt for ct, lt in sink.latency if t_start <= ct <= t_end)
    p50 = 1000 * statistics.median(lat) if lat else float("nan")
    p99 = 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
    dropped = sum(reasons.values())
    # sustained: nothing dropped, and the windows kept coming at the expected rate
    expected = n * spec.trial_seconds * spec.fps / spec.stride
    trial = Trial(n, dropped, reasons, len(lat), p50, p99, dropped == 0 and len(lat) >= 0.8 * expected)
    progress(
        f"  {n:3d} streams: {'ok ' if trial.sustained else 'NO '} dropped {dropped} {reasons or ''} "
        f"windows {len(lat)}/{expected:.0f}  latency p50 {p50:.0f} ms p99 {p99:.0f} ms"
    )
    return trial


def capacity(
    spec: BenchSpec, video: Path, engine: Any, res: BenchResult, progress: Callable[[str], None]
) -> None:
    """Largest sustained N: grow from the ceiling's estimate until a trial fails, then bisect."""
    tried: dict[int, Trial] = {}

    def ok(n: int) -> bool:
        if n not in tried:
            tried[n] = live_trial(spec, video, engine, n, progress)
        return tried[n].sustained

    guess = max(1, min(spec.max_streams, int(min(res.ceilings.values()) / spec.source_fps * 0.8)))
    lo, hi = 0, None
    n = guess
    while hi is None:
        if ok(n):
            lo = n
            if n >= spec.max_streams:
                break
            n = min(spec.max_streams, max(n + 1, int(n * 1.25)))
        else:
            hi = n
            if n == 1:
                break
            if lo == 0:  # the guess was too high: come down until one passes
                n = max(1, n // 2)
                hi = None
                if n in tried:
                    break
    if hi is not None:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(mid):
                lo = mid
            else:
                hi = mid
    res.trials = [tried[k] for k in sorted(tried)]
    res.max_streams = lo
    if lo:
        res.p50_ms, res.p99_ms = tried[lo].p50_ms, tried[lo].p99_ms


def run_bench(spec: BenchSpec, cache: Path, progress: Callable[[str], None] = print) -> BenchResult:
    from engines import load_engine

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    res = BenchResult(
        spec={k: str(v) for k, v in asdict(spec).items()}, video={}, cores=cores, load_before=os.getloadavg()
    )
    progress(
        f"video: {spec.width}x{spec.height} {spec.source_fps:g} fps, {spec.video_seconds:g} s at {spec.kbps} kbit/s ..."
    )
    video = make_video(spec, cache)
    res.video = {
        "path": str(video),
        "bytes": video.stat().st_size,
        "kbit_s": round(video.stat().st_size * 8 / 1000 / spec.video_seconds),
    }
    opts: dict[str, Any] = {"max_batch": spec.max_batch}
    if spec.threads:
        opts["intra_op_threads" if spec.backend == "onnxruntime" else "threads"] = spec.threads
    engine = load_engine(spec.model_dir, backend=spec.backend, precision=spec.precision, **opts)
    engine.warmup()
    progress("stage ceilings (each stage alone, in source frames/s):")
    stage_ceilings(spec, video, engine, res)
    # The CPU is shared with other work: decode (the costly stage) and the whole pipeline are
    # measured alternately, in rounds, with the same number of source threads, and the
    # medians compared, so that a burst of outside load does not favour one of them.
    dec, e2e = [], []
    for r in range(spec.rounds):
        dec.append(decode_rate(spec, video, tuple(engine.metadata.image_size)))
        e2e.append(end_to_end_rate(spec, video, engine))
        progress(f"  round {r + 1}/{spec.rounds}: decode alone {dec[-1]:.0f}, whole pipeline {e2e[-1]:.0f}")
    res.ceilings["decode"] = statistics.median(dec)
    res.ceilings_native["decode"] = (
        f"median of {spec.rounds} rounds on {spec.parallel} threads: " + ", ".join(f"{x:.0f}" for x in dec)
    )
    res.e2e_fps = statistics.median(e2e)
    res.e2e_rounds = e2e
    res.e2e_streams = spec.parallel
    for k, v in sorted(res.ceilings.items(), key=lambda kv: kv[1]):
        progress(f"  {k:<15} {v:10.0f}   ({res.ceilings_native[k]})")
    progress(
        f"end to end ({spec.parallel} unpaced sources): {res.e2e_fps:.0f} source frames/s "
        f"= {res.fraction:.2f} of the slowest stage ({res.slowest})"
    )
    progress(f"live capacity ({spec.trial_seconds:g} s per trial after {spec.trial_warmup:g} s warm-up):")
    capacity(spec, video, engine, res, progress)
    res.load_after = os.getloadavg()
    engine.close()
    return res
