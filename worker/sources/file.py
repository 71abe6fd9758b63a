"""`file` source: any container and codec PyAV opens; optionally paced to real time and looped.
With zones, one stream per zone (and the whole frame if wanted): see worker.sources.av_reader."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av

from media.zones import Zone
from worker.config import FileSourceConfig, SamplingConfig, VbwConfig
from worker.sources.av_reader import AvStreamPump, open_error
from worker.sources.base import Source, SourceContext, SourceFailed


class FileSource(Source):
    finite = True

    def __init__(
        self,
        source_id: str,
        path: str | Path,
        sampling: SamplingConfig,
        *,
        realtime: bool = False,
        loop: bool = False,
        zones: Sequence[Zone] = (),
        full_frame: bool = False,
        key_width: int | None = None,
    ):
        self.id = source_id
        self.path = Path(path)
        self.realtime = realtime
        self.loop = loop
        # A paced file stands in for a camera: it cannot wait, so it drops when the pipeline is full.
        self.live = realtime
        self._seq = itertools.count()  # file seqs start at 0: reprocessing a file gives the same window ids
        # Frame threading adds a few frames of delay per stream; paced (live-like) files skip it.
        self._pump = AvStreamPump(
            source_id,
            sampling,
            self._seq.__next__,
            decode_threads="NONE" if realtime else "AUTO",
            zones=zones,
            full_frame=full_frame,
            key_width=key_width,
        )

    @classmethod
    def from_config(cls, sc: FileSourceConfig, cfg: VbwConfig) -> FileSource:
        return cls(
            sc.id,
            sc.path,
            cfg.sampling_for(sc),
            realtime=sc.realtime,
            loop=sc.loop,
            zones=[z.zone() for z in sc.zones],
            full_frame=sc.full_frame,
            key_width=cfg.key_width(),
        )

    def stream_ids(self) -> list[str]:
        return self._pump.stream_ids

    def describe(self) -> str:
        return f"{self.id} (file {self.path.name})"

    def run(self, ctx: SourceContext) -> None:
        offset = 0.0
        while not ctx.stopping():
            try:
                container: Any = av.open(str(self.path))
            except (av.FFmpegError, OSError) as e:
                for sid in self.stream_ids():
                    ctx.metrics.decode_error(sid)
                raise SourceFailed(self.id, "cannot open file", f"{self.path}: {open_error(e)}") from None
            with container:
                for sid in self.stream_ids():
                    ctx.metrics.stream_up(sid, True)
                res = self._pump.pump(ctx, container, pts_offset=offset, pace=self.realtime)
            again = self.loop and res.ending == "eos" and res.frames > 0
            if not again:  # a looping file stays up across its loops (no flicker for VbwStreamDown)
                for sid in self.stream_ids():
                    ctx.metrics.stream_up(sid, False)
            if res.ending == "stopped":
                return  # the pipeline closes the windows at shutdown
            reason = "loop" if again else ("eos" if res.ending == "eos" else "error")
            for sid in self.stream_ids():
                ctx.stream_reset(sid, reason)
            if res.ending == "error":  # the runtime logs it; a run whose every source failed exits 1
                detail = f"{self.path}: {res.error} (after {res.frames} frames)"
                raise SourceFailed(self.id, "read failed", detail)
            if not again:
                return
            offset = res.last_pts + 1.0  # keep pts increasing across loops
