"""Snapshot references -> what an <img> on the page points at.

An event's `snapshot` is the reference worker/snapshots.py gives the peak window's key frame: a
path relative to the store's directory, or a `file://` URI. The page must open without the store
and without a network, so each snapshot found is copied next to the pages (`snapshots/<digest>.jpg`,
a relative link) or inlined as a data URI. A reference that cannot be read, or names a file that
is not a JPEG, gives None, and the page shows a placeholder saying why.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

SNAPSHOT_DIR = "snapshots"
JPEG_MAGIC = b"\xff\xd8"


def resolve(ref: str, root: Path) -> Path | str:
    """The file a reference names (as worker.snapshots writes them), or why there is none."""
    parsed = urlparse(ref)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # http:, s3:, ... (a one-letter one is a drive)
        return "not a local file"
    path = Path(ref)
    if path.is_absolute():
        return path
    # A relative reference stays inside the store, as the store itself checks.
    if not (root / path).resolve().is_relative_to(root.resolve()):
        return f"outside the snapshot directory {root}"
    return root / path


@dataclass
class SnapshotLinker:
    """Per reference, the <img> source to use; copies (or inlines) each file once."""

    root: Path  # the snapshot store's directory: relative references resolve against it
    out_dir: Path  # where the pages go
    inline: bool = False
    missing: dict[str, str] = field(default_factory=dict)  # reference -> why it is not shown
    _done: dict[str, str] = field(default_factory=dict)

    def src(self, ref: str | None) -> str | None:
        if not ref:
            return None
        if ref in self._done:
            return self._done[ref]
        if ref in self.missing:
            return None
        path = resolve(ref, self.root)
        if isinstance(path, str):
            self.missing[ref] = path
            return None
        try:
            data = path.read_bytes()
        except OSError as e:
            self.missing[ref] = f"{path}: {e.strerror or e}"
            return None
        if not data.startswith(JPEG_MAGIC):  # only pictures leave for the page, never another file
            self.missing[ref] = f"{path}: not a JPEG"
            return None
        if self.inline:
            src = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
        else:
            name = hashlib.sha256(ref.encode()).hexdigest()[:20] + (path.suffix.lower() or ".jpg")
            dest = self.out_dir / SNAPSHOT_DIR / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            src = f"{SNAPSHOT_DIR}/{name}"
        self._done[ref] = src
        return src
