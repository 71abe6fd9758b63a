"""Synthetic clips: eight motion classes that only temporal order tells apart, and `none`.

Every motion class draws the same kinds of frames (one textured object over a static background
with static distractors, camera noise); only how the object changes over time differs. Any
single frame is equally likely under every class, so one frame cannot name the label.

All motion is periodic, so a label holds over a clip of any length: positions wrap around the
frame (the object is drawn on a torus, half leaving one edge while it enters the other), sizes
follow a sawtooth in log-size, angles turn forever. Speeds are per second, so a clip means the
same thing at any frame rate.

`none` is everything that is not one of the motions. Its content comes in families, drawn from
the same scenes (backgrounds, objects, distractors, noise) as the motions:

    family     used for    what changes
    static     training    nothing: at most the incidental drift and wobble every class has
    lighting   training    the whole scene's brightness fades or switches (all channels alike)
    appear     training    the object fades or pops in and out where it is
    recolor    training    the object changes colour where it is
    sway       training    the object swings back and forth (along x or y), no net motion
    cut        training    a scene cut inside the window (either side a motion or the above)
    texture    evaluation  no object; a churning texture of gratings drifting every which way
    crowd      evaluation  three to five objects at once, each with its own motion class
    shake      evaluation  a still scene seen by a shaking camera (the whole picture jitters)
    colour     evaluation  the light's colour swings warm to cool (channels in opposite ways)

Training (`NONE_FAMILIES`) never draws the evaluation families (`OOD_FAMILIES`): `vbw eval`
holds them out to measure how well the model rejects content of kinds it never saw. Families
are periodic like the motions (fades, blinks and sways repeat), so a `none` stretch holds over a
stream of any length; a cut happens once, at `cut_time`.

Frames are rendered from continuous coordinates with analytic anti-aliasing (signed distance
functions), so the same `ClipParams` render at 320x180 for a real video file or straight at
64x64 (aspect squashed, as `media.decode.to_model_rgb` squashes) for in-memory training.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LABELS: tuple[str, ...] = (
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "grow",
    "shrink",
    "rotate_cw",
    "rotate_ccw",
)  # the motions
NONE = "none"
MODEL_LABELS: tuple[str, ...] = (*LABELS, NONE)  # what the shipped model names
NONE_FAMILIES: tuple[str, ...] = ("static", "lighting", "appear", "recolor", "sway", "cut")  # training
OOD_FAMILIES: tuple[str, ...] = ("texture", "crowd", "shake", "colour")  # evaluation only
# The families one side of a cut is drawn from (with the motions), and a sequence segment may name.
SCENE_FAMILIES: tuple[str, ...] = ("static", "lighting", "appear", "recolor", "sway")
SHAPES: tuple[str, ...] = ("triangle", "ell", "key", "pacman")

# Object radius in frame heights; sizes of every class are log-uniform over this range.
SIZE_MIN, SIZE_MAX = 0.13, 0.36
SPEED_RANGE = (0.12, 0.40)  # frame widths (or heights) per second, for the move classes
SPIN_RANGE = (math.radians(60), math.radians(180))  # radians per second, rotate classes
GROW_RANGE = (0.25, 0.70)  # log-size per second, grow/shrink classes
DRIFT_MAX = 0.02  # frame widths per second of incidental drift, every class
WOBBLE_MAX = math.radians(8)  # radians per second of incidental spin, non-rotating classes
MODEL_PIXELS = 64 * 64  # noise std is specified at model resolution
# The hard corner of the scene space (`harden`): the small end of the sizes, heavy camera noise,
# a busy background, the slow end of each motion's range.
HARD_SIZE_MAX = 0.18
HARD_NOISE = (3.0, 6.0)
HARD_SLOW = 0.4  # the lowest 40% of a motion's speed range


@dataclass(frozen=True)
class Distractor:
    shape: str
    x: float  # centre, fraction of frame width
    y: float  # centre, fraction of frame height
    size: float
    angle: float
    color: tuple[float, float, float]


@dataclass(frozen=True)
class ClipParams:
    """Everything that decides a clip's pixels. Times are seconds, colours 0..1 RGB."""

    label: str
    shape: str
    x0: float  # object centre at t=0, fraction of frame width
    y0: float  # fraction of frame height
    vx: float  # frame widths per second
    vy: float  # frame heights per second
    size0: float  # radius at t=0, frame heights
    grow: float  # log-size per second (sawtooth between SIZE_MIN and SIZE_MAX)
    angle0: float
    spin: float  # radians per second; positive turns clockwise on screen (y points down)
    color: tuple[float, float, float]
    stripe_color: tuple[float, float, float]
    stripe_freq: float  # stripes per object radius, 0 = plain
    bg_kind: str  # solid | gradient | blobs | stripes
    bg_colors: tuple[tuple[float, float, float], ...]
    bg_grid: tuple[tuple[tuple[float, float, float], ...], ...]  # coarse colour grid (blobs)
    bg_angle: float
    distractors: tuple[Distractor, ...]
    noise_std: float  # camera noise, in 0..255 units at model resolution (64x64)
    flicker: float  # per-frame brightness jitter (relative std)
    seed: int  # noise stream
    extra: dict = field(default_factory=dict, compare=False)
    # --- `none` families (the defaults change nothing: a motion clip) --------------------------
    family: str = ""  # the none family; "" for a motion
    light_amp: tuple[float, float, float] = (0.0, 0.0, 0.0)  # log-gain amplitude per RGB channel
    light_period: float = 0.0  # seconds; 0 = steady light
    light_phase: float = 0.0  # fraction of a period
    light_wave: str = "triangle"  # triangle: fades | square: switched
    blink: str = ""  # "" | appear (object fades/pops in and out) | recolor (to blink_color and back)
    blink_color: tuple[float, float, float] = (0.0, 0.0, 0.0)
    blink_period: float = 0.0
    blink_phase: float = 0.0
    blink_wave: str = "square"
    sway: tuple[float, float, float] = (0.0, 0.0, 0.0)  # amplitude: x (widths), y (heights), angle
    sway_period: float = 0.0
    sway_phase: float = 0.0
    shake_amp: float = 0.0  # camera shake, frame heights
    shake: tuple[tuple[float, float, float], ...] = ()  # (Hz, x phase, y phase) per component
    texture: tuple[tuple[float, float, float, float, float], ...] = ()  # (kx, ky, speed, phase, weight)
    no_object: bool = False
    crowd: tuple[ClipParams, ...] = ()  # more objects, each with its own motion
    after: ClipParams | None = None  # the scene after a cut
    cut_time: float = 0.0  # seconds; frames at or after it show `after`


