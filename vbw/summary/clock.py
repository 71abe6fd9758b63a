"""The two clocks a summary can draw segments on, and how each writes a time.

- `capture` (the default): wall-clock capture times, unix seconds, written in UTC. Right for
  live cameras: zones and cameras line up, and the page says when things happened.
- `pts`: the source's presentation times, seconds into the stream. Right for a file analysed
  faster than real time, whose capture times crowd into the seconds the analysis took.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

ClockName = Literal["capture", "pts"]
CLOCKS: tuple[ClockName, ...] = ("capture", "pts")


def _utc(t: float, fmt: str) -> str:
    return datetime.fromtimestamp(t, UTC).strftime(fmt)


def _hms(t: float, decimals: bool = True) -> str:
    sign, t = ("-", -t) if t < 0 else ("", t)
    h, rest = divmod(t, 3600)
    m, s = divmod(rest, 60)
    sec = f"{s:04.1f}" if decimals else f"{int(s):02d}"
    return f"{sign}{int(h)}:{int(m):02d}:{sec}"


@dataclass(frozen=True)
class Clock:
    name: ClockName = "capture"

    @property
    def note(self) -> str:
        return "times in UTC" if self.name == "capture" else "times are pts, h:mm:ss into the stream"

    def full(self, t: float) -> str:
        return _utc(t, "%Y-%m-%d %H:%M:%S") if self.name == "capture" else _hms(t)

    def end(self, start: float, end: float) -> str:
        """An end time, without the date when it is the start's."""
        if self.name == "capture" and _utc(start, "%Y%m%d") == _utc(end, "%Y%m%d"):
            return _utc(end, "%H:%M:%S")
        return self.full(end)

    def tick(self, t: float, step: float) -> str:
        if self.name == "pts":
            return _hms(t, decimals=False)[:-3] if step >= 60 else _hms(t, decimals=False)
        return _utc(t, "%Y-%m-%d" if step >= 86400 else "%H:%M" if step >= 60 else "%H:%M:%S")


CAPTURE = Clock("capture")
