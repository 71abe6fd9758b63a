"""Zones: config validation, crop geometry (rect and polygon), one decode per frame with several
zones on a real H.264 file, key images, and the inference stage handing each window the key image
of its newest frame."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from fake_engine import FakeEngine

from media.clips import write_mp4
from media.decode import FrameViews, to_model_rgb
from media.zones import Zone, coverage, draw_outline, intermediate_size, polygon_area, self_intersects
from worker.config import BatchingConfig, ConfigError, SamplingConfig, WindowsConfig, parse_config
from worker.frames import Frame, KeyImage
from worker.inference_stage import InferenceStage, StreamReset
from worker.metrics import Metrics
from worker.sources.file import FileSource


class Collect:
    """A SourceContext that records frames and resets (as in test_sources)."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.image_size = (64, 64)
        self.frames: list[Frame] = []
        self.resets: list[tuple[str, str]] = []

    def stopping(self) -> bool:
        return False

    def wait(self, s: float) -> bool:
        return False

    def emit(self, f: Frame) -> bool:
        self.frames.append(f)
        return True

    def stream_reset(self, sid: str, reason: str, emit_partial: bool = True) -> None:
        self.resets.append((sid, reason))


QUADRANTS = {  # name -> (rect, colour drawn there)
    "tl": ((0.0, 0.0, 0.5, 0.5), (250, 20, 20)),
    "tr": ((0.5, 0.0, 1.0, 0.5), (20, 250, 20)),
    "bl": ((0.0, 0.5, 0.5, 1.0), (20, 20, 250)),
    "br": ((0.5, 0.5, 1.0, 1.0), (240, 240, 30)),
}


def quadrant_image(w: int = 320, h: int = 180) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    for (x0, y0, x1, y1), color in QUADRANTS.values():
        img[round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)] = color
    return img


def as_frame(img: np.ndarray, fmt: str = "rgb24") -> av.VideoFrame:
    f = av.VideoFrame.from_ndarray(img, format="rgb24")
    return f if fmt == "rgb24" else f.reformat(format=fmt)


def cfg_with(zones: list, **source: object) -> object:
    return parse_config(
        {"sources": [{"type": "file", "id": "cam1", "path": "x.mp4", "zones": zones, **source}]}
    )


# -- config -----------------------------------------------------------------------------------------


def test_zone_config_gives_zone_streams_and_media_zones():
    cfg = cfg_with(
        [
            {"name": "door", "rect": [0.1, 0.2, 0.5, 0.9]},
            {"name": "yard.1", "polygon": [[0.5, 0.5], [1, 0.5], [0.75, 1]]},
        ]
    )
    sc = cfg.sources[0]
    assert sc.stream_ids() == ["cam1/door", "cam1/yard.1"]
    door, yard = (z.zone() for z in sc.zones)
    assert door.rect and door.bbox() == (0.1, 0.2, 0.5, 0.9)
    assert not yard.rect and yard.points == ((0.5, 0.5), (1.0, 0.5), (0.75, 1.0))
    assert cfg_with([{"name": "a", "rect": [0, 0, 1, 1]}], full_frame=True).sources[0].stream_ids() == [
        "cam1",
        "cam1/a",
    ]
    assert cfg_with([]).sources[0].stream_ids() == ["cam1"]  # no zones: the whole frame, as before
    rtsp = parse_config(
        {
            "sources": [
                {
                    "type": "rtsp",
                    "id": "c",
                    "url": "rtsp://h/x",
                    "zones": [{"name": "z", "rect": [0, 0, 1, 1]}],
                }
            ]
        }
    )
    assert rtsp.sources[0].stream_ids() == ["c/z"]


