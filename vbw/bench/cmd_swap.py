"""`vbw bench swap`: resident memory of one vs two engines of a model (a hot model swap holds
both for a while), memory after each old one is closed, and the time to load and warm the new
one. vbw/bench/swap.py says what is measured."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=Path("models/vbw-motion-small"), help="model directory")
    parser.add_argument("--backend", default="onnxruntime", help="onnxruntime | torch | tensorrt")
    parser.add_argument("--precision", default="fp32", help="fp32 | fp16 | int8")
    parser.add_argument(
        "--max-batch", type=int, default=8, help="batching.max_batch (default 8, the config's)"
    )
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the runtime's)")
    parser.add_argument("--swaps", type=int, default=5, help="swaps in a row (default 5)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")


def run(args: argparse.Namespace) -> int:
    from vbw.bench.swap import run_swap_bench
    from worker.config import parse_config
    from worker.logs import setup_logging

    setup_logging("WARNING")
    cfg = parse_config(
        {
            "sources": [{"type": "file", "id": "unused", "path": "samples/demo.mp4"}],  # none is started
            "sinks": [{"type": "stdout"}],
            "batching": {"max_batch": args.max_batch},
            "engine": {
                "model_dir": str(args.model),
                "backend": args.backend,
                "precision": args.precision,
                "threads": args.threads,
            },
        }
    )
    result = run_swap_bench(cfg, args.swaps)
    print(result.table())
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0
