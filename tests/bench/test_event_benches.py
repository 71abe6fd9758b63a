"""The event benchmarks (issue 10, done-when 6 and 7): `vbw bench pipeline --events` and
`vbw bench events` run end to end with tiny arguments, so the commands cannot rot (no timing
asserts: the figures are in BENCHMARKS.md), and the time-to-event matching without threads."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vbw.bench.events import EventsBenchSpec, Motion, Start, match, motions_of, replay_starts, stream_segments
from worker.frames import Window
from worker.segmenter import Rule

REPO = Path(__file__).resolve().parents[2]


def _vbw(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vbw.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


# -- the commands, tiny -------------------------------------------------------------------------
@pytest.mark.e2e
def test_bench_events_runs_and_reports(tmp_path: Path, default_model_dir: Path) -> None:
    """One paced camera, one motion between two static stretches: the report and the JSON."""
    out = tmp_path / "events.json"
    r = _vbw(
        [
            "bench", "events", "--model", str(default_model_dir), "--streams", "1", "--motions", "1",
            "--motion-seconds", "5", "--static-seconds", "3", "3", "--per-event",
            "--cache", str(tmp_path / "cache"), "--json", str(out),
        ],
        timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "time to event (first frame of a motion -> start event acked)" in r.stdout
    assert "replayed through the segmenter" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["motions"] == 1
    assert doc["matched"] + len(doc["misses"]) == 1
    assert doc["rule"]["start_windows"] >= 1
    for t in doc["timings"]:  # what the split means holds whatever the machine's speed
        assert 0 < t["first_on"] <= t["triggered"] < t["total"]
        assert math.isclose(t["triggered"] + t["pipeline"], t["total"], abs_tol=1e-6)
    # the replay of the run's own rule is the run, up to the pipeline time it borrows
    own = doc["what_if"][0]
    assert own["rule"] == {} and own["matched"] == doc["matched"]
    assert len(doc["what_if"]) >= 3


@pytest.mark.e2e
def test_bench_pipeline_events_mode_runs_and_reports(tmp_path: Path, default_model_dir: Path) -> None:
    """The plain and the events live searches in one run, both in the report and the JSON."""
    out = tmp_path / "bench.json"
    r = _vbw(
        [
            "bench", "pipeline", "--events", "--model", str(default_model_dir), "--width", "320",
            "--height", "180", "--video-seconds", "8", "--rounds", "1", "--ceiling-seconds", "0.5",
            "--trial-seconds", "3", "--trial-warmup", "4", "--max-streams", "1",
            "--cache", str(tmp_path / "cache"), "--json", str(out),
        ],
        timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "streams sustained without drops" in r.stdout
    assert "with events, 2 zones per camera (3 streams each) and snapshots:" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["trials"] and doc["events"]["mode"] == "events" and doc["events"]["trials"]
    assert set(doc["events_ceilings"]) == {
        "decode",
        "encode_frames",
        "assemble",
        "encode_windows",
        "sink",
        "segmenter",
    }
    assert "snapshot" in doc["events_ceilings_native"]
    # 3 streams per camera: the events trial expects 3x the windows of a plain one
    ev = doc["events"]["trials"][0]
    assert ev["windows"] > 0 and ev["events"] >= 0 and ev["snapshots"] >= 0


def test_the_live_search_finds_the_largest_sustained_n_from_any_guess() -> None:
    from vbw.bench.pipeline import _search

    for cap in (0, 1, 5, 37, 64):
        for guess in (1, 4, 40, 64):
            g, tried = _search(guess, 64), []
            try:
                n = next(g)
                while True:
                    tried.append(n)
                    n = g.send(n <= cap)
            except StopIteration as stop:
                assert stop.value == cap, (cap, guess, tried)
            assert len(tried) == len(set(tried))  # no N twice


# -- matching, without threads ------------------------------------------------------------------
FPS, T, S = 5.0, 16, 4
HALF_SPAN = (T - 1) / FPS  # first to last frame of a window


def _start(sid: str, label: str, first_start: float, trigger_end: float, acked: float | None) -> Start:
    return Start(sid, label, first_start, first_start + HALF_SPAN, trigger_end, acked)


def test_match_times_each_motion_from_its_first_frame() -> None:
    motions = [Motion("c", "grow", 10.0, 16.0), Motion("c", "shrink", 22.0, 28.0)]
    offsets = {"c": 1000.0}  # capture time = 1000 + pts
    starts = [
        _start("c", "grow", 8.0, 12.0 + 0.8, 1000.0 + 12.8 + 0.05),  # first window ends at 11.0
        _start("c", "grow", 13.0, 16.0, 1000.0 + 16.1),  # the same motion again: not a false start
        _start("c", "move_left", 2.0, 6.0, 1000.0 + 6.1),  # in a static stretch: a false start
    ]
    out = match(motions, starts, offsets, FPS)
    assert out.motions == 2 and len(out.timings) == 1
    t = out.timings[0]
    assert t.label == "grow" and t.motion_start == 10.0
    assert math.isclose(t.first_on, 1.0) and math.isclose(t.triggered, 2.8)
    assert math.isclose(t.pipeline, 0.05, abs_tol=1e-9) and math.isclose(t.total, 2.85)
    assert t.motion_frames == 6  # frames at 10.0, 10.2, ... 11.0
    assert [m.label for m in out.misses] == ["shrink"]
    assert out.false_starts == 1
    assert math.isclose(out.pct(50), 2.85)


def test_match_borrows_the_pipeline_time_for_replayed_starts() -> None:
    out = match(
        [Motion("c", "grow", 10.0, 16.0)], [_start("c", "grow", 9.0, 13.0, None)], {"c": 50.0}, FPS, 0.25
    )
    assert math.isclose(out.timings[0].total, 3.25)


def test_a_start_of_another_stream_or_label_does_not_match() -> None:
    motions = [Motion("a", "grow", 10.0, 16.0)]
    starts = [_start("b", "grow", 10.0, 14.0, 0.0), _start("a", "shrink", 10.0, 14.0, 0.0)]
    out = match(motions, starts, {"a": 0.0, "b": 0.0}, FPS)
    assert not out.timings and out.false_starts == 2


def _windows(scores: list[float], sid: str = "c") -> list[tuple[Window, np.ndarray]]:
    out = []
    for k, sc in enumerate(scores):
        s = k * S
        w = Window(sid, k, s, s + T - 1, s / FPS, (s + T - 1) / FPS, T, True, 100.0 + (s + T - 1) / FPS)
        w.window_id = f"{sid}-{s}"
        out.append((w, np.array([sc, 1.0 - sc], np.float32)))
    return out


def test_replay_starts_at_the_kth_window_at_or_above_on() -> None:
    ws = _windows([0.1, 0.1, 0.7, 0.8, 0.9, 0.1, 0.1, 0.1])
    for k in (1, 2, 3):
        (st,) = replay_starts(ws, ["grow", "none"], {"grow": Rule(0.6, 0.4, k, 2)}, size=T, stride=S)
        first, trigger = ws[2][0], ws[1 + k][0]
        assert (st.first_start_pts, st.first_end_pts) == (first.start_pts, first.end_pts)
        assert st.trigger_end_pts == trigger.end_pts and st.acked is None


def test_timelines_have_every_label_and_known_motions() -> None:
    spec = EventsBenchSpec(model_dir=Path("unused"), streams=2, motions=4)
    segs = stream_segments(spec, 0) + stream_segments(spec, 1)
    labels = [lb for lb, _ in segs if lb != "none"]
    assert len(set(labels)) == 8  # 2 x 4 motions: each label once
    assert all(3.9 <= s <= 8.1 for lb, s in segs if lb == "none")
    doc = {
        "segments": [
            {"label": "none", "start": 0.0, "end": 5.0},
            {"label": "grow", "start": 5.0, "end": 11.0},
        ]
    }
    assert motions_of("c", doc) == [Motion("c", "grow", 5.0, 11.0)]
