"""`vbw index`: window embeddings (the embeddings topic, or JSONL files) into the search index."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from search.config import IndexFileConfig
from search.inputs import Batch
from search.metrics import IndexMetrics
from worker.health import Health
from worker.runtime import Runtime, StartupError

log = logging.getLogger("vbw.search.index")
# /healthz fails when the loop has not come round for this long (a compaction of a large index
# takes seconds, not minutes).
WEDGED_AFTER_S = 120.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, help="YAML with `kafka:` and `index:` (docs/search.md)")
    parser.add_argument(
        "--db",
        help="index location (directory or s3://...); default $VBW_INDEX__DB or ~/.local/share/vbw/index",
    )
    parser.add_argument(
        "--jsonl",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="index these files (sink payload: embeddings, and event lines) instead of Kafka, then exit",
    )
    parser.add_argument("--bootstrap", help="Kafka host:port[,host:port] (overrides the file)")
    parser.add_argument("--topic", help="embeddings topic (default vbw.embeddings)")
    parser.add_argument("--events-topic", help="events topic, for snapshots")
    parser.add_argument("--group", help="consumer group (default vbw-index)")
    parser.add_argument(
        "--metrics-port", type=int, help="serve /metrics here (default 9108; 0 = any free port)"
    )
    parser.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    parser.add_argument(
        "--idle-exit",
        type=float,
        metavar="S",
        help="stop once nothing new came for S seconds (backfills, tests)",
    )
    parser.add_argument(
        "--check", action="store_true", help="validate the settings (file, environment, flags) and exit"
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-json", action="store_true", help="JSON log lines")


def run(args: argparse.Namespace) -> int:
    from search.config import IndexConfigError, load
    from search.store import default_uri
    from worker.logs import setup_logging

    setup_logging(args.log_level.upper(), args.log_json)
    overrides = {
        "db": args.db,
        "topic": args.topic,
        "events_topic": args.events_topic,
        "group_id": args.group,
        "metrics_port": args.metrics_port,
        "bootstrap_servers": args.bootstrap.split(",") if args.bootstrap else None,
    }
    if args.config is None and args.db is None:
        overrides["db"] = default_uri()
    try:
        cfg = load(args.config, overrides)
    except IndexConfigError as e:
        print(f"vbw index: {e}", file=sys.stderr)
        return 2
    s = cfg.index
    if args.check:
        print(
            f"vbw index: settings ok: index {s.db}, topic {s.topic}, group {s.group_id}, {cfg.kafka.describe()}"
        )
        return 0
    metrics = IndexMetrics()
    # The worker's runtime gives the index the same /metrics, /healthz, /readyz port and signals.
    runtime = Runtime(log, grace_s=10.0, health=Health(wedged_after_s=WEDGED_AFTER_S))
    runtime.install_signals()
    if s.metrics_port is not None and not args.no_metrics:
        try:
            runtime.serve_http(s.metrics_host, s.metrics_port, metrics.registry)
        except StartupError as e:
            print(f"vbw index: {e}", file=sys.stderr)
            return 1
    try:
        return _index(args, cfg, metrics, runtime)
    finally:
        runtime.close()


def _index(args: argparse.Namespace, cfg: IndexFileConfig, metrics: IndexMetrics, runtime: Runtime) -> int:
    from search.indexer import Indexer
    from search.inputs import KafkaInput, read_jsonl
    from search.store import IndexStoreError, WindowIndex

    s = cfg.index
    try:
        index = WindowIndex(s.db, compact_every=s.compact_every, retention_s=s.retention_s)
    except IndexStoreError as e:
        log.error("vbw index: %s", e)
        return 1
    indexer = Indexer(index, metrics, progress_s=s.progress_s)
    log.info("vbw index: index %s holds %d windows", s.db, index.count())
    stopping = lambda: bool(runtime.stop_reason)  # noqa: E731 - set by SIGTERM/SIGINT

    if args.jsonl:
        for p in args.jsonl:
            if not p.is_file():
                print(f"vbw index: {p}: no such file", file=sys.stderr)
                return 2
        runtime.health.set_ready(True)
        indexer.run(read_jsonl(args.jsonl), stopping=stopping)
        index.maintain()
        return 0

    from kafka.errors import KafkaError

    try:
        source = KafkaInput(cfg)
    except (KafkaError, OSError, ValueError) as e:  # brokers down, TLS files, a secret missing
        log.error("vbw index: cannot read %s: %s: %s", cfg.kafka.describe(), type(e).__name__, e)
        return 1
    runtime.health.set_ready(True)

    def batches() -> Iterator[Batch]:
        while not stopping():
            runtime.health.beat("index")  # /healthz: the loop goes round (a poll is at most 1 s)
            yield source.poll(1.0)

    try:
        indexer.run(batches(), stopping=stopping, idle_exit_s=args.idle_exit)
    finally:
        runtime.health.set_ready(False, "stopping")
        source.close()
    return 0
