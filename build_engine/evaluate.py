"""Accuracy on fresh clips through the real path: render -> H.264 mp4 -> worker decode -> sampler.

Each clip is written as a real video file, decoded and resized by `media.decode`, sampled to
the analysis rate by the worker's own sampler, and its first T analysed frames form one window.
Clip `i` of seed `S` is exactly clip `i` of `vbw gen-clips --seed S`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from build_engine.datasets import ANALYSIS_FPS, decode_analysis_frames, pad_to
from media import clips


@dataclass(frozen=True)
class EvalSpec:
    n: int
    seed: int
    num_frames: int = 16  # T
    image_size: int = 64
    width: int = 320
    height: int = 180
    fps: float = 25.0  # source
    analysis_fps: float = ANALYSIS_FPS
    labels: tuple[str, ...] = clips.LABELS

    @property
    def source_frames(self) -> int:
        """Enough source frames for T analysed ones, plus one period of slack."""
        return math.ceil(self.num_frames * self.fps / self.analysis_fps) + 1


def _one_window(args: tuple[EvalSpec, int, str]) -> np.ndarray:
    spec, i, tmp = args
    label = spec.labels[i % len(spec.labels)]
    frames = clips.render_clip(
        label, clips.clip_rng(spec.seed, i), spec.width, spec.height, spec.source_frames, spec.fps
    )
    path = Path(tmp) / f"clip_{i:05d}.mp4"
    clips.write_mp4(frames, path, spec.fps)
    _, analysed = decode_analysis_frames(path, spec.image_size, spec.analysis_fps)
    path.unlink()
    return pad_to(analysed, spec.num_frames)[: spec.num_frames]


def real_path_windows(spec: EvalSpec, jobs: int = 1, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, T, S, S, 3], labels int64 [N]) decoded from real mp4 files; labels round robin."""
    with tempfile.TemporaryDirectory(prefix="vbw-eval-") as tmp:
        work = [(spec, i, tmp) for i in range(spec.n)]
        if jobs > 1:
            with ProcessPoolExecutor(jobs) as pool:
                it = pool.map(_one_window, work, chunksize=4)
                windows = _collect(it, spec.n, progress)
        else:
            windows = _collect(map(_one_window, work), spec.n, progress)
    y = np.arange(spec.n) % len(spec.labels)
    return np.stack(windows), y.astype(np.int64)


def _collect(it, n: int, progress: bool) -> list[np.ndarray]:
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=n, desc="clips (render, mp4, decode)", unit="clip")
    return list(it)


def few_frame_windows(windows: np.ndarray, distinct: int) -> np.ndarray:
    """Keep `distinct` frames evenly spread over each window, each repeated to fill T.

    distinct=1 is the single-frame baseline: the model sees one real frame and no motion.
    """
    t = windows.shape[1]
    if not 1 <= distinct <= t:
        raise ValueError(f"--frames must be between 1 and T={t}, got {distinct}")
    if distinct == t:
        return windows
    seg = np.minimum(np.arange(t) * distinct // t, distinct - 1)  # which distinct frame each slot shows
    picks = ((np.arange(distinct) + 0.5) * t / distinct).astype(int)  # the centre frame of each segment
    return windows[:, picks[seg]]


@dataclass
class EvalResult:
    labels: tuple[str, ...]
    confusion: np.ndarray  # [true, predicted]; the last column counts predictions of other labels
    extra: dict = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion[:, : len(self.labels)]) / max(1, self.confusion.sum()))

    def per_class(self) -> dict[str, float]:
        rows = self.confusion.sum(1)
        return {
            lb: float(self.confusion[i, i] / rows[i]) if rows[i] else float("nan")
            for i, lb in enumerate(self.labels)
        }

    def report(self) -> str:
        lines = [f"{'label':<12} {'n':>4} {'acc':>6}  most confused with"]
        for i, lb in enumerate(self.labels):
            row = self.confusion[i].copy()
            n = int(row.sum())
            acc = row[i] / n if n else float("nan")
            row[i] = 0
            worst = int(row.argmax())
            name = self.labels[worst] if worst < len(self.labels) else "other"
            other = f"{name} ({int(row[worst])})" if row[worst] else "-"
            lines.append(f"{lb:<12} {n:>4} {acc:>6.3f}  {other}")
        lines.append("confusion (rows true, columns predicted):")
        lines.append("      " + " ".join(f"{j:>4}" for j in range(len(self.labels))) + " other")
        for i, lb in enumerate(self.labels):
            lines.append(f"{i:>4}  " + " ".join(f"{int(v):>4}" for v in self.confusion[i]) + f"   {lb}")
        return "\n".join(lines)


def score_windows(engine, windows: np.ndarray, incremental: bool = True, batch: int = 32) -> np.ndarray:
    """Predicted label index per window, through the engine's per-frame and per-window stages
    (encode_frames, then encode_windows: steps and the transformer, as the worker) or whole."""
    preds = []
    for s in range(0, len(windows), batch):
        w = windows[s : s + batch]
        if incremental:
            b, t = w.shape[:2]
            feats = engine.encode_frames(w.reshape(b * t, *w.shape[2:])).reshape(b, t, -1)
            scores, _ = engine.encode_windows(feats)
        else:
            scores, _ = engine.infer_windows(w)
        preds.append(np.asarray(scores).argmax(1))
    return np.concatenate(preds)


def evaluate(
    engine,
    spec: EvalSpec,
    distinct_frames: int | None = None,
    incremental: bool = True,
    jobs: int | None = None,
    progress: bool = False,
) -> EvalResult:
    meta = engine.metadata
    model_labels = list(meta.labels)
    missing = [lb for lb in spec.labels if lb not in model_labels]
    if missing:
        raise ValueError(f"model {meta.name} has no labels {missing}; it knows {model_labels}")
    if meta.image_size[0] != meta.image_size[1]:
        raise ValueError(f"eval renders square model input, model wants {meta.image_size}")
    spec = dataclasses.replace(spec, num_frames=meta.num_frames, image_size=meta.image_size[0])
    jobs = jobs or min(2, os.cpu_count() or 1)
    windows, y = real_path_windows(spec, jobs=jobs, progress=progress)
    if distinct_frames is not None:
        windows = few_frame_windows(windows, distinct_frames)
    pred = score_windows(engine, windows, incremental=incremental)
    # Predictions index the model's labels; a prediction outside the evaluated labels (a model
    # with extra classes) lands in a last "other" column and counts as wrong.
    k = len(spec.labels)
    col = np.full(len(model_labels), k)
    for i, lb in enumerate(spec.labels):
        col[model_labels.index(lb)] = i
    conf = np.zeros((k, k + 1), np.int64)
    np.add.at(conf, (y, col[pred]), 1)
    return EvalResult(labels=spec.labels, confusion=conf)
