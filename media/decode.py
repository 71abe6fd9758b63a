"""Decode and resize: the one place video frames become model-resolution uint8 RGB.

Training, eval and every source call `to_model_rgb`, so the model sees pixels made the same way
in training as in serving. `FrameViews` turns one decoded frame into every image a source with
zones needs (the whole frame, each zone, a small key image for snapshots) from one conversion.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from media.zones import Zone, coverage, intermediate_size

# AREA averages source pixels when shrinking 640x360 to 64x64; bilinear would alias fine detail.
INTERPOLATION = "AREA"


def to_model_rgb(
    frame: av.VideoFrame, size: tuple[int, int], reformatter: VideoReformatter | None = None
) -> np.ndarray:
    """A decoded frame -> uint8 [H, W, 3] RGB at `size` = (H, W). Aspect ratio is not kept.

    Pass a long-lived `reformatter` (one per thread) when converting many frames: it keeps its
    swscale context between frames (3-7x faster on small frames), with the same pixels.
    """
    h, w = size
    if reformatter is None:
        return frame.to_ndarray(width=w, height=h, format="rgb24", interpolation=INTERPOLATION)
    return reformatter.reformat(
        frame, width=w, height=h, format="rgb24", interpolation=INTERPOLATION
    ).to_ndarray()


def decode_file(path: str | Path, size: tuple[int, int]) -> Iterator[tuple[float, np.ndarray]]:
    """Every frame of a video file as (pts seconds, uint8 [H, W, 3])."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            pts = float(frame.time) if frame.time is not None else 0.0
            yield pts, to_model_rgb(frame, size)


class _ZoneCut:
    """One zone at one intermediate size: its pixel box and, for a polygon, its coverage mask."""

    def __init__(self, zone: Zone, width: int, height: int, size: tuple[int, int]):
        self.box = zone.pixel_box(width, height)
        x0, x1, y0, y1 = self.box
        self.mask: np.ndarray | None = None
        if not zone.rect:  # the box actually cut, in normalised units, decides what each pixel shows
            region = (x0 / width, y0 / height, x1 / width, y1 / height)
            self.mask = coverage(zone.points, region, *size)
        self.reformatter = VideoReformatter()  # its swscale context stays valid: the box size is fixed

    def cut(self, rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        x0, x1, y0, y1 = self.box
        h, w = size
        crop = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[y0:y1, x0:x1]), format="rgb24")
        img = self.reformatter.reformat(
            crop, width=w, height=h, format="rgb24", interpolation=INTERPOLATION
        ).to_ndarray()
        if self.mask is not None:  # outside the polygon is black, with anti-aliased edges
            img = (img * self.mask + 0.5).astype(np.uint8)
        return img


class FrameViews:
    """One decoded frame -> the model-size image of each view, and a small key image.

    Views, in order: the whole frame (if `full_frame`), then each zone. The whole frame is made
    exactly as `to_model_rgb` makes it. The zones share one conversion of the frame to RGB at
    `media.zones.intermediate_size` (the frame's own size unless it is much larger than the
    zones need), then each zone's box is cut out and resized to the model's size. The key image
    is the whole frame `key_width` pixels wide (aspect kept), or None when `key_width` is None.
    One instance per thread: it keeps swscale contexts between frames.
    """

    def __init__(
        self,
        size: tuple[int, int],
        zones: Sequence[Zone] = (),
        *,
        full_frame: bool = True,
        key_width: int | None = None,
    ):
        if not zones and not full_frame:
            raise ValueError("no views: give zones or keep the whole frame")
        self.size = size
        self.zones = tuple(zones)
        self.full_frame = full_frame
        self.key_width = key_width
        self._rf_full = VideoReformatter()
        self._rf_mid = VideoReformatter()
        self._rf_key = VideoReformatter()
        self._frame_size: tuple[int, int] | None = None  # (W, H) the cuts were made for
        self._mid: tuple[int, int] = (0, 0)
        self._cuts: list[_ZoneCut] = []

    def __len__(self) -> int:
        return int(self.full_frame) + len(self.zones)

    def _layout(self, width: int, height: int) -> None:
        # A camera may come back at another resolution: cut again for the new size.
        self._frame_size = (width, height)
        self._mid = intermediate_size(self.zones, width, height, self.size)
        self._cuts = [_ZoneCut(z, *self._mid, self.size) for z in self.zones]

    def intermediate(self, width: int, height: int) -> tuple[int, int]:
        """(W, H) the zones of a width x height frame are cut from."""
        if self._frame_size != (width, height):
            self._layout(width, height)
        return self._mid

    def __call__(self, frame: av.VideoFrame) -> tuple[list[np.ndarray], np.ndarray | None]:
        """(one uint8 [H, W, 3] image per view, key image or None)."""
        out: list[np.ndarray] = []
        if self.full_frame:
            out.append(to_model_rgb(frame, self.size, self._rf_full))
        if self.zones:
            mw, mh = self.intermediate(frame.width, frame.height)
            rgb = self._rf_mid.reformat(
                frame, width=mw, height=mh, format="rgb24", interpolation=INTERPOLATION
            ).to_ndarray()
            out.extend(c.cut(rgb, self.size) for c in self._cuts)
        key = None
        if self.key_width is not None:
            kw = min(self.key_width, frame.width)
            kh = max(2, round(frame.height * kw / frame.width / 2) * 2)  # even: JPEG chroma likes it
            key = self._rf_key.reformat(
                frame, width=kw, height=kh, format="rgb24", interpolation=INTERPOLATION
            ).to_ndarray()
        return out, key
