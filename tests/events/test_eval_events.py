"""`vbw eval-events`: the scoring (IoU matching, F1, boundary errors), the generated timelines, and
the command end to end on short clips with the shipped model."""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
import pytest

from vbw.eval_events import Seg, configure, iou, make_timeline, match, run, score, segments_of


def test_iou_and_one_to_one_matching_of_the_same_label():
    t = [Seg("a", 0, 10), Seg("b", 12, 20)]
    assert iou(Seg("a", 0, 10), Seg("a", 5, 15)) == pytest.approx(5 / 15)
    # two predictions overlap the first truth: only the better one matches; another label never does
    p = [Seg("a", 1, 10), Seg("a", 0, 6), Seg("a", 12, 20)]
    assert match(t, p) == [(t[0], p[0])]


def test_score_pools_clips_and_measures_boundaries():
    truth = {"c1": [Seg("a", 0, 10), Seg("b", 20, 30)], "c2": [Seg("a", 5, 9)]}
    pred = {"c1": [Seg("a", 0.5, 9.0), Seg("b", 21, 30), Seg("c", 40, 45)], "c2": []}
    r = score(truth, pred)
    assert (r["true_segments"], r["predicted_segments"], r["matched"]) == (3, 3, 2)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 / 3)
    # errors 0.5, 1.0 (starts) and 1.0, 0.0 (ends)
    assert r["boundary_error_median_s"] == pytest.approx(0.75)
    assert r["start_error_median_s"] == pytest.approx(0.75) and r["end_error_median_s"] == pytest.approx(0.5)


def test_segments_come_from_end_events():
    events = [
        {"type": "start", "stream_id": "c1", "label": "a", "start_pts": 1.0, "end_pts": 2.0},
        {"type": "end", "stream_id": "c1", "label": "a", "start_pts": 1.0, "end_pts": 7.5},
    ]
    assert segments_of(events) == {"c1": [Seg("a", 1.0, 7.5)]}


def test_timelines_alternate_and_never_repeat_a_neighbour():
    rng = np.random.default_rng(3)
    segs = make_timeline(rng, 5.0, ("left", "right", "up"))
    assert sum(s for _, s in segs) >= 300
    assert all(a[0] != b[0] for a, b in itertools.pairwise(segs))
    assert any(lb.startswith("none/") for lb, _ in segs) and any(not lb.startswith("none") for lb, _ in segs)


def test_the_command_runs_the_pipeline_and_reports(default_model_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    configure(parser)
    cfg = tmp_path / "worker.yaml"
    cfg.write_text("events: {default: {on_threshold: 0.7, off_threshold: 0.5}}\nwindows: {stride: 4}\n")
    args = parser.parse_args(
        [
            "--model", str(default_model_dir), "-c", str(cfg), "--clips", "1", "--minutes", "0.5",
            "--static-minutes", "0.25", "--threads", "1", "--work", str(tmp_path / "work"),
            "--json", str(tmp_path / "report.json"),
        ]
    )  # fmt: skip
    assert run(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["true_segments"] >= 2 and report["rules"]["default"]["on_threshold"] == 0.7
    assert 0.0 <= report["f1"] <= 1.0 and isinstance(report["static_events"], int)
    assert isinstance(report["static_drift_events"], int) and set(report["static_drift"]) == {
        "vx",
        "vy",
        "spin",
    }
    assert report["stride_s"] == pytest.approx(0.8)
    assert "F1" in capsys.readouterr().out
    assert (tmp_path / "work" / "events.jsonl").is_file()
