"""`vbw train`: codebook k-means, masked visual-word pretraining, fine-tuning on labels, then the
text stage (caption encoder aligned with the frozen window embedding; build_engine/text_train.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/train"), help="run directory (checkpoints)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the model init and training clips")
    parser.add_argument("--resume", type=Path, help="continue from a run's train_state.pt")
    parser.add_argument("--data", type=Path, help="folder dataset: DATA/<label>/<video files>")
    parser.add_argument("--init", type=Path, help="start from this checkpoint and fine-tune only")
    parser.add_argument("--minutes", type=float, help="size the step counts to this wall-clock budget")
    parser.add_argument("--pretrain-steps", type=int, help="masked visual-word steps (default 300)")
    parser.add_argument("--finetune-steps", type=int, help="label steps (default 3000)")
    parser.add_argument("--batch-size", type=int, help="windows per step (default 32)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    parser.add_argument("--kmeans-clips", type=int, help="clips whose frames k-means clusters (default 512)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    text = parser.add_argument_group("text stage")
    text.add_argument("--no-text", action="store_true", help="vision only: skip the text stage")
    text.add_argument(
        "--text-only",
        action="store_true",
        help="only add the text stage to the --init checkpoint (its vision stays frozen)",
    )
    text.add_argument("--text-steps", type=int, help="text stage steps (default 600)")
    text.add_argument("--text-windows", type=int, help="captioned generated windows (default 2048)")


def run(args: argparse.Namespace) -> int:
    import os

    # Before torch loads OpenMP: idle threads sleep instead of spinning. On cores shared with other
    # work, spinning threads waited on each other ~4x longer per step (1.3 s vs 0.38 s at 2 threads
    # beside a test suite); on idle cores the difference is small.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from build_engine.train import TrainConfig, steps_for_minutes, train

    overrides = {
        "pretrain_steps": args.pretrain_steps,
        "finetune_steps": args.finetune_steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "kmeans_clips": args.kmeans_clips,
    }
    cfg = TrainConfig(seed=args.seed, threads=args.threads, data=str(args.data) if args.data else None)
    cfg = TrainConfig.from_dict({**cfg.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
    if args.init:
        cfg.init = str(args.init)
    bad = [f"--{k.replace('_', '-')}" for k, v in overrides.items() if v is not None and v <= 0]
    if bad:
        print(f"vbw train: {', '.join(bad)} must be positive", file=sys.stderr)
        return 2
    if args.resume and (args.data or args.init or args.minutes):
        print(
            "vbw train: --resume continues a run as it was configured; drop --data/--init/--minutes",
            file=sys.stderr,
        )
        return 2
    if args.text_only and not args.init:
        print(
            "vbw train: --text-only adds the text stage to a trained checkpoint: give it --init",
            file=sys.stderr,
        )
        return 2
    if args.text_only and args.no_text:
        print("vbw train: --text-only and --no-text contradict each other", file=sys.stderr)
        return 2
    if any(v is not None and v <= 0 for v in (args.text_steps, args.text_windows)):
        print("vbw train: --text-steps and --text-windows must be positive", file=sys.stderr)
        return 2
    if args.minutes and not args.resume and not args.text_only:
        cfg = steps_for_minutes(cfg, args.minutes)
    try:
        final = (
            args.init
            if args.text_only
            else train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
        )
        if not args.no_text:
            final = run_text_stage(args, final)
    except (FileNotFoundError, ValueError) as e:
        print(f"vbw train: {e}", file=sys.stderr)
        return 1
    print(f"checkpoint: {final}")
    print(f"export it with: vbw export --checkpoint {final} --out models/<name>")
    return 0


def run_text_stage(args: argparse.Namespace, checkpoint: Path) -> Path:
    """The text stage over `checkpoint`'s frozen vision: generated captions, or the user's
    captions.jsonl in --data (a folder dataset without one gets no text side)."""
    from build_engine.text_data import CAPTIONS_NAME
    from build_engine.text_train import TextTrainConfig, train_text

    if args.data and not (args.data / CAPTIONS_NAME).is_file():
        print(f"text stage skipped: {args.data / CAPTIONS_NAME} not found (see docs/text.md)")
        return checkpoint
    cfg = TextTrainConfig(seed=args.seed, threads=args.threads, data=str(args.data) if args.data else None)
    if args.text_steps:
        cfg.steps = args.text_steps
    if args.text_windows:
        cfg.windows = args.text_windows
    return train_text(checkpoint, args.out, cfg, progress=not args.no_progress)
