"""`rtsp` source: a camera, with timeouts, reconnects (backoff + jitter) and a stall watchdog.

The URL may hold credentials: it is used only to open the stream. Logs and metric labels use
the configured stream id, and any error text goes through `redact_text`.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import av

from worker.backoff import Backoff
from worker.config import RtspSourceConfig, VbwConfig
from worker.redact import redact_url
from worker.sources.av_reader import AvStreamPump, LivePts, log_source_error, open_error
from worker.sources.base import Source, SourceContext


class RtspSource(Source):
    live = True
    finite = False

    def __init__(self, sc: RtspSourceConfig, cfg: VbwConfig):
        self.id = sc.id
        self.cfg = sc
        self._url = sc.url.get_secret_value()
        # Clock-based start: seqs (and so window ids) of a camera never repeat across worker
        # restarts either, so a downstream dedup on window_id never merges two real windows.
        self._seq = itertools.count(time.time_ns() // 1000)
        self._pump = AvStreamPump(sc.id, cfg.sampling_for(sc), self._seq.__next__, decode_threads="NONE")
        r = sc.reconnect
        self._backoff = Backoff(r.initial_s, r.max_s, r.multiplier, r.jitter)
        # pts of an RTSP frame = seconds since this source started, on the camera's clock where
        # its timestamps are sane (see LivePts); never goes back, even across reconnects.
        self._pts = LivePts()

    @classmethod
    def from_config(cls, sc: RtspSourceConfig, cfg: VbwConfig) -> RtspSource:
        return cls(sc, cfg)

    def describe(self) -> str:
        return f"{self.id} ({redact_url(self._url)} over {self.cfg.transport})"

    def _open(self) -> Any:
        sc = self.cfg
        return av.open(
            self._url,
            options={
                "rtsp_transport": sc.transport,
                # socket I/O timeout inside FFmpeg's RTSP demuxer, microseconds
                "timeout": str(int(sc.read_timeout_s * 1e6)),
            },
            timeout=(sc.open_timeout_s, sc.read_timeout_s),
        )

    def run(self, ctx: SourceContext) -> None:
        attempt = 0
        while not ctx.stopping():
            if attempt:
                ctx.metrics.reconnect(self.id)
            attempt += 1
            try:
                container = self._open()
            except Exception as e:  # FFmpegError, OSError, timeouts: all mean "not now"
                ctx.metrics.decode_error(self.id)
                delay = self._backoff.next_delay()
                log_source_error(self.id, "cannot connect", f"{open_error(e)}; retry in {delay:.1f}s")
                ctx.wait(delay)
                continue
            with container:
                res = self._pump.pump(
                    ctx,
                    container,
                    stall_timeout=self.cfg.stall_timeout_s,
                    on_first_frame=lambda: ctx.metrics.stream_up(self.id, True),
                    live_pts=self._pts,
                )
            self._pts.gap()
            ctx.metrics.stream_up(self.id, False)
            if res.ending == "stopped":
                return
            if res.frames:
                self._backoff.reset()
            # Whatever ended the connection, the next frame is not continuous with the last one.
            ctx.stream_reset(self.id, "reconnect")
            delay = self._backoff.next_delay()
            detail = res.error or ("end of stream" if res.ending == "eos" else res.ending)
            log_source_error(
                self.id, "stream lost", f"{detail} after {res.frames} frames; reconnect in {delay:.1f}s"
            )
            ctx.wait(delay)
