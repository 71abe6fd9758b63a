"""`vbw demo`: the bundled sample video through the CPU engine, one readable line per window.

It is `vbw run` with a built-in config (one file source, the shipped model on ONNX Runtime, a
printing sink). When the video has a timeline beside it (`<video>.json`, written by
`vbw gen-clips --sequence`), each line also shows the true label of the segment the window lies in.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = REPO / "samples" / "demo.mp4"
DEFAULT_MODEL = REPO / "models" / "vbw-motion-small"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--video", type=Path, default=DEFAULT_VIDEO, help="video file (default: the bundled sample)"
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model directory")
    parser.add_argument("--backend", default="onnxruntime", help="onnxruntime | torch | tensorrt")
    parser.add_argument("--precision", default="fp32", help="fp32 | fp16 | int8")
    parser.add_argument("--fps", type=float, default=5.0, help="analysed frames per second")
    parser.add_argument("--stride", type=int, default=4, help="frames between window starts")
    parser.add_argument("--top-k", type=int, default=3, help="labels shown per window")
    parser.add_argument("--realtime", action="store_true", help="play the video at its own pace")


def _segments(video: Path) -> list[dict]:
    side = video.with_suffix(".json")
    if not side.is_file():
        return []
    try:
        return list(json.loads(side.read_text()).get("segments", []))
    except (OSError, ValueError):
        return []


def _truth(segments: list[dict], start: float, end: float) -> str | None:
    """The label of the segment holding [start, end], None if the window straddles a cut."""
    for s in segments:
        if s["start"] - 1e-6 <= start and end < s["end"] + 1e-6:
            return str(s["label"])
    return None


def run(args: argparse.Namespace) -> int:
    import logging
    import time

    from contracts.graph import MANIFEST_NAME
    from contracts.types import DeliveryCallback
    from worker.config import ConfigError, parse_config
    from worker.logs import setup_logging
    from worker.pipeline import Pipeline
    from worker.sinks.base import Sink, WindowResult
    from worker.sinks.jsonl import text_line

    if not args.video.is_file():
        print(f"vbw demo: {args.video}: no such video", file=sys.stderr)
        return 1
    if not (args.model / MANIFEST_NAME).is_file():
        print(f"vbw demo: {args.model}: no {MANIFEST_NAME} (is the model directory there?)", file=sys.stderr)
        return 1
    setup_logging("WARNING")
    logging.getLogger("vbw.source").setLevel(logging.ERROR)
    segments = _segments(args.video)

    class DemoSink(Sink):
        name = "demo"

        def __init__(self) -> None:
            self.windows = 0
            self.judged = 0
            self.right = 0
            self.across_cuts = 0
            self.cuts_none = 0  # windows spanning a cut that the model called `none`

        def publish(self, result: WindowResult, done: DeliveryCallback) -> None:
            m = result.message
            line = text_line(result)
            truth = _truth(segments, m.start_pts, m.end_pts) if segments else None
            if truth is not None:
                ok = m.labels[0].label == truth
                self.judged += 1
                self.right += ok
                line += f"   [true: {truth}{'' if ok else '  <- wrong'}]"
            elif segments:
                line += "   [spans a cut]"
                self.across_cuts += 1
                self.cuts_none += m.labels[0].label == "none"
            print(line, flush=True)
            self.windows += 1
            done(None)

        def flush(self, timeout: float) -> bool:
            return True

        def close(self) -> None:
            pass

    doc: dict[str, Any] = {
        "sources": [{"type": "file", "id": "sample", "path": str(args.video), "realtime": args.realtime}],
        "sampling": {"fps": args.fps},
        "windows": {"stride": args.stride, "partial": "pad"},
        "engine": {
            "model_dir": str(args.model),
            "backend": args.backend,
            "precision": args.precision,
            "top_k": args.top_k,
        },
        "metrics": {"enabled": False},
        "logging": {"level": "WARNING"},
        "pipeline": {"worker_id": "demo"},
    }
    try:
        cfg = parse_config(doc, "vbw demo")
    except ConfigError as e:
        for p in e.problems:
            print(f"vbw demo: {p}", file=sys.stderr)
        return 2
    sink = DemoSink()
    pipeline = Pipeline(cfg, sinks=[sink])
    print(
        f"vbw demo: {args.video.name} at {args.fps:g} fps, a window every {args.stride} frames, "
        f"model {args.model.name} on {args.backend}/{args.precision}"
    )
    if segments:
        print("timeline: " + ", ".join(f"{s['label']} {s['start']:.1f}-{s['end']:.1f}s" for s in segments))
    t0 = time.perf_counter()
    rc = pipeline.run()
    took = time.perf_counter() - t0
    if rc != 0 and sink.windows == 0:
        return rc
    summary = f"{sink.windows} windows in {took:.1f}s"
    if sink.judged:
        summary += f"; top-1 right in {sink.right}/{sink.judged} windows that lie within one segment"
    if sink.across_cuts:
        summary += f"; {sink.cuts_none}/{sink.across_cuts} windows spanning a cut said none"
    print(summary)
    return rc
