"""Event snapshots: the key frame of an event's peak window, as a JPEG in a local directory.

The directory (`snapshots.dir`; a volume in Kubernetes) holds one file per saved snapshot:

    <dir>/<stream id, one folder per `/` part>/<event or window id>.jpg      e.g. cam1/door/3f2a….jpg

Each path part is percent-encoded where it is not a plain name (Kafka stream ids are whatever
the producer sent), so nothing lands outside the directory. Saving the same id again replaces
the file: a replayed event (same `event_id`) keeps one snapshot. Retention: at most `max_count`
files (oldest first) and none older than `max_age_s`; pruned at each save and by `tick()`.
Files already in the directory at start count too (by modification time), so the limits hold
across restarts.

Hook for the segmenter (issue 10 part 2), which owns the events:

    store = SnapshotStore.from_config(cfg.snapshots)   # None when snapshots.enabled is false
    ...
    # when an event's peak window changes (or at its end): the peak window's key image
    try:
        ref = store.save(window.stream_id, event_id, window.key_image)
    except SnapshotError as e:  # disk full, permissions: the event goes out without a snapshot
        log.warning("%s", e)
    ...
    store.tick()  # from any periodic loop: age pruning while nothing is saved

`window.key_image` (worker.frames.KeyImage) is the window's newest frame, `snapshots.width`
wide; a zone stream's snapshot is the whole frame with the zone's outline drawn. Frames read
from Kafka carry no key image: their model-size picture is saved instead. The returned
reference is what the event carries: a path relative to the directory (default) or a file://
URI (`snapshots.reference`); `resolve(ref)` turns either back into a path. `save` and `tick`
are thread-safe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

import numpy as np

from contracts.errors import VbwError
from worker.config import SnapshotsConfig
from worker.frames import KeyImage
from worker.kafka.frame_codec import FrameEncoder

log = logging.getLogger("vbw.snapshots")

SUFFIX = ".jpg"
_TMP = ".tmp"


class SnapshotError(VbwError, OSError):
    """A snapshot could not be written (the message names the stream, id and file). Retriable:
    a full disk may have room again once retention has pruned."""

    retriable = True


def _part(text: str) -> str:
    """One path part: percent-encode all but [A-Za-z0-9_.-~], and a leading dot ('..', hidden)."""
    q = quote(text, safe="")
    if not q or q.startswith("."):
        q = "%2E" + q[1:] if q else "%00"
    return q


class _Encoders(threading.local):
    """One JPEG encoder per thread (an FFmpeg codec context is not shared between threads)."""

    def __init__(self, quality: int) -> None:
        self.encoder = FrameEncoder("jpeg", quality)


def relative_path(stream_id: str, item_id: str) -> str:
    """The file of a snapshot, relative to the store's directory (POSIX separators)."""
    return "/".join([*(_part(p) for p in stream_id.split("/")), _part(item_id) + SUFFIX])


