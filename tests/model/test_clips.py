"""The clip generator: deterministic, labels that only motion tells apart, periodic forever."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    assert g.labels == clips.MODEL_LABELS
    none = clips.MODEL_LABELS.index(clips.NONE)
    assert sorted(y1.tolist()) == [0, 1, 2, 3, 4, 5, none, none]  # a quarter none, motions round robin
    _, y32 = g.batch(0, 32)
    assert np.bincount(y32, minlength=9).tolist() == [3] * 8 + [8]
    motions_only = GeneratedClips(seed=3, labels=clips.LABELS)
    assert sorted(motions_only.batch(5, 8)[1].tolist()) == list(range(8))  # balanced


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


def _family_draws(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [clips.sample_params(clips.NONE, rng).family for _ in range(n)]


def test_none_families_train_and_held_out_are_apart() -> None:
    assert not set(clips.NONE_FAMILIES) & set(clips.OOD_FAMILIES)
    assert set(clips.SCENE_FAMILIES) <= set(clips.NONE_FAMILIES)
    # `none` without a family draws only the training families, each of them.
    assert set(_family_draws(300, 0)) == set(clips.NONE_FAMILIES)
    # The training data never holds a held-out family, in any side of a cut either.
    g = GeneratedClips(seed=4)
    rng = np.random.default_rng(1)
    for _ in range(200):
        p = clips.sample_params(clips.NONE, rng, span=(0.0, 3.0))
        for q in (p, p.after):
            if q is not None:
                assert q.family in ("", *clips.NONE_FAMILIES) and not q.crowd and not q.shake_amp
                assert q.bg_kind != "texture" and len(set(q.light_amp)) == 1
    assert g.labels[-1] == clips.NONE
    with pytest.raises(ValueError, match="unknown none family"):
        clips.sample_none("fireworks", rng)


@pytest.mark.parametrize("family", clips.NONE_FAMILIES + clips.OOD_FAMILIES)
def test_none_families_render_deterministically(family: str) -> None:
    p = clips.sample_none(family, clips.family_rng(3, family, 0), span=(0.0, 3.0))
    a = clips.render_frames(p, 64, 64, np.arange(16) * 0.2, aspect=16 / 9)
    b = clips.render_frames(p, 64, 64, np.arange(16) * 0.2, aspect=16 / 9)
    assert a.shape == (16, 64, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert p.label == clips.NONE and p.family == family
    other = clips.sample_none(family, clips.family_rng(3, family, 1), span=(0.0, 3.0))
    assert not np.array_equal(a, clips.render_frames(other, 64, 64, np.arange(16) * 0.2, aspect=16 / 9))


def _quiet(p: clips.ClipParams) -> clips.ClipParams:
    return dataclasses.replace(p, noise_std=0.0, flicker=0.0)


def test_static_scenes_do_not_move_and_lighting_changes_only_brightness() -> None:
    t = np.arange(16) * 0.2
    for i in range(6):
        p = _quiet(clips.sample_none("static", clips.family_rng(1, "static", i)))
        assert p.grow == 0 and abs(p.vx) <= clips.DRIFT_MAX and abs(p.spin) <= clips.WOBBLE_MAX
        frames = clips.render_frames(p, 64, 64, t).astype(int)
        # At most the incidental drift: a few pixels in 3 s, never a labelled motion.
        assert np.abs(frames[-1] - frames[0]).mean() < 8
        lit = _quiet(clips.sample_none("lighting", clips.family_rng(1, "lighting", i)))
        gains = clips.light_gain(lit, t)
        assert gains is not None and np.ptp(gains) > 0.1  # the light changes within the window
        assert np.allclose(gains[:, 0], gains[:, 2])  # all channels alike: training's lighting
        steady = clips.render_frames(dataclasses.replace(lit, light_period=0.0), 64, 64, t)
        # The same picture in another light: its channels scale, pixels do not move.
        lit_frames = clips.render_frames(lit, 64, 64, t).astype(float)
        ratio = (lit_frames + 1) / (steady.astype(float) + 1)
        unclipped = (lit_frames < 250) & (steady < 250) & (steady > 40)
        per_frame = [np.median(ratio[k][unclipped[k]]) for k in range(16)]
        assert np.allclose(per_frame, gains[:, 0], rtol=0.05)
    colour = clips.sample_none("colour", clips.family_rng(1, "colour", 0))
    g = clips.light_gain(colour, t)
    assert g is not None and np.all(np.sign(np.log(g[:, 0])) == -np.sign(np.log(g[:, 2])))


def test_a_cut_shows_one_scene_then_the_other() -> None:
    t = np.arange(16) * 0.2
    p = clips.sample_none("cut", clips.family_rng(2, "cut", 0), span=(0.0, 3.0))
    assert p.after is not None and 0.0 < p.cut_time <= 3.0
    # Without noise (drawn per render call, so per side of the cut) the pixels must be each side's.
    p = dataclasses.replace(_quiet(p), after=_quiet(p.after))
    frames = clips.render_frames(p, 64, 64, t)
    before = clips.render_frames(dataclasses.replace(p, after=None), 64, 64, t)
    after = clips.render_frames(p.after, 64, 64, t)
    later = t >= p.cut_time
    assert later.any() and (~later).any()
    assert np.array_equal(frames[~later], before[~later])
    assert np.array_equal(frames[later], after[later])
    assert np.abs(before[later].astype(int) - after[later].astype(int)).mean() > 10  # another scene


def test_sequence_with_none_segments(tmp_path: Path) -> None:
    doc = clips.write_sequence(
        tmp_path / "s.mp4",
        [("none", 1.0), ("move_left", 1.0), ("none/sway", 1.0)],
        seed=3,
        width=64,
        height=36,
    )
    assert [(s["label"], s.get("family")) for s in doc["segments"]] == [
        ("none", "static"),
        ("move_left", None),
        ("none", "sway"),
    ]
    assert len(list(decode_file(tmp_path / "s.mp4", (36, 64)))) == 75
    assert clips.parse_sequence("none:2,none/texture:1.5") == [("none", 2.0), ("none/texture", 1.5)]
    for bad in ("none/cut:2", "none/fireworks:2", "jump:1"):
        with pytest.raises(ValueError, match="unknown label"):
            clips.parse_sequence(bad)


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


@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from([*clips.MODEL_LABELS, *clips.NONE_FAMILIES]))
@settings(max_examples=60, deadline=None)
def test_harden_keeps_the_content_and_draws_the_hard_corner(seed: int, kind: str) -> None:
    rng = np.random.default_rng(seed)
    p = (
        clips.sample_none(kind, rng, (0.0, 3.0))
        if kind in clips.NONE_FAMILIES
        else clips.sample_params(kind, rng)
    )
    h = clips.harden(p, rng)
    assert (h.label, h.family, h.shape, h.color) == (p.label, p.family, p.shape, p.color)
    assert clips.SIZE_MIN <= h.size0 <= clips.HARD_SIZE_MAX
    assert clips.HARD_NOISE[0] <= h.noise_std <= clips.HARD_NOISE[1] and h.bg_kind in ("stripes", "blobs")
    # A motion keeps its direction, at the slow end of its range; a none family keeps its change.
    slow = {
        "move": clips.SPEED_RANGE,
        "grow": clips.GROW_RANGE,
        "shri": clips.GROW_RANGE,
        "rota": clips.SPIN_RANGE,
    }
    if p.label in clips.LABELS:
        attr = {"move_left": "vx", "move_right": "vx", "move_up": "vy", "move_down": "vy"}.get(
            p.label, "grow" if p.label in ("grow", "shrink") else "spin"
        )
        lo, hi = slow[p.label[:4]]
        a, b = getattr(p, attr), getattr(h, attr)
        assert np.sign(a) == np.sign(b) and lo <= abs(b) <= lo + clips.HARD_SLOW * (hi - lo) + 1e-9
    else:
        assert (h.light_amp, h.blink, h.sway, h.cut_time) == (p.light_amp, p.blink, p.sway, p.cut_time)
        assert (h.spin, h.vx, h.vy) == (p.spin, p.vx, p.vy)
    if p.after is not None:
        assert h.after is not None and clips.SIZE_MIN <= h.after.size0 <= clips.HARD_SIZE_MAX


def test_hard_share_draws_hard_windows_and_zero_leaves_the_stream_alone() -> None:
    plain = GeneratedClips(seed=3)
    assert np.array_equal(plain.batch(2, 4)[0], GeneratedClips(seed=3, hard_share=0.0).batch(2, 4)[0])
    x_hard, y_hard = GeneratedClips(seed=3, hard_share=1.0).batch(2, 4)
    assert np.array_equal(y_hard, plain.batch(2, 4)[1])  # the same labels, other pixels
    assert not np.array_equal(x_hard, plain.batch(2, 4)[0])
