"""Accuracy and open-set figures on fresh clips through the real path: render -> H.264 mp4 ->
worker decode -> sampler.

Each clip is written as a real video file, decoded and resized by `media.decode`, sampled to
the analysis rate by the worker's own sampler, and its first T analysed frames form one window.
Motion clip `i` of seed `S` is exactly clip `i` of `vbw gen-clips --seed S`; clip `i` of a
`none` family comes from `media.clips.family_rng(S, family, i)`.

For a model with an open set (model.json `open_set`), the clips are:
- motions, labels round robin: top-1 accuracy, and the open-set decision's accuracy;
- static scenes and the other training `none` families: the rate of `none`;
- the held-out families (`media.clips.OOD_FAMILIES`, never trained on): their `none` rate and
  the AUROC of accepting motion windows against them, ranked by the top motion score;
- calibration: ECE of the top-1 score on the in-distribution windows (motions and training
  `none` families), before (the temperature undone) and after temperature scaling.
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

from build_engine import calibration
from build_engine.datasets import ANALYSIS_FPS, decode_analysis_frames, pad_to
from media import clips

# Done-when of issue 10, part 1: what `vbw eval` checks the figures against.
TARGETS = {"motions_top1": 0.95, "none_on_static": 0.95, "ece_after": 0.05, "auroc_ood": 0.9}
ECE_DESC = f"{calibration.ECE_BINS} bins of the top-1 score"


@dataclass(frozen=True)
class EvalSpec:
    n: int  # motion clips
    seed: int
    num_frames: int = 16  # T
    image_size: int = 64
    width: int = 320
    height: int = 180
    fps: float = 25.0  # source
    analysis_fps: float = ANALYSIS_FPS
    labels: tuple[str, ...] = clips.LABELS
    static_n: int = 0  # static scenes
    none_n: int = 0  # clips per other training none family
    ood_n: int = 0  # clips per held-out family

    @property
    def source_frames(self) -> int:
        """Enough source frames for T analysed ones, plus one period of slack."""
        return math.ceil(self.num_frames * self.fps / self.analysis_fps) + 1

    def kinds(self) -> list[tuple[str, int]]:
        """(kind, index) per clip: the motions round robin, then each none family's clips."""
        out = [(self.labels[i % len(self.labels)], i) for i in range(self.n)]
        out += [("static", i) for i in range(self.static_n)]
        out += [(f, i) for f in clips.NONE_FAMILIES if f != "static" for i in range(self.none_n)]
        out += [(f, i) for f in clips.OOD_FAMILIES for i in range(self.ood_n)]
        return out


def clip_params(spec: EvalSpec, kind: str, i: int) -> clips.ClipParams:
    if kind in clips.LABELS:
        return clips.sample_params(kind, clips.clip_rng(spec.seed, i))
    # A cut falls within the window: between the first and the last analysed frame.
    span = (0.0, (spec.num_frames - 1) / spec.analysis_fps)
    return clips.sample_none(kind, clips.family_rng(spec.seed, kind, i), span)


def _one_window(args: tuple[EvalSpec, str, int, str]) -> np.ndarray:
    spec, kind, i, tmp = args
    params = clip_params(spec, kind, i)
    frames = clips.render_clip(params, 0, spec.width, spec.height, spec.source_frames, spec.fps)
    path = Path(tmp) / f"clip_{kind}_{i:05d}.mp4"
    clips.write_mp4(frames, path, spec.fps)
    _, analysed = decode_analysis_frames(path, spec.image_size, spec.analysis_fps)
    path.unlink()
    return pad_to(analysed, spec.num_frames)[: spec.num_frames]


