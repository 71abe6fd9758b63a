"""Synthetic motion clips: eight classes that only temporal order tells apart.

Every class draws the same kinds of frames (one textured object over a static background with
static distractors, camera noise); only how the object changes over time differs. Any single
frame is equally likely under every class, so one frame cannot name the label.

All motion is periodic, so a label holds over a clip of any length: positions wrap around the
frame (the object is drawn on a torus, half leaving one edge while it enters the other), sizes
follow a sawtooth in log-size, angles turn forever. Speeds are per second, so a clip means the
same thing at any frame rate.

Frames are rendered from continuous coordinates with analytic anti-aliasing (signed distance
functions), so the same `ClipParams` render at 320x180 for a real video file or straight at
64x64 (aspect squashed, as `media.decode.to_model_rgb` squashes) for in-memory training.
"""

from __future__ import annotations

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
)
SHAPES: tuple[str, ...] = ("triangle", "ell", "key", "pacman")

# Object radius in frame heights; sizes of every class are log-uniform over this range.
SIZE_MIN, SIZE_MAX = 0.13, 0.36
SPEED_RANGE = (0.12, 0.40)  # frame widths (or heights) per second, for the move classes
SPIN_RANGE = (math.radians(60), math.radians(180))  # radians per second, rotate classes
GROW_RANGE = (0.25, 0.70)  # log-size per second, grow/shrink classes
DRIFT_MAX = 0.02  # frame widths per second of incidental drift, every class
WOBBLE_MAX = math.radians(8)  # radians per second of incidental spin, non-rotating classes
MODEL_PIXELS = 64 * 64  # noise std is specified at model resolution


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


def _color(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(c) for c in rng.uniform(0.0, 1.0, 3))  # type: ignore[return-value]


def _contrasting(rng: np.random.Generator, against: tuple[float, ...]) -> tuple[float, float, float]:
    """A colour whose mean brightness differs from `against` enough to see the object."""
    for _ in range(20):
        c = _color(rng)
        if abs(np.mean(c) - np.mean(against)) > 0.22 or np.abs(np.subtract(c, against)).max() > 0.45:
            return c
    return tuple(float(1.0 - a) for a in against)  # type: ignore[return-value]


def sample_params(label: str, rng: np.random.Generator) -> ClipParams:
    """Random appearance and motion for one clip of `label`."""
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}; expected one of {', '.join(LABELS)}")
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


def _background(p: ClipParams, xs: np.ndarray, ys: np.ndarray, aspect: float) -> np.ndarray:
    """Static background [H, W, 3] with distractors drawn in."""
    h, w = ys.shape[0], xs.shape[1]
    c0, c1 = np.asarray(p.bg_colors[0], np.float32), np.asarray(p.bg_colors[1], np.float32)
    u, v = xs / aspect, ys  # normalised 0..1
    if p.bg_kind == "solid":
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
    return x, y, size, angle


def render_frames(
    p: ClipParams, width: int, height: int, times: np.ndarray, aspect: float | None = None
) -> np.ndarray:
    """uint8 [K, height, width, 3] at the given times (seconds).

    `aspect` is the scene's width/height; it defaults to width/height (a real video frame). Pass
    e.g. 16/9 with width=height=64 to draw what a 16:9 video looks like after the squash to 64x64.
    """
    aspect = float(width / height if aspect is None else aspect)
    times = np.asarray(times, np.float64)
    k = len(times)
    xs = ((np.arange(width, dtype=np.float32) + 0.5) / width * aspect)[None, :]
    ys = ((np.arange(height, dtype=np.float32) + 0.5) / height)[:, None]
    bg = _background(p, xs, ys, aspect)

    cx, cy, size, angle = object_state(p, times)
    f32 = np.float32
    dx = _wrap(xs[None] - (cx * aspect).astype(f32)[:, None, None], aspect)  # [K, 1, W]
    dy = _wrap(ys[None] - cy.astype(f32)[:, None, None], 1.0)  # [K, H, 1]
    s = size.astype(f32)[:, None, None]
    ca, sa = np.cos(angle).astype(f32)[:, None, None], np.sin(angle).astype(f32)[:, None, None]
    lx = (dx * ca + dy * sa) / s
    ly = (-dx * sa + dy * ca) / s
    aa = max(aspect / width, 1.0 / height)  # one pixel, in frame heights
    cov = _coverage(_sd_shape(p.shape, lx, ly) * s, aa)  # [K, H, W]
    stripes = None
    if p.stripe_freq > 0:
        stripes = np.clip(0.5 + 2.0 * np.sin(2 * math.pi * p.stripe_freq * lx), 0, 1)
    # Noise is keyed by the first frame's time, so a long clip rendered chunk by chunk gets fresh
    # noise per chunk and the same pixels on every run.
    rng = np.random.default_rng([p.seed, round(float(times[0]) * 1e6) if k else 0])
    gain = (255.0 * (1 + p.flicker * rng.standard_normal(k))).astype(f32)[:, None, None]
    # Channel-first while compositing: contiguous [K, H, W] planes are several times faster in
    # numpy than broadcasting over a trailing channel axis, and these arrays are the clip's size.
    img = np.empty((3, k, height, width), f32)
    for c in range(3):
        obj = f32(p.color[c])
        if stripes is not None:
            obj = obj + (f32(p.stripe_color[c]) - obj) * stripes
        plane = img[c]
        np.subtract(obj, bg[:, :, c], out=plane)
        plane *= cov
        plane += bg[:, :, c]
        plane *= gain
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
    `progress` wraps the clip indices (a progress bar: the caller's, so media needs no tqdm)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for i in progress(range(n)) if progress else range(n):
        label = labels[i % len(labels)]
        params = sample_params(label, clip_rng(seed, i))
        name = f"clip_{i:05d}.mp4"
        write_mp4(iter_clip_frames(params, width, height, num_frames, fps), out / name, fps)
        records.append({"file": name, "label": label})
    with (out / "labels.jsonl").open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return records


def parse_sequence(spec: str) -> list[tuple[str, float]]:
    """'move_left:6,grow:4.5' -> [('move_left', 6.0), ('grow', 4.5)]."""
    segments = []
    for part in spec.split(","):
        label, sep, secs = part.strip().partition(":")
        if not sep:
            raise ValueError(f"segment {part!r}: expected LABEL:SECONDS")
        if label not in LABELS:
            raise ValueError(
                f"segment {part!r}: unknown label {label!r}; expected one of {', '.join(LABELS)}"
            )
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

    The timeline gives each segment's [start, end) in seconds and in frame numbers.
    """
    timeline, plan, frame = [], [], 0
    for i, (label, seconds) in enumerate(segments):
        n = max(1, round(seconds * fps))
        plan.append((sample_params(label, clip_rng(seed, i)), n))
        timeline.append(
            {
                "label": label,
                "start": frame / fps,
                "end": (frame + n) / fps,
                "start_frame": frame,
                "end_frame": frame + n,
            }
        )
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
