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
CLIP_LABELS = ("move_left", "grow", "rotate_cw")
CLIP_SECONDS = 16.0
CLIP_SIZE = (320, 180)
CLIP_FPS = 25.0


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny model (T=8, 32x32): for tests of the machinery, not of accuracy."""
    return _tiny_model_dir(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def labelled_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One single-label H.264 mp4 per label (320x180, 25 fps), made by the project's generator."""
    from build_engine.clips import clip_rng, render_clip, write_mp4

    out = tmp_path_factory.mktemp("clips")
    clips = {}
    for i, label in enumerate(CLIP_LABELS):
        w, h = CLIP_SIZE
        frames = render_clip(label, clip_rng(4242, i), w, h, int(CLIP_SECONDS * CLIP_FPS), CLIP_FPS)
        path = out / f"{label}.mp4"
        write_mp4(frames, path, CLIP_FPS)
        clips[label] = path
    return clips


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
