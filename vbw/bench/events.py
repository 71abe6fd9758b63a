"""`vbw bench events`: time to event, from the first frame of a motion to its start event being
acked by the events sink, on live (paced) generated clips with known timelines.

N cameras are stand-ins: paced file sources (`realtime`, as in `vbw bench pipeline`), each a
`media.clips.write_sequence` video of static stretches (`none`, a random length each, so the
motions of different cameras start at different moments) and motions, a scene cut between
segments. They run through the one Pipeline with the shipped segmenter rule (or `rule`
overrides) and the real JSONL events sink, wrapped to note the wall time of each ack.

A motion's true start is the capture time of its first frame: a paced source stamps a frame
with the time its camera would have taken it, so per stream capture time - pts is a constant
(read off the windows), and the motion's first frame was captured at that constant + its start
in the timeline. Its start event is the first start of its label whose first window overlaps
the motion. The time splits into what a window must wait for (the frames of the first window
that scores `on`, then k - 1 strides more) and the pipeline (from the triggering window's
newest frame to the ack: batching, inference, segmenter, sink).

The windows and their scores are kept, so the same run answers "what would another rule give"
(`what_if`): the segmenter is pure, and is replayed over the recorded scores with each rule;
its time to event is the frames it waits for plus this run's median pipeline time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contracts.types import DeliveryCallback
from worker.config import parse_config
from worker.event_messages import EventMessage
from worker.events import resolve_rules, window_view
from worker.events_config import EventRule, EventsConfig
from worker.frames import Window
from worker.pipeline import Pipeline
from worker.segmenter import Rule, StreamSegmenter
from worker.sinks.base import Sink, WindowResult
from worker.sinks.jsonl import JsonlSink

log = logging.getLogger("vbw.bench")


@dataclass
class EventsBenchSpec:
    model_dir: Path
    backend: str = "onnxruntime"
    precision: str = "fp32"
    threads: int | None = None
    streams: int = 12
    motions: int = 6  # per stream
    motion_seconds: float = 6.0
    static_seconds: tuple[float, float] = (4.0, 8.0)  # each static stretch: uniform in this range
    width: int = 320
    height: int = 180
    source_fps: float = 25.0
    fps: float = 5.0
    stride: int = 4
    max_batch: int = 8
    max_delay_ms: float = 20.0
    seed: int = 10
    rule: dict[str, Any] = field(default_factory=dict)  # events.default overrides, e.g. {"start_windows": 1}
    target_s: float = 4.0


# -- the clips --------------------------------------------------------------------------------
def stream_segments(spec: EventsBenchSpec, i: int) -> list[tuple[str, float]]:
    """Stream i's timeline: static, then (motion, static) `motions` times; every label in turn."""
    from media.clips import LABELS

    rng = np.random.default_rng([spec.seed, i])

    def static() -> tuple[str, float]:
        return ("none", round(float(rng.uniform(*spec.static_seconds)), 1))

    segs = [static()]
    for j in range(spec.motions):
        segs += [(LABELS[(i * spec.motions + j) % len(LABELS)], spec.motion_seconds), static()]
    return segs


def make_clips(
    spec: EventsBenchSpec, cache: Path, progress: Callable[[str], None]
) -> list[tuple[Path, dict]]:
    """One sequence video (+ its timeline) per stream, made once and cached by content."""
    from media.clips import write_sequence

    out = []
    for i in range(spec.streams):
        segs = stream_segments(spec, i)
        seed = spec.seed * 1000 + i
        key = json.dumps([segs, seed, spec.width, spec.height, spec.source_fps])
        name = f"events_{hashlib.sha256(key.encode()).hexdigest()[:16]}.mp4"
        path = cache / name
        if not (path.is_file() and path.with_suffix(".json").is_file()):
            progress(f"  clip {i + 1}/{spec.streams}: {sum(s for _, s in segs):.0f} s ...")
            tmp = cache / f"part-{os.getpid()}-{name}"
            doc = write_sequence(tmp, segs, seed, spec.width, spec.height, spec.source_fps)
            doc["file"] = name
            tmp.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
            tmp.with_suffix(".json").rename(path.with_suffix(".json"))
            tmp.rename(path)
        out.append((path, json.loads(path.with_suffix(".json").read_text())))
    return out


