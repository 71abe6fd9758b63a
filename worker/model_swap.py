"""Hot model swap, the pure parts: what a swap request returns, whether a new model can replace
the running one without a restart, and one stream's handover from the old model to the new.

How a swap runs (threads in worker.pipeline, the stage in worker.inference_stage):

    Pipeline.swap_model(engine_cfg) ──swap thread──> load beside the old model, check, warm up
        ──> inference thread: InferenceStage.begin_swap(new engine)
            every stream with frames buffered forks its window assembler (a Handover):
            frames go through BOTH frame encoders until the stream's buffer holds no frame
            from before the swap; each window is analysed by the old model if it starts at or
            before the last frame seen before the swap, by the new one otherwise
        ──> no handover left and no old-model window waiting: the old engine is closed

Why a fork and two encoders: a window's features come from the per-frame cache (each frame is
encoded once), so a window analysed by the new model must hold only features of the new frame
encoder. The fork cuts exactly the windows the old assembler cuts (same frames, same grid,
same index), so for each stream there is one boundary: every window before it is the old
model's, every window from it the new model's, none missing, none twice. Frames are encoded
twice only for the frames of the windows that straddle the swap (at most T-1 per stream).

A stream with frames buffered and no new ones (a paused Kafka producer) would hold the old
model for ever: after `HANDOVER_TIMEOUT_S` its window state is closed (reason `model_swap`,
the partial policy applies, counted) so the old model can go.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from contracts.errors import VbwError
from engines.base import EngineInfo
from worker.windows import FrameMeta, SlidingWindowAssembler, Step

# Longest a stream may hold the old model with no new frame (see the module doc).
HANDOVER_TIMEOUT_S = 60.0

SwapOutcome = Literal["switched", "relabelled", "failed", "unchanged"]


class ModelSwapError(VbwError):
    """The new model cannot serve (bad model dir, load or warm-up error, incompatible): the
    running one goes on. One line naming the model dir or model and what to fix."""


@dataclass(frozen=True, slots=True)
class SwapResult:
    """What became of one `Pipeline.swap_model` request.

    - `switched`: the new model is loaded and warm, and the inference thread has begun handing
      streams over (every window cut from then on whose frames all came after the swap is the
      new model's; the old model goes once no stream needs it).
    - `failed`: the old model keeps running; `error` says why (bad model dir, load or warm-up
      error, a model that cannot replace this one without a restart, shutdown).
    - `relabelled`: the request names the model already running with other zero-shot labels
      (`engine.labels`): nothing was loaded; the inference thread encoded the new prompts and
      every window cut from then on carries them (each stream switches at one window boundary).
    - `unchanged`: the request names the model already running (same dir, backend, precision,
      version and files) and the same labels; nothing was loaded.
    """

    outcome: SwapOutcome
    old_version: str
    new_version: str | None = None
    error: str | None = None
    load_s: float = 0.0  # load + checks + warm-up, seconds

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"


def return_freed_memory() -> None:
    """Give the heap a closed engine freed back to the OS. glibc keeps freed memory in its
    arenas, so without this RSS stays ~30 MB above one engine's after a few swaps of the
    shipped model (vbw bench swap); with it, it is back at one engine's. No library wraps
    malloc_trim; a no-op where there is no glibc."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl, macOS)
        ctypes.CDLL(name).malloc_trim(0)


def model_fingerprint(model_dir: Path) -> str | None:
    """sha256 of the directory's model.json, which holds the version and every file's sha256:
    a changed model directory reads differently (None when there is none to read)."""
    try:
        return hashlib.sha256((Path(model_dir) / "model.json").read_bytes()).hexdigest()
    except OSError:
        return None


def incompatibilities(old: EngineInfo, new: EngineInfo, *, events: bool) -> list[str]:
    """Why `new` cannot take over from `old` without a restart (empty: it can). Frames in flight
    are already resized to the old input size, windows are cut at the old T, and the segment
    rules (events) index the old labels."""
    problems = []
    if tuple(new.image_size) != tuple(old.image_size):
        problems.append(f"input size {list(new.image_size)} != running {list(old.image_size)}")
    if new.num_frames != old.num_frames:
        problems.append(f"T={new.num_frames} != running T={old.num_frames}")
    if events and tuple(new.labels) != tuple(old.labels):
        problems.append("labels differ from the running model's and segment events are on")
    return problems


class Handover:
    """One stream's switch of model at a window boundary: the old assembler and its fork, fed
    the same frames (old and new features) and closes. Pure; `worker.inference_stage` runs it.

    The boundary: windows starting at or before `after_seq` (the stream's last frame before the
    swap) are the old model's, the rest the new model's. Both assemblers cut the same windows,
    so the merged step is theirs with each window taken from one side."""

    def __init__(self, old: SlidingWindowAssembler, new_version: str, since: float):
        if old.last_seq is None:
            raise ValueError(f"stream {old.stream_id}: nothing to hand over")
        self.old = old
        self.new = old.fork(new_version)
        self.after_seq: int = old.last_seq
        self.since = since

    @staticmethod
    def needed(old: SlidingWindowAssembler) -> bool:
        """A stream with no frame buffered needs no handover: its next window is all new."""
        return old.first_seq is not None

    @property
    def done(self) -> bool:
        """No window of the old model can come any more: the old assembler may go."""
        first = self.old.first_seq
        return first is None or first > self.after_seq

    def push(
        self,
        meta: FrameMeta,
        old: tuple[np.ndarray, np.ndarray | None],
        new: tuple[np.ndarray, np.ndarray | None],
    ) -> tuple[Step, list[bool]]:
        """One frame with its (features, token) from each model. Returns the merged step and,
        per window, whether it is the new model's."""
        return self._merge(self.old.push(meta, *old), self.new.push(meta, *new))

    def close(self, reason: str, emit_partial: bool = True) -> tuple[Step, list[bool]]:
        return self._merge(self.old.close(reason, emit_partial), self.new.close(reason, emit_partial))

    def drop(self) -> Step:
        self.old.drop()
        return self.new.drop()

    def _merge(self, old: Step, new: Step) -> tuple[Step, list[bool]]:
        if [w.index for w in old.windows] != [w.index for w in new.windows]:  # never: same frames, same grid
            raise AssertionError(
                f"stream {self.old.stream_id}: the handover's assemblers cut different windows"
            )
        is_new = [w.start_seq > self.after_seq for w in new.windows]
        windows = [n if nw else o for o, n, nw in zip(old.windows, new.windows, is_new, strict=True)]
        return Step(windows=windows, released=new.released, events=new.events), is_new
