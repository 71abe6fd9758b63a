"""The dead-letter topic: every frame message that is not a frame, with why and where from.

The copy keeps the original key, value and headers (so it can be replayed once fixed) and adds
`vbw-dlq-*` headers: reason, detail, source topic/partition/offset, worker, time. An oversize
value is not copied (it would not fit either); `vbw-dlq-value-bytes` says how big it was.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from contracts.types import Headers, SourceRef
from worker.kafka.frame_codec import BadFrame, Reason

H_REASON = "vbw-dlq-reason"
H_DETAIL = "vbw-dlq-detail"
H_TOPIC = "vbw-dlq-topic"
H_PARTITION = "vbw-dlq-partition"
H_OFFSET = "vbw-dlq-offset"
H_WORKER = "vbw-dlq-worker"
H_TIME = "vbw-dlq-time"
H_VALUE_BYTES = "vbw-dlq-value-bytes"


def dead_letter_record(
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None,
    bad: BadFrame,
    ref: SourceRef,
    worker_id: str,
) -> tuple[bytes | None, bytes | None, Headers]:
    n = len(value) if value else 0
    keep_value = value if bad.reason is not Reason.OVERSIZE else None
    out: Headers = [(k, v if v is not None else b"") for k, v in (headers or [])]
    out += [
        (H_REASON, bad.reason.value.encode()),
        (H_DETAIL, bad.detail.encode("utf-8", "replace")[:1000]),
        (H_TOPIC, ref[0].encode()),
        (H_PARTITION, str(ref[1]).encode()),
        (H_OFFSET, str(ref[2]).encode()),
        (H_WORKER, worker_id.encode()),
        (H_TIME, f"{time.time():.3f}".encode()),
        (H_VALUE_BYTES, str(n).encode()),
    ]
    return key, keep_value, out


class RateLimitedLog:
    """Bad input is logged one line per message, but at most `burst` lines per `period` seconds
    (a producer writing garbage must not flood the log; the counters keep the full count)."""

    def __init__(self, log: logging.Logger, burst: int = 20, period: float = 10.0) -> None:
        self.log, self.burst, self.period = log, burst, period
        self._window_start = 0.0
        self._count = 0
        self._suppressed = 0

    def warning(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._window_start > self.period:
            if self._suppressed:
                self.log.warning(
                    "%d more bad frame messages not logged in the last %.0fs", self._suppressed, self.period
                )
            self._window_start, self._count, self._suppressed = now, 0, 0
        if self._count < self.burst:
            self._count += 1
            self.log.warning(msg, *args)
        else:
            self._suppressed += 1
