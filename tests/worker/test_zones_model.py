"""Issue 10, done-when 4: motion in one quadrant of a scene gives its label in the zone that covers
it and `none` in the other zones.

A real `vbw run` with the shipped model reads generated H.264 clips (640x360): a still scene with
a motion clip composed into one quadrant. Each source has four quadrant zones, so each zone is a
stream of its own (`cam/tl` ...), cut from one decode per frame. The composed quadrant is the
motion clip as rendered at 320x180, the size the model's training clips are rendered at, so the
zone sees what the model was trained on, and the other zones see a still scene.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
from worker_helpers import metric_value

from media.clips import NONE, ClipParams, clip_rng, render_frames, sample_params, write_mp4

W, H = 640, 360
FPS = 10.0
SECONDS = 9.6  # 48 frames at the sampled 5 fps: 9 complete windows of 16, stride 4
QUADRANTS = {"tl": (0, 0), "tr": (1, 0), "bl": (0, 1), "br": (1, 1)}  # name -> (column, row)
# (camera, quadrant with the motion, its label): two cameras, so one run covers two quadrants.
CASES = [("cam-a", "tr", "rotate_cw"), ("cam-b", "bl", "move_left")]


def still_scene(rng: np.random.Generator) -> ClipParams:
    """A scene where nothing moves: the generator's `static` family without even its incidental
    drift (a zone is half the frame, so a drift would look twice as fast there)."""
    return dataclasses.replace(sample_params(NONE, rng, family="static"), vx=0.0, vy=0.0, spin=0.0)


def quadrant_clip(path: Path, quadrant: str, label: str, seed: int) -> None:
    """A still 640x360 scene with a `label` clip (rendered at 320x180) in one quadrant."""
    times = np.arange(round(SECONDS * FPS)) / FPS
    scene = render_frames(still_scene(clip_rng(seed, 0)), W, H, times)
    motion = render_frames(sample_params(label, clip_rng(seed, 1)), W // 2, H // 2, times)
    col, row = QUADRANTS[quadrant]
    scene[:, row * H // 2 : (row + 1) * H // 2, col * W // 2 : (col + 1) * W // 2] = motion
    write_mp4(scene, path, FPS, crf=18)


def quadrant_zones() -> list[dict]:
    return [
        {"name": n, "rect": [c * 0.5, r * 0.5, c * 0.5 + 0.5, r * 0.5 + 0.5]}
        for n, (c, r) in QUADRANTS.items()
    ]


def test_motion_in_one_quadrant_is_named_in_its_zone_and_none_elsewhere(
    default_model_dir: Path, worker_proc, tmp_path: Path
):
    labels = json.loads((default_model_dir / "model.json").read_text())["labels"]
    assert NONE in labels, f"the shipped model has no {NONE} class: {labels}"
    sources = []
    for i, (cam, quadrant, label) in enumerate(CASES):
        path = tmp_path / f"{cam}.mp4"
        quadrant_clip(path, quadrant, label, seed=9100 + i)
        sources.append(
            {"type": "file", "id": cam, "path": str(path), "loop": True, "zones": quadrant_zones()}
        )
    out = tmp_path / "windows.jsonl"
    snaps = tmp_path / "snapshots"
    w = worker_proc(
        {
            "sources": sources,
            "sampling": {"fps": 5},
            "windows": {"stride": 4},
            "engine": {"model_dir": str(default_model_dir)},
            "sinks": [{"type": "jsonl", "path": str(out)}],
            "snapshots": {"enabled": True, "dir": str(snaps)},
        },
        out,
    )
    w.wait_ready()
    streams = [f"{cam}/{q}" for cam, _, _ in CASES for q in QUADRANTS]

    def first_loop_done() -> bool:
        per = Counter(d["stream_id"] for d in w.windows() if d["complete"] and d["end_seq"] < 48)
        return all(per[s] >= 9 for s in streams)

    w.wait_for(first_loop_done, 120, "9 complete windows of every zone stream")
    text = w.metrics()
    for s in streams:  # metrics use the zone stream id
        assert metric_value(text, "vbw_windows_emitted_total", stream=s) >= 9, s
        assert metric_value(text, "vbw_stream_up", stream=s) == 1, s
    assert metric_value(text, "vbw_frames_received_total", stream="cam-a") == 0  # no whole-frame stream
    rc, _ = w.sigterm(60)
    assert rc == 0, w.stderr()[-3000:]

    top: dict[str, Counter] = {s: Counter() for s in streams}
    for d in w.windows():
        if d["complete"] and d["end_seq"] < 48:  # the first pass over each clip
            top[d["stream_id"]][d["labels"][0]["label"]] += 1
    report = {s: dict(c) for s, c in top.items()}
    print(f"top-1 per zone stream over the first pass: {report}")
    for cam, quadrant, label in CASES:
        got = top[f"{cam}/{quadrant}"]
        assert got[label] >= 0.8 * sum(got.values()), f"{cam}/{quadrant} should read {label}: {report}"
        for q in QUADRANTS:
            if q != quadrant:
                other = top[f"{cam}/{q}"]
                assert other[NONE] >= 0.8 * sum(other.values()), f"{cam}/{q} should read {NONE}: {report}"
