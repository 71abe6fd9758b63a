"""`vbw bench reconnect`: camera killed and restarted N times; time from "listening again" to the
first new frame, per trial and in summary."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, default=10, help="outages (default 10)")
    parser.add_argument("--outage", type=float, default=5.0, help="seconds the camera stays down (default 5)")
    parser.add_argument("--within", type=float, default=2.0, help="target seconds to the first new frame")
    parser.add_argument("--port", type=int, help="camera port (default: a free one)")
    parser.add_argument(
        "--reconnect",
        type=json.loads,
        default={},
        metavar="JSON",
        help="sources[type=rtsp].reconnect keys, e.g. '{\"probe_for_s\": 0}' (backoff only)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")


def run(args: argparse.Namespace) -> int:
    from vbw.bench.reconnect import ReconnectBenchSpec, run_reconnect_bench
    from worker.config import ConfigError
    from worker.logs import setup_logging

    setup_logging("ERROR")  # the source's loss lines; its reconnect lines are INFO, in the table
    spec = ReconnectBenchSpec(
        trials=args.trials,
        outage_s=args.outage,
        within_s=args.within,
        port=args.port,
        reconnect=args.reconnect,
    )
    try:
        result = run_reconnect_bench(spec, progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (RuntimeError, ConfigError) as e:
        print(f"vbw bench reconnect: {e}", file=sys.stderr)
        return 1
    print(result.table())
    if args.json:
        doc = asdict(result) | {"median_s": result.median_s, "max_s": result.max_s, "within": result.within}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0
