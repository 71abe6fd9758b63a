"""Calibration and open-set figures, in numpy: temperature scaling, ECE, AUROC, the reject rule.

Pure functions over score or logit arrays, shared by training (which fits the temperature and
the reject threshold on held-out windows) and `vbw eval` (which reports them on fresh clips).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ECE_BINS = 15  # equal-width confidence bins, as in Guo et al. 2017


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of labels `y` under softmax(logits / temperature)."""
    lp = log_softmax(np.asarray(logits, np.float64) / temperature)
    return float(-lp[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray, lo: float = 0.05, hi: float = 20.0) -> float:
    """The temperature minimising NLL on held-out (logits, labels): golden-section on log T.

    NLL is convex in 1/T for softmax, so one minimum; 60 steps narrow log T to ~1e-12.
    """
    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(logits, y, math.exp(c)), nll(logits, y, math.exp(d))
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(logits, y, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(logits, y, math.exp(d))
    return math.exp((a + b) / 2)


def uncalibrate(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax scores before temperature scaling, from the calibrated ones.

    log p = logits / T - log Z, so softmax(T * log p) = softmax(logits). Exact up to float
    rounding; a score that underflowed to 0 stays 0.
    """
    with np.errstate(divide="ignore"):
        lp = np.log(np.asarray(scores, np.float64))
    return softmax(np.where(np.isfinite(lp), lp * temperature, -np.inf))


def ece(scores: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top-1 score: sum over bins of |accuracy - confidence|,
    weighted by the share of windows in the bin."""
    conf = scores.max(axis=1)
    right = scores.argmax(axis=1) == y
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(right[m].mean() - conf[m].mean())
    return float(total)


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve of telling `positive` scores from `negative` ones (higher =
    positive): the chance a random positive outscores a random negative, ties counting half
    (Mann-Whitney U from midranks)."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if not len(pos) or not len(neg):
        return float("nan")
    both = np.concatenate([pos, neg])
    order = np.argsort(both, kind="stable")
    ranks = np.empty(len(both))
    sorted_vals = both[order]
    # Midranks: tied values share the mean of their ranks.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_vals)) + 1]
    ends = np.r_[starts[1:], len(both)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def motion_scores(scores: np.ndarray, labels: Sequence[str], none_label: str) -> np.ndarray:
    """Each window's top score among the motions (every label but `none_label`): what the reject
    rule compares with its threshold, and what AUROC ranks."""
    keep = [i for i, lb in enumerate(labels) if lb != none_label]
    return scores[:, keep].max(axis=1)


def decide(scores: np.ndarray, labels: Sequence[str], none_label: str, threshold: float) -> np.ndarray:
    """Open-set decision per window, as label indices: the top label, but `none` when that is not
    a motion scoring at least `threshold` (engines.manifest.OpenSet.decide, vectorised)."""
    none = list(labels).index(none_label)
    top = scores.argmax(axis=1)
    reject = (top == none) | (scores[np.arange(len(scores)), top] < threshold)
    return np.where(reject, none, top)


def choose_threshold(
    scores: np.ndarray, y: np.ndarray, labels: Sequence[str], none_label: str, grid: float = 0.01
) -> float:
    """The reject threshold that maximises balanced open-set accuracy on held-out windows: the
    mean of the motions' accuracy and the `none` windows' none rate. Ties: the middle of the
    best run of thresholds."""
    none = list(labels).index(none_label)
    is_none = y == none
    ts = np.round(np.arange(0.0, 1.0, grid), 6)
    acc = []
    for t in ts:
        d = decide(scores, labels, none_label, float(t))
        motion_acc = (d[~is_none] == y[~is_none]).mean() if (~is_none).any() else 1.0
        none_rate = (d[is_none] == none).mean() if is_none.any() else 1.0
        acc.append((motion_acc + none_rate) / 2)
    acc_arr = np.asarray(acc)
    best = np.flatnonzero(acc_arr >= acc_arr.max() - 1e-12)
    # The longest run of consecutive best thresholds, then its middle.
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
    run = max(runs, key=len)
    return float(ts[run[len(run) // 2]])
