"""`vbw ingest -c FILE`: edge mode. The config's file/RTSP sources go to the `ingest.topic` frames topic.

Same YAML as `vbw run` (sources, sampling, kafka, metrics, logging, pipeline.shutdown_grace_s),
plus the `ingest` section; the engine, windows and sinks sections are not used, except that the
model's input size (engine.model_dir) is the default frame size.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.config import ConfigProblem, VbwConfig


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", required=True, help="YAML config file (VBW_* environment overrides apply)"
    )


def _checks(cfg: VbwConfig) -> list[ConfigProblem]:
    from worker.config import ConfigProblem

    problems = [
        ConfigProblem(f"sources.{i}.type", "vbw ingest publishes file and rtsp sources, not kafka")
        for i, s in enumerate(cfg.sources)
        if s.type == "kafka"
    ]
    try:
        _frame_size(cfg)
    except ValueError as e:
        problems.append(ConfigProblem("ingest.size", str(e)))
    return problems


def _frame_size(cfg: VbwConfig) -> tuple[int, int]:
    """`ingest.size`, or the model's input size when it is not set."""
    if cfg.ingest.size is not None:
        return (int(cfg.ingest.size[0]), int(cfg.ingest.size[1]))
    from engines.manifest import ModelDirError, load_manifest

    try:
        h, w = load_manifest(cfg.engine.model_dir, verify=False).image_size
    except ModelDirError as e:
        raise ValueError(f"not set, and no model to take it from: {e}") from e
    return (int(h), int(w))


def run(args: argparse.Namespace) -> int:
    import sys

    from worker.cmd_validate_config import load_or_report, start_logging

    cfg = load_or_report(args.config, _checks)
    if cfg is None:
        return 2
    start_logging(cfg, args.config)

    from worker.ingest import Ingest

    try:
        return Ingest(cfg, _frame_size(cfg)).run()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
