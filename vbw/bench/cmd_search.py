"""`vbw bench search`: ingest rate and p50/p95 query latency (stream + time filter) of the
search index over N synthetic windows; `--engine` also runs the candidates it was chosen from."""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--windows", type=int, default=100_000, help="windows to index (default 100000)")
    parser.add_argument("--dim", type=int, default=None, help="vector size (default: the model's embed_dim)")
    parser.add_argument(
        "--model",
        type=Path,
        default=REPO / "models" / "vbw-motion-small",
        help="model whose embed_dim to use",
    )
    parser.add_argument("--streams", type=int, default=100, help="cameras the windows come from")
    parser.add_argument("--queries", type=int, default=500, help="timed queries")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument(
        "--range", type=float, default=0.25, help="each query's time range, as a fraction of the recording"
    )
    parser.add_argument("--batch", type=int, default=1000, help="windows per write")
    parser.add_argument(
        "--engine",
        nargs="+",
        default=["vbw-index"],
        help="vbw-index (the project's index, LanceDB) and/or candidates: lancedb milvus-lite qdrant-local",
    )
    parser.add_argument(
        "--compact-every",
        type=int,
        default=0,
        help="vbw-index: compact every N writes while ingesting, as `vbw index` does (default 0: never)",
    )
    parser.add_argument(
        "--no-final-compact",
        action="store_true",
        help="vbw-index: query the index as the writes left it (the state between two compactions)",
    )
    parser.add_argument(
        "--dir", type=Path, help="where to build the indexes (default: a temporary directory)"
    )
    parser.add_argument("--target-p95-ms", type=float, default=50.0)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")


def run(args: argparse.Namespace) -> int:
    from vbw.bench import search as bench
    from vbw.bench.search_candidates import make

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("LANCE_LOG", "error")
    dim = args.dim
    if dim is None:
        dim = int(json.loads((args.model / "model.json").read_text())["embed_dim"])
    corpus = bench.make_corpus(args.windows, dim, args.streams)
    queries = bench.make_queries(corpus, args.queries, args.k, args.range)
    print(
        f"{args.windows} windows of dim {dim} from {args.streams} streams; {args.queries} queries "
        f"k={args.k}, one stream and {args.range:.0%} of the time each; cpus {os.cpu_count()}, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    results = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for name in args.engine:
            if name == "vbw-index":
                engine = bench.ProjectIndex(args.compact_every, not args.no_final_compact)
            else:
                engine = make(name)
            r = bench.run(engine, Path(tmp) / name, corpus, queries, args.k, args.batch, progress=print)
            results.append(r)
            ok = "ok" if r.p95_ms <= args.target_p95_ms else "OVER"
            print(
                f"{r.engine:<13} ingest {r.ingest_rate:8.0f} windows/s ({r.ingest_s:.1f} s)   "
                f"query p50 {r.p50_ms:6.1f} ms  p95 {r.p95_ms:6.1f} ms ({ok} vs {args.target_p95_ms:.0f})   "
                f"recall@{args.k} {r.recall:.3f}   replay changed the count: "
                f"{'not checked' if r.replay_changed is None else r.replay_changed}"
            )
    print(f"load after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if all(r.p95_ms <= args.target_p95_ms for r in results) else 1