@pytest.mark.parametrize(
    ("zone", "message"),
    [
        ({"name": "a/b", "rect": [0, 0, 1, 1]}, "String should match pattern"),
        ({"name": "..", "rect": [0, 0, 1, 1]}, "String should match pattern"),
        ({"name": "a", "rect": [0, 0, 1.2, 1]}, "less than or equal to 1"),
        ({"name": "a", "rect": [0, -0.1, 1, 1]}, "greater than or equal to 0"),
        ({"name": "a", "rect": [0.5, 0, 0.5, 1]}, "rect needs x0 < x1 and y0 < y1"),
        ({"name": "a", "rect": [0, 0.6, 1, 0.2]}, "rect needs x0 < x1 and y0 < y1"),
        ({"name": "a", "rect": [0, 0, 1]}, "rect.3: Field required"),
        ({"name": "a"}, "give exactly one of rect or polygon"),
        ({"name": "a", "rect": [0, 0, 1, 1], "polygon": [[0, 0], [1, 0], [0, 1]]}, "exactly one"),
        ({"name": "a", "polygon": [[0, 0], [1, 1]]}, "3 or more vertices"),
        ({"name": "a", "polygon": [[0, 0], [0.5, 0.5], [1, 1]]}, "polygon has no area"),
        ({"name": "a", "polygon": [[0, 0], [1, 1], [1, 0], [0, 1]]}, "polygon edges cross"),
        ({"name": "a", "polygon": [[0, 0], [1, 0], [1.5, 1]]}, "less than or equal to 1"),
        ({"name": "a", "rect": [0, 0, 1, 1], "colour": "red"}, "unknown key"),
    ],
)
def test_bad_zones_are_reported_with_their_path(zone: dict, message: str):
    with pytest.raises(ConfigError) as e:
        cfg_with([{"name": "ok", "rect": [0, 0, 1, 1]}, zone])
    text = str(e.value)
    assert "sources.0.zones.1" in text and message in text, text


def test_duplicate_zone_names_are_refused():
    with pytest.raises(ConfigError, match=r"sources\.0\.zones: duplicate zone name\(s\): door"):
        cfg_with([{"name": "door", "rect": [0, 0, 0.5, 1]}, {"name": "door", "rect": [0.5, 0, 1, 1]}])


def test_polygon_helpers():
    square = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    assert polygon_area(square) == 1.0 and polygon_area([(0, 0), (1, 0), (0, 1)]) == 0.5
    assert not self_intersects(square)
    assert self_intersects([(0, 0), (1, 1), (1, 0), (0, 1)])
    assert not self_intersects([(0, 0), (1, 0), (1, 1), (0.5, 0.2), (0, 1)])  # concave is fine


# -- geometry ---------------------------------------------------------------------------------------


def test_pixel_box_covers_the_zone_in_whole_pixels():
    z = Zone.from_rect("a", 0.25, 0.1, 0.5, 0.95)
    assert z.pixel_box(320, 180) == (80, 160, 18, 171)
    assert Zone.from_rect("t", 0.3, 0.3, 0.3001, 0.3001).pixel_box(64, 64) == (19, 20, 19, 20)  # >= 1 px
    assert Zone.from_rect("q", 0.5, 0.5, 1, 1).pixel_box(256, 256) == (128, 256, 128, 256)


@pytest.mark.parametrize("fmt", ["rgb24", "yuv444p"])
def test_rect_zones_cut_their_quadrant(fmt: str):
    zones = [Zone.from_rect(n, *r) for n, (r, _) in QUADRANTS.items()]
    views = FrameViews((64, 64), zones, full_frame=True, key_width=160)
    frame = as_frame(quadrant_image(), fmt)
    images, key = views(frame)
    assert len(images) == len(views) == 5
    np.testing.assert_array_equal(images[0], to_model_rgb(frame, (64, 64)))  # the whole frame, as before
    for img, (_, color) in zip(images[1:], QUADRANTS.values(), strict=True):
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        np.testing.assert_allclose(img.reshape(-1, 3).mean(0), color, atol=3)  # only its own colour
        assert np.abs(img.astype(int) - color).max() <= 6
    assert key is not None and key.shape == (90, 160, 3)


def test_a_zone_cut_matches_cropping_the_full_frame_then_resizing():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (180, 320, 3), dtype=np.uint8)
    z = Zone.from_rect("a", 0.25, 0.2, 0.75, 0.9)
    (out,), _ = FrameViews((32, 48), [z], full_frame=False)(as_frame(img))
    x0, x1, y0, y1 = z.pixel_box(320, 180)
    want = to_model_rgb(as_frame(np.ascontiguousarray(img[y0:y1, x0:x1])), (32, 48))
    np.testing.assert_array_equal(out, want)


