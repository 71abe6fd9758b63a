"""`vbw validate-config FILE`: report every problem of a config at once (exit 2), or exit 0."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.config import ConfigProblem, VbwConfig


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file (VBW_* environment overrides apply)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing when the config is valid")


def report(err: object) -> None:
    """Print a ConfigError: a header line, then one line per problem with its field path."""
    problems = err.problems  # type: ignore[attr-defined]
    n = len(problems)
    print(f"{err.source}: {n} problem{'s' if n != 1 else ''}:", file=sys.stderr)  # type: ignore[attr-defined]
    for p in problems:
        print(f"  {p}", file=sys.stderr)


def load_or_report(
    path: str, more_checks: Callable[[VbwConfig], list[ConfigProblem]] | None = None
) -> VbwConfig | None:
    """The validated config, or None once every problem (schema, then a command's own checks)
    has been printed: the caller exits 2 before starting anything."""
    from worker.config import ConfigError, load_config

    try:
        cfg = load_config(path)
        problems = more_checks(cfg) if more_checks else []
        if problems:
            raise ConfigError(path, problems)
    except ConfigError as e:
        report(e)
        return None
    return cfg


def start_logging(cfg: VbwConfig, path: str) -> None:
    """Logging as the config asks, then one line naming the config and its env overrides."""
    import logging

    from worker.config import env_overrides
    from worker.logs import setup_logging

    setup_logging(cfg.logging.level, cfg.logging.json_lines)
    env = env_overrides()
    logging.getLogger("vbw").info("config %s%s", path, f" with {', '.join(env)}" if env else "")


def run(args: argparse.Namespace) -> int:
    from worker.config import env_overrides

    cfg = load_or_report(args.config)
    if cfg is None:
        return 2
    if not args.quiet:
        env = env_overrides()
        extra = f" (with {', '.join(env)} from the environment)" if env else ""
        kinds = ", ".join(f"{s.id}:{s.type}" for s in cfg.sources)
        print(f"{args.config}: ok{extra}: {len(cfg.sources)} source(s) [{kinds}], {len(cfg.sinks)} sink(s)")
    return 0
