"""File source on real H.264 files: fps sampling, keyframes-only, looping, pacing, seq/pts/capture_time."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from worker.config import SamplingConfig
from worker.frames import Frame
from worker.metrics import Metrics
from worker.sources.base import SourceFailed
from worker.sources.file import FileSource


class Collect:
    """A SourceContext that records what a source does (the contract of worker.sources.base)."""

    def __init__(self, size=(64, 64), max_frames: int | None = None):
        self.metrics = Metrics()
        self.image_size = size
        self.frames: list[Frame] = []
        self.resets: list[tuple[str, str]] = []
        self.max_frames = max_frames
        self._stop = threading.Event()

    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, s: float) -> bool:
        return self._stop.wait(max(0.0, s))

    def emit(self, f: Frame) -> bool:
        self.frames.append(f)
        if self.max_frames and len(self.frames) >= self.max_frames:
            self._stop.set()
        return True

    def stream_reset(self, sid: str, reason: str, emit_partial: bool = True) -> None:
        self.resets.append((sid, reason))

    def drop_streams(self, ids, reason) -> None: ...
    def congested(self) -> bool:
        return False

    def load(self) -> float:
        return 0.0

    def take_feedback(self) -> list:
        return []


def test_fps_sampling_and_frame_fields(labelled_clips):
    ctx = Collect()
    t0 = time.time()
    FileSource("f", labelled_clips["grow"], SamplingConfig(fps=5)).run(ctx)
    fr = ctx.frames
    assert len(fr) == 80  # 16 s of 25 fps sampled at 5 fps
    assert [f.seq for f in fr] == list(range(80))
    np.testing.assert_allclose([f.pts for f in fr], np.arange(80) * 0.2, atol=1e-6)
    assert all(f.image.shape == (64, 64, 3) and f.image.dtype == np.uint8 for f in fr)
    assert all(t0 <= f.capture_time <= time.time() for f in fr)
    assert ctx.resets == [("f", "eos")]


def test_keyframes_only_decodes_key_frames(labelled_clips):
    ctx = Collect()
    FileSource("k", labelled_clips["grow"], SamplingConfig(fps=None, keyframes_only=True)).run(ctx)
    import av

    with av.open(str(labelled_clips["grow"])) as c:
        st = c.streams.video[0]
        keys = [float(p.pts * st.time_base) for p in c.demux(st) if p.is_keyframe and p.pts is not None]
    # a 2 s GOP (plus x264's scene-cut key frames): every key frame and nothing else
    assert 8 <= len(keys) < 400
    np.testing.assert_allclose([f.pts for f in ctx.frames], sorted(keys), atol=1e-6)


def test_loop_resets_and_keeps_seq_and_pts_increasing(labelled_clips):
    ctx = Collect(max_frames=200)
    FileSource("l", labelled_clips["grow"], SamplingConfig(fps=5), loop=True).run(ctx)
    seqs = [f.seq for f in ctx.frames]
    pts = [f.pts for f in ctx.frames]
    assert seqs == list(range(len(seqs))) and len(seqs) >= 200
    assert all(b > a for a, b in itertools.pairwise(pts))
    assert ctx.resets.count(("l", "loop")) == 2


def test_a_looping_file_stays_up_across_its_loops(labelled_clips):
    ups: list[bool] = []

    class Recording(Metrics):
        def stream_up(self, stream_id: str, up: bool) -> None:
            ups.append(up)
            super().stream_up(stream_id, up)

    ctx = Collect(max_frames=200)
    ctx.metrics = Recording()
    FileSource("l", labelled_clips["grow"], SamplingConfig(fps=5), loop=True).run(ctx)
    assert ctx.resets.count(("l", "loop")) == 2
    # down only once, when it stopped: a loop is no outage (VbwStreamDown flickered pending)
    assert ups[-1] is False and ups.count(False) == 1, ups


def test_realtime_pacing_follows_timestamps(labelled_clips):
    ctx = Collect(max_frames=11)
    t0 = time.monotonic()
    FileSource("r", labelled_clips["grow"], SamplingConfig(fps=5), realtime=True).run(ctx)
    took = time.monotonic() - t0
    assert took >= 1.9  # 11 frames at 5 fps: the 11th is due 2 s after the first
    cap = [f.capture_time for f in ctx.frames]
    np.testing.assert_allclose(np.diff(cap), 0.2, atol=0.05)


def test_unreadable_file_counts_and_fails(tmp_path: Path):
    """A file that cannot be opened ends its source as a failure (the runtime logs the line)."""
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    ctx = Collect()
    with pytest.raises(SourceFailed, match=r"^bad: cannot open file: "):
        FileSource("bad", bad, SamplingConfig()).run(ctx)
    assert ctx.frames == []
    assert ctx.metrics.decode_errors.labels("bad")._value.get() == 1
