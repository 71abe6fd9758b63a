"""Pure helpers of a query: the filter expression, and the times a user writes."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from contracts.errors import VbwError


class BadQuery(VbwError, ValueError):
    """A search the user asked for cannot be run (bad time, unknown window, no text encoder)."""


@dataclass(frozen=True, slots=True)
class Filter:
    stream: str | None = None
    since: float | None = None  # unix seconds: windows that end at or after this
    until: float | None = None  # windows that start at or before this
    model_version: str | None = None
    exclude_id: str | None = None


def sql_string(s: str) -> str:
    """A SQL string literal (LanceDB filters are DataFusion SQL): quotes doubled, so a stream id
    cannot end the literal."""
    return "'" + s.replace("'", "''") + "'"


def where(f: Filter) -> str | None:
    """The filter as a LanceDB `where` expression; None when nothing is filtered."""
    parts = []
    if f.stream is not None:
        parts.append(f"stream_id = {sql_string(f.stream)}")
    if f.since is not None:
        parts.append(f"end_time >= {float(f.since)!r}")
    if f.until is not None:
        parts.append(f"start_time <= {float(f.until)!r}")
    if f.model_version is not None:
        parts.append(f"model_version = {sql_string(f.model_version)}")
    if f.exclude_id is not None:
        parts.append(f"window_id != {sql_string(f.exclude_id)}")
    return " AND ".join(parts) or None


_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)\s*(s|m|h|d)(?:\s+ago)?$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_time(text: str, now: float | None = None) -> float:
    """`2026-12-01T05:00:00Z` (ISO 8601; no zone means UTC), `1764565200` (unix seconds), or a
    time back from now: `15m`, `-2h`, `3d ago`."""
    t = text.strip()
    m = _RELATIVE.match(t)
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        x = float(t)
    except ValueError:
        pass
    else:
        if not math.isfinite(x):
            raise BadQuery(f"time {text!r} is not finite")
        return x
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00") if t.endswith("Z") else t)
    except ValueError:
        raise BadQuery(
            f"time {text!r}: use ISO 8601 (2026-12-01T05:00:00Z), unix seconds, or 15m / 2h / 3d ago"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
