"""`rtsp` source: a camera, with timeouts, reconnects and a stall watchdog.

Reconnects follow `worker.backoff.ReconnectPolicy`: early in an outage a cheap TCP probe of the
camera's RTSP port every `reconnect.probe_interval_s` (jittered) and the full RTSP open only once
the port answers, so a camera that comes back is found within that interval; exponential backoff
with jitter for cameras that answer but fail to open and for long outages. The loss, the first
failed probe and every failed open are logged; the end of an outage is one line with its length.

The URL may hold credentials: it is used only to open the stream. Logs and metric labels use
the configured stream id, and any error text goes through `redact_text`.

With zones, one stream per zone (and the whole frame if wanted), all from one decode: see
worker.sources.av_reader. Connection state (up, reconnects, resets) applies to every one of them.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import av

from worker.backoff import ReconnectPolicy, Retry
from worker.config import RtspSourceConfig, VbwConfig
from worker.redact import redact_url
from worker.sources.av_reader import AvStreamPump, LivePts, log_source_error, open_error
from worker.sources.base import Source, SourceContext

log = logging.getLogger("vbw.source")

DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322}


def probe_address(url: str) -> tuple[str, int] | None:
    """(host, port) of the RTSP control connection; None if the URL's port is not a number."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname, port or DEFAULT_PORTS.get(parts.scheme, 554)


def tcp_probe(address: tuple[str, int], timeout: float) -> str | None:
    """Connect and close at once: None if the port accepts, else why not (no URL in the text).
    No RTSP session and no decoder: cheap for the camera and for us."""
    try:
        with socket.create_connection(address, timeout=timeout):
            return None
    except OSError as e:  # refused, unreachable, timed out, name not resolved
        return open_error(e)


class RtspSource(Source):
    live = True
    finite = False

    def __init__(self, sc: RtspSourceConfig, cfg: VbwConfig):
        self.id = sc.id
        self.cfg = sc
        self._url = sc.url.get_secret_value()
        self._address = probe_address(self._url)
        # Clock-based start: seqs (and so window ids) of a camera never repeat across worker
        # restarts either, so a downstream dedup on window_id never merges two real windows.
        self._seq = itertools.count(time.time_ns() // 1000)
        self._pump = AvStreamPump(
            sc.id,
            cfg.sampling_for(sc),
            self._seq.__next__,
            decode_threads="NONE",
            zones=[z.zone() for z in sc.zones],
            full_frame=sc.full_frame,
            key_width=cfg.key_width(),
        )
        r = sc.reconnect
        self._policy = ReconnectPolicy(
            r.initial_s, r.max_s, r.multiplier, r.jitter, r.probe_interval_s, r.probe_for_s
        )
        self._was_up = False  # some connection delivered frames: later ones are "reconnected"
        # pts of an RTSP frame = seconds since this source started, on the camera's clock where
        # its timestamps are sane (see LivePts); never goes back, even across reconnects.
        self._pts = LivePts()

    @classmethod
    def from_config(cls, sc: RtspSourceConfig, cfg: VbwConfig) -> RtspSource:
        return cls(sc, cfg)

    def describe(self) -> str:
        return f"{self.id} ({redact_url(self._url)} over {self.cfg.transport})"

    def stream_ids(self) -> list[str]:
        return self._pump.stream_ids

    def _open(self) -> Any:
        sc = self.cfg
        return av.open(
            self._url,
            options={
                "rtsp_transport": sc.transport,
                # socket I/O timeout inside FFmpeg's RTSP demuxer, microseconds
                "timeout": str(int(sc.read_timeout_s * 1e6)),
                # Don't read ~20 frames to estimate a frame rate nothing here uses (pts carry the
                # timing): the open then returns at the first decodable frame, ~0.8 s sooner.
                "fpsprobesize": "0",
            },
            timeout=(sc.open_timeout_s, sc.read_timeout_s),
        )

    def _on_first_frame(self, ctx: SourceContext) -> None:
        for sid in self.stream_ids():
            ctx.metrics.stream_up(sid, True)
        rec = self._policy.recovered(time.monotonic())
        if rec is not None:  # the one line that ends an outage
            if self._was_up:
                what, text = "reconnected", f"reconnected after {rec.outage_s:.1f} s outage"
            else:
                what, text = "connected", f"connected after {rec.outage_s:.1f} s"
            log.info(
                "%s: %s (%d attempts)", self.id, text, rec.attempts, extra={"stream": self.id, "event": what}
            )
        self._was_up = True

    def _retry(self, ctx: SourceContext, retry: Retry, detail: str, probe: bool) -> None:
        if retry.report:
            for sid in self.stream_ids():
                ctx.metrics.decode_error(sid)
            p = self._policy
            tail = f"retry in {retry.delay:.1f}s"
            if probe:  # the probes that follow are quiet: say how long they go on
                tail += f", then probing every {p.probe_interval_s:.1f}s up to {p.probe_for_s:.0f}s into the outage"
            log_source_error(self.id, "cannot connect", f"{detail}; {tail}")
        ctx.wait(retry.delay)

    def run(self, ctx: SourceContext) -> None:
        policy = self._policy
        first = True
        while not ctx.stopping():
            if not first:
                for sid in self.stream_ids():
                    ctx.metrics.reconnect(sid)
            first = False
            if self._address is not None and policy.probing(time.monotonic()):
                why = tcp_probe(self._address, self.cfg.reconnect.probe_timeout_s)
                if why is not None:
                    self._retry(ctx, policy.failed(time.monotonic(), reached=False), why, probe=True)
                    continue
            try:
                container = self._open()
            except Exception as e:  # FFmpegError, OSError, timeouts: all mean "not now"
                self._retry(ctx, policy.failed(time.monotonic(), reached=True), open_error(e), probe=False)
                continue
            with container:
                res = self._pump.pump(
                    ctx,
                    container,
                    stall_timeout=self.cfg.stall_timeout_s,
                    on_first_frame=lambda: self._on_first_frame(ctx),
                    live_pts=self._pts,
                )
            self._pts.gap()
            for sid in self.stream_ids():
                ctx.metrics.stream_up(sid, False)
            if res.ending == "stopped":
                return
            # Whatever ended the connection, the next frame is not continuous with the last one.
            for sid in self.stream_ids():
                ctx.stream_reset(sid, "reconnect")
            detail = res.error or ("end of stream" if res.ending == "eos" else res.ending)
            if policy.in_outage:  # it opened but gave no frame: a failed attempt, backed off
                delay = policy.failed(time.monotonic(), reached=True).delay
                log_source_error(self.id, "stream lost", f"{detail} after 0 frames; retry in {delay:.1f}s")
                ctx.wait(delay)
                continue
            delay = policy.lost(time.monotonic())
            log_source_error(
                self.id, "stream lost", f"{detail} after {res.frames} frames; reconnect in {delay:.1f}s"
            )
            ctx.wait(delay)
