"""RTSP end to end with real GStreamer RTSP servers serving generated labelled clips, the shipped
model through ONNX Runtime, and `vbw run` as a real process."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import pytest
from services.rtsp_server import RtspServer
from worker_helpers import accuracy_at_least, metric_value

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
FPS = 5.0
T = 16
STRIDE = 4


def rtsp_source(sid: str, url: str) -> dict:
    return {
        "type": "rtsp",
        "id": sid,
        "url": url,
        "open_timeout_s": 5,
        "read_timeout_s": 2,
        "stall_timeout_s": 3,
        "reconnect": {"initial_s": 0.3, "max_s": 1.5},
    }


def test_rtsp_streams_to_jsonl_labelled_right(
    tmp_path, rtsp_ok, all_label_clips, default_model_dir, worker_proc
):
    """One stream per label, 8 at once, so that one hard clip does not decide the figure."""
    labelled_clips = all_label_clips
    out = tmp_path / "out.jsonl"
    with RtspServer(labelled_clips, log_path=tmp_path / "rtsp.log") as srv:
        w = worker_proc(
            {
                "sources": [rtsp_source(label, srv.url(label)) for label in labelled_clips],
                "sampling": {"fps": FPS},
                "windows": {"stride": STRIDE},
                "engine": {"model_dir": str(default_model_dir)},
                "sinks": [{"type": "jsonl", "path": str(out)}],
            },
            jsonl=out,
        )
        w.wait_ready()

        def enough() -> bool:
            docs = w.windows()
            return all(
                sum(d["stream_id"] == lb and d["complete"] for d in docs) >= 12 for lb in labelled_clips
            )

        w.wait_for(enough, 90, "12 complete windows per stream")
        rc, _ = w.sigterm(timeout=30)
    assert rc == 0, w.stderr()
    docs = w.windows()
    validator = jsonschema.Draft202012Validator(
        json.loads((REPO / "schemas" / "vbw.window.v1.json").read_text()),
        format_checker=jsonschema.FormatChecker(),  # date-time really checked (rfc3339-validator)
    )
    for d in docs:
        validator.validate(d)
    complete = [d for d in docs if d["complete"]]
    assert {d["stream_id"] for d in complete} == set(labelled_clips)
    right = sum(d["labels"][0]["label"] == d["stream_id"] for d in complete)
    per_stream = {
        lb: (
            sum(d["labels"][0]["label"] == lb for d in complete if d["stream_id"] == lb),
            sum(d["stream_id"] == lb for d in complete),
        )
        for lb in labelled_clips
    }
    print(f"top-1 right in {right}/{len(complete)} complete windows: {per_stream}")
    assert "Traceback" not in w.stderr()
    accuracy_at_least(
        right / len(complete), 0.9, f"top-1 right in {right}/{len(complete)} windows: {per_stream}"
    )


def test_reconnect_after_server_restart_while_others_go_on(
    tmp_path, rtsp_ok, labelled_clips, default_model_dir, worker_proc
):
    a_clip, b_clip, c_clip = labelled_clips.values()
    out = tmp_path / "out.jsonl"
    srv_a = RtspServer({"cam-a": a_clip}, log_path=tmp_path / "rtsp-a.log")
    srv_b = RtspServer({"cam-b": b_clip, "cam-c": c_clip}, log_path=tmp_path / "rtsp-b.log")
    srv_a.start()
    srv_b.start()
    try:
        w = worker_proc(
            {
                "sources": [
                    rtsp_source("cam-a", srv_a.url("cam-a")),
                    rtsp_source("cam-b", srv_b.url("cam-b")),
                    rtsp_source("cam-c", srv_b.url("cam-c")),
                ],
                "sampling": {"fps": FPS},
                "windows": {"stride": STRIDE, "partial": "pad"},
                "engine": {"model_dir": str(default_model_dir)},
                "sinks": [{"type": "jsonl", "path": str(out)}],
            },
            jsonl=out,
        )
        w.wait_ready()

        def count(sid: str, after: float = 0.0) -> int:
            return sum(d["stream_id"] == sid and d["capture_time"] > after for d in w.windows())

        w.wait_for(lambda: all(count(s) >= 2 for s in ("cam-a", "cam-b", "cam-c")), 60, "first windows")
        reconnects_before = metric_value(w.metrics(), "vbw_stream_reconnects_total", stream="cam-a")
        t_kill = time.time()
        srv_a.stop(sig_kill=True)
        w.wait_for(lambda: metric_value(w.metrics(), "vbw_stream_up", stream="cam-a") == 0, 10, "cam-a down")
        time.sleep(max(0.0, t_kill + 5.0 - time.time()))
        srv_a.start()
        t_restart = time.time()
        w.wait_for(lambda: count("cam-a", after=t_restart) >= 2, 60, "cam-a windows after the restart")
        text = w.metrics()
        rc, _ = w.sigterm(timeout=30)
    finally:
        srv_a.stop()
        srv_b.stop()
    assert rc == 0, w.stderr()
    assert metric_value(text, "vbw_stream_reconnects_total", stream="cam-a") > reconnects_before
    assert metric_value(text, "vbw_stream_up", stream="cam-a") == 1

    docs = w.windows()
    span_max = (T - 1) / FPS + 1.0  # a window spanning the 5 s outage would be far longer
    for d in docs:
        assert d["end_pts"] - d["start_pts"] <= span_max, d
        if d["complete"]:
            assert d["end_seq"] - d["start_seq"] == T - 1, d
    a = [d for d in docs if d["stream_id"] == "cam-a"]
    for d in a:  # each cam-a window lies wholly before the kill or wholly after the restart
        start_wall = d["capture_time"] - (d["end_pts"] - d["start_pts"])
        assert d["capture_time"] <= t_kill + 0.5 or start_wall >= t_restart - 0.5, d
    # the other streams, on the other server, kept producing through the outage
    for sid in ("cam-b", "cam-c"):
        during = [d for d in docs if d["stream_id"] == sid and t_kill + 0.5 < d["capture_time"] < t_restart]
        assert len(during) >= 3, f"{sid}: {len(during)} windows during the outage"
    assert "Traceback" not in w.stderr()
