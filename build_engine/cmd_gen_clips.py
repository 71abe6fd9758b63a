"""`vbw gen-clips`: labelled synthetic motion clips as H.264 mp4 files + labels.jsonl.

With --sequence or --segments it writes ONE video of consecutive labelled segments instead,
plus a JSON timeline beside it (the demo sample).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder (or .mp4 file for sequences)")
    parser.add_argument("--n", type=int, default=80, help="number of clips (labels round robin)")
    parser.add_argument("--seed", type=int, default=0, help="clip i of a seed is always the same clip")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--frames", type=int, default=80, help="frames per clip (80 = 3.2 s at 25 fps)")
    parser.add_argument(
        "--labels",
        help="comma-separated labels (default: the 8 motions); `none` is a static scene, "
        "`none/FAMILY` one of the none families (media/clips.py)",
    )
    parser.add_argument(
        "--sequence",
        help="one video of segments LABEL:SECONDS,... (e.g. move_left:6,grow:5) + a JSON timeline",
    )
    parser.add_argument("--segments", type=int, help="one video of K random segments of 5-8 s + a timeline")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from media import clips

    def fail(msg: str) -> int:
        print(f"vbw gen-clips: {msg}", file=sys.stderr)
        return 2

    if args.width <= 0 or args.height <= 0 or args.width % 2 or args.height % 2:
        return fail("--width and --height must be positive and even (H.264 yuv420p)")
    if args.fps <= 0 or args.frames <= 0 or args.n <= 0:
        return fail("--fps, --frames and --n must be positive")
    labels = clips.LABELS
    if args.labels:
        labels = tuple(lb.strip() for lb in args.labels.split(",") if lb.strip())
        for lb in labels:
            try:
                clips.segment_kind(lb)
            except ValueError as e:
                return fail(str(e))

    if args.sequence or args.segments:
        if args.sequence and args.segments:
            return fail("give --sequence or --segments, not both")
        try:
            segs = (
                clips.parse_sequence(args.sequence)
                if args.sequence
                else clips.random_sequence(args.segments, np.random.default_rng([args.seed, 1 << 20]))
            )
        except ValueError as e:
            return fail(str(e))
        path = args.out if args.out.suffix == ".mp4" else args.out / "sequence.mp4"
        doc = clips.write_sequence(path, segs, args.seed, args.width, args.height, args.fps)
        print(f"wrote {path} ({doc['segments'][-1]['end']:.1f} s) and {path.with_suffix('.json')}")
        for s in doc["segments"]:
            print(f"  {s['start']:7.2f} - {s['end']:7.2f} s  {s['label']}")
        return 0

    records = clips.generate_dataset(
        args.out,
        args.n,
        args.seed,
        args.width,
        args.height,
        args.fps,
        args.frames,
        labels,
        progress=lambda it: tqdm(it, desc="clips", unit="clip"),
    )
    print(f"wrote {len(records)} clips and {args.out / 'labels.jsonl'}")
    return 0
