"""The two records that flow through the pipeline (see shared design: Frame, Window).

Plain slotted dataclasses, not pydantic: they are created per frame on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from contracts.types import SourceRef
from media.zones import Point, draw_outline


@dataclass(frozen=True, slots=True)
class KeyImage:
    """A small picture of a frame for snapshots (worker.snapshots): the whole frame, made once
    per decoded frame and shared by every zone stream of it, so never written to. A zone
    stream's key image names its zone; the outline is drawn only when a snapshot is saved."""

    image: np.ndarray  # uint8 [h, w, 3] RGB, `snapshots.width` wide (model size from Kafka frames)
    zone: tuple[Point, ...] | None = None  # the zone's polygon, normalised

    def render(self) -> np.ndarray:
        """The picture to save: the frame, with the zone's outline where there is one."""
        return self.image if self.zone is None else draw_outline(self.image, self.zone)


@dataclass(slots=True)
class Frame:
    stream_id: str
    seq: int  # monotonic per stream, never reused across reconnects
    pts: float  # source presentation time, seconds
    capture_time: float  # unix seconds, wall clock at ingest
    image: np.ndarray  # uint8 [H, W, 3] RGB at model resolution
    # Where the frame came from, for offset bookkeeping (Kafka: (topic, partition, offset)).
    source_ref: SourceRef | None = None
    # For snapshots, when enabled (file and RTSP sources); the inference stage hands it on to
    # the windows this frame is the newest of, and drops it with the frame.
    key_image: KeyImage | None = None


@dataclass(slots=True)
class Window:
    stream_id: str
    index: int  # per-stream window counter
    start_seq: int
    end_seq: int  # inclusive
    start_pts: float
    end_pts: float
    frames: int  # T real frames it covers (fewer than the model's T when incomplete)
    complete: bool
    capture_time: float  # capture time of the newest frame, for end-to-end latency
    # Per-frame features [T, D] gathered from the stream's ring buffer (padded to the model's T).
    features: np.ndarray | None = None
    # Per-frame tokens [T, d] (the engine's step over each frame and its predecessor) of a
    # complete window; token 0 is recomputed at encode time as a frame with no predecessor.
    tokens: np.ndarray | None = None
    source_refs: list[SourceRef] = field(default_factory=list)
    # Stable id (stream, start_seq, model version; see worker.messages.window_id), set by the assembler.
    window_id: str = ""
    # The key image of the window's newest frame (InferenceStage): an event's snapshot is the
    # key image of its peak window.
    key_image: KeyImage | None = None
