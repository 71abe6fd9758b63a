"""The timeline of one camera: an inline SVG, one row per zone, one bar per segment.

Bars take their label's colour; a segment still open at the last event is hatched and runs to the
page's horizon. Segments of one zone that overlap in time (two labels at once) go on separate
lanes of the zone's row. Each bar links to the segment's card below and has a tooltip (<title>),
so the page needs no script. Times are written by the summary's clock (clock.py).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from vbw.summary.clock import CAPTURE, Clock
from vbw.summary.segments import WHOLE_FRAME, Segment

# Distinct colours for labels (Tableau 10), given in sorted label order so a label keeps its
# colour on every page of one summary.
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
# Tick spacings, seconds: the first that gives at most MAX_TICKS ticks is used.
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_TICKS = 8


def label_colors(labels: Sequence[str]) -> dict[str, str]:
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(sorted(set(labels)))}


@dataclass(frozen=True)
class Geometry:
    width: int = 1000  # SVG pixels, the same as CSS pixels (no viewBox scaling)
    gutter: int = 150  # zone names on the left
    right: int = 20
    top: int = 6
    lane_h: int = 26
    bar_h: int = 18
    axis_h: int = 30
    min_bar_w: float = 3.0  # a one-window segment stays visible


def zone_order(zones: Sequence[str]) -> list[str]:
    return sorted(set(zones), key=lambda z: (z != WHOLE_FRAME, z))


def assign_lanes(segments: Sequence[Segment], horizon: float) -> list[int]:
    """Lane of each segment within its zone: the first whose last bar ended before it starts."""
    lanes = [0] * len(segments)
    ends: dict[str, list[float]] = {}
    for i in sorted(range(len(segments)), key=lambda i: (segments[i].start, segments[i].end)):
        s = segments[i]
        zone_ends = ends.setdefault(s.zone, [])
        end = s.end if s.closed else horizon
        lane = next((k for k, e in enumerate(zone_ends) if e <= s.start), len(zone_ends))
        if lane == len(zone_ends):
            zone_ends.append(end)
        else:
            zone_ends[lane] = end
        lanes[i] = lane
    return lanes


def tick_step(span: float) -> float:
    for step in _STEPS:
        if span / step <= MAX_TICKS:
            return float(step)
    return 86400.0 * math.ceil(span / 86400.0 / MAX_TICKS)


def ticks(t0: float, t1: float, clock: Clock = CAPTURE) -> list[tuple[float, str]]:
    step = tick_step(t1 - t0)
    first = math.ceil(t0 / step) * step
    n = int((t1 - first) // step) + 1
    return [(first + k * step, clock.tick(first + k * step, step)) for k in range(max(0, n))]


def bar_title(s: Segment, clock: Clock) -> str:
    end = clock.end(s.start, s.end) if s.closed else f"open (last event {clock.end(s.start, s.end)})"
    return f"{s.label} in {s.zone}: {clock.full(s.start)} to {end}, peak {s.peak_score:.2f}"


def timeline_svg(
    segments: Sequence[Segment],
    colors: dict[str, str],
    anchors: Sequence[str],
    horizon: float,
    clock: Clock = CAPTURE,
    geom: Geometry = Geometry(),
) -> str:
    """`anchors[i]`: the id of segment i's card. `horizon`: where open segments end (the last
    time the camera's events speak of)."""
    zones = zone_order([s.zone for s in segments])
    lanes = assign_lanes(segments, horizon)
    n_lanes = {
        z: 1 + max([lanes[i] for i, s in enumerate(segments) if s.zone == z], default=0) for z in zones
    }
    row_y: dict[str, int] = {}
    y = geom.top
    for z in zones:
        row_y[z] = y
        y += n_lanes[z] * geom.lane_h
    plot_bottom = y
    height = plot_bottom + geom.axis_h
    t0 = min((s.start for s in segments), default=horizon)
    t1 = max(horizon, t0 + 1.0)
    x0, x1 = geom.gutter, geom.width - geom.right

    def x(t: float) -> float:
        return x0 + (t - t0) / (t1 - t0) * (x1 - x0)

    out = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{geom.width}" height="{height}" '
        f'role="img" aria-label="segments per zone">',
        "<defs>",
    ]
    for i, (_, color) in enumerate(sorted(colors.items())):
        # Open segments: the label's colour in stripes.
        out.append(
            f'<pattern id="open-{i}" width="8" height="8" patternUnits="userSpaceOnUse" '
            f'patternTransform="rotate(45)"><rect width="8" height="8" fill="#ffffff"/>'
            f'<rect width="5" height="8" fill="{color}"/></pattern>'
        )
    out.append("</defs>")
    pattern = {label: f"open-{i}" for i, label in enumerate(sorted(colors))}
    for k, z in enumerate(zones):
        if k % 2:
            out.append(
                f'<rect x="0" y="{row_y[z]}" width="{geom.width}" height="{n_lanes[z] * geom.lane_h}" fill="#f6f7f9"/>'
            )
        mid = row_y[z] + geom.lane_h / 2
        out.append(
            f'<text x="{geom.gutter - 10}" y="{mid:.1f}" text-anchor="end" dominant-baseline="middle" '
            f'class="zone">{html.escape(z)}</text>'
        )
    for t, text in ticks(t0, t1, clock):
        out.append(
            f'<line x1="{x(t):.1f}" y1="{geom.top}" x2="{x(t):.1f}" y2="{plot_bottom + 4}" stroke="#d0d4da"/>'
        )
        out.append(
            f'<text x="{x(t):.1f}" y="{plot_bottom + 18}" text-anchor="middle" class="tick">{text}</text>'
        )
    out.append(f'<line x1="{x0}" y1="{plot_bottom}" x2="{x1}" y2="{plot_bottom}" stroke="#8a919c"/>')
    for i, s in enumerate(segments):
        left = x(s.start)
        right = x(s.end if s.closed else horizon)
        w = max(right - left, geom.min_bar_w)
        top = row_y[s.zone] + lanes[i] * geom.lane_h + (geom.lane_h - geom.bar_h) / 2
        fill = colors[s.label] if s.closed else f"url(#{pattern[s.label]})"
        stroke = "" if s.closed else f' stroke="{colors[s.label]}" stroke-width="1"'
        out.append(
            f'<a href="#{anchors[i]}"><rect class="bar" x="{left:.1f}" y="{top:.1f}" width="{w:.1f}" '
            f'height="{geom.bar_h}" rx="2" fill="{fill}"{stroke}>'
            f"<title>{html.escape(bar_title(s, clock))}</title></rect></a>"
        )
    out.append("</svg>")
    return "\n".join(out)
