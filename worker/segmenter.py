"""Windows to segments, per stream and label, with hysteresis. Pure: no threads, clocks or I/O.

Each stream has one `StreamSegmenter` holding one `Track` per label of interest. A track is a
small state machine over that label's score in each window, in the style of worker/windows.py:

    IDLE ──score >= on──> PENDING ──k windows >= on, lasting min_duration_s──> OPEN (start)
      ^                     │ score < on                                        │ score >= off: extend
      └─────────────────────┘                       OPEN ──m windows < off──> IDLE (end, "off")
                                                    OPEN ──break──────────> IDLE (end, "break")
    OPEN: an update every update_every_s of stream time (optional)

A *break* is anything that interrupts the stream: a gap, a reset, the end of the stream, a
shutdown. The caller reports the ones it knows with `close()`; the segmenter also finds them in
the windows themselves (`breaks_between`), so a replay that starts after a break, without the
reset that caused it, still ends the segment, with the same end event.

A segment runs from its first window at or above `on` to its last window at or above `off`;
windows of a trailing run below `off` that did not reach `m` count again once a window comes
back above `off`. A model that names a label only for windows showing it throughout (windows
across a scene cut or a change read `none`) puts the true start between the first frame of the
first window with the label and that of the window a stride before, so the segment's estimated
start is its first window's first frame less half a stride (`lead` before the window's centre),
and its end the last window's last frame plus a frame and half a stride (`tail` after it).
`min_duration_s` is measured on that estimate, update periods between window centres, both in
pts (stream time, deterministic on a replay; a file read faster than real time has capture times
closer together than its pts).

Everything here is a function of the windows fed in, so a replay of the same windows from the
same state gives the same events. `StreamSegmenter.to_dict`/`from_dict` round-trip the state
through JSON exactly (the crash-safe changelog in docs/events.md stores it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

EventType = Literal["start", "update", "end"]
Phase = Literal["idle", "pending", "open"]
#: why a segment ended: its scores fell below `off` for m windows, or the stream broke
END_OFF = "off"
END_BREAK = "break"


@dataclass(frozen=True, slots=True)
class Rule:
    """Hysteresis of one label (worker.config.EventRule, resolved)."""

    on: float
    off: float
    k: int = 2
    m: int = 2
    min_duration_s: float = 0.0
    update_every_s: float | None = None

    def __post_init__(self) -> None:
        if not (0.0 <= self.off <= self.on <= 1.0) or self.k < 1 or self.m < 1:
            raise ValueError(f"bad rule {self}: need 0 <= off <= on <= 1, k >= 1, m >= 1")


@dataclass(frozen=True, slots=True)
class WindowView:
    """What the segmenter needs of one window."""

    window_id: str
    start_seq: int
    end_seq: int
    time: float  # capture time of the window's centre, unix seconds
    pts: float  # source pts of the window's centre, seconds
    scores: Mapping[str, float]  # label -> score, at least the labels of interest
    payload: Any = None  # opaque, handed to the snapshot callback (the window's key image)
    lead: float = 0.0  # seconds from a segment's estimated start to this window's centre, if it is the first
    tail: float = 0.0  # seconds from its centre to the estimated end, if it is the last


@dataclass(frozen=True, slots=True)
class Mark:
    """A window as a segment boundary or peak."""

    window_id: str
    start_seq: int
    end_seq: int
    time: float
    pts: float
    lead: float = 0.0
    tail: float = 0.0

    @classmethod
    def of(cls, w: WindowView) -> Mark:
        return cls(w.window_id, w.start_seq, w.end_seq, w.time, w.pts, w.lead, w.tail)


@dataclass(slots=True)
class Stats:
    count: int = 0
    total: float = 0.0
    peak: float = -math.inf
    peak_at: Mark | None = None
    snapshot: str | None = None  # the snapshot store's reference of the peak window

    def add(self, w: WindowView, score: float, snap: Callable[[WindowView], str | None] | None) -> None:
        self.count += 1
        self.total += score
        if score > self.peak:
            self.peak, self.peak_at = score, Mark.of(w)
            self.snapshot = snap(w) if snap is not None else None

    def absorb(self, tail: Stats) -> None:
        """Windows of a below-`off` run rejoin the segment (never a peak: they are below `off`)."""
        self.count += tail.count
        self.total += tail.total

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


@dataclass(frozen=True, slots=True)
class SegmentEvent:
    """One event of one segment. `update` is 0 for start, n for the n-th update; an end carries
    the number of updates before it."""

    type: EventType
    label: str
    first: Mark  # the segment's first window
    last: Mark  # its last window so far (at or above `off`)
    count: int
    mean: float
    peak: float
    peak_at: Mark
    snapshot: str | None
    update: int
    reason: str | None = None  # end only: END_OFF | END_BREAK


@dataclass(slots=True)
class Track:
    """One label of one stream."""

    label: str
    rule: Rule
    phase: Phase = "idle"
    first: Mark | None = None
    last: Mark | None = None
    stats: Stats = field(default_factory=Stats)
    tail: Stats = field(default_factory=Stats)  # the current run below `off` (OPEN)
    updates: int = 0
    last_event_pts: float = 0.0

    @property
    def idle(self) -> bool:
        return self.phase == "idle"

    def step(
        self, w: WindowView, snap: Callable[[WindowView], str | None] | None = None
    ) -> list[SegmentEvent]:
        score = float(w.scores[self.label])
        r = self.rule
        if self.phase == "idle":
            if score < r.on:
                return []
            self.phase, self.first, self.stats, self.tail = "pending", Mark.of(w), Stats(), Stats()
            self.updates = 0
        if self.phase == "pending":
            if score < r.on:
                self._reset()
                return []
            self.last = Mark.of(w)
            self.stats.add(w, score, snap)
            assert self.first is not None
            span = (self.last.pts + self.last.tail) - (self.first.pts - self.first.lead)
            if self.stats.count >= r.k and span >= r.min_duration_s - 1e-9:
                self.phase, self.last_event_pts = "open", w.pts
                return [self._event("start")]
            return []
        # OPEN
        if score >= r.off:
            self.stats.absorb(self.tail)
            self.tail = Stats()
            self.last = Mark.of(w)
            self.stats.add(w, score, snap)
        else:
            self.tail.add(w, score, None)
            if self.tail.count >= r.m:
                return [self._end(END_OFF)]
        if r.update_every_s is not None and w.pts - self.last_event_pts >= r.update_every_s - 1e-9:
            self.updates += 1
            self.last_event_pts = w.pts
            return [self._event("update")]
        return []

    def close(self) -> list[SegmentEvent]:
        """The stream broke: an open segment ends, a pending one is forgotten."""
        if self.phase == "open":
            return [self._end(END_BREAK)]
        self._reset()
        return []

    def _end(self, reason: str) -> SegmentEvent:
        ev = self._event("end", reason)
        self._reset()
        return ev

    def _event(self, kind: EventType, reason: str | None = None) -> SegmentEvent:
        s = self.stats
        assert self.first is not None and self.last is not None and s.peak_at is not None
        return SegmentEvent(
            type=kind,
            label=self.label,
            first=self.first,
            last=self.last,
            count=s.count,
            mean=s.mean,
            peak=s.peak,
            peak_at=s.peak_at,
            snapshot=s.snapshot,
            update=self.updates,
            reason=reason,
        )

    def _reset(self) -> None:
        self.phase, self.first, self.last = "idle", None, None
        self.stats, self.tail, self.updates, self.last_event_pts = Stats(), Stats(), 0, 0.0


def breaks_between(prev: Mark, nxt: WindowView | Mark, *, size: int, stride: int, max_gap: int) -> bool:
    """True if window `nxt` cannot follow `prev` in one uninterrupted run of frames.

    In a run, consecutive frames are at most max_gap + 1 seqs apart and windows start `stride`
    frames apart, so starts are at most stride * (max_gap + 1) seqs apart; where windows do not
    overlap (stride >= T), the next one starts after the stride - T frames skipped, each at most
    max_gap + 1 seqs after the one before. After a break the next window starts after every
    frame of `prev`, at least T seqs after its start: found by its seqs whenever
    T > stride * (max_gap + 1), as with the defaults (T=16, stride 4); with longer strides only
    breaks with missing seqs (gaps) are found this way.
    """
    skip = max(0, stride - size)
    return (
        nxt.start_seq - prev.start_seq > stride * (max_gap + 1)
        or nxt.start_seq - prev.end_seq - 1 > skip + (skip + 1) * max_gap
    )


class StreamSegmenter:
    """Every label of interest of one stream; `last` is the last window applied."""

    def __init__(
        self,
        rules: Mapping[str, Rule],
        *,
        size: int,
        stride: int,
        max_gap: int = 0,
        snapshot: Callable[[WindowView], str | None] | None = None,
    ) -> None:
        self.rules = dict(rules)
        self.size = size
        self.stride = stride
        self.max_gap = max_gap
        self.snapshot = snapshot
        self.tracks = {label: Track(label, rule) for label, rule in self.rules.items()}
        self.last: Mark | None = None
        self.closes = 0  # closes since `last` (orders checkpoints taken at the same window)

    @property
    def idle(self) -> bool:
        """No label has a pending or open segment: nothing to remember but `last`."""
        return all(t.idle for t in self.tracks.values())

    def open_labels(self) -> list[str]:
        return [t.label for t in self.tracks.values() if t.phase == "open"]

    def applied(self, w: WindowView | Mark) -> bool:
        """True if this window (or a later one) was applied already: a replay to skip."""
        return self.last is not None and w.start_seq <= self.last.start_seq

    def apply(self, w: WindowView) -> list[SegmentEvent]:
        """One window, in start order. A break before it (by its seqs) closes first."""
        events: list[SegmentEvent] = []
        if self.last is not None and breaks_between(
            self.last, w, size=self.size, stride=self.stride, max_gap=self.max_gap
        ):
            events += self.close()
        for t in self.tracks.values():
            events += t.step(w, self.snapshot)
        self.last, self.closes = Mark.of(w), 0
        return events

    def close(self) -> list[SegmentEvent]:
        """The stream broke (gap, reset, end of stream, shutdown): open segments end."""
        events: list[SegmentEvent] = []
        if not self.idle:
            for t in self.tracks.values():
                events += t.close()
            self.closes += 1
        return events

    # -- state as JSON --------------------------------------------------------------------------
    def position(self) -> tuple[int, int]:
        """Orders this stream's states: (start_seq of the last window, closes since)."""
        return (-1 if self.last is None else self.last.start_seq, self.closes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "last": _mark_out(self.last),
            "closes": self.closes,
            "tracks": {lb: _track_out(t) for lb, t in self.tracks.items() if not t.idle},
        }

    def load(self, doc: Mapping[str, Any]) -> None:
        """Restore a state from `to_dict` (labels no longer of interest are left out)."""
        self.last = _mark_in(doc.get("last"))
        self.closes = int(doc.get("closes", 0))
        for t in self.tracks.values():
            t._reset()
        for label, td in (doc.get("tracks") or {}).items():
            if label in self.tracks:
                _track_in(self.tracks[label], td)


