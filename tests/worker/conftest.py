"""Worker test fixtures: generated labelled clips, the shipped/tiny models, and a `vbw run` process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from services.rtsp_server import rtsp_available
from tiny_model import tiny_model_dir as _tiny_model_dir
from worker_helpers import WorkerProc

REPO = Path(__file__).resolve().parents[2]
CLIP_SECONDS = 16.0
CLIP_SIZE = (192, 108)  # the model sees 64x64: a small source keeps generation and RTSP cheap
CLIP_FPS = 25.0


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny model (T=8, 32x32): for tests of the machinery, not of accuracy."""
    return _tiny_model_dir(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def all_label_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One single-label H.264 mp4 per label (16 s, 25 fps), made by the project's generator."""
    from media.clips import LABELS, clip_rng, render_clip, write_mp4

    out = tmp_path_factory.mktemp("clips")
    clips = {}
    for i, label in enumerate(LABELS):
        w, h = CLIP_SIZE
        frames = render_clip(label, clip_rng(4242, i), w, h, int(CLIP_SECONDS * CLIP_FPS), CLIP_FPS)
        path = out / f"{label}.mp4"
        write_mp4(frames, path, CLIP_FPS)
        clips[label] = path
    return clips


@pytest.fixture(scope="session")
def labelled_clips(all_label_clips: dict[str, Path]) -> dict[str, Path]:
    """Three of them, for the tests that need a few streams rather than every label."""
    return {lb: all_label_clips[lb] for lb in ("move_left", "grow", "move_down")}


@pytest.fixture(scope="session")
def rtsp_ok() -> None:
    why = rtsp_available()
    if why:
        pytest.skip(why)


@pytest.fixture()
def worker_proc(tmp_path: Path) -> Iterator[Callable[..., WorkerProc]]:
    procs: list[WorkerProc] = []

    def make(config: dict[str, Any], jsonl: Path | None = None) -> WorkerProc:
        w = WorkerProc(tmp_path, config, jsonl)
        procs.append(w)
        return w.start()

    yield make
    for w in procs:
        w.stop()


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """90 s at 10 fps, small (the stream API and reload tests: no loop reset within a test)."""
    from stream_api_helpers import write_long_clip

    return write_long_clip(tmp_path_factory.mktemp("long") / "long.mp4")