def test_a_large_frame_is_converted_once_at_a_smaller_intermediate_size():
    quads = [Zone.from_rect(n, *r) for n, (r, _) in QUADRANTS.items()]
    assert intermediate_size(quads, 1920, 1080, (64, 64)) == (256, 256)
    assert intermediate_size(quads, 320, 180, (64, 64)) == (320, 180)  # small: its own size
    small = [Zone.from_rect("s", 0.0, 0.0, 0.1, 0.1)]
    assert intermediate_size(small, 1920, 1080, (64, 64)) == (1920, 1080)  # the zone needs every pixel
    big = quadrant_image(1920, 1080)
    views = FrameViews((64, 64), quads, full_frame=False)
    images, key = views(as_frame(big))
    assert views.intermediate(1920, 1080) == (256, 256) and key is None
    for img, (_, color) in zip(images, QUADRANTS.values(), strict=True):
        np.testing.assert_allclose(img.reshape(-1, 3).mean(0), color, atol=3)


def test_polygon_zone_masks_outside_its_polygon():
    img = np.full((180, 320, 3), 200, np.uint8)
    tri = Zone.from_polygon("tri", [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)])  # bbox = the whole frame
    (out,), _ = FrameViews((64, 64), [tri], full_frame=False)(as_frame(img))
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 63].tolist() == [0, 0, 0]  # top corners: outside
    assert out[60, 32].tolist() == [200, 200, 200]  # bottom middle: inside
    lit = out[..., 0].astype(float).sum() / (200 * 64 * 64)
    assert lit == pytest.approx(0.5, abs=0.02)  # the triangle is half its box
    # the mask follows the box actually cut: a polygon in one corner
    corner = [(0.5, 0.5), (1.0, 0.5), (1.0, 1.0)]
    cov = coverage(corner, (0.5, 0.5, 1.0, 1.0), 16, 16)
    assert cov.shape == (16, 16, 1) and cov[15, 0, 0] == 0.0 and cov[0, 15, 0] == 1.0
    assert cov.mean() == pytest.approx(0.5, abs=0.03)


def test_key_image_renders_the_zone_outline_on_a_copy():
    base = np.zeros((90, 160, 3), np.uint8)
    k = KeyImage(base, Zone.from_rect("a", 0.5, 0.5, 1, 1).points)
    drawn = k.render()
    assert base.sum() == 0  # shared with the frame's other views: never written to
    assert drawn[45, 100].tolist() == [255, 64, 0] and drawn[89, 120].tolist() == [255, 64, 0]
    assert drawn[20, 20].tolist() == [0, 0, 0] and drawn[70, 120].tolist() == [0, 0, 0]
    assert KeyImage(base).render() is base
    assert draw_outline(base, [(0, 0), (1, 0), (1, 1)], half_width=0)[0, 80].tolist() == [255, 64, 0]


# -- the file source --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quadrant_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s at 10 fps: the quadrant picture with a per-frame brightness ramp (so frames differ)."""
    base = quadrant_image(192, 108).astype(np.int16)
    frames = np.stack([np.clip(base + i, 0, 255).astype(np.uint8) for i in range(20)])
    path = tmp_path_factory.mktemp("zones") / "quadrants.mp4"
    write_mp4(frames, path, 10.0, crf=12)
    return path