def _mark_out(m: Mark | None) -> list | None:
    return None if m is None else [m.window_id, m.start_seq, m.end_seq, m.time, m.pts, m.lead, m.tail]


def _mark_in(v: Any) -> Mark | None:
    if v is None:
        return None
    return Mark(str(v[0]), int(v[1]), int(v[2]), float(v[3]), float(v[4]), float(v[5]), float(v[6]))


def _stats_out(s: Stats) -> dict[str, Any]:
    return {
        "count": s.count,
        "total": s.total,
        "peak": s.peak if s.count else None,
        "peak_at": _mark_out(s.peak_at),
        "snapshot": s.snapshot,
    }


def _stats_in(d: Mapping[str, Any]) -> Stats:
    peak = d.get("peak")
    return Stats(
        count=int(d["count"]),
        total=float(d["total"]),
        peak=-math.inf if peak is None else float(peak),
        peak_at=_mark_in(d.get("peak_at")),
        snapshot=d.get("snapshot"),
    )


def _track_out(t: Track) -> dict[str, Any]:
    return {
        "phase": t.phase,
        "first": _mark_out(t.first),
        "last": _mark_out(t.last),
        "stats": _stats_out(t.stats),
        "tail": _stats_out(t.tail),
        "updates": t.updates,
        "last_event_pts": t.last_event_pts,
    }


def _track_in(t: Track, d: Mapping[str, Any]) -> None:
    if d["phase"] not in ("pending", "open"):
        raise ValueError(f"track {t.label}: unknown phase {d['phase']!r}")
    t.phase = d["phase"]
    t.first, t.last = _mark_in(d["first"]), _mark_in(d["last"])
    t.stats, t.tail = _stats_in(d["stats"]), _stats_in(d["tail"])
    t.updates = int(d["updates"])
    t.last_event_pts = float(d["last_event_pts"])