def _color(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(c) for c in rng.uniform(0.0, 1.0, 3))  # type: ignore[return-value]


def _contrasting(rng: np.random.Generator, against: tuple[float, ...]) -> tuple[float, float, float]:
    """A colour whose mean brightness differs from `against` enough to see the object."""
    for _ in range(20):
        c = _color(rng)
        if abs(np.mean(c) - np.mean(against)) > 0.22 or np.abs(np.subtract(c, against)).max() > 0.45:
            return c
    return tuple(float(1.0 - a) for a in against)  # type: ignore[return-value]


def sample_params(
    label: str, rng: np.random.Generator, family: str | None = None, span: tuple[float, float] = (0.0, 3.2)
) -> ClipParams:
    """Random appearance and motion for one clip of `label`.

    For `none`, `family` picks the kind of content (default: one of the training families at
    random) and `span` is the time range (seconds) a cut must fall into.
    """
    if label == NONE:
        return sample_none(str(rng.choice(NONE_FAMILIES)) if family is None else family, rng, span)
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}; expected one of {', '.join(MODEL_LABELS)}")
    bg_kind = str(rng.choice(["solid", "gradient", "blobs", "stripes"]))
    bg_colors = (_color(rng), _color(rng))
    gh, gw = int(rng.integers(2, 6)), int(rng.integers(2, 8))
    base = np.asarray(bg_colors[0])
    grid = np.clip(base + rng.normal(0, 0.18, (gh, gw, 3)), 0, 1)
    bg_grid = tuple(tuple(tuple(float(v) for v in cell) for cell in row) for row in grid)
    bg_mean = tuple(float(v) for v in (base if bg_kind != "gradient" else (base + bg_colors[1]) / 2))

    color = _contrasting(rng, bg_mean)
    striped = rng.random() < 0.5
    stripe_color = _contrasting(rng, color) if striped else color
    distractors = tuple(
        Distractor(
            shape=str(rng.choice(SHAPES)),
            x=float(rng.random()),
            y=float(rng.random()),
            size=float(math.exp(rng.uniform(math.log(SIZE_MIN * 0.6), math.log(SIZE_MAX * 0.8)))),
            angle=float(rng.uniform(0, 2 * math.pi)),
            color=_contrasting(rng, bg_mean),
        )
        for _ in range(int(rng.integers(0, 3)))
    )

    # Incidental motion every class has, so "anything changed" never names a class.
    vx, vy = (float(v) for v in rng.uniform(-DRIFT_MAX, DRIFT_MAX, 2))
    spin = float(rng.uniform(-WOBBLE_MAX, WOBBLE_MAX))
    grow = 0.0
    if label.startswith("move_"):
        speed = float(rng.uniform(*SPEED_RANGE))
        axis, sign = {"move_left": (0, -1), "move_right": (0, 1), "move_up": (1, -1), "move_down": (1, 1)}[
            label
        ]
        if axis == 0:
            vx = sign * speed
        else:
            vy = sign * speed
    elif label in ("grow", "shrink"):
        grow = float(rng.uniform(*GROW_RANGE)) * (1 if label == "grow" else -1)
    else:
        spin = float(rng.uniform(*SPIN_RANGE)) * (1 if label == "rotate_cw" else -1)

    return ClipParams(
        label=label,
        shape=str(rng.choice(SHAPES)),
        x0=float(rng.random()),
        y0=float(rng.random()),
        vx=vx,
        vy=vy,
        size0=float(math.exp(rng.uniform(math.log(SIZE_MIN), math.log(SIZE_MAX)))),
        grow=grow,
        angle0=float(rng.uniform(0, 2 * math.pi)),
        spin=spin,
        color=color,
        stripe_color=stripe_color,
        stripe_freq=float(rng.uniform(0.8, 2.0)) if striped else 0.0,
        bg_kind=bg_kind,
        bg_colors=bg_colors,
        bg_grid=bg_grid,
        bg_angle=float(rng.uniform(0, 2 * math.pi)),
        distractors=distractors,
        noise_std=float(rng.uniform(0.0, 6.0)),
        flicker=float(rng.uniform(0.0, 0.02)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def harden(p: ClipParams, rng: np.random.Generator) -> ClipParams:
    """`p`'s content in the hard corner of the scene space, where the motion is fewest pixels.

    A small object, on stripes or blobs, under heavy noise, its motion (if it has a label's) at
    the slow end of its range: a small, slow turn on a busy, noisy background is what a model
    trained on the plain draw read as `none`. Every label, `none` included, is hardened alike, so
    the hard look names no label; a cut hardens both sides.
    """
    lo, hi = math.log(SIZE_MIN), math.log(HARD_SIZE_MAX)
    changes: dict = {
        "size0": float(math.exp(rng.uniform(lo, hi))),
        "noise_std": float(rng.uniform(*HARD_NOISE)),
        "bg_kind": "stripes" if rng.random() < 0.6 else "blobs",
    }
    slow = float(rng.uniform(0.0, HARD_SLOW))

    def slower(v: float, span: tuple[float, float]) -> float:
        return math.copysign(span[0] + (span[1] - span[0]) * slow, v)

    if p.label.startswith("move_"):
        key = "vx" if p.label in ("move_left", "move_right") else "vy"
        changes[key] = slower(getattr(p, key), SPEED_RANGE)
    elif p.label in ("grow", "shrink"):
        changes["grow"] = slower(p.grow, GROW_RANGE)
    elif p.label in ("rotate_cw", "rotate_ccw"):
        changes["spin"] = slower(p.spin, SPIN_RANGE)
    if p.after is not None:
        changes["after"] = harden(p.after, rng)
    return dataclasses.replace(p, **changes)


def _still(p: ClipParams, rng: np.random.Generator, family: str) -> ClipParams:
    """`p`'s scene without its labelled motion: still, or the incidental drift and wobble only."""
    vx = vy = spin = 0.0
    if rng.random() < 0.5:
        vx, vy = (float(v) for v in rng.uniform(-DRIFT_MAX, DRIFT_MAX, 2))
        spin = float(rng.uniform(-WOBBLE_MAX, WOBBLE_MAX))
    return dataclasses.replace(p, label=NONE, family=family, vx=vx, vy=vy, grow=0.0, spin=spin)


def _scene(rng: np.random.Generator) -> ClipParams:
    """One side of a cut: a motion or a none scene, uniformly over the kinds."""
    kinds = (*LABELS, *SCENE_FAMILIES)
    kind = str(kinds[int(rng.integers(len(kinds)))])
    return sample_params(kind, rng) if kind in LABELS else sample_none(kind, rng)


def sample_none(family: str, rng: np.random.Generator, span: tuple[float, float] = (0.0, 3.2)) -> ClipParams:
    """A clip of `none` content of one family (see the module docstring)."""
    if family not in NONE_FAMILIES + OOD_FAMILIES:
        raise ValueError(
            f"unknown none family {family!r}; training: {', '.join(NONE_FAMILIES)}; "
            f"evaluation: {', '.join(OOD_FAMILIES)}"
        )
    if family == "cut":
        a, b = _scene(rng), _scene(rng)
        lo, hi = span
        # At least the first frame of the span before the cut and its last frame after it.
        cut = lo + (hi - lo) * float(rng.uniform(0.03, 1.0))
        return dataclasses.replace(a, label=NONE, family=family, after=b, cut_time=cut)
    base = sample_params(LABELS[int(rng.integers(len(LABELS)))], rng)
    if family == "crowd":  # the base object keeps its motion; 2-4 more, each another class
        others = rng.choice([lb for lb in LABELS if lb != base.label], int(rng.integers(2, 5)), replace=False)
        crowd = tuple(sample_params(str(lb), rng) for lb in others)
        return dataclasses.replace(base, label=NONE, family=family, crowd=crowd)
    p = _still(base, rng, family)
    phase = float(rng.random())
    if family == "lighting":
        a = float(rng.uniform(0.12, 0.4)) * (1 if rng.random() < 0.5 else -1)
        wave = "square" if rng.random() < 0.5 else "triangle"
        # A period of at most 6 s: any 3.2 s window sees a switch or most of a fade.
        period = float(rng.uniform(1.2, 6.0))
        return dataclasses.replace(
            p, light_amp=(a, a, a), light_period=period, light_phase=phase, light_wave=wave
        )
    if family == "colour":  # warm <-> cool: red and blue gains move in opposite directions
        a = float(rng.uniform(0.15, 0.4)) * (1 if rng.random() < 0.5 else -1)
        return dataclasses.replace(
            p,
            light_amp=(a, 0.2 * a, -a),
            light_period=float(rng.uniform(2.0, 6.0)),
            light_phase=phase,
            light_wave="triangle",
        )
    if family in ("appear", "recolor"):
        return dataclasses.replace(
            p,
            blink=family,
            blink_color=_contrasting(rng, p.color),
            blink_period=float(rng.uniform(1.2, 5.0)),
            blink_phase=phase,
            blink_wave="square" if rng.random() < 0.5 else "triangle",
        )
    if family == "sway":  # at least one whole swing per 3.2 s window
        # Along x or y only: swinging in angle looked too much like a small, slow turn (the
        # model then called hard rotate_* clips none); `sway[2]` stays for other uses.
        axis = int(rng.integers(2))
        amp = [0.0, 0.0, 0.0]
        amp[axis] = float(rng.uniform(0.04, 0.12))
        return dataclasses.replace(
            p, sway=tuple(amp), sway_period=float(rng.uniform(1.5, 3.0)), sway_phase=phase
        )  # type: ignore[arg-type]
    if family == "shake":
        parts = tuple(
            (
                float(rng.uniform(1.5, 8.0)),
                float(rng.uniform(0, 2 * math.pi)),
                float(rng.uniform(0, 2 * math.pi)),
            )
            for _ in range(3)
        )
        return dataclasses.replace(p, shake_amp=float(rng.uniform(0.015, 0.05)), shake=parts)
    if family == "texture":
        n = int(rng.integers(3, 6))
        gratings = []
        for _ in range(n):
            k, th = float(rng.uniform(1.5, 5.0)), float(rng.uniform(0, 2 * math.pi))
            gratings.append(
                (
                    k * math.cos(th),
                    k * math.sin(th),
                    float(rng.uniform(0.1, 0.4)),  # heights per second along the grating's normal
                    float(rng.uniform(0, 2 * math.pi)),
                    float(rng.uniform(0.5, 1.0)),
                )
            )
        return dataclasses.replace(p, bg_kind="texture", texture=tuple(gratings), no_object=True)
    return p  # static


# --- signed distance functions, in object units (radius 1); negative inside ---------------------


def _sd_box(x: np.ndarray, y: np.ndarray, cx: float, cy: float, hx: float, hy: float) -> np.ndarray:
    qx = np.abs(x - cx) - hx
    qy = np.abs(y - cy) - hy
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _sd_circle(x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    return np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r


def _sd_convex(x: np.ndarray, y: np.ndarray, pts: list[tuple[float, float]]) -> np.ndarray:
    """Max of edge half-plane distances: exact on the edges, which is all anti-aliasing needs."""
    d = None
    for (ax, ay), (bx, by) in zip(pts, pts[1:] + pts[:1], strict=True):
        nx, ny = by - ay, ax - bx  # outward normal of a clockwise-listed edge (y down)
        n = math.hypot(nx, ny)
        e = ((x - ax) * nx + (y - ay) * ny) / n
        d = e if d is None else np.maximum(d, e)
    assert d is not None
    return d


def _sd_shape(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Every shape lacks rotational symmetry, so a turn always shows.
    if shape == "triangle":
        return _sd_convex(x, y, [(1.0, 0.0), (-0.7, 0.65), (-0.7, -0.65)])
    if shape == "ell":
        return np.minimum(_sd_box(x, y, -0.45, 0.0, 0.28, 0.85), _sd_box(x, y, 0.15, 0.57, 0.75, 0.28))
    if shape == "key":
        return np.minimum(_sd_box(x, y, -0.2, 0.0, 0.75, 0.2), _sd_circle(x, y, 0.55, 0.0, 0.42))
    if shape == "pacman":
        wedge = np.maximum(np.abs(y) - 0.75 * x, -x)  # 2*37 degree mouth opening to +x
        return np.maximum(_sd_circle(x, y, 0.0, 0.0, 0.95), -wedge)
    raise ValueError(f"unknown shape {shape!r}")


def _wrap(d: np.ndarray, period: float) -> np.ndarray:
    """Displacement to the nearest copy on a torus of `period`."""
    return (d + period / 2) % period - period / 2


def _coverage(sd_world: np.ndarray, aa: float) -> np.ndarray:
    return np.clip(0.5 - sd_world / aa, 0.0, 1.0)


def _background(p: ClipParams, xs: np.ndarray, ys: np.ndarray, aspect: float, t: float = 0.0) -> np.ndarray:
    """Background [H, W, 3] at time `t` (only a texture changes) with distractors drawn in."""
    h, w = ys.shape[0], xs.shape[1]
    c0, c1 = np.asarray(p.bg_colors[0], np.float32), np.asarray(p.bg_colors[1], np.float32)
    u, v = xs / aspect, ys  # normalised 0..1
    if p.bg_kind == "texture":  # gratings drifting each its own way: churning, no net motion
        s = sum(
            wt * np.sin(2 * math.pi * (kx * xs + ky * v - math.hypot(kx, ky) * speed * t) + ph)
            for kx, ky, speed, ph, wt in p.texture
        )
        mix = 0.5 + 0.5 * np.tanh(1.5 * np.asarray(s, np.float32))
        bg = c0 + (c1 - c0) * mix[..., None]
    elif p.bg_kind == "solid":
        bg = np.broadcast_to(c0, (h, w, 3)).copy()
    elif p.bg_kind == "gradient":
        s = (u - 0.5) * math.cos(p.bg_angle) + (v - 0.5) * math.sin(p.bg_angle) + 0.5
        bg = c0 + (c1 - c0) * np.clip(s, 0, 1)[..., None]
    elif p.bg_kind == "stripes":
        s = u * math.cos(p.bg_angle) * aspect + v * math.sin(p.bg_angle)
        mix = 0.5 + 0.5 * np.sin(2 * math.pi * 4.0 * s)
        bg = c0 + (c1 - c0) * 0.35 * mix[..., None]
    else:  # blobs: bilinear upsampling of a coarse colour grid
        grid = np.asarray(p.bg_grid, np.float32)
        gh, gw = grid.shape[:2]
        gx = np.broadcast_to(u * (gw - 1), (h, w))
        gy = np.broadcast_to(v * (gh - 1), (h, w))
        x0 = np.clip(np.floor(gx).astype(int), 0, gw - 2) if gw > 1 else np.zeros((h, w), int)
        y0 = np.clip(np.floor(gy).astype(int), 0, gh - 2) if gh > 1 else np.zeros((h, w), int)
        fx, fy = (gx - x0)[..., None], (gy - y0)[..., None]
        top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
        bot = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
        bg = top * (1 - fy) + bot * fy
    bg = bg.astype(np.float32)
    aa = max(aspect / w, 1.0 / h)
    for d in p.distractors:
        dx = _wrap(xs - d.x * aspect, aspect)
        dy = _wrap(ys - d.y, 1.0)
        ca, sa = math.cos(d.angle), math.sin(d.angle)
        lx, ly = (dx * ca + dy * sa) / d.size, (-dx * sa + dy * ca) / d.size
        cov = _coverage(_sd_shape(d.shape, lx, ly) * d.size, aa)[..., None]
        bg = bg * (1 - cov) + np.asarray(d.color, np.float32) * cov
    return bg


def object_state(p: ClipParams, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x fraction of width, y fraction of height, radius in heights, angle) at each time."""
    t = np.asarray(times, np.float64)
    x = (p.x0 + p.vx * t) % 1.0
    y = (p.y0 + p.vy * t) % 1.0
    lo, span = math.log(SIZE_MIN), math.log(SIZE_MAX / SIZE_MIN)
    size = np.exp(lo + (math.log(p.size0) - lo + p.grow * t) % span)
    angle = p.angle0 + p.spin * t
    if p.sway_period > 0:
        swing = _wave(t, p.sway_period, p.sway_phase, "sine")
        x = (x + p.sway[0] * swing) % 1.0
        y = (y + p.sway[1] * swing) % 1.0
        angle = angle + p.sway[2] * swing
    return x, y, size, angle


def _wave(t: np.ndarray, period: float, phase: float, kind: str) -> np.ndarray:
    """A periodic wave in [-1, 1]: triangle (fades), square (switches) or sine (swings)."""
    u = np.asarray(t, np.float64) / period + phase
    if kind == "square":
        return np.where(u % 1.0 < 0.5, 1.0, -1.0)
    if kind == "triangle":
        return 1.0 - 4.0 * np.abs(u % 1.0 - 0.5)
    return np.sin(2 * math.pi * u)


def light_gain(p: ClipParams, times: np.ndarray) -> np.ndarray | None:
    """Per-frame, per-channel light gain [K, 3], or None under steady light."""
    if p.light_period <= 0:
        return None
    return np.exp(np.outer(_wave(times, p.light_period, p.light_phase, p.light_wave), p.light_amp))


def camera_offset(p: ClipParams, times: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Camera shake (x, y) in frame heights per frame, or None for a still camera."""
    if p.shake_amp <= 0 or not p.shake:
        return None
    t = np.asarray(times, np.float64)
    norm = p.shake_amp / math.sqrt(len(p.shake) / 2)
    ox = norm * sum(np.sin(2 * math.pi * f * t + px) for f, px, _ in p.shake)
    oy = norm * sum(np.sin(2 * math.pi * f * t + py) for f, _, py in p.shake)
    return np.asarray(ox), np.asarray(oy)


def render_frames(
    p: ClipParams, width: int, height: int, times: np.ndarray, aspect: float | None = None
) -> np.ndarray:
    """uint8 [K, height, width, 3] at the given times (seconds).

    `aspect` is the scene's width/height; it defaults to width/height (a real video frame). Pass
    e.g. 16/9 with width=height=64 to draw what a 16:9 video looks like after the squash to 64x64.
    """
    aspect = float(width / height if aspect is None else aspect)
    times = np.asarray(times, np.float64)
    if p.after is not None:  # a cut: each side renders as its own clip
        later = times >= p.cut_time
        out = np.empty((len(times), height, width, 3), np.uint8)
        if (~later).any():
            out[~later] = render_frames(
                dataclasses.replace(p, after=None), width, height, times[~later], aspect
            )
        if later.any():
            out[later] = render_frames(p.after, width, height, times[later], aspect)
        return out
    k = len(times)
    xs = ((np.arange(width, dtype=np.float32) + 0.5) / width * aspect)[None, :]
    ys = ((np.arange(height, dtype=np.float32) + 0.5) / height)[:, None]
    shake = camera_offset(p, times)
    f32 = np.float32
    # The background is drawn once, or per frame when the camera shakes or a texture churns.
    if shake is None and p.bg_kind != "texture":
        bg = _background(p, xs, ys, aspect)
    else:
        ox, oy = shake if shake is not None else (np.zeros(k), np.zeros(k))
        bg = np.stack(
            [_background(p, xs + f32(ox[i]), ys + f32(oy[i]), aspect, float(times[i])) for i in range(k)]
        )
    aa = max(aspect / width, 1.0 / height)  # one pixel, in frame heights
    # Channel-first while compositing: contiguous [K, H, W] planes are several times faster in
    # numpy than broadcasting over a trailing channel axis, and these arrays are the clip's size.
    img = np.empty((3, k, height, width), f32)
    for c in range(3):
        img[c] = bg[..., c]
    for obj in () if p.no_object else (p, *p.crowd):
        _draw_object(img, obj, xs, ys, times, aspect, aa, shake)
    # Noise is keyed by the first frame's time, so a long clip rendered chunk by chunk gets fresh
    # noise per chunk and the same pixels on every run.
    rng = np.random.default_rng([p.seed, round(float(times[0]) * 1e6) if k else 0])
    gain = (255.0 * (1 + p.flicker * rng.standard_normal(k))).astype(f32)[:, None, None]
    light = light_gain(p, times)
    for c in range(3):
        img[c] *= gain if light is None else gain * light[:, c].astype(f32)[:, None, None]
    img += f32(0.5)
    if p.noise_std > 0:
        # White noise averages down when a big frame shrinks to model size: scale it so the
        # model sees the same noise level from any render resolution. Uniform, not Gaussian:
        # five times cheaper to draw, and the shape of camera noise is not what is learnt here.
        std = p.noise_std * math.sqrt(width * height / MODEL_PIXELS)
        noise = rng.random(img.shape, dtype=f32)
        noise -= f32(0.5)
        noise *= f32(std * math.sqrt(12.0))
        img += noise
    np.clip(img, 0, 255, out=img)
    return np.ascontiguousarray(np.moveaxis(img.astype(np.uint8), 0, -1))


def _draw_object(
    img: np.ndarray,
    p: ClipParams,
    xs: np.ndarray,
    ys: np.ndarray,
    times: np.ndarray,
    aspect: float,
    aa: float,
    shake: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    """Composite `p`'s object over the channel-first frames img [3, K, H, W], in place."""
    f32 = np.float32
    cx, cy, size, angle = object_state(p, times)
    px, py = xs[None], ys[None]  # [1, 1, W], [1, H, 1]
    if shake is not None:  # the whole world moves against the camera
        px = px + shake[0].astype(f32)[:, None, None]
        py = py + shake[1].astype(f32)[:, None, None]
    dx = _wrap(px - (cx * aspect).astype(f32)[:, None, None], aspect)  # [K, 1, W]
    dy = _wrap(py - cy.astype(f32)[:, None, None], 1.0)  # [K, H, 1]
    s = size.astype(f32)[:, None, None]
    ca, sa = np.cos(angle).astype(f32)[:, None, None], np.sin(angle).astype(f32)[:, None, None]
    lx = (dx * ca + dy * sa) / s
    ly = (-dx * sa + dy * ca) / s
    cov = _coverage(_sd_shape(p.shape, lx, ly) * s, aa)  # [K, H, W]
    stripes = None
    if p.stripe_freq > 0:
        stripes = np.clip(0.5 + 2.0 * np.sin(2 * math.pi * p.stripe_freq * lx), 0, 1)
    blink = None
    if p.blink and p.blink_period > 0:  # 0..1: how far into its other state the object is
        blink = (0.5 + 0.5 * _wave(times, p.blink_period, p.blink_phase, p.blink_wave)).astype(f32)
        if p.blink == "appear":
            cov = cov * (1 - blink)[:, None, None]
    for c in range(3):
        obj = f32(p.color[c])
        if stripes is not None:
            obj = obj + (f32(p.stripe_color[c]) - obj) * stripes
        if blink is not None and p.blink == "recolor":
            obj = obj + (f32(p.blink_color[c]) - obj) * blink[:, None, None]
        plane = img[c]
        mix = obj - plane
        mix *= cov
        plane += mix


CHUNK_FRAMES = 50  # frames rendered at once: bounds memory for minute-long clips


def iter_clip_frames(
    params: ClipParams,
    width: int,
    height: int,
    num_frames: int,
    fps: float,
    aspect: float | None = None,
    start_frame: int = 0,
) -> Iterator[np.ndarray]:
    """A clip in chunks of at most CHUNK_FRAMES frames, uint8 [k, height, width, 3] each."""
    for s in range(0, num_frames, CHUNK_FRAMES):
        idx = np.arange(start_frame + s, start_frame + min(num_frames, s + CHUNK_FRAMES))
        yield render_frames(params, width, height, idx / fps, aspect)


def render_clip(
    label: str | ClipParams,
    rng: np.random.Generator | int,
    width: int,
    height: int,
    num_frames: int,
    fps: float,
    aspect: float | None = None,
) -> np.ndarray:
    """One clip of `label` (or of given params) as uint8 [num_frames, height, width, 3] at `fps`."""
    if isinstance(rng, int):
        rng = np.random.default_rng(rng)
    params = label if isinstance(label, ClipParams) else sample_params(label, rng)
    return np.concatenate(list(iter_clip_frames(params, width, height, num_frames, fps, aspect)))


# --- files -----------------------------------------------------------------------------------------


# /proc/cpuinfo flag -> x264 CPU flag, for every SIMD level below AVX-512.
_X264_FLAGS = {
    "sse": "MMX2,SSE",
    "sse2": "SSE2",
    "ssse3": "SSSE3",
    "sse4_1": "SSE4.1",
    "sse4_2": "SSE4.2",
    "avx": "AVX",
    "avx2": "AVX2",
    "fma": "FMA3",
    "abm": "LZCNT",
    "bmi1": "BMI1",
    "bmi2": "BMI2",
}


@functools.cache
def _x264_asm() -> str:
    """The CPU's SIMD flags minus AVX-512, or '' to leave x264's own detection.

    With its AVX-512 routines, the libx264 in PyAV's wheels (core 165) encoded identical frames
    to different bitstreams from run to run here, which breaks "same seed, same video". Below
    AVX-512 every level gave one bitstream. Only flags the CPU reports are passed, because x264
    trusts the list and would execute instructions the CPU lacks.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    flags = set(line.partition(":")[2].split())
    if not any(f.startswith("avx512") for f in flags):
        return ""
    return ",".join(v for k, v in _X264_FLAGS.items() if k in flags)


def write_mp4(frames: np.ndarray | Iterable[np.ndarray], path: str | Path, fps: float, crf: int = 23) -> None:
    """uint8 RGB frames [K, H, W, 3] (or an iterable of such chunks) -> H.264 mp4 (yuv420p).

    H and W must be even. Chunks let minute-long clips stream through without holding them whole.
    """
    from fractions import Fraction

    import av

    chunks = [frames] if isinstance(frames, np.ndarray) else frames
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as out:
        stream = None
        for chunk in chunks:
            if stream is None:
                h, w = chunk.shape[1:3]
                if h % 2 or w % 2:
                    raise ValueError(f"{path}: H.264 yuv420p needs even width and height, got {w}x{h}")
                stream = out.add_stream("libx264", rate=rate)
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                # Two-second GOP like a camera; one thread keeps the bitstream identical run to run.
                options = {"crf": str(crf), "preset": "veryfast", "g": str(max(1, round(2 * fps)))}
                if _x264_asm():
                    options["x264-params"] = f"asm={_x264_asm()}"
                stream.options = options
                stream.codec_context.thread_count = 1
            for img in chunk:
                # Convert here: a frame made by from_ndarray may share the numpy buffer, and the
                # encoder keeps frames for look-ahead after this chunk is gone.
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24").reformat(
                    format="yuv420p"
                )
                for packet in stream.encode(frame):
                    out.mux(packet)
        if stream is None:
            raise ValueError(f"{path}: no frames to write")
        for packet in stream.encode():
            out.mux(packet)


def clip_rng(seed: int, index: int) -> np.random.Generator:
    """Clip `index` of a seed's set is the same whatever N is."""
    return np.random.default_rng([seed, index])


def family_rng(seed: int, family: str, index: int) -> np.random.Generator:
    """Clip `index` of a none family's set (`vbw eval`): each family its own stream, so two
    families' clip i do not share a scene."""
    families = (*NONE_FAMILIES, *OOD_FAMILIES)
    return np.random.default_rng([seed, 0x4E4F4E45, families.index(family), index])


def generate_dataset(
    out_dir: str | Path,
    n: int,
    seed: int,
    width: int = 320,
    height: int = 180,
    fps: float = 25.0,
    num_frames: int = 80,
    labels: tuple[str, ...] = LABELS,
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
) -> list[dict]:
    """Write `n` mp4 clips (labels balanced, round robin) and labels.jsonl; return the records.
    Labels are motions, `none` or `none/FAMILY` (`segment_kind`); a `none` record names its family.
    `progress` wraps the clip indices (a progress bar: the caller's, so media needs no tqdm)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for i in progress(range(n)) if progress else range(n):
        label, family = segment_kind(labels[i % len(labels)])
        rng = clip_rng(seed, i)
        params = sample_params(label, rng) if family is None else sample_none(family, rng)
        name = f"clip_{i:05d}.mp4"
        write_mp4(iter_clip_frames(params, width, height, num_frames, fps), out / name, fps)
        records.append({"file": name, "label": label, **({"family": family} if family else {})})
    with (out / "labels.jsonl").open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return records


def segment_kind(label: str) -> tuple[str, str | None]:
    """A sequence segment's label: a motion, `none` (a static scene) or `none/FAMILY`.

    Returns (label, none family or None). A cut needs no family: segments are cut apart anyway.
    """
    base, _, family = label.partition("/")
    if base in LABELS and not family:
        return base, None
    families = (*SCENE_FAMILIES, *OOD_FAMILIES)
    if base == NONE and (family or "static") in families:
        return NONE, family or "static"
    raise ValueError(
        f"unknown label {label!r}; expected one of {', '.join(LABELS)}, "
        f"{NONE} or {NONE}/FAMILY ({', '.join(families)})"
    )


def parse_sequence(spec: str) -> list[tuple[str, float]]:
    """'move_left:6,none/lighting:5,grow:4.5' -> [('move_left', 6.0), ('none/lighting', 5.0), ...]."""
    segments = []
    for part in spec.split(","):
        label, sep, secs = part.strip().partition(":")
        if not sep:
            raise ValueError(f"segment {part!r}: expected LABEL:SECONDS")
        try:
            segment_kind(label)
        except ValueError as e:
            raise ValueError(f"segment {part!r}: {e}") from None
        try:
            seconds = float(secs)
        except ValueError:
            raise ValueError(f"segment {part!r}: {secs!r} is not a number of seconds") from None
        if seconds <= 0:
            raise ValueError(f"segment {part!r}: seconds must be positive")
        segments.append((label, seconds))
    return segments


def random_sequence(k: int, rng: np.random.Generator, seconds: tuple[float, float] = (5.0, 8.0)) -> list:
    """K segments, neighbours never share a label."""
    segs: list[tuple[str, float]] = []
    for _ in range(k):
        choices = [lb for lb in LABELS if not segs or lb != segs[-1][0]]
        segs.append((str(rng.choice(choices)), round(float(rng.uniform(*seconds)), 1)))
    return segs


def write_sequence(
    path: str | Path,
    segments: list[tuple[str, float]],
    seed: int,
    width: int = 320,
    height: int = 180,
    fps: float = 25.0,
) -> dict:
    """One video of consecutive labelled segments (a scene cut between them) + `<path>.json`.

    Labels are motions, `none` (a static scene) or `none/FAMILY` (see `segment_kind`). The
    timeline gives each segment's label, [start, end) in seconds and in frame numbers, and for
    `none` segments their family.
    """
    timeline, plan, frame = [], [], 0
    for i, (spec, seconds) in enumerate(segments):
        label, family = segment_kind(spec)
        n = max(1, round(seconds * fps))
        rng = clip_rng(seed, i)
        plan.append((sample_params(label, rng) if family is None else sample_none(family, rng), n))
        seg = {
            "label": label,
            "start": frame / fps,
            "end": (frame + n) / fps,
            "start_frame": frame,
            "end_frame": frame + n,
        }
        if family is not None:
            seg["family"] = family
        timeline.append(seg)
        frame += n
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(
        (chunk for params, n in plan for chunk in iter_clip_frames(params, width, height, n, fps)), path, fps
    )
    doc = {
        "file": path.name,
        "fps": fps,
        "width": width,
        "height": height,
        "seed": seed,
        "segments": timeline,
    }
    path.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc
