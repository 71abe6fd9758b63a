"""`vbw run -c FILE`: the long-running worker. The config is validated before anything starts."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", required=True, help="YAML config file (VBW_* environment overrides apply)"
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from worker.cmd_validate_config import report
    from worker.config import ConfigError, env_overrides, load_config
    from worker.logs import setup_logging

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        report(e)
        return 2
    setup_logging(cfg.logging.level, cfg.logging.json_lines)
    log = logging.getLogger("vbw")
    env = env_overrides()
    log.info("config %s%s", args.config, f" with {', '.join(env)}" if env else "")

    from worker.pipeline import Pipeline

    return Pipeline(cfg).run()
