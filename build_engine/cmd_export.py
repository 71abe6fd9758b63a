"""`vbw export`: checkpoint -> model directory (ONNX FP32/FP16/INT8 graphs, checkpoint copy, model.json)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="vbw checkpoint (.pt) to export")
    parser.add_argument("--out", required=True, type=Path, help="model directory to write")
    parser.add_argument("--name", default="vbw-motion-small", help="model name recorded in model.json")
    parser.add_argument("--version", default="0.2.1", help="model version recorded in model.json")
    parser.add_argument(
        "--precisions",
        default="fp32,fp16,int8",
        help="comma-separated precisions to write (fp32 always included)",
    )
    parser.add_argument(
        "--whole-window-precisions",
        default="fp32",
        help="precisions that also get a whole-window graph (it repeats both stages' weights)",
    )
    parser.add_argument("--calib-clips", type=int, default=32, help="generated clips for INT8 calibration")
    parser.add_argument("--calib-seed", type=int, default=1234, help="seed of the calibration clips")


def run(args: argparse.Namespace) -> int:
    if not args.checkpoint.is_file():
        print(f"vbw export: {args.checkpoint}: no such checkpoint", file=sys.stderr)
        return 2
    precisions = tuple(dict.fromkeys(["fp32", *(p.strip() for p in args.precisions.split(",") if p.strip())]))
    from build_engine.export import ExportError, export_model
    from contracts.graph import PRECISIONS

    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        print(
            f"vbw export: unknown precision {bad[0]!r}; choose from {', '.join(PRECISIONS)}", file=sys.stderr
        )
        return 2
    try:
        result = export_model(
            args.checkpoint,
            args.out,
            name=args.name,
            version=args.version,
            precisions=precisions,
            calib_clips=args.calib_clips,
            calib_seed=args.calib_seed,
            whole_window_precisions=tuple(p.strip() for p in args.whole_window_precisions.split(",")),
        )
    except (ExportError, ValueError) as e:
        print(f"vbw export: {e}", file=sys.stderr)
        return 1
    m = result.manifest
    total = sum(f.bytes for f in m.files.values())
    print(f"exported {m.name} {m.version} to {result.out_dir} ({total / 1e6:.2f} MB)")
    for graph, diff in result.fp32_max_abs_diff.items():
        print(f"  fp32 {graph}: max abs diff vs torch {diff:.2e}")
    for precision, agree in result.top1_agreement.items():
        print(
            f"  {precision}: top-1 agreement vs torch fp32 {agree:.3f} (frame, motion and window stages, held-out clips)"
        )
    for precision, agree in result.text_top1_agreement.items():
        print(
            f"  {precision} text_encoder: prompt-label top-1 agreement vs torch fp32 {agree:.3f} (held-out windows)"
        )
    return 0
