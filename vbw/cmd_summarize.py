"""`vbw summarize`: vbw.event/v1 events (JSONL or a Kafka topic) -> HTML pages, one per camera.

    vbw summarize events.jsonl --snapshots /var/lib/vbw/snapshots --out summary
    vbw summarize --topic vbw.events --bootstrap broker:9092 --out summary
    vbw summarize --topic vbw.events -c configs/kafka-worker.yaml   # brokers and TLS/SASL from its kafka: section

Then open summary/index.html in a browser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vbw.summary.clock import CLOCKS

MAX_LISTED = 5  # problems of each kind printed in full; the rest are counted


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "jsonl", nargs="?", type=Path, help="a JSONL file of events, or a directory of *.jsonl"
    )
    parser.add_argument("--topic", help="read this Kafka topic from its beginning to its end instead")
    parser.add_argument("--bootstrap", help="host:port[,host:port...] of the brokers (with --topic)")
    parser.add_argument(
        "-c", "--config", type=Path, help="a worker config whose kafka: section gives brokers and security"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to read the topic (default 60)")
    parser.add_argument(
        "--snapshots",
        type=Path,
        default=Path(),
        help="the snapshot store's directory: relative snapshot references resolve against it (default .)",
    )
    parser.add_argument(
        "--clock",
        choices=CLOCKS,
        default="capture",
        help="capture: wall-clock capture times in UTC (default, live cameras); pts: stream time, for "
        "files analysed faster than real time",
    )
    parser.add_argument("--inline", action="store_true", help="embed snapshots in the pages (data URIs)")
    parser.add_argument(
        "--out", type=Path, default=Path("summary"), help="output directory (default summary)"
    )


def _kafka_client(args: argparse.Namespace) -> dict:
    from worker.kafka.config import KafkaConnectionConfig

    if args.config is not None:
        import yaml

        doc = yaml.safe_load(args.config.read_text()) or {}
        conn = KafkaConnectionConfig.model_validate(doc.get("kafka") or {})
    else:
        conn = KafkaConnectionConfig()
    if args.bootstrap:
        conn = conn.model_copy(update={"bootstrap_servers": args.bootstrap.split(",")})
    return {**conn.kafka_python(), "client_id": f"{conn.client_id}-summarize"}


def _report(title: str, items: list[str]) -> None:
    if not items:
        return
    print(f"vbw summarize: {len(items)} {title}", file=sys.stderr)
    for item in items[:MAX_LISTED]:
        print(f"  {item}", file=sys.stderr)
    if len(items) > MAX_LISTED:
        print(f"  ... and {len(items) - MAX_LISTED} more", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from vbw.summary.clock import Clock
    from vbw.summary.inputs import InputError, read_jsonl, read_topic
    from vbw.summary.pages import write_summary
    from vbw.summary.segments import BadEvent, fold, parse_event
    from vbw.summary.snapshots import SnapshotLinker

    if (args.jsonl is None) == (args.topic is None):
        print("vbw summarize: give a JSONL path or --topic (one of them)", file=sys.stderr)
        return 2
    bad: list[str] = []
    try:
        if args.topic:
            docs = read_topic(args.topic, _kafka_client(args), bad, args.timeout)
            source = f"Kafka topic {args.topic}"
        else:
            docs = read_jsonl(args.jsonl, bad)
            source = str(args.jsonl)
        events, others = [], 0
        for where, doc in docs:
            try:
                event = parse_event(doc, where)
            except BadEvent as e:
                bad.append(str(e))
                continue
            if event is None:
                others += 1
            else:
                events.append(event)
    except (InputError, OSError, ValueError) as e:
        print(f"vbw summarize: {e}", file=sys.stderr)
        return 1
    folded = fold(events, args.clock)
    linker = SnapshotLinker(root=args.snapshots, out_dir=args.out, inline=args.inline)
    written = write_summary(folded, args.out, linker, source, Clock(args.clock))
    _report("lines or records skipped:", bad)
    _report("snapshots not found (placeholders shown):", [f"{r}: {why}" for r, why in linker.missing.items()])
    _report("event ids repeated with different content (kept the first):", folded.conflicts)
    skipped = f", {others} documents of other schemas skipped" if others else ""
    print(
        f"{len(events)} events ({folded.repeats} repeats{skipped}) -> {written.segments} segments "
        f"({written.open} open) on {len(written.pages)} stream pages; open {written.index}"
    )
    return 0