# -- the sinks --------------------------------------------------------------------------------
class WindowLog(Sink):
    """Keeps every window and its scores (acks at once): offsets, the split and `what_if`."""

    name = "bench-windows"

    def __init__(self) -> None:
        self.windows: list[tuple[Window, np.ndarray]] = []

    def publish(self, result: WindowResult, done: DeliveryCallback) -> None:
        self.windows.append((result.window, result.scores.copy()))
        done(None)

    def flush(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        pass


class AckTimes(Sink):
    """An event sink (the real JSONL one) whose acks are timed: (event, wall time of the ack)."""

    takes_events = True

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self.name = inner.name
        self.acked: list[tuple[EventMessage, float]] = []
        self._lock = threading.Lock()  # acks may come from any thread

    def open(self) -> None:
        self.inner.open()

    def publish(self, result: WindowResult, done: DeliveryCallback) -> None:
        raise NotImplementedError("an events sink")

    def publish_event(self, event: EventMessage, done: DeliveryCallback) -> None:
        def acked(err: str | None) -> None:
            if err is None:
                t = time.time()
                with self._lock:
                    self.acked.append((event, t))
            done(err)

        self.inner.publish_event(event, acked)

    def poll(self) -> None:
        self.inner.poll()

    def flush(self, timeout: float) -> bool:
        return self.inner.flush(timeout)

    def close(self) -> None:
        self.inner.close()


# -- matching (pure) --------------------------------------------------------------------------
@dataclass
class Motion:
    stream_id: str
    label: str
    start: float  # pts, seconds
    end: float


@dataclass
class Timing:
    """One motion's start event: seconds from the motion's first frame (capture time)."""

    stream_id: str
    label: str
    motion_start: float  # pts
    total: float  # to the ack of the start event
    first_on: float  # to the newest frame of the segment's first window (the first at or above `on`)
    triggered: float  # to the newest frame of the window that made the start (k windows)
    pipeline: float  # that frame's capture to the ack
    motion_frames: int  # frames of the motion in the segment's first window


@dataclass
class Outcome:
    timings: list[Timing]
    motions: int
    misses: list[Motion]
    false: list[Start]  # start events overlapping no motion of their label
    restarts: int  # more starts within a motion already matched (its segment broke and began again)

    @property
    def false_starts(self) -> int:
        return len(self.false)

    def pct(self, q: float, attr: str = "total") -> float:
        return percentile([getattr(t, attr) for t in self.timings], q)


def percentile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); nan when empty."""
    return float(np.percentile(np.asarray(xs, float), q)) if len(xs) else math.nan


def motions_of(stream_id: str, timeline: Mapping[str, Any]) -> list[Motion]:
    return [
        Motion(stream_id, s["label"], float(s["start"]), float(s["end"]))
        for s in timeline["segments"]
        if s["label"] != "none"
    ]


def under(timeline: Mapping[str, Any], a: float, b: float) -> list[str]:
    """The timeline's segments a window from pts a to b shows (label, or none/family)."""
    return [
        s["label"] + (f"/{s['family']}" if s.get("family") else "")
        for s in timeline["segments"]
        if s["start"] <= b and s["end"] > a
    ]


def capture_offsets(windows: Sequence[tuple[Window, Any]]) -> dict[str, float]:
    """Per stream, capture time - pts (a paced source's constant): median over its windows."""
    per: dict[str, list[float]] = {}
    for w, _ in windows:
        per.setdefault(w.stream_id, []).append(w.capture_time - w.end_pts)
    return {sid: statistics.median(v) for sid, v in per.items()}


