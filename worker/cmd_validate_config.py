"""`vbw validate-config FILE`: report every problem of a config at once (exit 2), or exit 0."""

from __future__ import annotations

import argparse
import sys


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


def run(args: argparse.Namespace) -> int:
    from worker.config import ConfigError, env_overrides, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        report(e)
        return 2
    if not args.quiet:
        env = env_overrides()
        extra = f" (with {', '.join(env)} from the environment)" if env else ""
        kinds = ", ".join(f"{s.id}:{s.type}" for s in cfg.sources)
        print(f"{args.config}: ok{extra}: {len(cfg.sources)} source(s) [{kinds}], {len(cfg.sinks)} sink(s)")
    return 0
