"""Zones on a camera: the RTSP source against a real GStreamer RTSP server, with two zones and the
whole frame. Every view stream gets each decoded frame (same seq), and the camera's state (up,
reconnects, the reset after a reconnect) applies to each of them when the server is killed and
comes back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from services.rtsp_server import RtspServer
from worker_helpers import PATIENCE

from worker.config import parse_config
from worker.frames import Frame
from worker.metrics import Metrics
from worker.sources.rtsp import RtspSource

pytestmark = [pytest.mark.e2e]

STREAMS = ("cam", "cam/left", "cam/right")


class Ctx:
    """A SourceContext (worker.sources.base) that records frames and resets."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.image_size = (64, 64)
        self.frames: list[tuple[float, Frame]] = []
        self.resets: list[tuple[str, str]] = []
        self.cond = threading.Condition()
        self._stop = threading.Event()

    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, s: float) -> bool:
        return self._stop.wait(max(0.0, s))

    def emit(self, f: Frame) -> bool:
        with self.cond:
            self.frames.append((time.monotonic(), f))
            self.cond.notify_all()
        return True

    def stream_reset(self, sid: str, reason: str, emit_partial: bool = True) -> None:
        with self.cond:
            self.resets.append((sid, reason))
            self.cond.notify_all()

    def up(self, sid: str) -> float:
        return self.metrics.registry.get_sample_value("vbw_stream_up", {"stream": sid}) or 0.0

    def wait_for(self, what: Callable[[], bool], timeout: float, label: str) -> None:
        with self.cond:
            assert self.cond.wait_for(what, timeout * PATIENCE), (
                f"{label}: not within {timeout * PATIENCE:.0f}s"
            )


def test_camera_zones_share_frames_and_connection_state(tmp_path, rtsp_ok, labelled_clips):
    with RtspServer({"cam": labelled_clips["grow"]}, log_path=tmp_path / "rtsp.log") as srv:
        cfg = parse_config(
            {
                "sources": [
                    {
                        "type": "rtsp",
                        "id": "cam",
                        "url": srv.url("cam"),
                        "stall_timeout_s": 3,
                        "full_frame": True,
                        "zones": [
                            {"name": "left", "rect": [0, 0, 0.5, 1]},
                            {"name": "right", "polygon": [[0.5, 0], [1, 0], [1, 1]]},
                        ],
                    }
                ],
                "snapshots": {"enabled": True, "dir": str(tmp_path / "snaps"), "width": 96},
            }
        )
        src = RtspSource(cfg.sources[0], cfg)  # type: ignore[arg-type]
        assert src.stream_ids() == list(STREAMS)
        ctx = Ctx()
        thread = threading.Thread(target=src.run, args=(ctx,), daemon=True)
        thread.start()
        try:
            ctx.wait_for(lambda: len(ctx.frames) >= 3 * 10, 60, "first frames")
            srv.stop(sig_kill=True)
            ctx.wait_for(lambda: all(ctx.up(s) == 0 for s in STREAMS), 30, "every view stream down")
            srv.start()
            t_restart = time.monotonic()
            ctx.wait_for(
                lambda: sum(t > t_restart for t, _ in ctx.frames) >= 3 * 5, 60, "frames after the restart"
            )
            up_again = [ctx.up(s) for s in STREAMS]
        finally:
            ctx._stop.set()
            thread.join(timeout=30)
    assert not thread.is_alive()
    assert up_again == [1.0, 1.0, 1.0]
    frames = [f for _, f in ctx.frames]
    by_seq: dict[int, list[Frame]] = {}
    for f in frames:
        by_seq.setdefault(f.seq, []).append(f)
    complete = [fs for fs in by_seq.values() if len(fs) == 3]
    assert len(complete) >= len(by_seq) - 1  # the stop may land between the views of the last one
    for fs in complete:
        assert [f.stream_id for f in fs] == list(STREAMS)
        assert len({f.pts for f in fs}) == 1 and len({f.capture_time for f in fs}) == 1
        keys = [f.key_image for f in fs]
        assert all(k is not None for k in keys)
        assert keys[0].image is keys[1].image is keys[2].image  # type: ignore[union-attr]
        assert keys[0].image.shape[1] == 96 and keys[0].zone is None  # type: ignore[union-attr]
        assert keys[2].zone == ((0.5, 0.0), (1.0, 0.0), (1.0, 1.0))  # type: ignore[union-attr]
    # the reconnect closed every view stream's windows, and each counts the reconnect
    for s in STREAMS:
        assert (s, "reconnect") in ctx.resets, ctx.resets
    reconnects = [
        ctx.metrics.registry.get_sample_value("vbw_stream_reconnects_total", {"stream": s}) for s in STREAMS
    ]
    assert reconnects[0] >= 1 and len(set(reconnects)) == 1, reconnects
