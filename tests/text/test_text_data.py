"""captions.jsonl: the format of a user's captioned clips, and its errors (file:line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from build_engine.text_data import CaptionsError, load_captioned_windows, read_captions


def _write(tmp_path: Path, lines: list[str]) -> Path:
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"captions.jsonl:2: not JSON"),
        ('{"file": "a.mp4"}', r"captions.jsonl:2: .*exactly one of `caption`"),
        ('{"file": "a.mp4", "caption": "x", "captions": ["y"]}', r"captions.jsonl:2: .*exactly one"),
        ('{"file": "a.mp4", "caption": "x", "colour": "red"}', r"captions.jsonl:2: colour: Extra inputs"),
        ('{"file": "missing.mp4", "caption": "x"}', r"captions.jsonl:2: clip 'missing.mp4' not found"),
        (
            '{"file": "a.mp4", "caption": "x", "start": 3, "end": 1}',
            r"captions.jsonl:2: .*end 1.0 is not after",
        ),
        ('{"file": "a.mp4", "captions": []}', r"captions.jsonl:2: captions: List should have at least 1"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "a.mp4").write_bytes(b"")
    root = _write(tmp_path, ['{"file": "a.mp4", "caption": "fine"}', line])
    with pytest.raises(CaptionsError, match=message):
        read_captions(root)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CaptionsError, match="no captions file"):
        read_captions(tmp_path)


def test_windows_of_a_captioned_clip(tmp_path: Path) -> None:
    from media.clips import clip_rng, render_clip, write_mp4

    frames = render_clip("move_left", clip_rng(1, 0), 64, 36, 100, 25.0)  # 4 s
    write_mp4(frames, tmp_path / "left.mp4", 25.0)
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    root = _write(
        tmp_path,
        [
            '{"file": "left.mp4", "captions": ["a key slides left", "something moves left"]}',
            "",
            '{"file": "left.mp4", "caption": "the first half", "end": 2.0}',
            '{"file": "bad.mp4", "caption": "broken"}',
        ],
    )
    cw = load_captioned_windows(root, num_frames=8, image_size=32, stride=4)
    assert cw.frames.shape[1:] == (8, 32, 32, 3)
    assert ["a key slides left", "something moves left"] in cw.sentences
    assert ["the first half"] in cw.sentences
    assert len(cw.errors) == 1 and "bad.mp4" in cw.errors[0]
