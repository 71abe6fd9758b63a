"""`vbw bench kafka`: frames/s in -> windows/s out through a broker, next to the raw client's ceiling."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", type=Path, default=REPO / "models" / "vbw-motion-small", help="model directory"
    )
    parser.add_argument("--bootstrap", help="host:port of a broker; default: a private Tansu broker")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--frames", type=int, default=400, help="frames per stream")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--frame-size", type=_size, help="HxW published (default: the model's input size)")
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, help="engine intra-op threads")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from vbw.bench.kafka import KafkaBenchSpec, run_kafka_bench
    from worker.logs import setup_logging

    if not (args.model / "model.json").is_file():
        print(f"vbw bench kafka: {args.model}: no model.json", file=sys.stderr)
        return 1
    setup_logging("ERROR")
    spec = KafkaBenchSpec(
        model_dir=args.model,
        bootstrap=args.bootstrap,
        streams=args.streams,
        frames=args.frames,
        partitions=args.partitions,
        frame_size=args.frame_size,
        stride=args.stride,
        backend=args.backend,
        precision=args.precision,
        threads=args.threads,
        max_batch=args.max_batch,
    )
    try:
        result = run_kafka_bench(spec)
    except RuntimeError as e:
        print(f"vbw bench kafka: {e}", file=sys.stderr)
        return 1
    print(result.table())
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0
