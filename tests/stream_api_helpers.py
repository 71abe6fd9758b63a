"""Shared by the stream API and reload tests (tests/worker/test_api.py, test_reload.py)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

STRIDE = 4
FPS = 10.0


def file_source(sid: str, clip: Path) -> dict[str, Any]:
    return {"type": "file", "id": sid, "path": str(clip), "realtime": True}


def rtsp_source(sid: str, url: str) -> dict[str, Any]:
    return {
        "type": "rtsp",
        "id": sid,
        "url": url,
        "open_timeout_s": 5,
        "read_timeout_s": 2,
        "stall_timeout_s": 3,
        "reconnect": {"initial_s": 0.3, "max_s": 1.5},
    }


def assert_no_gap(docs: list[dict], stream: str) -> int:
    """Every window of `stream` complete, indexes consecutive, a constant seq step. Returns how many."""
    ws = sorted((d for d in docs if d["stream_id"] == stream), key=lambda d: d["index"])
    assert ws, f"no window of {stream}"
    assert all(d["complete"] for d in ws), f"{stream}: a partial window (a reset) in {len(ws)}"
    idx = [d["index"] for d in ws]
    assert idx == list(range(idx[0], idx[0] + len(ws))), f"{stream}: indexes not consecutive: {idx}"
    steps = {b["start_seq"] - a["start_seq"] for a, b in itertools.pairwise(ws)}
    assert len(steps) <= 1, f"{stream}: seq steps {steps}"
    return len(ws)


def write_long_clip(path: Path) -> Path:
    """90 s at 10 fps, small: file sources that run through a whole test without a loop reset."""
    from media.clips import clip_rng, render_clip, write_mp4

    write_mp4(render_clip("move_left", clip_rng(7, 0), 96, 64, 900, 10.0), path, 10.0)
    return path