def real_path_windows(
    spec: EvalSpec, jobs: int = 1, progress: bool = False
) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """(uint8 [N, T, S, S, 3] decoded from real mp4 files, the (kind, index) of each)."""
    kinds = spec.kinds()
    with tempfile.TemporaryDirectory(prefix="vbw-eval-") as tmp:
        work = [(spec, kind, i, tmp) for kind, i in kinds]
        if jobs > 1:
            with ProcessPoolExecutor(jobs) as pool:
                windows = _collect(pool.map(_one_window, work, chunksize=4), len(work), progress)
        else:
            windows = _collect(map(_one_window, work), len(work), progress)
    return np.stack(windows), kinds


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
    other: str = "other"  # what the last column is called (`none` for an open-set model)

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
            name = self.labels[worst] if worst < len(self.labels) else self.other
            other = f"{name} ({int(row[worst])})" if row[worst] else "-"
            lines.append(f"{lb:<12} {n:>4} {acc:>6.3f}  {other}")
        lines.append("confusion (rows true, columns predicted):")
        lines.append("      " + " ".join(f"{j:>4}" for j in range(len(self.labels))) + f" {self.other}")
        for i, lb in enumerate(self.labels):
            lines.append(f"{i:>4}  " + " ".join(f"{int(v):>4}" for v in self.confusion[i]) + f"   {lb}")
        return "\n".join(lines)


def window_scores(engine, windows: np.ndarray, incremental: bool = True, batch: int = 32) -> np.ndarray:
    """Scores [N, C] per window, through the engine's per-frame and per-window stages
    (encode_frames, then encode_windows: steps and the transformer, as the worker) or whole."""
    out = []
    for s in range(0, len(windows), batch):
        w = windows[s : s + batch]
        if incremental:
            b, t = w.shape[:2]
            feats = engine.encode_frames(w.reshape(b * t, *w.shape[2:])).reshape(b, t, -1)
            scores, _ = engine.encode_windows(feats)
        else:
            scores, _ = engine.infer_windows(w)
        out.append(np.asarray(scores, np.float64))
    return np.concatenate(out)


def score_windows(engine, windows: np.ndarray, incremental: bool = True, batch: int = 32) -> np.ndarray:
    """Predicted label index per window (the top score)."""
    return window_scores(engine, windows, incremental, batch).argmax(1)


def confusion_of(
    spec_labels: tuple[str, ...], model_labels: list[str], y: np.ndarray, pred: np.ndarray
) -> np.ndarray:
    """[true, predicted] over the evaluated labels; a prediction outside them (a model with extra
    classes, `none`) lands in a last column and counts as wrong."""
    k = len(spec_labels)
    col = np.full(len(model_labels), k)
    for i, lb in enumerate(spec_labels):
        col[model_labels.index(lb)] = i
    conf = np.zeros((k, k + 1), np.int64)
    np.add.at(conf, (y, col[pred]), 1)
    return conf


@dataclass
class OpenSetReport:
    """The open-set figures of one `vbw eval` run (see the module docstring)."""

    motions_top1: float  # top label right, over the motion windows
    motions_decided: float  # the open-set decision (reject rule applied) right
    none_on_static: float  # open-set decision `none`, over static scenes
    ece_before: float
    ece_after: float
    auroc_ood: float  # motion windows vs every held-out family's windows
    none_rate: dict[str, float]  # per none family (training and held out): decision `none`
    auroc: dict[str, float]  # per none family: motions vs that family
    threshold: float
    temperature: float
    counts: dict[str, int]

    def lines(self) -> list[str]:
        out = [
            f"open set: temperature {self.temperature:.3f} (in the graphs), reject threshold "
            f"{self.threshold:.2f} on the top motion score",
            f"{'family':<10} {'use':<9} {'n':>4} {'none rate':>9} {'AUROC':>6}",
        ]
        for fam, rate in self.none_rate.items():
            use = "held out" if fam in clips.OOD_FAMILIES else "training"
            out.append(f"{fam:<10} {use:<9} {self.counts[fam]:>4} {rate:>9.3f} {self.auroc[fam]:>6.3f}")
        checks = {
            "motions_top1": self.motions_top1,
            "none_on_static": self.none_on_static,
            "ece_after": self.ece_after,
            "auroc_ood": self.auroc_ood,
        }
        out.append(
            f"motions: top-1 {self.motions_top1:.3f}, with the reject rule {self.motions_decided:.3f} "
            f"({self.counts['motions']} windows)"
        )
        out.append(
            f"calibration (ECE, {ECE_DESC}) on {self.counts['in_distribution']} in-distribution windows: "
            f"before {self.ece_before:.4f}, after {self.ece_after:.4f}"
        )
        for k, v in checks.items():
            target = TARGETS[k]
            ok = v <= target if k == "ece_after" else v >= target
            out.append(
                f"{k}={v:.3f}  ({'<=' if k == 'ece_after' else '>='} {target:g}: {'ok' if ok else 'MISSED'})"
            )
        return out


