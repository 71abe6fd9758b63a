"""`vbw bench pipeline`: how many live cameras this machine sustains, at what latency, and how
close the whole pipeline comes to its slowest stage.

1. Stage ceilings, each stage alone at full speed, all in source frames/s (the camera's frames,
   before fps sampling) so they compare directly:
   decode (demux + decode every frame + resize the sampled ones, one thread per core, as the
   sources do), encode_frames, assemble (window state machine), encode_windows, sink (JSONL).
2. End to end: unpaced file sources (they block instead of dropping) through the whole pipeline;
   its frames/s over the slowest ceiling is the efficiency figure.
3. Live capacity: N paced, looping file sources stand in for N cameras (a paced file drops
   frames, reason "late", once it is a second behind, as a camera's buffer would overflow; the
   cameras play the clip from `phases` start points, so their loops do not coincide). The
   largest N with no dropped frame over the measured interval is the figure; p50/p99 latency is
   capture (when the camera took the frame) to the sink's ack, at that N.
4. With `events` (issue 10): the same live search again with events, zones and snapshots on
   (`EVENTS_ZONES` per camera plus the whole frame, so 3 streams and 3x the windows per camera;
   segment events for every motion label to a JSONL events sink; snapshots to a temporary
   directory with retention), next to the ceilings of what that adds: decode with the zone
   crops and key images, the segmenter, JPEG snapshot saves. The two searches run in lockstep,
   a trial of each in turn, so outside load on shared cores falls on both alike.
"""

from __future__ import annotations

import itertools
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worker.config import SamplingConfig, SnapshotsConfig, VbwConfig, ZoneConfig, parse_config
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
    events: bool = False  # also search the live capacity with events, zones and snapshots on
    snapshot_max_count: int = 200  # retention of the events mode's snapshot store
    # pipeline.frame_queue of the live trials (None: the config's default); in the events mode
    # each camera frame takes one slot per view
    frame_queue: int | None = None
    # Live cameras play the video from this many start points (0, 1/phases, ... of its length),
    # so loops, and with them segment starts and snapshots, fall inside every measured interval.
    phases: int = 4

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
    events: int = 0  # events published in the measured interval (events mode)
    snapshots: int = 0  # JPEG snapshots saved in the measured interval (events mode)
    # CPU ms per camera-second over the measured interval, by thread role: sources (demux,
    # decode, resize, zone crops, key images), inference (model stages, windows, segmenter,
    # snapshot JPEGs), sink, other (the engine's own thread pool, the rest), total (the process).
    # CPU time, not wall time: what each mode costs per camera, whatever else the cores run.
    cpu_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class Capacity:
    """One live search: its trials, the largest sustained N and the latency there."""

    mode: str  # "plain" or "events"
    trials: list[Trial] = field(default_factory=list)
    max_streams: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0


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
    # the events mode (spec.events): its live search, and the ceilings of what it adds
    events: Capacity | None = None
    events_ceilings: dict[str, float] = field(default_factory=dict)  # camera (source) frames/s
    events_ceilings_native: dict[str, str] = field(default_factory=dict)

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
def make_video(spec: BenchSpec, cache: Path, phase: int = 0) -> Path:
    """A camera-like H.264 clip of the project's generated content, made once and cached.
    `phase` k > 0: the same periodic motion from k/phases of the clip's length on.

    Rendered and encoded in chunks: a 20 s 640x360 clip is 350 MB of raw frames.
    """
    from fractions import Fraction

    import av

    from media.clips import clip_rng, render_frames, sample_params

    name = f"bench_{spec.width}x{spec.height}_{spec.source_fps:g}fps_{spec.video_seconds:g}s_{spec.kbps}k"
    path = cache / (name + (f"_p{phase}of{spec.phases}" if phase else "") + ".mp4")
    offset = phase * spec.video_seconds / spec.phases
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
            times = np.arange(start, min(n, start + 50)) / spec.source_fps + offset
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


# The events mode's zones: each camera's left and right halves, besides the whole frame.
EVENTS_ZONES: list[dict[str, Any]] = [
    {"name": "left", "rect": [0.0, 0.0, 0.5, 1.0]},
    {"name": "right", "rect": [0.5, 0.0, 1.0, 1.0]},
]
MODES = ("plain", "events")


def views_per_camera(mode: str) -> int:
    """Streams (and so windows) per camera: the whole frame, plus each zone in the events mode."""
    return 1 + len(EVENTS_ZONES) if mode == "events" else 1


def camera_source(video: Path, i: int, mode: str, *, realtime: bool = True, loop: bool = True) -> dict:
    """One camera stand-in: a paced, looping file source; with zones in the events mode."""
    src: dict[str, Any] = {"type": "file", "id": f"cam{i:03d}", "path": str(video), "realtime": realtime}
    src["loop"] = loop
    if mode == "events":
        src.update(zones=EVENTS_ZONES, full_frame=True)
    return src


