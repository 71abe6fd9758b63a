"""The dead-letter topic: every frame message that is not a frame, with why and where from.

The copy keeps the original key, value and headers (so it can be replayed once fixed) and adds
`vbw-dlq-*` headers: reason, detail, source topic/partition/offset, worker, time. An oversize
value is not copied (it would not fit either); `vbw-dlq-value-bytes` says how big it was.
"""

from __future__ import annotations

import time

from worker.kafka.frame_codec import BadFrame, Headers, Reason

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
    ref: tuple[str, int, int],
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
