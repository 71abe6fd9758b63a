"""`vbw search "a small red square moving left"` or `vbw search --like WINDOW_ID`: indexed
windows by meaning, with stream, time span, score and snapshot."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from search.store import Hit

REPO = Path(__file__).resolve().parents[1]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", help="what to look for, in words")
    parser.add_argument("--like", metavar="WINDOW_ID", help="windows similar to this indexed window")
    parser.add_argument("--stream", help="only this stream (a camera, or camera/zone)")
    parser.add_argument("--since", help="windows ending at or after: ISO 8601, unix seconds, or 2h / 15m ago")
    parser.add_argument("--until", help="windows starting at or before (same forms)")
    parser.add_argument("-k", type=int, default=10, help="how many windows (default 10)")
    parser.add_argument("--db", help="index location; default $VBW_INDEX__DB or ~/.local/share/vbw/index")
    parser.add_argument(
        "--model", type=Path, default=REPO / "models" / "vbw-motion-small", help="model with a text encoder"
    )
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--json", action="store_true", help="one JSON array instead of a table")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def table(hits: Sequence[Hit]) -> str:
    rows = [("#", "score", "stream", "start (UTC)", "seconds", "pts", "snapshot", "window_id")]
    for i, h in enumerate(hits, 1):
        rows.append(
            (
                str(i),
                f"{h.score:.3f}",
                h.stream_id,
                iso(h.start_time),
                f"{h.end_time - h.start_time:.1f}",
                f"{h.start_pts:.2f}-{h.end_pts:.2f}",
                h.snapshot or "-",
                h.window_id,
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def run(args: argparse.Namespace) -> int:
    from search import find
    from search.query import BadQuery, Filter, parse_time
    from search.store import IndexStoreError, WindowIndex, default_uri

    if (args.text is None) == (args.like is None):
        print("vbw search: give a text or --like WINDOW_ID (one of them)", file=sys.stderr)
        return 2
    if args.k < 1:
        print("vbw search: -k must be at least 1", file=sys.stderr)
        return 2
    try:
        flt = Filter(
            stream=args.stream,
            since=parse_time(args.since) if args.since else None,
            until=parse_time(args.until) if args.until else None,
        )
        index = WindowIndex(args.db or default_uri())
        if index.count() == 0:
            print(f"vbw search: the index {index.uri} is empty (run `vbw index` first)", file=sys.stderr)
            return 1
        if args.like:
            hits = find.like(index, args.like, args.k, flt)
        else:
            from dataclasses import replace

            from search.text import load_text_encoder

            encoder, version = load_text_encoder(args.model, args.backend, args.precision)
            hits = find.by_text(index, encoder, args.text, args.k, replace(flt, model_version=version))
    except BadQuery as e:
        print(f"vbw search: {e}", file=sys.stderr)
        return 2
    except IndexStoreError as e:
        print(f"vbw search: {e}", file=sys.stderr)
        return 1
    if args.json:
        docs = [{**h.as_dict(), "start": iso(h.start_time), "end": iso(h.end_time)} for h in hits]
        print(json.dumps(docs, indent=2))
    else:
        print(table(hits) if hits else "no windows match")
    return 0
