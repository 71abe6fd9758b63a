"""The demux -> decode -> sample -> resize -> emit loop shared by the file and RTSP sources.

With zones (`sources[].zones`), each decoded frame becomes one Frame per view: the whole frame
as stream `<id>` (if wanted) and each zone as stream `<id>/<zone>`, all with the same seq and
times, from one decode and one conversion (`media.decode.FrameViews`). Per-stream counters
(decode errors, late drops) are counted on every view stream, so each reads like a camera.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import av

from media.decode import FrameViews
from media.sampling import FpsSampler
from media.zones import Zone
from worker.config import SamplingConfig, zone_stream_id
from worker.frames import Frame, KeyImage
from worker.redact import redact_text
from worker.sources.base import SourceContext, SourceMetrics

log = logging.getLogger("vbw.source")

# Consecutive undecodable packets after which a stream counts as broken rather than glitchy.
MAX_BAD_PACKETS = 50
# A paced file (camera stand-in) that falls this far behind its own clock drops frames ("late").
MAX_LATE_S = 1.0

Ending = Literal["eos", "stopped", "stalled", "error"]


class LivePts:
    """Monotonic pts for live streams, continuous across reconnects.

    RTP-derived timestamps jump when RTCP sync arrives (the first frame of a session can read
    1370 s, the next 0.04 s) and restart after a reconnect. Sane steps of the source clock
    (0 < step <= 1 s) are kept; anything else is replaced by the wall-clock step.
    """

    MAX_STEP = 1.0

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._last_src: float | None = None
        self._last_out = 0.0
        self._last_wall = self._t0

    def __call__(self, src: float | None, wall: float) -> float:
        if self._last_src is None or src is None:
            out = max(self._last_out + 1e-3, wall - self._t0)
        else:
            step = src - self._last_src
            out = self._last_out + (step if 0 < step <= self.MAX_STEP else max(wall - self._last_wall, 1e-3))
        self._last_src, self._last_out, self._last_wall = src, out, wall
        return out

    def gap(self) -> None:
        """After a reconnect the next source timestamp is unrelated to the last one."""
        self._last_src = None


@dataclass(slots=True)
class PumpResult:
    ending: Ending
    frames: int  # frames emitted (offered to the pipeline)
    last_pts: float
    error: str | None = None


def open_error(e: BaseException) -> str:
    """One line describing an open/read failure, without URLs or credentials."""
    if isinstance(e, av.FFmpegError):
        text = e.strerror or type(e).__name__
    elif isinstance(e, OSError):
        text = e.strerror or str(e)
    else:
        text = str(e) or type(e).__name__
    return redact_text(f"{type(e).__name__}: {text}")


class AvStreamPump:
    """Reads one opened container's first video stream until it ends, stalls or the pipeline stops.

    `zones`: emit each zone as stream `<stream_id>/<name>`, and the whole frame as `stream_id`
    only if `full_frame` (without zones the whole frame is the one view). `key_width`: give each
    frame a `KeyImage` that wide, for snapshots (None: none).
    """

    def __init__(
        self,
        stream_id: str,
        sampling: SamplingConfig,
        next_seq: Callable[[], int],
        *,
        decode_threads: Literal["AUTO", "SLICE", "NONE"] = "AUTO",
        zones: Sequence[Zone] = (),
        full_frame: bool = False,
        key_width: int | None = None,
    ):
        self.stream_id = stream_id
        self.sampling = sampling
        self.next_seq = next_seq
        self.decode_threads = decode_threads
        self.zones = tuple(zones)
        self.full_frame = full_frame or not self.zones
        self.key_width = key_width
        # One entry per view, in FrameViews' order: (stream id, zone outline for its key image).
        self.views: list[tuple[str, tuple[tuple[float, float], ...] | None]] = (
            [(stream_id, None)] if self.full_frame else []
        ) + [(zone_stream_id(stream_id, z.name), z.points) for z in self.zones]
        self._frame_views: FrameViews | None = None

    @property
    def stream_ids(self) -> list[str]:
        """The streams this pump emits, whole frame first."""
        return [sid for sid, _ in self.views]

    def _views_for(self, size: tuple[int, int]) -> FrameViews:
        fv = self._frame_views
        if fv is None or fv.size != size:  # kept across connections: its swscale contexts stay warm
            fv = FrameViews(size, self.zones, full_frame=self.full_frame, key_width=self.key_width)
            self._frame_views = fv
        return fv

    def pump(
        self,
        ctx: SourceContext,
        container: av.container.InputContainer,
        *,
        pts_offset: float = 0.0,
        pace: bool = False,
        stall_timeout: float | None = None,
        on_first_frame: Callable[[], None] | None = None,
        live_pts: LivePts | None = None,
    ) -> PumpResult:
        if not container.streams.video:
            return PumpResult("error", 0, pts_offset, "no video stream in the input")
        stream = container.streams.video[0]
        if self.decode_threads != "NONE":
            stream.thread_type = self.decode_threads
        if self.sampling.keyframes_only:
            stream.codec_context.skip_frame = "NONKEY"  # the decoder never touches the rest
        sampler = FpsSampler(self.sampling.fps)
        frame_views = self._views_for(ctx.image_size)
        metrics = ctx.metrics
        emitted, decoded, bad_run, last_pts = 0, 0, 0, pts_offset
        first_pts: float | None = None
        wall0 = 0.0
        last_frame_at = time.monotonic()
        try:
            for packet in container.demux(stream):
                if ctx.stopping():
                    return PumpResult("stopped", emitted, last_pts)
                now = time.monotonic()
                if stall_timeout is not None and now - last_frame_at > stall_timeout:
                    return PumpResult("stalled", emitted, last_pts, f"no frame for {stall_timeout:.1f}s")
                t0 = time.perf_counter()
                try:
                    frames = packet.decode()
                except av.FFmpegError as e:
                    self._decode_error(metrics)
                    bad_run += 1
                    if bad_run >= MAX_BAD_PACKETS:
                        return PumpResult(
                            "error", emitted, last_pts, f"{bad_run} bad packets in a row: {open_error(e)}"
                        )
                    continue
                t_decode = time.perf_counter() - t0
                if frames:
                    bad_run = 0
                    decoded += len(frames)
                    last_frame_at = now
                for frame in frames:
                    src_pts = float(frame.time) if frame.time is not None else None
                    if live_pts is not None:
                        pts = live_pts(src_pts, time.monotonic())
                    else:
                        pts = src_pts if src_pts is not None else time.monotonic() - wall0
                    if first_pts is None:
                        first_pts, wall0 = pts, time.monotonic()
                        if on_first_frame is not None:
                            on_first_frame()
                    if not sampler.keep(pts):
                        continue
                    due = wall0 + (pts - first_pts)
                    if pace and time.monotonic() - due > MAX_LATE_S:
                        # A camera's buffer would have overflowed by now: the frame is lost, the
                        # seq gap closes the stream's windows.
                        self.next_seq()
                        for view_id, _ in self.views:
                            metrics.frame_dropped(view_id, "late")
                        continue
                    t1 = time.perf_counter()
                    images, key = frame_views(frame)
                    metrics.stage_seconds("decode", t_decode + time.perf_counter() - t1)
                    t_decode = 0.0  # the packet's decode cost is counted once
                    capture = time.time()
                    if pace:  # behave like a camera: a frame exists only from its time on
                        delay = due - time.monotonic()
                        if delay > 0 and ctx.wait(delay):
                            return PumpResult("stopped", emitted, last_pts)
                        capture += delay  # when the camera would have captured it
                    last_pts = pts + pts_offset
                    seq = self.next_seq()  # one seq for every view of the frame
                    for (view_id, outline), image in zip(self.views, images, strict=True):
                        k = None if key is None else KeyImage(key, outline)
                        ctx.emit(Frame(view_id, seq, last_pts, capture, image, key_image=k))
                    emitted += 1
        except av.FFmpegError as e:
            self._decode_error(metrics)
            return PumpResult("error", emitted, last_pts, open_error(e))
        # A file cut short (moov at the front, data missing) ends "cleanly" in FFmpeg: compare
        # with the frame count its index declares.
        declared = stream.frames
        if declared and not self.sampling.keyframes_only and decoded < declared:
            self._decode_error(metrics)
            return PumpResult(
                "error",
                emitted,
                last_pts,
                f"input ends early: {decoded} of {declared} frames (truncated file?)",
            )
        return PumpResult("eos", emitted, last_pts)

    def _decode_error(self, metrics: SourceMetrics) -> None:
        for view_id, _ in self.views:
            metrics.decode_error(view_id)


def log_source_error(source_id: str, what: str, detail: str, level: int = logging.ERROR) -> None:
    """The one-line error every expected input failure produces (no traceback)."""
    log.log(level, "%s: %s: %s", source_id, what, detail, extra={"stream": source_id, "event": what})
