"""A user's captioned clips: `captions.jsonl` beside the clips of `vbw train --data DIR`.

Format: one JSON object per line, paths relative to DIR:

    {"file": "move_left/clip_001.mp4", "caption": "a red car drives to the left"}
    {"file": "walk.mp4", "captions": ["a person walks", "someone walking"], "start": 2.0, "end": 9.5}

- `file` (required): the clip, relative to DIR.
- `caption` or `captions` (one of them, required): what the clip shows; with several, each
  training step draws one (paraphrases).
- `start` / `end` (optional, seconds): only that part of the clip is described.

Every window of T analysis frames inside the described span gets the caption. Lines are
validated with pydantic; a bad line is an error naming the file and the line number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from build_engine.datasets import ANALYSIS_FPS, decode_analysis_frames, pad_to
from contracts.errors import VbwError

CAPTIONS_NAME = "captions.jsonl"


class CaptionsError(VbwError, ValueError):
    """captions.jsonl is missing, malformed or names clips that are not there (file:line says where)."""


class CaptionRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str = Field(min_length=1)
    caption: str | None = Field(None, min_length=1)
    captions: list[str] | None = Field(None, min_length=1)
    start: float | None = Field(None, ge=0)
    end: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_caption_field(self) -> CaptionRecord:
        if (self.caption is None) == (self.captions is None):
            raise ValueError("give exactly one of `caption` (a sentence) or `captions` (a list of them)")
        if self.captions is not None and any(not c.strip() for c in self.captions):
            raise ValueError("`captions` has an empty sentence")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end {self.end} is not after start {self.start}")
        return self

    @property
    def sentences(self) -> list[str]:
        return [self.caption] if self.caption is not None else list(self.captions or [])


def read_captions(root: str | Path) -> list[CaptionRecord]:
    """The records of ROOT/captions.jsonl; raises CaptionsError with file:line on the first bad line."""
    path = Path(root) / CAPTIONS_NAME
    if not path.is_file():
        raise CaptionsError(f"{path}: no captions file (one JSON object per line: file, caption)")
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = CaptionRecord.model_validate(json.loads(line))
        except json.JSONDecodeError as e:
            raise CaptionsError(f"{path}:{lineno}: not JSON: {e.msg}") from e
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "line"
            raise CaptionsError(f"{path}:{lineno}: {where}: {first['msg']}") from e
        if not (Path(root) / rec.file).is_file():
            raise CaptionsError(f"{path}:{lineno}: clip {rec.file!r} not found in {root}")
        records.append(rec)
    if not records:
        raise CaptionsError(f"{path}: no captions")
    return records


@dataclass
class CaptionedWindows:
    """Windows of a user's captioned clips: uint8 [N, T, S, S, 3] and the sentences of each."""

    frames: np.ndarray
    sentences: list[list[str]]
    errors: list[str]


def load_captioned_windows(
    root: str | Path, num_frames: int, image_size: int, stride: int = 4, fps: float = ANALYSIS_FPS
) -> CaptionedWindows:
    """Decode every captioned clip once and cut its described span into windows of T frames."""
    root = Path(root)
    xs: list[np.ndarray] = []
    sentences: list[list[str]] = []
    errors: list[str] = []
    for rec in read_captions(root):
        try:
            pts, frames = decode_analysis_frames(root / rec.file, image_size, fps)
        except Exception as e:  # a bad clip is reported and skipped; the rest still train
            errors.append(f"{root / rec.file}: {e}")
            continue
        pts = np.asarray(pts, dtype=float)
        keep = np.ones(len(frames), bool)
        if rec.start is not None:
            keep &= pts >= rec.start
        if rec.end is not None:
            keep &= pts <= rec.end
        span = frames[keep]
        if len(span) == 0:
            errors.append(f"{root / rec.file}: no frames between start and end")
            continue
        span = pad_to(span, num_frames)
        for i in range(0, len(span) - num_frames + 1, stride):
            xs.append(span[i : i + num_frames])
            sentences.append(rec.sentences)
    if not xs:
        raise CaptionsError(
            f"{root / CAPTIONS_NAME}: none of the captioned clips could be decoded: {errors[:3]}"
        )
    return CaptionedWindows(np.stack(xs), sentences, errors)