@dataclass(frozen=True)
class Start:
    """A start event as matching needs it: its first and triggering windows, and its ack."""

    stream_id: str
    label: str
    first_start_pts: float  # the segment's first window
    first_end_pts: float
    trigger_end_pts: float  # the window that made the start (its newest frame)
    acked: float | None  # wall time of the ack; None for a replayed rule (what_if)


def match(
    motions: Sequence[Motion],
    starts: Sequence[Start],
    offsets: Mapping[str, float],
    fps: float,
    pipeline_s: float | None = None,
) -> Outcome:
    """Each motion's first start of its label whose first window overlaps it. Times from the
    motion's first frame: the capture of a window's newest frame is offset + its end pts; the
    ack is the start's own, or that frame's capture + `pipeline_s` (a replayed rule)."""
    by_stream: dict[str, list[Start]] = {}
    for s in starts:
        by_stream.setdefault(s.stream_id, []).append(s)
    for v in by_stream.values():
        v.sort(key=lambda s: s.trigger_end_pts)
    used: set[int] = set()
    timings, misses = [], []
    for m in motions:
        cand = [
            s
            for s in by_stream.get(m.stream_id, [])
            if s.label == m.label
            and s.first_end_pts >= m.start
            and s.first_start_pts < m.end
            and id(s) not in used
        ]
        if not cand:
            misses.append(m)
            continue
        s = cand[0]
        used.add(id(s))
        off = offsets[m.stream_id]
        t0 = off + m.start
        trigger = off + s.trigger_end_pts
        acked = s.acked if s.acked is not None else trigger + (pipeline_s or 0.0)
        timings.append(
            Timing(
                m.stream_id,
                m.label,
                m.start,
                total=acked - t0,
                first_on=off + s.first_end_pts - t0,
                triggered=trigger - t0,
                pipeline=acked - trigger,
                motion_frames=min(
                    round((s.first_end_pts - s.first_start_pts) * fps) + 1,
                    math.floor((s.first_end_pts - m.start) * fps + 1e-6) + 1,
                ),
            )
        )
    restarts, false = 0, []
    for s in starts:
        if id(s) in used:
            continue
        if any(
            m.stream_id == s.stream_id
            and m.label == s.label
            and s.first_end_pts >= m.start
            and s.first_start_pts < m.end
            for m in motions
        ):
            restarts += 1
        else:
            false.append(s)
    return Outcome(timings, len(motions), misses, false, restarts)


def starts_of_events(
    acked: Sequence[tuple[EventMessage, float]], windows: Sequence[tuple[Window, Any]]
) -> list[Start]:
    """The run's start events, placed by their windows: the first is the one starting at the
    event's start_seq; at a start the last window so far, the trigger, ends at its end_seq."""
    by_start = {(w.stream_id, w.start_seq): w for w, _ in windows}
    by_end = {(w.stream_id, w.end_seq): w for w, _ in windows}
    out = []
    for e, t in acked:
        if e.type != "start":
            continue
        first, trigger = by_start[e.stream_id, e.start_seq], by_end[e.stream_id, e.end_seq]
        out.append(Start(e.stream_id, e.label, first.start_pts, first.end_pts, trigger.end_pts, t))
    return out


def replay_starts(
    windows: Sequence[tuple[Window, np.ndarray]],
    labels: Sequence[str],
    rules: Mapping[str, Rule],
    *,
    size: int,
    stride: int,
) -> list[Start]:
    """The start events `rules` would make from the recorded windows (the pure segmenter)."""
    index = {lb: list(labels).index(lb) for lb in rules}
    per: dict[str, list[tuple[Window, np.ndarray]]] = {}
    for w, sc in windows:
        per.setdefault(w.stream_id, []).append((w, sc))
    out = []
    for sid, ws in per.items():
        ws.sort(key=lambda x: x[0].start_seq)
        by_start = {w.start_seq: w for w, _ in ws}
        seg = StreamSegmenter(rules, size=size, stride=stride)
        for w, sc in ws:
            for e in seg.apply(window_view(w, {lb: float(sc[i]) for lb, i in index.items()}, stride)):
                if e.type == "start":
                    first = by_start[e.first.start_seq]
                    out.append(Start(sid, e.label, first.start_pts, first.end_pts, w.end_pts, None))
    return out


