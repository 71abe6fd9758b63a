"""`vbw eval --zero-shot`: the text side of a model on fresh generated clips.

- zero-shot: clips of the (motion, shape, colour) combinations no training caption had
  (captions.HELD_OUT_COMBOS); one prompt per combination ("a red key moves left"); a window is
  right when its best-matching prompt is its own combination. The closed-set classifier's
  motions top-1 on the same clips is reported beside it (it must not suffer from the text side).
- retrieval: held-out clips (every motion, a seed of their own), one generated caption per
  clip as the query; recall@5 = share of queries with a relevant window among the 5 best.
  Relevant = shows the caption's motion (what the window embedding is trained to carry); the
  stricter (motion, shape, colour) recall is reported too.
- window-to-window mAP: each window as the query, the others ranked by cosine, relevant =
  same motion.

Clips are rendered in memory at model size with the training augmentation (blur, contrast,
quantisation) standing in for compression, not through mp4 as the label eval does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from build_engine import captions

TARGETS = {"zero_shot_top1": 0.85, "closed_set_motions_top1": 0.95, "recall_at_5": 0.9}
EVAL_STREAM = 0x2E5A  # seed-stream tag: never the training streams


@dataclass
class TextReport:
    zero_shot_top1: float
    closed_set_motions_top1: float
    zero_shot_clips: int
    recall_at_5: float
    recall_at_5_attributes: float
    window_map: float
    retrieval_clips: int
    per_combo: dict[str, float]

    def lines(self) -> list[str]:
        out = [
            f"zero-shot: top-1 {self.zero_shot_top1:.3f} among {len(captions.HELD_OUT_COMBOS)} prompts of "
            f"held-out (motion, shape, colour) combinations ({self.zero_shot_clips} clips); "
            f"closed-set classifier motions top-1 {self.closed_set_motions_top1:.3f} on the same clips",
        ]
        out += [f"  {k}: {v:.3f}" for k, v in self.per_combo.items()]
        out.append(
            f"retrieval: text-to-window recall@5 {self.recall_at_5:.3f} (same motion), "
            f"{self.recall_at_5_attributes:.3f} (same motion, shape and colour); "
            f"window-to-window mAP {self.window_map:.3f} ({self.retrieval_clips} held-out clips)"
        )
        for k, want in TARGETS.items():
            got = getattr(self, k)
            out.append(f"  target {k} >= {want}: {'PASS' if got >= want else 'FAIL'} ({got:.3f})")
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def _windows(engine, x: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    parts = [engine.infer_windows(x[i : i + batch]) for i in range(0, len(x), batch)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def average_precision(relevant: np.ndarray) -> float:
    """AP of one ranking given as relevance flags in rank order."""
    if not relevant.any():
        return 0.0
    hits = np.cumsum(relevant)
    return float((hits / np.arange(1, len(relevant) + 1))[relevant].mean())


def window_map(emb: np.ndarray, keys: list[str]) -> float:
    k = np.asarray(keys)
    sims = emb @ emb.T
    aps = []
    for i in range(len(emb)):
        order = np.argsort(-sims[i])
        order = order[order != i]
        aps.append(average_precision(k[order] == k[i]))
    return float(np.mean(aps))


def zero_shot(engine, clips_per_combo: int, seed: int) -> tuple[float, float, int, dict[str, float]]:
    m = engine.metadata
    combos = captions.HELD_OUT_COMBOS
    gen = captions.CaptionedClips(
        seed=(EVAL_STREAM, seed, 0), num_frames=m.num_frames, image_size=m.image_size[0], only=combos
    )
    xs, attrs = [], []
    n = clips_per_combo * len(combos)
    for i in range(0, n, 32):
        x, a = gen.batch(i // 32, min(32, n - i))
        xs.append(x)
        attrs += a
    scores, emb = _windows(engine, np.concatenate(xs))
    prompts = engine.encode_text([captions.combo_caption(c) for c in combos])
    got = (emb @ prompts.T).argmax(1)
    truth = np.array([combos.index(a.combo) for a in attrs])
    labels = list(m.labels)
    motion_y = np.array([labels.index(a.motion) for a in attrs])
    per = {captions.combo_caption(c): float((got[truth == j] == j).mean()) for j, c in enumerate(combos)}
    return float((got == truth).mean()), float((scores.argmax(1) == motion_y).mean()), len(attrs), per


def retrieval(engine, n: int, seed: int) -> tuple[float, float, float]:
    m = engine.metadata
    gen = captions.CaptionedClips(
        seed=(EVAL_STREAM, seed, 1), num_frames=m.num_frames, image_size=m.image_size[0], none_share=0.0
    )
    xs, attrs = [], []
    for i in range(0, n, 32):
        x, a = gen.batch(i // 32, min(32, n - i))
        xs.append(x)
        attrs += a
    _, emb = _windows(engine, np.concatenate(xs))
    rng = np.random.default_rng([EVAL_STREAM, seed, 2])
    queries = engine.encode_text([captions.caption(a, rng) for a in attrs])
    top5 = np.argsort(-(queries @ emb.T), axis=1)[:, :5]
    motion = np.array([a.motion for a in attrs])
    combo = np.array(["/".join(a.combo) for a in attrs])
    r_motion = float((motion[top5] == motion[:, None]).any(1).mean())
    r_attr = float((combo[top5] == combo[:, None]).any(1).mean())
    return r_motion, r_attr, window_map(emb, list(motion))


def evaluate_text(
    engine, clips_per_combo: int = 40, retrieval_clips: int = 256, seed: int = 2000
) -> TextReport:
    zs, closed, n_zs, per = zero_shot(engine, clips_per_combo, seed)
    r5, r5_attr, mean_ap = retrieval(engine, retrieval_clips, seed)
    return TextReport(zs, closed, n_zs, r5, r5_attr, mean_ap, retrieval_clips, per)
