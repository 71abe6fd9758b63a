"""Kafka client plumbing: connection and security config (`config`, `security`), the resilient
producer (`producer`), offset bookkeeping (`offsets`) and the consumer's partition state behind
its lock (`partitions`), the window-grid aligner (`align`), the frame codec (`frame_codec`) and
dead letters (`dlq`). The frames source lives in `worker.sources.kafka`, the topic sink in
`worker.sinks.kafka`, `vbw ingest` in `worker.ingest`."""

import logging
import os

# kafka-python narrates every connection at INFO; the worker's own lines say what matters.
# KAFKA_CLIENT_LOG_LEVEL=INFO (or DEBUG) brings the client's narration back for debugging.
_client_log = logging.getLogger("kafka")
if _client_log.level == logging.NOTSET:
    _client_log.setLevel(os.environ.get("KAFKA_CLIENT_LOG_LEVEL", "WARNING").upper())