def open_set_report(
    open_set, model_labels: list[str], scores: np.ndarray, kinds: list[tuple[str, int]]
) -> OpenSetReport:
    """The figures from every window's calibrated scores and its kind (a motion or a family)."""
    labels = list(model_labels)
    none = labels.index(open_set.none_label)
    kind = np.array([k for k, _ in kinds])
    is_motion = np.isin(kind, clips.LABELS)
    y = np.array([labels.index(k) if k in clips.LABELS else none for k in kind])
    decided = calibration.decide(scores, labels, open_set.none_label, open_set.reject_threshold)
    top_motion = calibration.motion_scores(scores, labels, open_set.none_label)
    in_dist = is_motion | np.isin(kind, clips.NONE_FAMILIES)
    ood = np.isin(kind, clips.OOD_FAMILIES)
    raw = calibration.uncalibrate(scores, open_set.temperature)
    families = [f for f in (*clips.NONE_FAMILIES, *clips.OOD_FAMILIES) if (kind == f).any()]
    m = is_motion
    return OpenSetReport(
        motions_top1=float((scores[m].argmax(1) == y[m]).mean()) if m.any() else float("nan"),
        motions_decided=float((decided[m] == y[m]).mean()) if m.any() else float("nan"),
        none_on_static=float((decided[kind == "static"] == none).mean())
        if (kind == "static").any()
        else float("nan"),
        ece_before=calibration.ece(raw[in_dist], y[in_dist]),
        ece_after=calibration.ece(scores[in_dist], y[in_dist]),
        auroc_ood=calibration.auroc(top_motion[m], top_motion[ood]),
        none_rate={f: float((decided[kind == f] == none).mean()) for f in families},
        auroc={f: calibration.auroc(top_motion[m], top_motion[kind == f]) for f in families},
        threshold=open_set.reject_threshold,
        temperature=open_set.temperature,
        counts={"motions": int(m.sum()), "in_distribution": int(in_dist.sum())}
        | {f: int((kind == f).sum()) for f in families},
    )


def evaluate(
    engine,
    spec: EvalSpec,
    distinct_frames: int | None = None,
    incremental: bool = True,
    jobs: int | None = None,
    progress: bool = False,
    open_set=None,
) -> EvalResult:
    """Motion accuracy (EvalResult) and, with `open_set` (the manifest's), its figures in
    `result.extra["open_set"]` (an OpenSetReport)."""
    meta = engine.metadata
    model_labels = list(meta.labels)
    missing = [lb for lb in spec.labels if lb not in model_labels]
    if missing:
        raise ValueError(f"model {meta.name} has no labels {missing}; it knows {model_labels}")
    if meta.image_size[0] != meta.image_size[1]:
        raise ValueError(f"eval renders square model input, model wants {meta.image_size}")
    if open_set is None:
        spec = dataclasses.replace(spec, static_n=0, none_n=0, ood_n=0)
    spec = dataclasses.replace(spec, num_frames=meta.num_frames, image_size=meta.image_size[0])
    jobs = jobs or min(2, os.cpu_count() or 1)
    windows, kinds = real_path_windows(spec, jobs=jobs, progress=progress)
    if distinct_frames is not None:
        windows = few_frame_windows(windows, distinct_frames)
    scores = window_scores(engine, windows, incremental=incremental)
    m = np.array([k in clips.LABELS for k, _ in kinds])
    y = np.array([spec.labels.index(k) for k, _ in kinds if k in clips.LABELS], np.int64)
    conf = confusion_of(spec.labels, model_labels, y, scores[m].argmax(1))
    extra_labels = [lb for lb in model_labels if lb not in spec.labels]
    other = extra_labels[0] if len(extra_labels) == 1 else "other"
    result = EvalResult(labels=spec.labels, confusion=conf, other=other)
    if open_set is not None:
        result.extra["open_set"] = open_set_report(open_set, model_labels, scores, kinds)
    return result
