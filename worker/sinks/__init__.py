"""Sink kinds: config entry -> Sink. A new kind adds one builder here (imported lazily)."""

from __future__ import annotations

import importlib
from typing import Any

from worker.sinks.base import Sink

# config `type` -> "module:factory"; the factory takes (sink_config, vbw_config).
BUILDERS: dict[str, str] = {
    "jsonl": "worker.sinks.jsonl:JsonlSink.from_config",
    "stdout": "worker.sinks.jsonl:StdoutSink.from_config",
    "kafka": "worker.sinks.kafka:KafkaTopicSink.from_config",
}


def build_sink(sink_cfg: Any, cfg: Any) -> Sink:
    module_name, _, attr = BUILDERS[sink_cfg.type].partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj(sink_cfg, cfg)
