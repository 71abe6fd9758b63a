"""SnapshotStore on a real directory: JPEG files, references, safe paths, retention by count and
by age (at save, by tick, across restarts), and many threads saving at once."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from media.zones import Zone
from worker.config import SnapshotsConfig
from worker.frames import KeyImage
from worker.snapshots import SnapshotError, SnapshotStore, relative_path


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def picture(w: int = 64, h: int = 36, value: int = 120) -> np.ndarray:
    img = np.full((h, w, 3), value, np.uint8)
    img[: h // 2, : w // 2] = (200, 30, 30)
    return img


def decode_jpeg(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_save_writes_a_jpeg_and_returns_its_relative_reference(tmp_path: Path):
    store = SnapshotStore(tmp_path / "snaps")
    ref = store.save("cam1/door", "ev-1", picture())
    assert ref == "cam1/door/ev-1.jpg"
    path = store.resolve(ref)
    assert path == (tmp_path / "snaps" / "cam1" / "door" / "ev-1.jpg").resolve()
    assert path.read_bytes()[:2] == b"\xff\xd8"  # JPEG SOI
    got = decode_jpeg(path)
    assert got.shape == (36, 64, 3)
    np.testing.assert_allclose(got[5, 5], (200, 30, 30), atol=12)
    np.testing.assert_allclose(got[30, 60], (120, 120, 120), atol=8)
    assert store.saved == 1 and len(store) == 1


def test_a_zone_key_image_is_saved_with_its_outline(tmp_path: Path):
    store = SnapshotStore(tmp_path)
    frame = np.zeros((90, 160, 3), np.uint8)
    key = KeyImage(frame, Zone.from_rect("door", 0.5, 0.0, 1.0, 1.0).points)
    got = decode_jpeg(store.resolve(store.save("cam1/door", "e", key)))
    assert got[45, 80].astype(int).sum() > 200  # the outline, at x = 0.5
    assert got[45, 40].astype(int).sum() < 30 and got[45, 120].astype(int).sum() < 30
    assert frame.sum() == 0  # the shared key image is untouched


def test_saving_an_id_again_replaces_its_file(tmp_path: Path):
    store = SnapshotStore(tmp_path)
    store.save("s", "e", picture(value=10))
    store.save("s", "e", picture(value=240))
    assert files(tmp_path) == {"s/e.jpg"} and len(store) == 1
    assert decode_jpeg(tmp_path / "s" / "e.jpg")[30, 60].mean() > 200


@pytest.mark.parametrize(
    ("stream", "item", "rel"),
    [
        ("../../etc", "passwd", "%2E./%2E./etc/passwd.jpg"),
        (".hidden", "x", "%2Ehidden/x.jpg"),
        ("cam 1:a", "ev/../x", "cam%201%3Aa/ev%2F..%2Fx.jpg"),
        ("cam1//z", "e", "cam1/%00/z/e.jpg"),
    ],
)
def test_paths_stay_inside_the_store(tmp_path: Path, stream: str, item: str, rel: str):
    assert relative_path(stream, item) == rel
    root = tmp_path / "store"
    store = SnapshotStore(root)
    path = store.resolve(store.save(stream, item, picture()))
    assert path.is_file() and path.is_relative_to(root.resolve())
    assert files(tmp_path) == {f"store/{rel}"}


def test_file_uri_references_and_resolve_refuses_outside(tmp_path: Path):
    store = SnapshotStore(tmp_path / "s", reference="file_uri")
    ref = store.save("cam1/door", "e1", picture())
    assert ref == (tmp_path / "s" / "cam1" / "door" / "e1.jpg").resolve().as_uri()
    assert store.resolve(ref).is_file()
    with pytest.raises(ValueError, match="outside"):
        store.resolve("../elsewhere.jpg")
    with pytest.raises(ValueError, match="outside"):
        store.resolve((tmp_path / "x.jpg").as_uri())


def test_retention_by_count_deletes_the_oldest(tmp_path: Path):
    clock = Clock()
    store = SnapshotStore(tmp_path, max_count=3, clock=clock)
    for i in range(5):
        clock.t += 1
        store.save("s", f"e{i}", picture())
    assert files(tmp_path) == {"s/e2.jpg", "s/e3.jpg", "s/e4.jpg"}
    assert store.pruned == 2
    clock.t += 1
    store.save("s", "e2", picture())  # saved again: now the newest
    clock.t += 1
    store.save("s", "e5", picture())
    assert files(tmp_path) == {"s/e4.jpg", "s/e2.jpg", "s/e5.jpg"}


def test_retention_by_age_at_save_and_by_tick(tmp_path: Path):
    clock = Clock()
    store = SnapshotStore(tmp_path, max_age_s=10, prune_interval_s=5, clock=clock)
    store.save("a", "old", picture())
    clock.t += 6
    store.save("b", "mid", picture())
    clock.t += 5  # old is 11 s old, but no save and the interval since the last prune is only 5 s
    assert store.tick() == 1 and files(tmp_path) == {"b/mid.jpg"}
    clock.t += 1
    assert store.tick() == 0  # within prune_interval_s of the last prune: nothing checked
    clock.t += 9  # mid is 15 s old: the next save prunes it
    store.save("c", "new", picture())
    assert files(tmp_path) == {"c/new.jpg"} and store.pruned == 2


def test_a_restarted_store_applies_retention_to_files_already_there(tmp_path: Path):
    clock = Clock()
    store = SnapshotStore(tmp_path, clock=clock)
    for i in range(4):
        store.save("s", f"e{i}", picture())
        os.utime(tmp_path / "s" / f"e{i}.jpg", (clock.t - 100 + i, clock.t - 100 + i))
    (tmp_path / "s" / "e9.jpg.123.tmp").write_bytes(b"half a write")  # a crash mid-write
    again = SnapshotStore(tmp_path, max_count=2, clock=clock)
    assert files(tmp_path) == {"s/e2.jpg", "s/e3.jpg"} and len(again) == 2
    third = SnapshotStore(tmp_path, max_age_s=97.5, clock=clock)  # e2 is 98 s old, e3 97 s
    assert files(tmp_path) == {"s/e3.jpg"} and len(third) == 1


def test_many_threads_save_at_once(tmp_path: Path):
    store = SnapshotStore(tmp_path, max_count=60)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(n: int) -> None:
        try:
            start.wait()
            for i in range(40):
                # overlapping ids across threads: the same event saved by two threads at once
                ref = store.save(f"cam{n % 3}/z", f"e{i % 25}", picture(value=(n * 40 + i) % 256))
                assert ref.endswith(".jpg")
                store.tick()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert store.saved == 320
    on_disk = files(tmp_path)
    assert len(on_disk) == len(store) <= 60  # the index and the directory agree
    assert set(store._index) == on_disk
    assert all(decode_jpeg(tmp_path / rel).shape == (36, 64, 3) for rel in on_disk)  # no torn files


def test_write_failures_raise_snapshot_error_with_context(tmp_path: Path):
    (tmp_path / "cam1").write_bytes(b"a file where the stream's folder would go")
    store = SnapshotStore(tmp_path)
    with pytest.raises(SnapshotError, match=r"snapshot of cam1/door ev-7: .*cam1/door/ev-7\.jpg") as e:
        store.save("cam1/door", "ev-7", picture())
    assert e.value.retriable is True and isinstance(e.value, OSError)
    assert len(store) == 0
    with pytest.raises(SnapshotError, match="snapshot directory"):
        SnapshotStore(tmp_path / "cam1" / "below-a-file")


def test_from_config(tmp_path: Path):
    assert SnapshotStore.from_config(SnapshotsConfig()) is None  # off by default
    sc = SnapshotsConfig(enabled=True, dir=tmp_path / "d", max_count=5, max_age_s=60, reference="file_uri")
    store = SnapshotStore.from_config(sc)
    assert store is not None and store.max_count == 5 and store.max_age_s == 60
    assert store.save("x", "y", picture()).startswith("file://")
