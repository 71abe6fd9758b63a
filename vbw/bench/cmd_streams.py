"""`vbw bench streams`: add/remove cycles through the stream API of a running `vbw run`; threads
and RSS before and after, request latencies. vbw/bench/streams.py says what is measured."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clip", type=Path, default=Path("samples/demo.mp4"), help="the sources' clip")
    parser.add_argument("--model", type=Path, default=Path("models/vbw-motion-small"), help="model directory")
    parser.add_argument("--cycles", type=int, default=100, help="measured add/remove cycles (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="cycles before the baseline (default 5)")
    parser.add_argument(
        "--cameras",
        type=int,
        default=0,
        help="then time N live RTSP cameras: POST -> first window (default 0)",
    )
    parser.add_argument(
        "--fps", type=float, default=5.0, help="sampling.fps of the worker (default 5, the config's)"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")


def run(args: argparse.Namespace) -> int:
    from vbw.bench.streams import run_streams_bench

    result = run_streams_bench(args.clip, args.model, args.cycles, args.warmup, args.cameras, args.fps)
    print(result.table())
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0
