"""Type aliases that more than one module passes around: one definition each."""

from __future__ import annotations

from collections.abc import Callable

#: Where a frame came from, for sources that can replay it: (topic, partition, offset) for Kafka.
#: Windows carry the refs of their frames so the source commits only what every sink acked.
SourceRef = tuple[str, int, int]

#: A Kafka topic partition: (topic, partition).
TP = tuple[str, int]

#: Kafka record headers as kafka-python takes and gives them: [(name, value), ...].
Headers = list[tuple[str, bytes]]

#: done(None) = delivered (acked); done("reason") = failed for good. Called exactly once per
#: message or window handed to a sink or producer, from any thread.
DeliveryCallback = Callable[[str | None], None]
