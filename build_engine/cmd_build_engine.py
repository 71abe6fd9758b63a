"""`vbw build-engine`: compile a model's TensorRT plans into the plan cache, on the GPU machine that serves."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PRECISION_CHOICES = ("fp32", "fp16", "int8", "all")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="model directory (with model.json)")
    parser.add_argument("--precision", default="fp16", choices=PRECISION_CHOICES, help="graphs to compile")
    parser.add_argument("--min", dest="min_batch", type=int, default=1, help="smallest window batch")
    parser.add_argument(
        "--opt", dest="opt_batch", type=int, default=8, help="window batch kernels are tuned for"
    )
    parser.add_argument("--max", dest="max_batch", type=int, default=32, help="largest window batch")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="plan cache directory (default $VBW_PLAN_CACHE or ~/.cache/vbw/plans)",
    )
    parser.add_argument("--device", type=int, default=0, help="CUDA device index")
    parser.add_argument("--rebuild", action="store_true", help="compile even when a plan is cached")


def run(args: argparse.Namespace) -> int:
    from engines.base import EngineUnavailable
    from engines.manifest import ModelDirError
    from engines.plan_cache import PlanCache, Profile
    from engines.validation import open_model

    try:
        windows = Profile(args.min_batch, args.opt_batch, args.max_batch)
        model_dir, manifest = open_model(args.model, None)
    except (ValueError, ModelDirError) as e:
        print(f"vbw build-engine: {e}", file=sys.stderr)
        return 2
    precisions = (
        [p for p in ("fp32", "fp16", "int8") if p in manifest.graphs]
        if args.precision == "all"
        else [args.precision]
    )
    missing = [p for p in precisions if p not in manifest.graphs]
    if missing:
        print(
            f"vbw build-engine: {model_dir} has no {missing[0]} graphs (has: {', '.join(manifest.graphs)})",
            file=sys.stderr,
        )
        return 2
    from engines.tensorrt_build import PlanBuildError, build_model_plans

    cache = PlanCache(args.cache)
    try:
        for precision in precisions:
            for plan in build_model_plans(
                model_dir, manifest, precision, windows, cache, args.device, args.rebuild
            ):
                state = "built" if plan.built else "cached"
                print(f"{precision:5} {plan.graph:15} {state:6} {plan.seconds:7.1f} s  {plan.path}")
    except EngineUnavailable as e:
        # No TensorRT, no pycuda or no GPU: say which, in one line, and exit 2.
        print(f"vbw build-engine: cannot build TensorRT plans here: {e}", file=sys.stderr)
        return 2
    except PlanBuildError as e:
        print(f"vbw build-engine: {e}", file=sys.stderr)
        return 1
    return 0
