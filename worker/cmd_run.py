"""`vbw run -c FILE`: the long-running worker. The config is validated before anything starts."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", required=True, help="YAML config file (VBW_* environment overrides apply)"
    )


def run(args: argparse.Namespace) -> int:
    from worker.cmd_validate_config import load_or_report, start_logging

    cfg = load_or_report(args.config)
    if cfg is None:
        return 2
    start_logging(cfg, args.config)

    from worker.pipeline import Pipeline

    return Pipeline(cfg, config_path=args.config).run()
