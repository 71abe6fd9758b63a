"""`vbw ingest -c FILE`: edge mode. The config's file/RTSP sources go to the `ingest.topic` frames topic.

Same YAML as `vbw run` (sources, sampling, kafka, metrics, logging, pipeline.shutdown_grace_s),
plus the `ingest` section; the engine, windows and sinks sections are not used, except that the
model's input size (engine.model_dir) is the default frame size.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", required=True, help="YAML config file (VBW_* environment overrides apply)"
    )


def run(args: argparse.Namespace) -> int:
    import logging
    import sys

    from worker.cmd_validate_config import report
    from worker.config import ConfigError, ConfigProblem, env_overrides, load_config
    from worker.logs import setup_logging

    try:
        cfg = load_config(args.config)
        problems = [
            ConfigProblem(f"sources.{i}.type", "vbw ingest publishes file and rtsp sources, not kafka")
            for i, s in enumerate(cfg.sources)
            if s.type == "kafka"
        ]
        size = cfg.ingest.size
        if size is None:
            from engines.manifest import ModelDirError, load_manifest

            try:
                size = tuple(load_manifest(cfg.engine.model_dir, verify=False).image_size)
            except ModelDirError as e:
                problems.append(ConfigProblem("ingest.size", f"not set, and no model to take it from: {e}"))
        if problems:
            raise ConfigError(args.config, problems)
    except ConfigError as e:
        report(e)
        return 2
    setup_logging(cfg.logging.level, cfg.logging.json_lines)
    log = logging.getLogger("vbw")
    env = env_overrides()
    log.info("config %s%s", args.config, f" with {', '.join(env)}" if env else "")

    from worker.kafka.ingest import Ingest

    try:
        return Ingest(cfg, (int(size[0]), int(size[1]))).run()  # type: ignore[index]
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
