"""`file` source: any container and codec PyAV opens; optionally paced to real time and looped."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import av

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
            source_id, sampling, self._seq.__next__, decode_threads="NONE" if realtime else "AUTO"
        )

    @classmethod
    def from_config(cls, sc: FileSourceConfig, cfg: VbwConfig) -> FileSource:
        return cls(sc.id, sc.path, cfg.sampling_for(sc), realtime=sc.realtime, loop=sc.loop)

    def describe(self) -> str:
        return f"{self.id} (file {self.path.name})"

    def run(self, ctx: SourceContext) -> None:
        offset = 0.0
        while not ctx.stopping():
            try:
                container: Any = av.open(str(self.path))
            except (av.FFmpegError, OSError) as e:
                ctx.metrics.decode_error(self.id)
                raise SourceFailed(self.id, "cannot open file", f"{self.path}: {open_error(e)}") from None
            with container:
                ctx.metrics.stream_up(self.id, True)
                res = self._pump.pump(ctx, container, pts_offset=offset, pace=self.realtime)
            again = self.loop and res.ending == "eos" and res.frames > 0
            if not again:  # a looping file stays up across its loops (no flicker for VbwStreamDown)
                ctx.metrics.stream_up(self.id, False)
            if res.ending == "stopped":
                return  # the pipeline closes the windows at shutdown
            ctx.stream_reset(self.id, "loop" if again else ("eos" if res.ending == "eos" else "error"))
            if res.ending == "error":  # the runtime logs it; a run whose every source failed exits 1
                detail = f"{self.path}: {res.error} (after {res.frames} frames)"
                raise SourceFailed(self.id, "read failed", detail)
            if not again:
                return
            offset = res.last_pts + 1.0  # keep pts increasing across loops
