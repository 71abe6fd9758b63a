"""`vbw bench pipeline`: live-stream capacity, latency and pipeline efficiency on this machine."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", type=Path, default=REPO / "models" / "vbw-motion-small", help="model directory"
    )
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument(
        "--threads", type=int, default=None, help="engine intra-op threads (default: all cores)"
    )
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--source-fps", type=float, default=25.0, help="camera frame rate")
    parser.add_argument("--fps", type=float, default=5.0, help="analysed frames per second")
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-delay-ms", type=float, default=20.0)
    parser.add_argument("--trial-seconds", type=float, default=15.0, help="measured seconds per live trial")
    parser.add_argument("--trial-warmup", type=float, default=6.0, help="seconds before a trial is measured")
    parser.add_argument("--video-seconds", type=float, default=20.0, help="length of the looped test video")
    parser.add_argument("--rounds", type=int, default=3, help="alternating decode / end-to-end measurements")
    parser.add_argument(
        "--ceiling-seconds", type=float, default=4.0, help="seconds per stage-ceiling measurement"
    )
    parser.add_argument("--max-streams", type=int, default=256)
    parser.add_argument("--kbps", type=int, default=1000, help="bitrate of the generated test video")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "vbw" / "bench",
        help="where the test video is kept",
    )
    parser.add_argument(
        "--events",
        action="store_true",
        help="also search the live capacity with events, 2 zones per camera and snapshots on, next to the plain one",
    )
    parser.add_argument(
        "--frame-queue",
        type=int,
        default=None,
        help="pipeline.frame_queue of the live trials (default: the config's); with --events each camera "
        "frame takes a slot per view",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")


def run(args: argparse.Namespace) -> int:
    from vbw.bench.pipeline import BenchSpec, run_bench
    from worker.logs import setup_logging

    if not (args.model / "model.json").is_file():
        print(f"vbw bench pipeline: {args.model}: no model.json", file=sys.stderr)
        return 1
    setup_logging("ERROR")
    spec = BenchSpec(
        model_dir=args.model,
        backend=args.backend,
        precision=args.precision,
        threads=args.threads,
        width=args.width,
        height=args.height,
        source_fps=args.source_fps,
        fps=args.fps,
        stride=args.stride,
        max_batch=args.max_batch,
        max_delay_ms=args.max_delay_ms,
        trial_seconds=args.trial_seconds,
        trial_warmup=args.trial_warmup,
        video_seconds=args.video_seconds,
        rounds=args.rounds,
        ceiling_seconds=args.ceiling_seconds,
        e2e_seconds=max(2.0, 1.5 * args.ceiling_seconds),
        max_streams=args.max_streams,
        kbps=args.kbps,
        events=args.events,
        frame_queue=args.frame_queue,
    )
    res = run_bench(spec, args.cache, progress=lambda s: print(s, flush=True))
    print()
    print(
        f"machine: {res.cores} cores, load average {res.load_before[0]:.1f} before, {res.load_after[0]:.1f} after"
    )
    print(
        f"live {spec.width}x{spec.height} {spec.source_fps:g} fps streams sustained without drops "
        f"(analysed at {spec.fps:g} fps, T from the model, stride {spec.stride}): {res.max_streams}"
    )
    print(
        f"capture-to-sink latency at {res.max_streams} streams: p50 {res.p50_ms:.0f} ms, p99 {res.p99_ms:.0f} ms"
    )
    print(
        f"end to end {res.e2e_fps:.0f} source frames/s = {res.fraction:.2f} of the slowest stage's ceiling "
        f"({res.slowest}, {res.ceilings[res.slowest]:.0f} source frames/s)"
    )
    if res.events is not None:
        ev = res.events
        print(
            f"with events, 2 zones per camera (3 streams each) and snapshots: {ev.max_streams} cameras "
            f"({ev.max_streams / res.max_streams:.2f} of the plain {res.max_streams})"
            if res.max_streams
            else f"with events, 2 zones per camera (3 streams each) and snapshots: {ev.max_streams} cameras"
        )
        print(
            f"capture-to-sink latency at {ev.max_streams} cameras: p50 {ev.p50_ms:.0f} ms, p99 {ev.p99_ms:.0f} ms"
        )
    if args.json:
        args.json.write_text(json.dumps(res.to_dict(), indent=2, default=str) + "\n")
    return 0
