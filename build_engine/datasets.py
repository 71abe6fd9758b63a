"""Training data: generated clips straight into memory, and a user's folder of videos per label.

Both yield windows the way the worker sees them: T frames sampled at an analysis rate from a
source, uint8 RGB at model size. Real video goes through `media.decode` (the one decode+resize).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from media import clips

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts")

# The analysis rates the shipped model is trained for: the worker's default is 5 fps.
ANALYSIS_FPS = 5.0
ANALYSIS_FPS_RANGE = (4.0, 8.0)
# Aspect ratios of the sources whose frames get squashed to the square model input.
ASPECTS = (16 / 9, 16 / 9, 4 / 3, 1.0)


def sample_analysis_frames(pts: np.ndarray | list[float], fps: float | None) -> list[int]:
    """Indices of the frames the worker keeps when it samples a source down to `fps`."""
    from media.sampling import FpsSampler  # the worker's own sampler, so training sees its spacing

    sampler = FpsSampler(fps)
    return [i for i, t in enumerate(pts) if sampler.keep(float(t))]


def analysis_times(
    rng: np.random.Generator,
    num_frames: int,
    fps: float,
    source_fps: float | None,
) -> np.ndarray:
    """The pts of the T frames a worker analyses, sampling a `source_fps` stream at `fps`."""
    if source_fps is None or source_fps <= fps:
        return np.arange(num_frames) / fps
    # Frames exist only on the source grid; the sampler keeps the first frame at or after each due
    # time, so intervals jitter by one source frame when the rates do not divide.
    start = int(rng.integers(0, round(source_fps)))
    pts = (start + np.arange(math.ceil(num_frames * source_fps / fps) + 2)) / source_fps
    keep = sample_analysis_frames(pts, fps)[:num_frames]
    return pts[keep] - pts[keep[0]]


@dataclass
class GeneratedClips:
    """Infinite labelled windows rendered in memory at model size.

    Batch `i` of a given seed is always the same batch, so training resumes exactly.
    Geometry matches the real path: the scene has a video's aspect ratio and is squashed to the
    square model input; speeds are per second and the analysis rate varies per clip.
    """

    seed: int | tuple[int, ...]  # batch i draws from numpy default_rng([*seed, i])
    num_frames: int = 16
    image_size: int = 64
    labels: tuple[str, ...] = clips.MODEL_LABELS
    fps_range: tuple[float, float] = ANALYSIS_FPS_RANGE
    augment: bool = True
    # Share of each batch that is `none` (when it is a label): its content comes in several
    # families (clips.NONE_FAMILIES), so it gets more than one motion's share.
    none_share: float = 0.25
    # Share of windows drawn in the hard corner of the scene space (`clips.harden`), every label
    # alike. 0 is the plain draw, the one `vbw eval` and the tests' clips come from.
    hard_share: float = 0.0

    def window(self, rng: np.random.Generator, label: str) -> np.ndarray:
        fps = float(rng.uniform(*self.fps_range))
        source = float(rng.choice([25.0, 25.0, 30.0, 0.0]))  # 0: a clip made natively at `fps`
        times = analysis_times(rng, self.num_frames, fps, source or None)
        aspect = float(rng.choice(ASPECTS))
        times = times + rng.uniform(0, 30)
        # A cut (a `none` family) falls between the window's first and last frames.
        params = clips.sample_params(label, rng, span=(float(times[0]), float(times[-1])))
        if self.hard_share > 0 and rng.random() < self.hard_share:  # no draw at 0: streams unchanged
            params = clips.harden(params, rng)
        s = self.image_size
        frames = clips.render_frames(params, s, s, times, aspect=aspect)
        if self.augment:
            frames = augment_window(frames, rng)
        return frames

    def batch_labels(self, batch_size: int) -> np.ndarray:
        """Label indices of a batch, before shuffling: `none_share` none, the rest round robin."""
        if clips.NONE not in self.labels or self.none_share <= 0:
            return np.arange(batch_size) % len(self.labels)
        n_none = min(batch_size, max(1, round(batch_size * self.none_share)))
        others = np.array([i for i, lb in enumerate(self.labels) if lb != clips.NONE])
        y = others[np.arange(batch_size - n_none) % len(others)]
        return np.concatenate([y, np.full(n_none, self.labels.index(clips.NONE))])

    def batch(self, index: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 [B, T, S, S, 3], int64 [B]) with labels balanced over the batch."""
        seeds = (self.seed,) if isinstance(self.seed, int) else tuple(self.seed)
        rng = np.random.default_rng([*seeds, index])
        y = self.batch_labels(batch_size)
        rng.shuffle(y)
        x = np.stack([self.window(rng, self.labels[i]) for i in y])
        return x, y.astype(np.int64)

    def batches(self, batch_size: int, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        i = start
        while True:
            yield self.batch(i, batch_size)
            i += 1


def augment_window(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What encoding, decoding and cameras do that the renderer does not: blur, contrast, blocks."""
    x = frames.astype(np.float32)
    if rng.random() < 0.3:  # soft focus or heavier encoder smoothing: a 3-tap binomial blur
        x = (np.roll(x, 1, 1) + 2 * x + np.roll(x, -1, 1)) / 4
        x = (np.roll(x, 1, 2) + 2 * x + np.roll(x, -1, 2)) / 4
    if rng.random() < 0.5:  # exposure and contrast of the whole clip
        x = (x - 128) * rng.uniform(0.8, 1.2) + 128 + rng.uniform(-20, 20)
    if rng.random() < 0.2:  # coarse quantisation, a cheap stand-in for compression loss
        step = float(rng.uniform(4, 12))
        x = np.round(x / step) * step
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


# --- real video -----------------------------------------------------------------------------------


def decode_analysis_frames(
    path: str | Path, image_size: int, fps: float | None = ANALYSIS_FPS
) -> tuple[np.ndarray, np.ndarray]:
    """(pts [N], uint8 [N, S, S, 3]) of a video file, sampled to `fps` (None keeps every frame)."""
    from media.decode import decode_file

    pts, frames = [], []
    for t, img in decode_file(path, (image_size, image_size)):
        pts.append(t)
        frames.append(img)
    if not frames:
        raise ValueError(f"{path}: no decodable video frames")
    keep = sample_analysis_frames(pts, fps) if fps else list(range(len(frames)))
    return np.asarray(pts)[keep], np.stack([frames[i] for i in keep])


def pad_to(frames: np.ndarray, num_frames: int) -> np.ndarray:
    """Repeat the last frame so a short clip still fills a window."""
    if len(frames) >= num_frames:
        return frames
    return np.concatenate([frames, np.repeat(frames[-1:], num_frames - len(frames), 0)])


class VideoFolderDataset:
    """`root/<label>/<video files>`: a user's labelled clips, decoded once into memory.

    Frames are kept at model size and the analysis rate (64x64 RGB at 5 fps is about 60 KB per
    second of video), and windows of T are drawn from them at random offsets.
    """

    def __init__(
        self,
        root: str | Path,
        num_frames: int = 16,
        image_size: int = 64,
        fps: float = ANALYSIS_FPS,
        labels: list[str] | None = None,
        progress: bool = False,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: dataset folder not found")
        found = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not found:
            raise ValueError(f"{self.root}: no label sub-folders (expected {self.root}/<label>/<videos>)")
        if labels is not None:
            unknown = sorted(set(found) - set(labels))
            if unknown:
                raise ValueError(f"{self.root}: folders {unknown} are not labels of the model {labels}")
        self.labels = list(labels) if labels is not None else found
        self.num_frames = num_frames
        self.items: list[tuple[Path, int, np.ndarray]] = []  # (file, label index, frames)
        self.errors: list[str] = []
        files = [
            (f, self.labels.index(d))
            for d in found
            for f in sorted((self.root / d).iterdir())
            if f.suffix.lower() in VIDEO_EXTENSIONS
        ]
        if not files:
            raise ValueError(f"{self.root}: no video files ({', '.join(VIDEO_EXTENSIONS)}) in label folders")
        it = files
        if progress:
            from tqdm import tqdm

            it = tqdm(files, desc="decode", unit="file")
        for f, y in it:
            try:
                _, frames = decode_analysis_frames(f, image_size, fps)
            except Exception as e:  # a bad file is reported and skipped; the rest still train
                self.errors.append(f"{f}: {e}")
                continue
            self.items.append((f, y, pad_to(frames, num_frames)))
        if not self.items:
            raise ValueError(
                f"{self.root}: none of {len(files)} video files could be decoded: {self.errors[:3]}"
            )

    def __len__(self) -> int:
        return len(self.items)

    def windows(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Every window of item `index` at stride 1: uint8 [W, T, S, S, 3] and labels [W]."""
        _, y, frames = self.items[index]
        n = len(frames) - self.num_frames + 1
        w = np.stack([frames[i : i + self.num_frames] for i in range(n)])
        return w, np.full(n, y, np.int64)

    def batch(self, index: int, batch_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A random batch of windows (random file, random offset), reproducible by index."""
        rng = np.random.default_rng([seed, index])
        xs, ys = [], []
        for _ in range(batch_size):
            _, y, frames = self.items[int(rng.integers(len(self.items)))]
            start = int(rng.integers(0, len(frames) - self.num_frames + 1))
            xs.append(frames[start : start + self.num_frames])
            ys.append(y)
        return np.stack(xs), np.asarray(ys, np.int64)
