"""Kafka client plumbing: connection and security config, the resilient producer, offset
bookkeeping, the frame codec and dead letters. The frames source lives in `worker.sources.kafka`,
the topic sink in `worker.sinks.kafka`."""

import logging
import os

# kafka-python narrates every connection at INFO; the worker's own lines say what matters.
# KAFKA_CLIENT_LOG_LEVEL=INFO (or DEBUG) brings the client's narration back for debugging.
_client_log = logging.getLogger("kafka")
if _client_log.level == logging.NOTSET:
    _client_log.setLevel(os.environ.get("KAFKA_CLIENT_LOG_LEVEL", "WARNING").upper())
