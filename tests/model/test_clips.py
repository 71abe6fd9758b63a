"""The clip generator: deterministic, labels that only motion tells apart, periodic forever."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from build_engine.datasets import (
    GeneratedClips,
    analysis_times,
    decode_analysis_frames,
    sample_analysis_frames,
)
from media import clips
from media.decode import decode_file


def test_render_is_deterministic_for_a_seed() -> None:
    for i, label in enumerate(clips.LABELS):
        a = clips.render_clip(label, clips.clip_rng(7, i), 64, 64, 16, 5.0, aspect=16 / 9)
        b = clips.render_clip(label, clips.clip_rng(7, i), 64, 64, 16, 5.0, aspect=16 / 9)
        assert a.dtype == np.uint8 and a.shape == (16, 64, 64, 3)
        assert np.array_equal(a, b)
    other = clips.render_clip(clips.LABELS[0], clips.clip_rng(8, 0), 64, 64, 16, 5.0)
    assert not np.array_equal(
        other, clips.render_clip(clips.LABELS[0], clips.clip_rng(7, 0), 64, 64, 16, 5.0)
    )


def test_generated_batches_are_indexed() -> None:
    g = GeneratedClips(seed=3)
    x1, y1 = g.batch(5, 8)
    x2, y2 = g.batch(5, 8)
    assert x1.shape == (8, 16, 64, 64, 3) and np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert sorted(y1.tolist()) == list(range(8))  # balanced


def test_gen_clips_writes_identical_video_for_a_seed(tmp_path: Path) -> None:
    from vbw.cli import main

    for run in ("a", "b"):
        assert (
            main(["gen-clips", "--out", str(tmp_path / run), "--n", "3", "--seed", "11", "--frames", "20"])
            == 0
        )
    recs = [json.loads(line) for line in (tmp_path / "a" / "labels.jsonl").read_text().splitlines()]
    assert [r["label"] for r in recs] == list(clips.LABELS[:3])
    for r in recs:
        fa = [f for _, f in decode_file(tmp_path / "a" / r["file"], (64, 64))]
        fb = [f for _, f in decode_file(tmp_path / "b" / r["file"], (64, 64))]
        assert len(fa) == 20 and all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))


def test_mp4_round_trip_keeps_the_picture(tmp_path: Path) -> None:
    # Without camera noise, which H.264 rightly throws away, the picture must come back close.
    params = dataclasses.replace(clips.sample_params("rotate_cw", clips.clip_rng(1, 0)), noise_std=0.0)
    frames = clips.render_clip(params, 0, 320, 180, 30, 25.0)
    clips.write_mp4(frames, tmp_path / "c.mp4", 25.0)
    decoded = list(decode_file(tmp_path / "c.mp4", (180, 320)))
    assert len(decoded) == 30
    pts = [t for t, _ in decoded]
    assert pts == pytest.approx(np.arange(30) / 25.0)
    err = np.abs(np.stack([f for _, f in decoded]).astype(int) - frames.astype(int)).mean()
    assert err < 4, f"H.264 round trip mean abs error {err:.1f}"
    with pytest.raises(ValueError, match="even"):
        clips.write_mp4(frames[:, :179], tmp_path / "odd.mp4", 25.0)


def test_in_memory_frames_look_like_decoded_video(tmp_path: Path) -> None:
    """Rendering straight at 64x64 (aspect squashed) matches 320x180 -> H.264 -> decode -> 64x64."""
    errs = []
    for i, label in enumerate(clips.LABELS):
        params = clips.sample_params(label, clips.clip_rng(5, i))
        big = clips.render_clip(params, 0, 320, 180, 10, 25.0)
        clips.write_mp4(big, tmp_path / f"{i}.mp4", 25.0)
        _, real = decode_analysis_frames(tmp_path / f"{i}.mp4", 64, None)
        small = clips.render_clip(params, 0, 64, 64, 10, 25.0, aspect=320 / 180)
        errs.append(np.abs(real.astype(int) - small.astype(int)).mean())
    # Mostly camera noise (independent draws) plus colour conversion; objects line up.
    assert max(errs) < 10, errs


def _wrapped_steps(v: np.ndarray) -> np.ndarray:
    return (np.diff(v) + 0.5) % 1.0 - 0.5


@pytest.mark.parametrize("label", clips.LABELS)
def test_label_holds_over_a_long_clip(label: str) -> None:
    """Sampled at 5 fps for two minutes, every step still shows the label's motion."""
    t = np.arange(0, 120, 0.2)
    for i in range(5):
        p = clips.sample_params(label, clips.clip_rng(21, i))
        x, y, size, angle = clips.object_state(p, t)
        dx, dy = _wrapped_steps(x), _wrapped_steps(y)
        dlog = np.diff(np.log(size))
        dang = np.diff(angle)
        if label.startswith("move_"):
            main, side = (dx, dy) if label in ("move_left", "move_right") else (dy, dx)
            sign = 1 if label in ("move_right", "move_down") else -1
            assert np.all(sign * main > 0.02) and np.all(np.abs(side) < 0.01)
            assert np.allclose(dlog, 0)
        elif label in ("grow", "shrink"):
            sign = 1 if label == "grow" else -1
            steady = sign * dlog > 0
            # A sawtooth: gradual change every step except the resets, at most one in 5 steps.
            assert steady.mean() > 0.8
            assert np.all(np.abs(dlog[steady]) < 0.15)
        else:
            sign = 1 if label == "rotate_cw" else -1
            assert np.all(sign * dang > math.radians(60) * 0.2 * 0.99)
            assert np.allclose(dlog, 0)