def events_sections(spec: BenchSpec, snapshots_dir: Path) -> dict[str, Any]:
    """Config of the events mode: segment events for every label but `none` (the config's
    default rule), snapshots with retention in `snapshots_dir`."""
    return {
        "events": {"labels": None},
        "snapshots": {"enabled": True, "dir": str(snapshots_dir), "max_count": spec.snapshot_max_count},
    }


def _config(
    spec: BenchSpec, sources: list[dict], extra: dict[str, Any] | None = None, **pipeline: Any
) -> VbwConfig:
    return parse_config(
        {
            **(extra or {}),
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
def decode_rate(spec: BenchSpec, video: Path, size: tuple[int, int], mode: str = "plain") -> float:
    """Source frames/s of `spec.parallel` looping unpaced sources whose frames are thrown away.
    In the events mode each frame is also cut into the zones and given a key image."""
    rt = Runtime(logging.getLogger("vbw.bench"), grace_s=20.0, install_signals=False)
    sampling = SamplingConfig(fps=spec.fps)
    metrics = Metrics()
    ctxs = []
    views = views_per_camera(mode)
    zones = []
    if mode == "events":
        zones = [ZoneConfig.model_validate(z).zone() for z in EVENTS_ZONES]
    for i in range(spec.parallel):
        src = FileSource(
            f"d{i}",
            video,
            sampling,
            loop=True,
            zones=zones,
            full_frame=True,
            key_width=SnapshotsConfig().width if zones else None,
        )
        ctxs.append(_DiscardCtx(src, rt, metrics, size))
        rt.start_source(src, ctxs[-1])
    time.sleep(1.0)
    n0, t0 = sum(c.frames for c in ctxs), time.perf_counter()
    time.sleep(spec.ceiling_seconds)
    n1, t1 = sum(c.frames for c in ctxs), time.perf_counter()
    rt.shutdown(lambda: True)  # the sources get half the grace to return
    rt.close()
    return (n1 - n0) / views / (t1 - t0) * spec.src_per_analysed


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


def events_ceilings(spec: BenchSpec, video: Path, engine: Any, res: BenchResult) -> None:
    """What the events mode adds, alone, in camera frames/s (decode with zones: see run_bench).

    Per camera the model stages, the window state machine and the window sink run 3 times (one
    stream per view), so their ceilings are the plain ones / 3. The segmenter (EventStage: the
    hysteresis per label and the event messages) is measured on windows whose scores open and
    close a segment every 10 windows; a JPEG snapshot save (encode, atomic write, retention) on
    a key image of the bench video."""
    from media.clips import clip_rng, render_frames, sample_params
    from worker.event_messages import EventModelRef
    from worker.events import EventStage, resolve_rules
    from worker.events_config import EventsConfig
    from worker.frames import KeyImage, Window
    from worker.snapshots import SnapshotStore

    views = views_per_camera("events")
    spa = spec.src_per_analysed
    for k in ("encode_frames", "assemble", "encode_windows", "sink"):
        res.events_ceilings[k] = res.ceilings[k] / views
        res.events_ceilings_native[k] = f"the plain ceiling / {views} (a stream per view)"

    info = engine.metadata
    t, labels = info.num_frames, list(info.labels)
    rules = resolve_rules(EventsConfig(), labels)
    stage = EventStage(
        rules,
        labels,
        size=t,
        stride=spec.stride,
        max_gap=0,
        model=EventModelRef(name=info.name, version=info.version),
        metrics=Metrics(),
    )
    sample = _sample_result(engine)
    interest = [labels.index(lb) for lb in rules] or [0]
    counter = itertools.count()

    def segment() -> int:
        for _ in range(200):
            k = next(counter)
            scores = np.full(len(labels), 0.02, np.float32)
            if k % 20 < 10:  # 10 windows of one label, 10 of nothing: a start and an end per 20
                scores[interest[(k // 20) % len(interest)]] = 0.9
            start = k * spec.stride
            end_pts = (start + t - 1) / spec.fps
            w = Window("cam/left", k, start, start + t - 1, start / spec.fps, end_pts, t, True, 1e9 + end_pts)
            w.window_id = f"w{start}"
            stage.window(WindowResult(sample.message, sample.embedding, scores, w))
        return 200

    seg = _rate(segment, spec.ceiling_seconds / 2)
    res.events_ceilings["segmenter"] = seg * spec.stride * spa / views
    res.events_ceilings_native["segmenter"] = (
        f"{seg:.0f} windows/s ({len(rules)} labels, events every 10 windows)"
    )

    kw = SnapshotsConfig().width
    kh = max(2, round(spec.height * kw / spec.width / 2) * 2)
    key = render_frames(sample_params("move_right", clip_rng(2026, 0)), kw, kh, np.array([1.0]))[0]
    zone = ZoneConfig.model_validate(EVENTS_ZONES[0]).zone().points
    with tempfile.TemporaryDirectory(prefix="vbw-bench-") as tmp:
        store = SnapshotStore(tmp, max_count=spec.snapshot_max_count)
        n = itertools.count()

        def save() -> int:
            for _ in range(20):
                store.save("cam/left", f"w{next(n)}", KeyImage(key, zone))
            return 20

        sv = _rate(save, spec.ceiling_seconds / 2)
    res.events_ceilings_native["snapshot"] = (
        f"{sv:.0f} saves/s ({kw}x{kh} JPEG q{SnapshotsConfig().quality}, zone outline, retention "
        f"{spec.snapshot_max_count}); per camera frame it depends on how often a segment's peak moves"
    )


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


def _cpu_by_role(p: Pipeline) -> dict[str, float]:
    """CPU seconds so far of the pipeline's threads by role (Linux /proc; {} elsewhere) and of
    the whole process."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out = {"sources": 0.0, "inference": 0.0, "sink": 0.0}
    try:
        for name, t in list(p.runtime.threads.items()):
            role = "sources" if name.startswith("source:") else name
            if role not in out or t.native_id is None:
                continue
            stat = Path(f"/proc/self/task/{t.native_id}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()  # after the command name: state, ppid, ...
            out[role] += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    except (OSError, ValueError, IndexError):
        return {}
    out["total"] = sum(os.times()[:2])
    return out


def _cpu_ms(before: dict[str, float], after: dict[str, float], camera_seconds: float) -> dict[str, float]:
    if not before or not after:
        return {}
    d = {k: (after[k] - before[k]) * 1000 / camera_seconds for k in before}
    d["other"] = d["total"] - d["sources"] - d["inference"] - d["sink"]
    return {k: round(v, 2) for k, v in d.items()}


def _snapshots_saved(p: Pipeline) -> int:
    store = getattr(p, "_snapshots", None)  # worker.snapshots.SnapshotStore, with snapshots on
    return store.saved if store is not None else 0


def live_trial(
    spec: BenchSpec,
    videos: Sequence[Path],
    engine: Any,
    n: int,
    progress: Callable[[str], None],
    mode: str = "plain",
) -> Trial:
    """N cameras, camera i playing videos[i % len(videos)] (the phases of one clip)."""
    with tempfile.TemporaryDirectory(prefix="vbw-bench-") as tmp:
        return _live_trial(spec, videos, engine, n, progress, mode, Path(tmp))


def _live_trial(
    spec: BenchSpec,
    videos: Sequence[Path],
    engine: Any,
    n: int,
    progress: Callable[[str], None],
    mode: str,
    tmp: Path,
) -> Trial:
    from worker.sinks.jsonl import JsonlSink

    sink = CollectSink()
    sinks: list[Sink] = [sink]
    extra = None
    if mode == "events":
        sinks.append(JsonlSink(tmp / "events.jsonl", name="events", events=True))
        extra = events_sections(spec, tmp / "snapshots")
    queue = {"frame_queue": spec.frame_queue} if spec.frame_queue else {}
    cfg = _config(spec, [camera_source(videos[i % len(videos)], i, mode) for i in range(n)], extra, **queue)
    p = Pipeline(cfg, engine=engine, sinks=sinks, install_signals=False)
    _run_pipeline(p)
    time.sleep(spec.trial_warmup)
    d0, e0, s0 = _counter(p, "vbw_frames_dropped_total"), _counter(p, "vbw_events_total"), _snapshots_saved(p)
    c0 = _cpu_by_role(p)
    t_start = time.time()
    time.sleep(spec.trial_seconds)
    t_end = time.time()
    d1, e1, s1 = _counter(p, "vbw_frames_dropped_total"), _counter(p, "vbw_events_total"), _snapshots_saved(p)
    c1 = _cpu_by_role(p)
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
    expected = n * views_per_camera(mode) * spec.trial_seconds * spec.fps / spec.stride
    trial = Trial(n, dropped, reasons, len(lat), p50, p99, dropped == 0 and len(lat) >= 0.8 * expected)
    trial.events = round(sum(v - e0.get(k, 0.0) for k, v in e1.items()))
    trial.snapshots = s1 - s0
    trial.cpu_ms = _cpu_ms(c0, c1, n * (t_end - t_start))
    made = f"  events {trial.events} snapshots {trial.snapshots}" if mode == "events" else ""
    if trial.cpu_ms:
        made += "  CPU ms per camera-second: " + " ".join(f"{k} {v:.1f}" for k, v in trial.cpu_ms.items())
    progress(
        f"  {mode:<6} {n:3d} cameras: {'ok ' if trial.sustained else 'NO '} dropped {dropped} {reasons or ''} "
        f"windows {len(lat)}/{expected:.0f}  latency p50 {p50:.0f} ms p99 {p99:.0f} ms{made}"
    )
    return trial


def _search(guess: int, max_n: int) -> Generator[int, bool, int]:
    """Largest sustained N: grow from `guess` until a trial fails, then bisect. Yields each N to
    try, is sent whether it was sustained, returns the largest sustained N (0: none)."""
    seen: dict[int, bool] = {}
    lo, hi = 0, None
    n = guess
    while hi is None:
        if n not in seen:
            seen[n] = yield n
        if seen[n]:
            lo = n
            if n >= max_n:
                break
            n = min(max_n, max(n + 1, int(n * 1.25)))
        else:
            hi = n
            if n == 1:
                break
            if lo == 0:  # the guess was too high: come down until one passes
                n = max(1, n // 2)
                hi = None
                if n in seen:
                    break
    if hi is not None:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if mid not in seen:
                seen[mid] = yield mid
            if seen[mid]:
                lo = mid
            else:
                hi = mid
    return lo


def capacities(
    spec: BenchSpec,
    videos: Sequence[Path],
    engine: Any,
    plan: list[tuple[str, float]],
    progress: Callable[[str], None],
) -> list[Capacity]:
    """One live search per (mode, ceiling: its slowest stage in camera frames/s), each starting
    from 0.8 of that ceiling's estimate. The searches run in lockstep, one trial of each in turn,
    so that a change in outside load on the shared cores falls on every mode alike."""
    caps = [Capacity(mode) for mode, _ in plan]
    tried: list[dict[int, Trial]] = [{} for _ in plan]
    active: dict[int, tuple[Generator[int, bool, int], int]] = {}
    for i, (_, ceiling) in enumerate(plan):
        g = _search(max(1, min(spec.max_streams, int(ceiling / spec.source_fps * 0.8))), spec.max_streams)
        active[i] = (g, next(g))
    while active:
        for i in list(active):
            g, n = active[i]
            trial = tried[i][n] = live_trial(spec, videos, engine, n, progress, caps[i].mode)
            try:
                active[i] = (g, g.send(trial.sustained))
            except StopIteration as stop:
                del active[i]
                cap = caps[i]
                cap.max_streams = stop.value
                cap.trials = [tried[i][k] for k in sorted(tried[i])]
                if cap.max_streams:
                    cap.p50_ms, cap.p99_ms = (
                        tried[i][cap.max_streams].p50_ms,
                        tried[i][cap.max_streams].p99_ms,
                    )
    return caps


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
    size = tuple(engine.metadata.image_size)
    dec, e2e, dec_ev = [], [], []
    for r in range(spec.rounds):
        dec.append(decode_rate(spec, video, size))
        e2e.append(end_to_end_rate(spec, video, engine))
        if spec.events:
            dec_ev.append(decode_rate(spec, video, size, "events"))
        with_zones = f", decode with zones and key images {dec_ev[-1]:.0f}" if dec_ev else ""
        progress(
            f"  round {r + 1}/{spec.rounds}: decode alone {dec[-1]:.0f}, whole pipeline {e2e[-1]:.0f}{with_zones}"
        )
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
    plan = [("plain", min(res.ceilings.values()))]
    if spec.events:
        res.events_ceilings["decode"] = statistics.median(dec_ev)
        res.events_ceilings_native["decode"] = (
            f"whole frame + {len(EVENTS_ZONES)} zones + key image, median of {spec.rounds} rounds: "
            + ", ".join(f"{x:.0f}" for x in dec_ev)
        )
        events_ceilings(spec, video, engine, res)
        progress("events mode: stage ceilings (camera frames/s):")
        for k, v in sorted(res.events_ceilings.items(), key=lambda kv: kv[1]):
            progress(f"  {k:<15} {v:10.0f}   ({res.events_ceilings_native[k]})")
        progress(f"  {'snapshot':<15} {'':>10}   ({res.events_ceilings_native['snapshot']})")
        plan.append(("events", min(res.events_ceilings.values())))
    progress(
        f"live capacity ({spec.trial_seconds:g} s per trial after {spec.trial_warmup:g} s warm-up"
        + (
            f"; plain and events mode ({len(EVENTS_ZONES)} zones + whole frame per camera, events, snapshots) "
            "in turn"
            if spec.events
            else ""
        )
        + "):"
    )
    videos = [video] + [make_video(spec, cache, k) for k in range(1, spec.phases)]
    caps = capacities(spec, videos, engine, plan, progress)
    plain = caps[0]
    res.trials, res.max_streams, res.p50_ms, res.p99_ms = (
        plain.trials,
        plain.max_streams,
        plain.p50_ms,
        plain.p99_ms,
    )
    if spec.events:
        res.events = caps[1]
    res.load_after = os.getloadavg()
    engine.close()
    return res
