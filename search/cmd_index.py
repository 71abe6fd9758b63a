"""`vbw index`: window embeddings (the embeddings topic, or JSONL files) into the search index."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

log = logging.getLogger("vbw.search.index")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, help="YAML with `kafka:` and `index:` (docs/search.md)")
    parser.add_argument(
        "--db", help="index location (directory or s3://...); default $VBW_INDEX or ~/.local/share/vbw/index"
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
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-json", action="store_true", help="JSON log lines")


def run(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from search.config import IndexConfigError, load
    from search.indexer import Indexer
    from search.inputs import KafkaInput, read_jsonl
    from search.metrics import IndexMetrics
    from search.store import WindowIndex, default_uri
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
    metrics = IndexMetrics()
    if s.metrics_port is not None and not args.no_metrics:
        server, _ = start_http_server(s.metrics_port, addr=s.metrics_host, registry=metrics.registry)
        log.info("vbw index: metrics on http://%s:%d/metrics", s.metrics_host, server.server_port)
    index = WindowIndex(s.db, compact_every=s.compact_every)
    indexer = Indexer(index, metrics, progress_s=s.progress_s)
    log.info("vbw index: index %s holds %d windows", s.db, index.count())

    if args.jsonl:
        for p in args.jsonl:
            if not p.is_file():
                print(f"vbw index: {p}: no such file", file=sys.stderr)
                return 2
        indexer.run(read_jsonl(args.jsonl))
        index.maintain()
        return 0

    stop = {"now": False}

    def _stop(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    source = KafkaInput(cfg)

    def batches():  # type: ignore[no-untyped-def]
        while not stop["now"]:
            yield source.poll(1.0)

    try:
        indexer.run(batches(), stopping=lambda: stop["now"], idle_exit_s=args.idle_exit)
    finally:
        source.close()
    return 0