def test_every_class_moves_differently_from_the_same_start() -> None:
    """Same appearance, different label -> the first frame agrees, later frames do not."""
    base = clips.sample_params("grow", clips.clip_rng(2, 0))
    rendered = {}
    for label in clips.LABELS:
        p = clips.sample_params(label, clips.clip_rng(2, 0))
        # Same appearance as `base`, this label's motion.
        q = type(base)(
            **{**base.__dict__, "label": label, "vx": p.vx, "vy": p.vy, "grow": p.grow, "spin": p.spin}
        )
        rendered[label] = clips.render_frames(q, 64, 64, np.arange(5) * 0.2)
    firsts = [r[0].astype(int) for r in rendered.values()]
    assert all(np.abs(f - firsts[0]).mean() < 8 for f in firsts)  # noise only
    lasts = {k: r[1:].astype(int) for k, r in rendered.items()}
    for a in clips.LABELS:
        for b in clips.LABELS:
            if a < b:
                assert np.abs(lasts[a] - lasts[b]).mean() > 1.0, (a, b)


def test_single_frame_statistics_do_not_name_the_class() -> None:
    """Object size and position at a random instant are spread alike in every class."""
    rng = np.random.default_rng(0)
    for label in clips.LABELS:
        sizes, xs = [], []
        for _ in range(300):
            p = clips.sample_params(label, rng)
            x, _, size, _ = clips.object_state(p, np.array([rng.uniform(0, 60)]))
            sizes.append(math.log(size[0]))
            xs.append(x[0])
        lo, hi = math.log(clips.SIZE_MIN), math.log(clips.SIZE_MAX)
        assert abs(np.mean(sizes) - (lo + hi) / 2) < 0.06, label
        assert abs(np.mean(xs) - 0.5) < 0.06, label


def test_sequence_video_and_timeline(tmp_path: Path) -> None:
    from vbw.cli import main

    out = tmp_path / "demo.mp4"
    assert main(["gen-clips", "--out", str(out), "--sequence", "move_left:1,grow:0.6"]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    assert [s["label"] for s in doc["segments"]] == ["move_left", "grow"]
    assert doc["segments"][1]["start"] == 1.0 and doc["segments"][1]["end_frame"] == 40
    assert len(list(decode_file(out, (64, 64)))) == 40
    assert main(["gen-clips", "--out", str(out), "--sequence", "fly:2"]) == 2


def test_sampler_and_analysis_times() -> None:
    assert sample_analysis_frames(np.arange(12) / 25, 5.0) == [0, 5, 10]
    t = analysis_times(np.random.default_rng(0), 16, 6.0, 25.0)
    steps = np.round(np.diff(t) * 25).astype(int)
    assert len(t) == 16 and set(steps) <= {4, 5}
    assert np.allclose(np.diff(analysis_times(np.random.default_rng(0), 16, 5.0, None)), 0.2)
