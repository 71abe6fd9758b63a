"""Frame messages: every accepted form decodes to model-resolution RGB; every bad form gets its reason."""

from __future__ import annotations

import time

import av
import numpy as np
import pytest

from media.decode import to_model_rgb
from worker.frames import Frame
from worker.kafka.frame_codec import BadFrame, FrameDecoder, FrameEncoder, Reason

REF = ("frames", 2, 41)
SIZE = (64, 64)
NOW_MS = 1_700_000_000_000  # a Kafka timestamp that is a plausible capture time


def picture(h: int = 120, w: int = 160) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 64 * 4], -1).astype(np.uint8)


def expected(img: np.ndarray) -> np.ndarray:
    return to_model_rgb(av.VideoFrame.from_ndarray(img, format="rgb24"), SIZE)


@pytest.fixture()
def dec() -> FrameDecoder:
    return FrameDecoder(SIZE, max_bytes=100_000)


def test_jpeg_with_headers_round_trips(dec):
    img = picture()
    key, value, headers = FrameEncoder("jpeg", quality=95).encode(
        Frame("cam-1", 17, 0.68, 1_700_000_000.5, img)
    )
    out = dec.decode(key, value, headers, 5, REF)
    assert isinstance(out, Frame), out
    assert (out.stream_id, out.seq, out.pts, out.capture_time) == ("cam-1", 17, 0.68, 1_700_000_000.5)
    assert out.source_ref == REF
    assert out.image.shape == (*SIZE, 3) and out.image.dtype == np.uint8
    # JPEG is lossy; the resize is the same one training uses, so the picture is close.
    assert np.abs(out.image.astype(int) - expected(img).astype(int)).mean() < 4


def test_raw_rgb_is_resized_like_decode_py(dec):
    img = picture()
    key, value, headers = FrameEncoder("raw").encode(Frame("cam-2", 3, 0.1, 1_700_000_009.0, img))
    assert (b"image/x-raw-rgb; width=160; height=120") in dict(headers)["content-type"]
    out = dec.decode(key, value, headers, None, REF)
    assert isinstance(out, Frame), out
    np.testing.assert_array_equal(out.image, expected(img))


def test_raw_at_model_size_is_copied_not_resized(dec):
    img = picture(*SIZE)
    key, value, headers = FrameEncoder("raw").encode(Frame("cam-2", 3, 0.1, 1_700_000_009.0, img))
    out = dec.decode(key, value, headers, None, REF)
    assert isinstance(out, Frame)
    np.testing.assert_array_equal(out.image, img)
    assert out.image.flags.writeable


def test_bare_key_and_jpeg_takes_time_from_kafka_timestamp(dec):
    value, _ = FrameEncoder("jpeg").encode_image(picture())
    out = dec.decode(b"cam-3", value, [], 1_700_000_000_250, REF)
    assert isinstance(out, Frame), out
    assert out.seq == REF[2]  # the offset: monotonic per partition, so per stream
    assert out.pts == out.capture_time == pytest.approx(1_700_000_000.25)


def _bad(dec, key=b"cam", value=None, headers=None, ts=NOW_MS) -> BadFrame:
    out = dec.decode(key, value, headers or [], ts, REF)
    assert isinstance(out, BadFrame), out
    assert "frames[2]@41" in out.detail  # says where it came from
    assert "\n" not in out.detail
    return out