# -- the run ----------------------------------------------------------------------------------
@dataclass
class WhatIf:
    rule: dict[str, Any]
    matched: int
    misses: int
    false_starts: int
    p50_s: float
    p95_s: float


@dataclass
class EventsBenchResult:
    spec: dict[str, Any]
    rule: dict[str, Any]  # the rule the run used (events.default with the overrides)
    cores: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0  # of paced video per stream (the longest)
    motions: int = 0
    matched: int = 0
    misses: list[dict[str, Any]] = field(default_factory=list)
    false_starts: int = 0
    # each false start: stream, label, its first window and what the timeline has there
    false: list[dict[str, Any]] = field(default_factory=list)
    restarts: int = 0
    dropped: int = 0  # frames dropped (late / overload): a loaded machine shows here
    p50_s: float = math.nan
    p95_s: float = math.nan
    split_p50: dict[str, float] = field(default_factory=dict)  # first_on, triggered, pipeline
    motion_frames_p50: float = math.nan
    timings: list[Timing] = field(default_factory=list)
    what_if: list[WhatIf] = field(default_factory=list)

    @property
    def meets(self) -> bool:
        return self.p50_s <= float(self.spec["target_s"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"meets_target": self.meets}


def _what_if_rules(base: EventRule) -> list[dict[str, Any]]:
    """The run's rule and its neighbours: one window more or fewer, a lower on_threshold, and
    one window fewer with a higher on_threshold (fewer windows to wait for, each surer)."""
    out: list[dict[str, Any]] = [{}]
    k, on, off = base.start_windows, base.on_threshold, base.off_threshold
    for kk in (k - 1, k + 1):
        if kk >= 1:
            out.append({"start_windows": kk})
    if on - 0.1 >= off:
        out.append({"on_threshold": round(on - 0.1, 2)})
    if k > 1:
        for higher in (0.1, 0.2, 0.3):
            if on + higher <= 0.95 + 1e-9:
                out.append({"start_windows": k - 1, "on_threshold": round(on + higher, 2)})
    return out


def run_events_bench(
    spec: EventsBenchSpec, cache: Path, progress: Callable[[str], None] = print
) -> EventsBenchResult:
    from engines import load_engine

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    events_cfg = EventsConfig(
        default=EventRule.model_validate({**EventsConfig().default.model_dump(), **spec.rule})
    )
    res = EventsBenchResult(
        spec={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(spec).items()},
        rule=events_cfg.default.model_dump(),
        cores=cores,
        load_before=os.getloadavg(),
    )
    progress(
        f"clips: {spec.streams} x {spec.motions} motions, {spec.width}x{spec.height} {spec.source_fps:g} fps"
    )
    clips = make_clips(spec, cache, progress)
    res.seconds = max(d["segments"][-1]["end"] for _, d in clips)
    opts: dict[str, Any] = {"max_batch": spec.max_batch}
    if spec.threads:
        opts["intra_op_threads" if spec.backend == "onnxruntime" else "threads"] = spec.threads
    engine = load_engine(spec.model_dir, backend=spec.backend, precision=spec.precision, **opts)
    info = engine.metadata
    try:
        with tempfile.TemporaryDirectory(prefix="vbw-bench-events-") as tmp:
            windows, acked, dropped = _run(spec, engine, clips, events_cfg, Path(tmp), progress, res.seconds)
    finally:
        engine.close()
    res.load_after = os.getloadavg()
    res.dropped = dropped

    motions = [m for i, (_, doc) in enumerate(clips) for m in motions_of(f"cam{i:03d}", doc)]
    offsets = capture_offsets(windows)
    size = info.num_frames
    out = match(motions, starts_of_events(acked, windows), offsets, spec.fps)
    res.motions, res.matched, res.false_starts = out.motions, len(out.timings), out.false_starts
    res.restarts = out.restarts
    timelines = {f"cam{i:03d}": doc for i, (_, doc) in enumerate(clips)}
    res.false = [
        {
            "stream_id": f.stream_id,
            "label": f.label,
            "window": [f.first_start_pts, f.first_end_pts],
            "timeline": under(timelines[f.stream_id], f.first_start_pts, f.first_end_pts),
        }
        for f in out.false
    ]
    res.misses = [asdict(m) for m in out.misses]
    res.timings = out.timings
    res.p50_s, res.p95_s = out.pct(50), out.pct(95)
    res.split_p50 = {k: out.pct(50, k) for k in ("first_on", "triggered", "pipeline")}
    res.motion_frames_p50 = out.pct(50, "motion_frames")

    # The same windows through the pure segmenter with other rules; their pipeline time is this run's.
    pipeline_s = res.split_p50["pipeline"] if out.timings else 0.0
    labels = list(info.labels)
    for over in _what_if_rules(events_cfg.default):
        rule = EventRule.model_validate({**events_cfg.default.model_dump(), **over})
        cfg = EventsConfig(default=rule)
        starts = replay_starts(windows, labels, resolve_rules(cfg, labels), size=size, stride=spec.stride)
        o = match(motions, starts, offsets, spec.fps, pipeline_s)
        res.what_if.append(WhatIf(over, len(o.timings), len(o.misses), o.false_starts, o.pct(50), o.pct(95)))
    return res


def _run(
    spec: EventsBenchSpec,
    engine: Any,
    clips: list[tuple[Path, dict]],
    events_cfg: EventsConfig,
    tmp: Path,
    progress: Callable[[str], None],
    seconds: float,
) -> tuple[list[tuple[Window, np.ndarray]], list[tuple[EventMessage, float]], int]:
    cfg = parse_config(
        {
            "sources": [
                {"type": "file", "id": f"cam{i:03d}", "path": str(path), "realtime": True}
                for i, (path, _) in enumerate(clips)
            ],
            "sampling": {"fps": spec.fps},
            "windows": {"stride": spec.stride},
            "batching": {"max_batch": spec.max_batch, "max_delay_ms": spec.max_delay_ms},
            "engine": {
                "model_dir": str(spec.model_dir),
                "backend": spec.backend,
                "precision": spec.precision,
            },
            "events": events_cfg.model_dump(),
            "metrics": {"enabled": False},
            "logging": {"level": "WARNING"},
            "pipeline": {"worker_id": "bench"},
        },
        "bench events",
    )
    wlog = WindowLog()
    acks = AckTimes(JsonlSink(tmp / "events.jsonl", name="events", events=True))
    p = Pipeline(cfg, engine=engine, sinks=[wlog, acks], install_signals=False)
    progress(f"live run: {spec.streams} paced cameras, {seconds:.0f} s of video each ...")
    p.run_in_background()
    if not p.wait_started(120):
        p.stop("bench")
        p.join(30)
        raise RuntimeError("pipeline did not start")
    # The files are finite: the run ends when the last one does (generous: a loaded machine).
    rc = p.join(seconds * 3 + 120)
    if rc is None:
        p.stop("bench: the files should have ended")
        p.join(60)
        raise RuntimeError(f"the run did not end within {seconds * 3 + 120:.0f} s")
    dropped = 0
    for fam in p.metrics.registry.collect():
        for smp in fam.samples:
            if smp.name == "vbw_frames_dropped_total":
                dropped += int(smp.value)
    return wlog.windows, acks.acked, dropped
