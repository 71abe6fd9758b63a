"""The folder-of-videos-per-label dataset, on real H.264 files made by the generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from build_engine.datasets import VideoFolderDataset
from media import clips


def _write(path: Path, label: str, seed: int, frames: int = 50) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    clips.write_mp4(clips.render_clip(label, clips.clip_rng(seed, 0), 160, 90, frames, 25.0), path, 25.0)


def test_folder_dataset_loads_labels_and_windows(tmp_path: Path) -> None:
    _write(tmp_path / "grow" / "a.mp4", "grow", 1)
    _write(tmp_path / "grow" / "b.mp4", "grow", 2, frames=30)  # 6 analysed frames: padded to T
    _write(tmp_path / "move_left" / "c.mp4", "move_left", 3, frames=100)
    (tmp_path / "move_left" / "notes.txt").write_text("not a video")
    (tmp_path / "move_left" / "broken.mp4").write_bytes(b"\x00" * 100)
    ds = VideoFolderDataset(tmp_path, num_frames=8, image_size=64, fps=5.0)
    assert ds.labels == ["grow", "move_left"]
    assert len(ds) == 3
    assert len(ds.errors) == 1 and "broken.mp4" in ds.errors[0]
    frames = {p.name: f for p, _, f in ds.items}
    assert frames["a.mp4"].shape == (10, 64, 64, 3)  # 2 s at 25 fps sampled to 5 fps
    assert frames["b.mp4"].shape == (8, 64, 64, 3)
    w, y = ds.windows(2)
    assert w.shape == (20 - 8 + 1, 8, 64, 64, 3) and set(y.tolist()) == {1}
    x, yb = ds.batch(0, 6, seed=1)
    x2, yb2 = ds.batch(0, 6, seed=1)
    assert x.shape == (6, 8, 64, 64, 3) and x.dtype == np.uint8
    assert np.array_equal(x, x2) and np.array_equal(yb, yb2)


def test_folder_dataset_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        VideoFolderDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="no label sub-folders"):
        VideoFolderDataset(tmp_path)
    (tmp_path / "jump").mkdir()
    with pytest.raises(ValueError, match="no video files"):
        VideoFolderDataset(tmp_path)
    _write(tmp_path / "jump" / "a.mp4", "grow", 1, frames=10)
    with pytest.raises(ValueError, match="not labels of the model"):
        VideoFolderDataset(tmp_path, labels=["grow"])
