"""`vbw bench events`: time from a motion's first frame to its start event's ack, on paced
generated clips with known timelines; p50/p95, misses, and what other rules would give."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", type=Path, default=REPO / "models" / "vbw-motion-small", help="model directory"
    )
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=None, help="engine intra-op threads")
    parser.add_argument("--streams", type=int, default=12, help="paced cameras (default 12)")
    parser.add_argument("--motions", type=int, default=6, help="motions per camera (default 6)")
    parser.add_argument("--motion-seconds", type=float, default=6.0, help="length of each motion")
    parser.add_argument(
        "--static-seconds",
        type=float,
        nargs=2,
        default=(4.0, 8.0),
        metavar=("MIN", "MAX"),
        help="each static stretch lasts a random time in this range",
    )
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--source-fps", type=float, default=25.0, help="camera frame rate")
    parser.add_argument("--fps", type=float, default=5.0, help="analysed frames per second")
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-delay-ms", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=10, help="clip seed (the timelines and scenes)")
    parser.add_argument(
        "--rule",
        type=json.loads,
        default={},
        metavar="JSON",
        help="events.default overrides for this run, e.g. '{\"start_windows\": 1}' (default: the config's defaults)",
    )
    parser.add_argument("--target", type=float, default=4.0, help="p50 target, seconds (default 4)")
    parser.add_argument("--per-event", action="store_true", help="print every motion's timing")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "vbw" / "bench",
        help="where the clips are kept",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")


def _s(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f} s"


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from vbw.bench.events import EventsBenchSpec, run_events_bench
    from worker.logs import setup_logging

    if not (args.model / "model.json").is_file():
        print(f"vbw bench events: {args.model}: no model.json", file=sys.stderr)
        return 1
    setup_logging("ERROR")
    spec = EventsBenchSpec(
        model_dir=args.model,
        backend=args.backend,
        precision=args.precision,
        threads=args.threads,
        streams=args.streams,
        motions=args.motions,
        motion_seconds=args.motion_seconds,
        static_seconds=tuple(args.static_seconds),
        width=args.width,
        height=args.height,
        source_fps=args.source_fps,
        fps=args.fps,
        stride=args.stride,
        max_batch=args.max_batch,
        max_delay_ms=args.max_delay_ms,
        seed=args.seed,
        rule=args.rule,
        target_s=args.target,
    )
    try:
        res = run_events_bench(spec, args.cache, progress=lambda s: print(s, file=sys.stderr, flush=True))
    except (RuntimeError, ValidationError, ValueError) as e:
        print(f"vbw bench events: {e}", file=sys.stderr)
        return 1
    r = res.rule
    if args.per_event:
        print("stream  label        motion at  first on  k windows  ack      motion frames in first window")
        for t in res.timings:
            print(
                f"{t.stream_id}  {t.label:<12} {t.motion_start:7.1f} s  {t.first_on:6.2f} s  {t.triggered:7.2f} s"
                f"  {t.total:5.2f} s  {t.motion_frames}"
            )
        for m in res.misses:
            print(f"{m['stream_id']}  {m['label']:<12} {m['start']:7.1f} s  missed")
        for f in res.false:
            a, b = f["window"]
            print(
                f"{f['stream_id']}  {f['label']:<12} false start, first window {a:.1f}-{b:.1f} s shows "
                f"{' then '.join(f['timeline'])}"
            )
        print()
    print(
        f"machine: {res.cores} cores, load average {res.load_before[0]:.1f} before, {res.load_after[0]:.1f} after; "
        f"frames dropped {res.dropped}"
    )
    print(
        f"rule: on_threshold {r['on_threshold']}, off_threshold {r['off_threshold']}, start_windows "
        f"{r['start_windows']}, end_windows {r['end_windows']}, min_duration_s {r['min_duration_s']}; "
        f"T from the model, {spec.fps:g} fps, stride {spec.stride}"
    )
    print(
        f"time to event (first frame of a motion -> start event acked), {res.matched} of {res.motions} motions: "
        f"p50 {_s(res.p50_s)}, p95 {_s(res.p95_s)} (target p50 <= {spec.target_s:g} s: "
        f"{'met' if res.meets else 'NOT met'})"
    )
    sp = res.split_p50
    if res.timings:
        print(
            f"  p50 of its parts: first window at or above `on` complete {_s(sp['first_on'])}, "
            f"k-th window complete {_s(sp['triggered'])}, then pipeline to the ack {_s(sp['pipeline'])}; "
            f"motion frames in the first window, p50 {res.motion_frames_p50:.0f}"
        )
    print(
        f"misses {len(res.misses)}, start events overlapping no motion of their label {res.false_starts}, "
        f"starts again within a motion {res.restarts}"
    )
    print("the same windows replayed through the segmenter with other rules (pipeline time as measured):")
    for w in res.what_if:
        name = ", ".join(f"{k} {v}" for k, v in w.rule.items()) or "this run's rule"
        print(
            f"  {name:<22} matched {w.matched}/{res.motions}, false starts {w.false_starts}: "
            f"p50 {_s(w.p50_s)}, p95 {_s(w.p95_s)}"
        )
    if args.json:
        args.json.write_text(json.dumps(res.to_dict(), indent=2, default=str) + "\n")
    return 0
