"""Zones: named areas of a frame, each analysed as a stream of its own. Pure geometry, no I/O.

A zone is a polygon in normalised coordinates (x to the right, y down, both 0..1 of the frame);
a rectangle is the polygon of its four corners. The model sees a zone as its bounding box cut
out of the frame and resized to the model's input (aspect squashed, as for whole frames); for a
polygon, the part of the box outside the polygon is masked to black, with anti-aliased edges,
so what moves outside the zone never reaches the model. `media.decode.FrameViews` applies it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Point = tuple[float, float]
Box = tuple[int, int, int, int]  # pixel columns/rows [x0, x1) x [y0, y1)

# Samples per output pixel side when measuring how much of a pixel a polygon covers.
COVERAGE_SAMPLES = 4


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    points: tuple[Point, ...]  # polygon vertices, normalised; a rectangle's 4 corners
    rect: bool = False  # an axis-aligned rectangle: its box is the zone, no mask

    @classmethod
    def from_rect(cls, name: str, x0: float, y0: float, x1: float, y1: float) -> Zone:
        return cls(name, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)), rect=True)

    @classmethod
    def from_polygon(cls, name: str, points: Sequence[Sequence[float]]) -> Zone:
        return cls(name, tuple((float(x), float(y)) for x, y in points))

    def bbox(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the polygon, normalised."""
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        return min(xs), min(ys), max(xs), max(ys)

    def pixel_box(self, width: int, height: int) -> Box:
        """The bounding box in a width x height image, grown to whole pixels (at least one)."""
        x0, y0, x1, y1 = self.bbox()
        return (*_span(x0, x1, width), *_span(y0, y1, height))  # type: ignore[return-value]


def _span(a: float, b: float, n: int) -> tuple[int, int]:
    # A tiny epsilon: 0.5 * 256 computed as 127.99999 must not grow the box by a pixel.
    lo = min(n - 1, max(0, math.floor(a * n + 1e-6)))
    hi = max(lo + 1, min(n, math.ceil(b * n - 1e-6)))
    return lo, hi


def polygon_area(points: Sequence[Point]) -> float:
    """Shoelace area (absolute), in normalised units."""
    n = len(points)
    s = sum(points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1] for i in range(n))
    return abs(s) / 2.0


def _segments_cross(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    def orient(a: Point, b: Point, c: Point) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    d1, d2 = orient(q1, q2, p1), orient(q1, q2, p2)
    d3, d4 = orient(p1, p2, q1), orient(p1, p2, q2)
    return ((d1 > 0) != (d2 > 0)) and ((d3 > 0) != (d4 > 0)) and 0 not in (d1, d2, d3, d4)


def self_intersects(points: Sequence[Point]) -> bool:
    """True if two non-adjacent edges cross (a bow tie): such a polygon has no clear inside."""
    n = len(points)
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # adjacent through the closing edge
            if _segments_cross(*edges[i], *edges[j]):
                return True
    return False


def inside(points: Sequence[Point], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over broadcastable xs and ys."""
    xs, ys = np.broadcast_arrays(np.asarray(xs, np.float64), np.asarray(ys, np.float64))
    out = np.zeros(xs.shape, bool)
    n = len(points)
    for i in range(n):
        (xa, ya), (xb, yb) = points[i], points[(i + 1) % n]
        if ya == yb:
            continue
        crosses = (ya > ys) != (yb > ys)
        x_at = xa + (ys - ya) * (xb - xa) / (yb - ya)
        out ^= crosses & (xs < x_at)
    return out


def coverage(
    points: Sequence[Point], region: tuple[float, float, float, float], out_h: int, out_w: int
) -> np.ndarray:
    """float32 [out_h, out_w, 1]: the part of each output pixel inside the polygon, where the
    output image shows `region` = (x0, y0, x1, y1) of the frame (normalised)."""
    x0, y0, x1, y1 = region
    k = COVERAGE_SAMPLES
    sx = x0 + (np.arange(out_w * k) + 0.5) / (out_w * k) * (x1 - x0)
    sy = y0 + (np.arange(out_h * k) + 0.5) / (out_h * k) * (y1 - y0)
    hit = inside(points, sx[None, :], sy[:, None]).astype(np.float32)
    return hit.reshape(out_h, k, out_w, k).mean(axis=(1, 3))[:, :, None]


def intermediate_size(
    zones: Sequence[Zone], width: int, height: int, model_hw: tuple[int, int], oversample: float = 2.0
) -> tuple[int, int]:
    """(W, H) to convert a width x height frame to before cutting the zones: the frame's own
    size (a plain YUV to RGB conversion, the cheapest) unless every zone's box keeps
    `oversample` times the model's pixels each way at half the frame's size or less; then the
    smallest such size (a 1080p camera: 0.9 ms for the conversion and two zones instead of 1.9)."""
    mh, mw = model_hw
    need_w = need_h = 1
    for z in zones:
        x0, y0, x1, y1 = z.bbox()
        need_w = max(need_w, math.ceil(oversample * mw / max(x1 - x0, 1e-9)))
        need_h = max(need_h, math.ceil(oversample * mh / max(y1 - y0, 1e-9)))
    if need_w * 2 > width or need_h * 2 > height:
        return width, height
    return need_w, need_h


def draw_outline(
    image: np.ndarray,
    points: Sequence[Point],
    color: tuple[int, int, int] = (255, 64, 0),
    half_width: int = 1,
) -> np.ndarray:
    """A copy of uint8 [H, W, 3] `image` with the closed polygon (normalised) drawn on it, in
    lines 2 * half_width + 1 pixels wide."""
    out = image.copy()
    h, w = out.shape[:2]
    r = max(0, half_width)
    n = len(points)
    for i in range(n):
        (xa, ya), (xb, yb) = points[i], points[(i + 1) % n]
        ax, ay = xa * (w - 1), ya * (h - 1)
        bx, by = xb * (w - 1), yb * (h - 1)
        steps = max(1, math.ceil(max(abs(bx - ax), abs(by - ay))))
        t = np.linspace(0.0, 1.0, steps + 1)
        px = np.rint(ax + (bx - ax) * t).astype(np.int64)
        py = np.rint(ay + (by - ay) * t).astype(np.int64)
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                out[np.clip(py + dy, 0, h - 1), np.clip(px + dx, 0, w - 1)] = color
    return out
