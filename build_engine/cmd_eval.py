"""`vbw eval`: top-1 accuracy of a model directory on freshly generated clips, through real video;
for a model that can say `none`, also its none rates, calibration error and out-of-distribution AUROC."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=Path("models/vbw-motion-small"), help="model directory")
    parser.add_argument("--backend", default="onnxruntime", help="onnxruntime | torch | tensorrt")
    parser.add_argument("--precision", default="fp32", help="fp32 | fp16 | int8")
    parser.add_argument(
        "--clips", type=int, default=500, help="motion clips to generate (labels round robin)"
    )
    parser.add_argument("--static-clips", type=int, help="static scenes (default: 2/5 of --clips)")
    parser.add_argument(
        "--none-clips", type=int, help="clips per other training none family (default: 1/10 of --clips)"
    )
    parser.add_argument(
        "--ood-clips", type=int, help="clips per held-out (never trained) family (default: 1/5 of --clips)"
    )
    parser.add_argument("--no-open-set", action="store_true", help="motions only, even for an open-set model")
    parser.add_argument("--seed", type=int, default=1000, help="clip seed; use one never used in training")
    parser.add_argument(
        "--frames",
        type=int,
        help="distinct frames per window, each repeated to fill T (1 = single-frame baseline)",
    )
    parser.add_argument("--width", type=int, default=320, help="source video width")
    parser.add_argument("--height", type=int, default=180, help="source video height")
    parser.add_argument("--fps", type=float, default=25.0, help="source video frame rate")
    parser.add_argument(
        "--analysis-fps", type=float, default=5.0, help="rate the worker samples the source to"
    )
    parser.add_argument(
        "--whole-window", action="store_true", help="use infer_windows (one graph) instead of the stages"
    )
    parser.add_argument("--jobs", type=int, help="processes rendering and encoding clips (default 2)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--zero-shot",
        action="store_true",
        help="the text side instead (build_engine/eval_text.py): zero-shot top-1 on held-out "
        "(motion, shape, colour) combinations, text-to-window recall@5, window-to-window mAP",
    )
    parser.add_argument(
        "--combo-clips", type=int, default=40, help="--zero-shot: clips per held-out combination"
    )


def run(args: argparse.Namespace) -> int:
    if args.zero_shot:
        return run_text(args)
    if args.clips <= 0:
        print("vbw eval: --clips must be positive", file=sys.stderr)
        return 2
    if any(n is not None and n < 0 for n in (args.static_clips, args.none_clips, args.ood_clips)):
        print("vbw eval: --static-clips, --none-clips and --ood-clips must not be negative", file=sys.stderr)
        return 2
    if args.width % 2 or args.height % 2 or args.width <= 0 or args.height <= 0:
        print("vbw eval: --width and --height must be positive and even (H.264 yuv420p)", file=sys.stderr)
        return 2
    if args.fps <= 0 or args.analysis_fps <= 0:
        print("vbw eval: --fps and --analysis-fps must be positive", file=sys.stderr)
        return 2
    from build_engine.evaluate import EvalSpec, evaluate
    from engines import load_engine
    from engines.base import EngineUnavailable
    from engines.manifest import ModelDirError, load_manifest

    try:
        open_set = None if args.no_open_set else load_manifest(args.model, verify=False).open_set
        engine = load_engine(args.model, args.backend, args.precision)
    except (EngineUnavailable, ModelDirError, ValueError, FileNotFoundError) as e:
        print(f"vbw eval: {e}", file=sys.stderr)
        return 2
    meta = engine.metadata

    def share(n: int | None, fraction: float) -> int:
        return n if n is not None else max(1, round(args.clips * fraction))

    spec = EvalSpec(
        n=args.clips,
        seed=args.seed,
        width=args.width,
        height=args.height,
        fps=args.fps,
        analysis_fps=args.analysis_fps,
        static_n=share(args.static_clips, 0.4),
        none_n=share(args.none_clips, 0.1),
        ood_n=share(args.ood_clips, 0.2),
    )
    t0 = time.time()
    try:
        with engine:
            result = evaluate(
                engine,
                spec,
                distinct_frames=args.frames,
                incremental=not args.whole_window,
                jobs=args.jobs,
                progress=not args.no_progress,
                open_set=open_set,
            )
    except ValueError as e:
        print(f"vbw eval: {e}", file=sys.stderr)
        return 2
    frames = (
        f"{args.frames} distinct frame(s) repeated to T" if args.frames else f"T={meta.num_frames} frames"
    )
    print(
        f"model {meta.name} {meta.version} | {meta.backend} {meta.precision} | {args.clips} clips seed {args.seed} "
        f"| {args.width}x{args.height}@{args.fps:g} fps sampled to {args.analysis_fps:g} fps | {frames} "
        f"| {'whole-window' if args.whole_window else 'stages'} | {time.time() - t0:.1f}s"
    )
    print(result.report())
    report = result.extra.get("open_set")
    if report is not None:
        print("\n".join(report.lines()))
    print(f"accuracy={result.accuracy:.3f}")
    return 0


def run_text(args: argparse.Namespace) -> int:
    """`vbw eval --zero-shot`: --clips is the retrieval gallery, --combo-clips the zero-shot clips."""
    from build_engine.eval_text import evaluate_text
    from engines import load_engine
    from engines.base import EngineUnavailable, TextUnavailable
    from engines.manifest import ModelDirError

    if args.clips <= 0 or args.combo_clips <= 0:
        print("vbw eval: --clips and --combo-clips must be positive", file=sys.stderr)
        return 2
    t0 = time.time()
    try:
        with load_engine(args.model, args.backend, args.precision) as engine:
            report = evaluate_text(engine, args.combo_clips, args.clips, args.seed)
            meta = engine.metadata
    except (EngineUnavailable, ModelDirError, TextUnavailable, FileNotFoundError) as e:
        print(f"vbw eval: {e}", file=sys.stderr)
        return 2
    print(
        f"model {meta.name} {meta.version} | {meta.backend} {meta.precision} | seed {args.seed} "
        f"| {time.time() - t0:.1f}s"
    )
    print("\n".join(report.lines()))
    return 0
