"""Frame messages on the frames topic: encode (ingest) and decode-or-reject (the Kafka source).

Wire format (shared design, "Messages"):
  key      stream id (UTF-8)
  value    JPEG (default) or raw RGB bytes
  headers  content-type  `image/jpeg` | `image/x-raw-rgb; width=W; height=H`
           vbw-seq, vbw-pts, vbw-capture-time  (ASCII numbers)
A message with only a key and a JPEG value is a frame too: seq is then the Kafka offset (monotonic
per partition, so per stream) and pts / capture time come from the Kafka timestamp.

Times are checked, as a NaN or a capture time in milliseconds would otherwise reach the output
messages (`null` fails the schema) and the latency histograms: `vbw-seq` must be decimal digits
(0 .. 2^63-1), `vbw-pts` a finite number within ±2^32 s, and the capture time (header or Kafka
timestamp) a finite unix time from 2000-01-01 to one day past this worker's clock. Anything else
is `bad-header`.

Anything else is rejected with one `BadFrame` reason, for the dead-letter topic and the
counters: the source never raises on input. JPEG is decoded with PyAV's mjpeg decoder and
resized with `media.decode.to_model_rgb`, the same resize the model was trained with.
"""

from __future__ import annotations

import fractions
import math
import time
from dataclasses import dataclass
from enum import StrEnum

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from contracts.types import Headers, SourceRef
from media.decode import to_model_rgb
from worker.frames import Frame

JPEG = "image/jpeg"
RAW_RGB = "image/x-raw-rgb"
H_CONTENT_TYPE = "content-type"
H_SEQ = "vbw-seq"
H_PTS = "vbw-pts"
H_CAPTURE = "vbw-capture-time"
# Optional: set by `vbw ingest` on the first frame after a reconnect or a loop, so the worker
# closes the stream's windows there too (the value is the reason).
H_RESET = "vbw-reset"

# Bounds of a frame's numbers (docs/kafka.md lists them). Outside them the header is a mistake
# (milliseconds sent as seconds, a clock that never got set, a NaN), not a time.
MAX_SEQ = 2**63 - 1  # Kafka's own offsets are int64
MAX_ABS_PTS_S = 2.0**32  # ~136 years: a pts that is a unix time still fits
MIN_CAPTURE_TIME = 946_684_800.0  # 2000-01-01T00:00:00Z
MAX_CAPTURE_AHEAD_S = 86_400.0  # clock skew tolerated ahead of this worker's clock


class Reason(StrEnum):
    """Why a message is not a frame (the `vbw-dlq-reason` header and the counter label)."""

    MISSING_KEY = "missing-key"
    EMPTY_VALUE = "empty-value"
    OVERSIZE = "oversize"
    BAD_HEADER = "bad-header"
    BAD_CONTENT_TYPE = "bad-content-type"
    NOT_JPEG = "not-jpeg"  # garbage bytes: no JPEG start-of-image marker
    TRUNCATED_JPEG = "truncated-jpeg"  # starts like a JPEG but the end-of-image marker is missing
    CORRUPT_JPEG = "corrupt-jpeg"  # has both markers but does not decode
    WRONG_RAW_SIZE = "wrong-raw-size"


@dataclass(frozen=True, slots=True)
class BadFrame:
    reason: Reason
    detail: str  # one line, with the numbers that explain it

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def header(headers: Headers | None, name: str) -> bytes | None:
    for k, v in headers or ():
        if k == name:
            return v
    return None


def parse_content_type(text: str) -> tuple[str, dict[str, str]]:
    """`image/x-raw-rgb; width=640; height=360` -> ("image/x-raw-rgb", {"width": "640", ...})."""
    kind, *params = (p.strip() for p in text.split(";"))
    out: dict[str, str] = {}
    for p in params:
        if not p:
            continue
        name, sep, value = p.partition("=")
        if not sep:
            raise ValueError(f"parameter {p!r} is not name=value")
        out[name.strip().lower()] = value.strip()
    return kind.lower(), out


def parse_seq(raw: bytes) -> int:
    """`vbw-seq`: decimal digits only (no sign, exponent or underscore), at most MAX_SEQ."""
    text = raw.strip()
    if not text.isdigit():  # bytes.isdigit is ASCII 0-9 only
        raise ValueError(f"{H_SEQ} {raw[:40]!r} is not a non-negative integer")
    seq = int(text)
    if seq > MAX_SEQ:
        raise ValueError(f"{H_SEQ} {seq} > {MAX_SEQ}")
    return seq