def test_file_source_decodes_each_frame_once_for_every_zone(quadrant_clip: Path, monkeypatch):
    calls = []
    real_call = FrameViews.__call__

    def counting(self: FrameViews, frame: av.VideoFrame):  # type: ignore[no-untyped-def]
        calls.append(frame)
        return real_call(self, frame)

    monkeypatch.setattr(FrameViews, "__call__", counting)
    zones = [Zone.from_rect(n, *r) for n, (r, _) in QUADRANTS.items() if n in ("tl", "br")]
    src = FileSource(
        "cam1", quadrant_clip, SamplingConfig(fps=None), zones=zones, full_frame=True, key_width=96
    )
    assert src.stream_ids() == ["cam1", "cam1/tl", "cam1/br"]
    ctx = Collect()
    src.run(ctx)
    by_stream: dict[str, list[Frame]] = {}
    for f in ctx.frames:
        by_stream.setdefault(f.stream_id, []).append(f)
    assert list(by_stream) == ["cam1", "cam1/tl", "cam1/br"]
    assert [len(v) for v in by_stream.values()] == [20, 20, 20]
    assert len(calls) == 20  # one decode and one FrameViews call per frame, whatever the zones
    assert len({id(f) for f in calls}) == 20
    # the decode stage is timed once per decoded frame, not per view
    assert ctx.metrics.registry.get_sample_value("vbw_stage_seconds_count", {"stage": "decode"}) == 20
    whole, tl, br = by_stream.values()
    for a, b, c in zip(whole, tl, br, strict=True):
        assert a.seq == b.seq == c.seq and a.pts == b.pts == c.pts and a.capture_time == b.capture_time
        assert a.key_image is not None and b.key_image is not None and c.key_image is not None
        assert a.key_image.image is b.key_image.image is c.key_image.image  # one key image per frame
        assert a.key_image.zone is None and b.key_image.zone == zones[0].points
        assert a.key_image.image.shape == (54, 96, 3)
    np.testing.assert_allclose(tl[0].image.reshape(-1, 3).mean(0), QUADRANTS["tl"][1], atol=6)
    np.testing.assert_allclose(br[0].image.reshape(-1, 3).mean(0), QUADRANTS["br"][1], atol=6)
    assert sorted(ctx.resets) == [("cam1", "eos"), ("cam1/br", "eos"), ("cam1/tl", "eos")]


def test_file_source_without_zones_is_unchanged(quadrant_clip: Path):
    ctx = Collect()
    FileSource("plain", quadrant_clip, SamplingConfig(fps=None)).run(ctx)
    assert {f.stream_id for f in ctx.frames} == {"plain"} and len(ctx.frames) == 20
    assert all(f.key_image is None for f in ctx.frames)  # snapshots off: no key images
    with av.open(str(quadrant_clip)) as c:
        first = next(c.decode(video=0))
        np.testing.assert_array_equal(ctx.frames[0].image, to_model_rgb(first, (64, 64)))


def test_zone_streams_count_their_own_errors(tmp_path: Path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    zones = [Zone.from_rect("a", 0, 0, 0.5, 1), Zone.from_rect("b", 0.5, 0, 1, 1)]
    ctx = Collect()
    with pytest.raises(Exception, match="cannot open file"):
        FileSource("cam", bad, SamplingConfig(), zones=zones).run(ctx)
    for sid in ("cam/a", "cam/b"):
        assert ctx.metrics.decode_errors.labels(sid)._value.get() == 1


# -- the inference stage ----------------------------------------------------------------------------


def test_each_window_carries_the_key_image_of_its_newest_frame():
    stage = InferenceStage(
        FakeEngine(num_frames=4),
        WindowsConfig(stride=2, partial="pad"),
        BatchingConfig(max_batch=4, max_delay_ms=0, frame_max_batch=3, frame_max_delay_ms=0),
        metrics=Metrics(),
        worker_id="w",
        top_k=2,
    )
    keys = [KeyImage(np.full((4, 6, 3), i, np.uint8), ((0, 0), (1, 0), (1, 1))) for i in range(7)]
    frames = [Frame("s/z", i, i / 5, 1e9, np.zeros((2, 2, 3), np.uint8), key_image=keys[i]) for i in range(7)]
    kafka_like = Frame("k", 0, 0.0, 1e9, np.full((2, 2, 3), 9, np.uint8))
    out = stage.feed([*frames, kafka_like, StreamReset("s/z", "eos"), StreamReset("k", "eos")])
    out.results += stage.close().results
    got = {(r.window.stream_id, r.window.end_seq): r.window.key_image for r in out.results}
    # complete windows end at seq 3 and 5; the padded one after the reset ends at 6
    assert got[("s/z", 3)] is keys[3] and got[("s/z", 5)] is keys[5] and got[("s/z", 6)] is keys[6]
    k = got[("k", 0)]  # no key image on the frame (Kafka): its model-size picture stands in
    assert k is not None and k.zone is None and int(k.image[0, 0, 0]) == 9
    assert stage._keys == {}  # a closed stream keeps no image