def test_every_bad_form_has_its_reason(dec):
    jpeg, _ = FrameEncoder("jpeg").encode_image(picture())
    raw_ct = [("content-type", b"image/x-raw-rgb; width=10; height=10")]
    assert _bad(dec, value=b"\x00garbage" * 50).reason is Reason.NOT_JPEG
    assert _bad(dec, value=np.random.default_rng(1).bytes(3000)).reason is Reason.NOT_JPEG
    assert _bad(dec, value=jpeg[: len(jpeg) // 2]).reason is Reason.TRUNCATED_JPEG
    assert _bad(dec, value=jpeg[:200]).reason is Reason.TRUNCATED_JPEG
    assert _bad(dec, value=b"\xff\xd8\xff" + b"\x13" * 500 + b"\xff\xd9").reason is Reason.CORRUPT_JPEG
    assert _bad(dec, value=b"\x01" * 299, headers=raw_ct).reason is Reason.WRONG_RAW_SIZE
    assert _bad(dec, value=b"").reason is Reason.EMPTY_VALUE
    assert _bad(dec, value=None).reason is Reason.EMPTY_VALUE
    assert _bad(dec, key=None, value=jpeg).reason is Reason.MISSING_KEY
    assert _bad(dec, key=b"", value=jpeg).reason is Reason.MISSING_KEY
    assert _bad(dec, key=b"\xff\xfe", value=jpeg).reason is Reason.MISSING_KEY
    assert _bad(dec, value=b"\xff\xd8\xff" + b"\0" * 100_001).reason is Reason.OVERSIZE
    assert _bad(dec, value=jpeg, headers=[("vbw-seq", b"twelve")]).reason is Reason.BAD_HEADER
    assert _bad(dec, value=jpeg, headers=[("vbw-seq", b"-4")]).reason is Reason.BAD_HEADER
    assert _bad(dec, value=jpeg, ts=None).reason is Reason.BAD_HEADER  # no time at all
    assert _bad(dec, value=jpeg, headers=[("content-type", b"image/png")]).reason is Reason.BAD_CONTENT_TYPE
    bad_ct = [("content-type", b"image/x-raw-rgb; width=ten; height=10")]
    assert _bad(dec, value=b"\x01" * 300, headers=bad_ct).reason is Reason.BAD_CONTENT_TYPE


def test_decoder_survives_bad_input_and_decodes_the_next_good_frame(dec):
    jpeg, _ = FrameEncoder("jpeg").encode_image(picture())
    for bad in (b"\xff\xd8\xff" + b"\x13" * 500 + b"\xff\xd9", jpeg[:100], b"junk"):
        assert isinstance(dec.decode(b"cam", bad, [], NOW_MS, REF), BadFrame)
    assert isinstance(dec.decode(b"cam", jpeg, [], NOW_MS, REF), Frame)


# Finding 11: `nan` / `inf` times were accepted and became `null` in the labels (schema failure).
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("vbw-pts", b"nan"),
        ("vbw-pts", b"NaN"),
        ("vbw-pts", b"inf"),
        ("vbw-pts", b"-Infinity"),
        ("vbw-pts", b"1e400"),  # overflows to inf
        ("vbw-pts", b"4294967296.5"),  # beyond 2^32 s
        ("vbw-pts", b"-5e9"),
        ("vbw-capture-time", b"nan"),
        ("vbw-capture-time", b"inf"),
        ("vbw-capture-time", b"-inf"),
        ("vbw-capture-time", b"-1"),
        ("vbw-capture-time", b"1000.0"),  # 1970: a clock that never got set
        ("vbw-capture-time", b"946684799.9"),  # just before 2000-01-01
        ("vbw-capture-time", b"1700000000000"),  # milliseconds sent as seconds
        ("vbw-capture-time", str(time.time() + 2 * 86_400).encode()),  # two days ahead
        ("vbw-seq", b"1.5"),
        ("vbw-seq", b"1e3"),
        ("vbw-seq", b"+3"),
        ("vbw-seq", b"1_000"),
        ("vbw-seq", b"nan"),
        ("vbw-seq", b"9223372036854775808"),  # 2^63: not an int64
        ("vbw-seq", b""),
    ],
)
def test_non_finite_or_absurd_numbers_are_bad_headers(dec, name, value):
    jpeg, _ = FrameEncoder("jpeg").encode_image(picture())
    bad = _bad(dec, value=jpeg, headers=[(name, value)])
    assert bad.reason is Reason.BAD_HEADER
    assert "stream cam" in bad.detail


def test_kafka_timestamp_outside_the_capture_bounds_is_a_bad_header(dec):
    jpeg, _ = FrameEncoder("jpeg").encode_image(picture())
    bad = _bad(dec, value=jpeg, ts=1000)  # 1 s after the epoch
    assert bad.reason is Reason.BAD_HEADER and "Kafka timestamp" in bad.detail
    # a capture header overrides the timestamp, and is what gets checked
    ok = dec.decode(b"cam", jpeg, [("vbw-capture-time", b"1700000000.5")], 1000, REF)
    assert isinstance(ok, Frame) and ok.capture_time == 1_700_000_000.5


@pytest.mark.parametrize(
    "headers",
    [
        [("vbw-seq", b"0"), ("vbw-pts", b"0"), ("vbw-capture-time", b"946684800")],  # 2000-01-01
        [("vbw-seq", b" 7 "), ("vbw-pts", b"-2.5"), ("vbw-capture-time", b"1700000000.25")],
        [("vbw-seq", b"9223372036854775807"), ("vbw-pts", b"4294967296")],  # the limits themselves
        [("vbw-pts", b"1.7e9"), ("vbw-capture-time", str(time.time() + 3600).encode())],  # an hour of skew
    ],
)
def test_edges_of_the_bounds_are_frames(dec, headers):
    jpeg, _ = FrameEncoder("jpeg").encode_image(picture())
    out = dec.decode(b"cam", jpeg, headers, NOW_MS, REF)
    assert isinstance(out, Frame), out