def parse_seconds(raw: bytes, name: str) -> float:
    """A time header: a finite decimal number of seconds (`nan`, `inf`, `1e400` are not)."""
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"{name} {raw[:40]!r} is not a finite number")
    return value


def check_times(pts: float, capture: float, capture_from: str, now: float) -> str | None:
    """Why pts / capture time are out of bounds, or None. `capture_from` names where it came from."""
    if abs(pts) > MAX_ABS_PTS_S:
        return f"pts {pts!r} s is beyond ±2^32 s"
    if not MIN_CAPTURE_TIME <= capture <= now + MAX_CAPTURE_AHEAD_S:
        return (
            f"capture time {capture!r} ({capture_from}) is not a unix time between 2000-01-01 and "
            f"a day past this worker's clock ({now:.0f}); milliseconds sent as seconds?"
        )
    return None


def _jpeg_complete(data: bytes) -> bool:
    # Some encoders pad after EOI; FFmpeg decodes half a JPEG without complaint, so check the marker.
    tail = data[-64:].rstrip(b"\x00")
    return tail.endswith(b"\xff\xd9")


class FrameDecoder:
    """Decodes frame messages for one thread (it owns a PyAV decoder, which is not thread-safe)."""

    def __init__(self, image_size: tuple[int, int], max_bytes: int = 8 << 20) -> None:
        self.image_size = image_size  # (H, W) the model wants
        self.max_bytes = max_bytes
        self._jpeg = av.CodecContext.create("mjpeg", "r")
        self._reformatter = VideoReformatter()  # keeps its swscale context from frame to frame

    def decode(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
        timestamp_ms: int | None,
        ref: SourceRef,
    ) -> Frame | BadFrame:
        """One consumer record -> a Frame at model resolution, or why it is not one."""
        where = f"{ref[0]}[{ref[1]}]@{ref[2]}"
        if not key:
            return BadFrame(Reason.MISSING_KEY, f"{where}: no key (the key is the stream id)")
        try:
            stream_id = key.decode("utf-8")
        except UnicodeDecodeError:
            return BadFrame(Reason.MISSING_KEY, f"{where}: key is not UTF-8 ({len(key)} bytes)")
        if not value:
            return BadFrame(Reason.EMPTY_VALUE, f"{where} stream {stream_id}: empty value")
        if len(value) > self.max_bytes:
            return BadFrame(
                Reason.OVERSIZE, f"{where} stream {stream_id}: {len(value)} bytes > limit {self.max_bytes}"
            )
        try:
            ts = float(timestamp_ms) / 1000.0 if timestamp_ms is not None and timestamp_ms >= 0 else None
            seq_h, pts_h, cap_h = (header(headers, h) for h in (H_SEQ, H_PTS, H_CAPTURE))
            seq = parse_seq(seq_h) if seq_h is not None else ref[2]
            pts = parse_seconds(pts_h, H_PTS) if pts_h is not None else ts
            capture = parse_seconds(cap_h, H_CAPTURE) if cap_h is not None else ts
            ctype_h = header(headers, H_CONTENT_TYPE)
            kind, params = parse_content_type(ctype_h.decode("ascii")) if ctype_h else (JPEG, {})
        except (ValueError, UnicodeDecodeError) as e:
            return BadFrame(Reason.BAD_HEADER, f"{where} stream {stream_id}: {e}")
        if pts is None or capture is None:
            return BadFrame(Reason.BAD_HEADER, f"{where} stream {stream_id}: no vbw-pts and no timestamp")
        why = check_times(pts, capture, H_CAPTURE if cap_h is not None else "Kafka timestamp", time.time())
        if why is not None:
            return BadFrame(Reason.BAD_HEADER, f"{where} stream {stream_id}: {why}")

        if kind == JPEG:
            image = self._decode_jpeg(value, where, stream_id)
        elif kind == RAW_RGB:
            image = self._decode_raw(value, params, where, stream_id)
        else:
            return BadFrame(Reason.BAD_CONTENT_TYPE, f"{where} stream {stream_id}: content-type {kind!r}")
        if isinstance(image, BadFrame):
            return image
        return Frame(stream_id, seq, pts, capture, image, source_ref=ref)

    def _decode_jpeg(self, data: bytes, where: str, stream_id: str) -> np.ndarray | BadFrame:
        if not data.startswith(b"\xff\xd8\xff"):
            return BadFrame(
                Reason.NOT_JPEG, f"{where} stream {stream_id}: not a JPEG (starts {data[:4].hex()})"
            )
        if not _jpeg_complete(data):
            return BadFrame(
                Reason.TRUNCATED_JPEG,
                f"{where} stream {stream_id}: no end-of-image marker ({len(data)} bytes)",
            )
        try:
            frames = self._jpeg.decode(av.Packet(data))
        except (av.error.FFmpegError, ValueError) as e:
            self._jpeg = av.CodecContext.create("mjpeg", "r")  # a failed decode can leave it wedged
            return BadFrame(Reason.CORRUPT_JPEG, f"{where} stream {stream_id}: {e}")
        if not frames:
            return BadFrame(Reason.CORRUPT_JPEG, f"{where} stream {stream_id}: decoder returned no picture")
        try:
            return to_model_rgb(frames[0], self.image_size, self._reformatter)
        except (av.error.FFmpegError, ValueError) as e:  # a pixel format swscale cannot convert
            self._reformatter = VideoReformatter()
            return BadFrame(Reason.CORRUPT_JPEG, f"{where} stream {stream_id}: cannot convert picture: {e}")

    def _decode_raw(
        self, data: bytes, params: dict[str, str], where: str, stream_id: str
    ) -> np.ndarray | BadFrame:
        try:
            w, h = int(params["width"]), int(params["height"])
        except (KeyError, ValueError):
            return BadFrame(
                Reason.BAD_CONTENT_TYPE, f"{where} stream {stream_id}: raw RGB needs integer width and height"
            )
        if w <= 0 or h <= 0 or len(data) != w * h * 3:
            return BadFrame(
                Reason.WRONG_RAW_SIZE,
                f"{where} stream {stream_id}: {len(data)} bytes, {w}x{h} RGB needs {max(w * h * 3, 0)}",
            )
        rgb = np.frombuffer(data, np.uint8).reshape(h, w, 3)
        if (h, w) == tuple(self.image_size):
            return rgb.copy()  # the consumer's buffer is reused; own the pixels
        return to_model_rgb(
            av.VideoFrame.from_ndarray(rgb, format="rgb24"), self.image_size, self._reformatter
        )


