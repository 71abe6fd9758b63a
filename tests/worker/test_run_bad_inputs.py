"""`vbw run` as a real process: bad inputs give one-line errors and counters while the good stream
goes on, and SIGTERM exits 0 within the grace with every completed window in the JSONL."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from services.procs import free_port
from worker_helpers import metric_value

pytestmark = pytest.mark.e2e


def _truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def test_bad_inputs_are_counted_and_the_good_stream_goes_on(
    tmp_path, labelled_clips, tiny_model_dir, worker_proc
):
    good = labelled_clips["move_left"]
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(range(256)) * 400)
    truncated = _truncate(good, tmp_path / "truncated.mp4", 0.5)  # moov atom at the end: lost
    sources = [
        {"type": "file", "id": "good", "path": str(good)},
        {"type": "file", "id": "garbage", "path": str(garbage)},
        {"type": "file", "id": "missing", "path": str(tmp_path / "nope.mp4")},
        {"type": "file", "id": "truncated", "path": str(truncated)},
        {
            "type": "rtsp",
            "id": "refused",
            "url": f"rtsp://admin:s3cret@127.0.0.1:{free_port()}/cam?token=abc",
            "open_timeout_s": 2,
            "reconnect": {"initial_s": 0.2, "max_s": 1},
        },
    ]
    if shutil.which("ffmpeg"):  # moov first: the file opens, then the data runs out mid-stream
        fast = tmp_path / "faststart.mp4"
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-y",
                "-i",
                str(good),
                "-c",
                "copy",
                "-movflags",
                "+faststart",
                str(fast),
            ],
            check=True,
            timeout=60,
        )
        sources.append(
            {"type": "file", "id": "cut-mid", "path": str(_truncate(fast, tmp_path / "cut.mp4", 0.4))}
        )
    out = tmp_path / "out.jsonl"
    w = worker_proc(
        {
            "sources": sources,
            "engine": {"model_dir": str(tiny_model_dir)},
            "sinks": [{"type": "jsonl", "path": str(out)}],
        },
        jsonl=out,
    )
    w.wait_ready()
    # 16 s at 5 fps = 80 frames; T=8, stride 4 -> 19 complete windows.
    w.wait_for(
        lambda: sum(d["stream_id"] == "good" for d in w.windows()) >= 19, 60, "the good stream's windows"
    )
    w.wait_for(
        lambda: metric_value(w.metrics(), "vbw_stream_reconnects_total", stream="refused") >= 2,
        20,
        "reconnects",
    )
    text = w.metrics()
    rc, _ = w.sigterm(timeout=30)
    assert rc == 0, w.stderr()

    good_windows = [d for d in w.windows() if d["stream_id"] == "good"]
    assert len(good_windows) == 19 and all(d["complete"] for d in good_windows)
    bad_ids = ["garbage", "missing", "truncated", "refused"] + (["cut-mid"] if shutil.which("ffmpeg") else [])
    for sid in bad_ids:
        assert metric_value(text, "vbw_decode_errors_total", stream=sid) >= 1, sid
    err = w.stderr()
    assert "Traceback" not in err
    lines = err.splitlines()
    for sid in ["garbage", "missing", "truncated", "refused"]:
        mine = [ln for ln in lines if f" {sid}: " in ln and "ERROR" in ln]
        assert mine, f"no error line for {sid}:\n{err}"
    if shutil.which("ffmpeg"):
        cut = [ln for ln in lines if " cut-mid: " in ln and "ERROR" in ln]
        assert len(cut) == 1, err
        # it delivered what it had before the data ran out
        assert any(d["stream_id"] == "cut-mid" for d in w.windows())
    # credentials and query strings never reach the logs
    assert "s3cret" not in err and "token=abc" not in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_exits_zero_within_grace_with_every_completed_window(
    tmp_path, labelled_clips, tiny_model_dir, worker_proc, sig
):
    out = tmp_path / "out.jsonl"
    grace = 5.0
    w = worker_proc(
        {
            "sources": [
                {"type": "file", "id": f"cam{i}", "path": str(labelled_clips[lb]), "realtime": True}
                for i, lb in enumerate(labelled_clips)
            ],
            "engine": {"model_dir": str(tiny_model_dir)},
            # windows wait up to 400 ms for a batch: some are in flight when the signal lands
            "batching": {"max_batch": 64, "max_delay_ms": 400},
            "windows": {"stride": 2, "partial": "pad"},
            "sinks": [{"type": "jsonl", "path": str(out)}],
            "pipeline": {"shutdown_grace_s": grace},
        },
        jsonl=out,
    )
    w.wait_ready()
    w.wait_for(lambda: len(w.windows()) >= 6, 30, "some windows")
    time.sleep(1.3)
    before = metric_value(w.metrics(), "vbw_windows_emitted_total")
    t_signal = time.time()
    rc, took = w.sigterm(timeout=grace + 10, sig=sig)
    assert rc == 0, w.stderr()
    assert took <= grace, f"exit took {took:.1f}s, grace {grace}s"
    docs = w.windows()
    assert len(docs) >= before
    for cam in ("cam0", "cam1", "cam2"):
        mine = sorted((d for d in docs if d["stream_id"] == cam), key=lambda d: d["start_seq"])
        complete = [d for d in mine if d["complete"]]
        # no hole: every window start 0, 2, 4, ... up to the last one is there
        assert [d["start_seq"] for d in complete] == list(range(0, 2 * len(complete), 2)), cam
        # the newest complete window was completed at most one stride (0.4 s at 5 fps) before the signal
        assert max(d["capture_time"] for d in complete) >= t_signal - 0.4 - 0.25, cam
        # at shutdown, the frames after the last complete window went out in one padded window
        partial = [d for d in mine if not d["complete"]]
        assert len(partial) <= 1
        if partial:
            assert partial[0]["start_seq"] == complete[-1]["start_seq"] + 2
    assert "Traceback" not in w.stderr()


@pytest.mark.parametrize(
    ("good", "rc_expected"), [(False, 1), (True, 0)], ids=["every-source-failed", "one-ended-normally"]
)
def test_a_run_whose_every_source_failed_exits_non_zero(
    tmp_path, labelled_clips, tiny_model_dir, worker_proc, good, rc_expected
):
    """Files that cannot be opened are failures, one log line each; a file that ends is not."""
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(range(256)) * 400)
    sources = [
        {"type": "file", "id": "missing", "path": str(tmp_path / "nope.mp4")},
        {"type": "file", "id": "garbage", "path": str(garbage)},
    ]
    if good:
        sources.append({"type": "file", "id": "good", "path": str(labelled_clips["grow"])})
    out = tmp_path / "out.jsonl"
    w = worker_proc(
        {
            "sources": sources,
            "engine": {"model_dir": str(tiny_model_dir)},
            "sinks": [{"type": "jsonl", "path": str(out)}],
        },
        jsonl=out,
    )
    assert w.proc is not None
    rc = w.proc.wait(timeout=120)  # every source is a file: the worker exits by itself
    err = w.stderr()
    assert rc == rc_expected, err
    assert "Traceback" not in err
    lines = err.splitlines()
    for sid in ("missing", "garbage"):
        mine = [ln for ln in lines if f" {sid}: " in ln and "ERROR" in ln]
        assert len(mine) == 1, f"{sid}: want one error line:\n{err}"
    assert ("every source failed" in err) == (not good), err
    if good:
        assert any(d["stream_id"] == "good" for d in w.windows())