class SnapshotStore:
    """Thread-safe JPEG store with retention by count and age. See the module docstring."""

    def __init__(
        self,
        root: str | Path,
        *,
        quality: int = 85,
        max_count: int | None = None,
        max_age_s: float | None = None,
        prune_interval_s: float = 60.0,
        reference: Literal["relative", "file_uri"] = "relative",
        clock: Callable[[], float] = time.time,
    ):
        self.root = Path(root)
        self.quality = quality
        self.max_count = max_count
        self.max_age_s = max_age_s
        self.prune_interval_s = prune_interval_s
        self.reference = reference
        self._clock = clock
        self._lock = threading.Lock()
        # relative path -> saved at (unix seconds), oldest first (a save again moves it last)
        self._index: dict[str, float] = {}
        self._encoders = _Encoders(quality)
        self._next_prune = 0.0
        self.saved = 0  # snapshots written by this process
        self.pruned = 0  # files deleted by retention
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SnapshotError(f"snapshot directory {self.root}: {e.strerror or e}") from None
        self._scan()
        with self._lock:
            self._prune_locked(self._clock())

    @classmethod
    def from_config(cls, sc: SnapshotsConfig) -> SnapshotStore | None:
        if not sc.enabled:
            return None
        return cls(
            sc.dir,
            quality=sc.quality,
            max_count=sc.max_count,
            max_age_s=sc.max_age_s,
            prune_interval_s=sc.prune_interval_s,
            reference=sc.reference,
        )

    def __len__(self) -> int:
        with self._lock:
            return len(self._index)

    # -- saving -------------------------------------------------------------------------------------
    def save(self, stream_id: str, item_id: str, image: np.ndarray | KeyImage) -> str:
        """Write `image` (uint8 [H, W, 3] RGB, or a KeyImage) as the JPEG of (stream, event or
        window id), prune, and return the reference the event carries. Raises SnapshotError."""
        pixels = image.render() if isinstance(image, KeyImage) else image
        rel = relative_path(stream_id, item_id)
        try:
            data, _ = self._encoders.encoder.encode_image(pixels)  # outside the lock: the slow part
        except (ValueError, OSError) as e:  # av.FFmpegError is an OSError
            raise SnapshotError(f"snapshot of {stream_id} {item_id}: cannot encode JPEG: {e}") from None
        path = self.root / rel
        # Unique per thread: two threads saving one id never share a temporary file.
        tmp = path.with_name(f"{path.name}.{threading.get_ident()}{_TMP}")
        with self._lock:  # the write and the index change together, so a prune never races a save
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(data)
                tmp.replace(path)  # readers see the old file or the new one, never half of one
            except OSError as e:
                with contextlib.suppress(OSError):  # the folder may be what failed
                    tmp.unlink(missing_ok=True)
                raise SnapshotError(f"snapshot of {stream_id} {item_id}: {path}: {e.strerror or e}") from None
            now = self._clock()
            self._index.pop(rel, None)
            self._index[rel] = now
            self.saved += 1
            self._prune_locked(now)
        return self.ref(rel)

    # -- references ---------------------------------------------------------------------------------
    def ref(self, rel: str) -> str:
        if self.reference == "file_uri":
            return (self.root.resolve() / rel).as_uri()
        return rel

    def resolve(self, ref: str) -> Path:
        """The file a reference names (either form). Raises ValueError for one outside the store."""
        if ref.startswith("file://"):
            path = Path(unquote(urlsplit(ref).path)).resolve()
        else:
            path = (self.root / ref).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"snapshot reference {ref!r} is outside {self.root}")
        return path

    # -- retention ----------------------------------------------------------------------------------
    def tick(self) -> int:
        """Prune by age if `prune_interval_s` has passed since the last prune. Returns files deleted."""
        now = self._clock()
        with self._lock:
            if now < self._next_prune:
                return 0
            return self._prune_locked(now)

    def prune(self) -> int:
        """Apply both limits now. Returns the number of files deleted."""
        with self._lock:
            return self._prune_locked(self._clock())

    def _prune_locked(self, now: float) -> int:
        self._next_prune = now + self.prune_interval_s
        doomed: dict[str, None] = {}  # an ordered set
        if self.max_count is not None and len(self._index) > self.max_count:
            doomed.update(dict.fromkeys(list(self._index)[: len(self._index) - self.max_count]))
        if self.max_age_s is not None:
            cutoff = now - self.max_age_s
            for rel, saved_at in self._index.items():  # oldest first: stop at the first young one
                if saved_at >= cutoff:
                    break
                doomed[rel] = None
        for rel in doomed:
            del self._index[rel]
            try:
                (self.root / rel).unlink(missing_ok=True)
            except OSError as e:  # keep going: one stuck file must not stop retention
                log.warning("snapshot %s not deleted: %s", self.root / rel, e.strerror or e)
        self.pruned += len(doomed)
        return len(doomed)

    def _scan(self) -> None:
        """Index the files already there (oldest first by modification time); drop leftovers of
        writes a crash interrupted."""
        found: list[tuple[float, str]] = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                p = Path(dirpath) / name
                if name.endswith(_TMP):
                    p.unlink(missing_ok=True)
                elif name.endswith(SUFFIX):
                    try:
                        found.append((p.stat().st_mtime, p.relative_to(self.root).as_posix()))
                    except OSError:
                        continue  # deleted meanwhile
        with self._lock:
            for mtime, rel in sorted(found):
                self._index[rel] = mtime