class FrameEncoder:
    """Frames -> frame messages (value, headers), for `vbw ingest` and tests. One per thread."""

    def __init__(self, fmt: str = "jpeg", quality: int = 90) -> None:
        if fmt not in ("jpeg", "raw"):
            raise ValueError(f"frame format must be jpeg or raw, not {fmt!r}")
        self.fmt = fmt
        # FFmpeg's mjpeg qscale: 2 (best) .. 31; map a 1..100 quality onto it.
        self.qscale = max(2, min(31, round(31 - (quality / 100) * 29)))
        self._enc: av.CodecContext | None = None

    def _encoder(self, w: int, h: int) -> av.CodecContext:
        if self._enc is None or (self._enc.width, self._enc.height) != (w, h):
            enc = av.CodecContext.create("mjpeg", "w")
            enc.width, enc.height = w, h
            # Full-resolution chroma: at model sizes (64x64) 4:2:0 doubles the pixel error for 13% fewer bytes.
            enc.pix_fmt = "yuvj444p"
            enc.time_base = fractions.Fraction(1, 25)
            enc.qmin = enc.qmax = self.qscale  # fixed quantiser: PyAV exposes no -q:v
            self._enc = enc
        return self._enc

    def encode_image(self, image: np.ndarray) -> tuple[bytes, str]:
        """uint8 [H, W, 3] RGB -> (value, content-type)."""
        h, w = image.shape[:2]
        if self.fmt == "raw":
            return np.ascontiguousarray(image, np.uint8).tobytes(), f"{RAW_RGB}; width={w}; height={h}"
        enc = self._encoder(w, h)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(
            format="yuvj444p"
        )
        packets = enc.encode(frame)
        return b"".join(bytes(p) for p in packets), JPEG

    def encode(self, frame: Frame, reset: str | None = None) -> tuple[bytes, bytes, Headers]:
        """A Frame -> (key, value, headers) for the frames topic. `reset`: why the stream restarted."""
        value, ctype = self.encode_image(frame.image)
        headers = [
            (H_CONTENT_TYPE, ctype.encode()),
            (H_SEQ, str(frame.seq).encode()),
            (H_PTS, repr(float(frame.pts)).encode()),
            (H_CAPTURE, repr(float(frame.capture_time)).encode()),
        ]
        if reset:
            headers.append((H_RESET, reset.encode()))
        return frame.stream_id.encode("utf-8"), value, headers
