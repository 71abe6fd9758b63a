"""Source kinds: config entry -> Source. A new kind adds one builder here (imported lazily)."""

from __future__ import annotations

import importlib
from typing import Any

from worker.sources.base import Source

# config `type` -> "module:factory"; the factory takes (source_config, vbw_config).
BUILDERS: dict[str, str] = {
    "file": "worker.sources.file:FileSource.from_config",
    "rtsp": "worker.sources.rtsp:RtspSource.from_config",
    "kafka": "worker.sources.kafka:KafkaFrameSource.from_config",
}


def build_source(source_cfg: Any, cfg: Any) -> Source:
    module_name, _, attr = BUILDERS[source_cfg.type].partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj(source_cfg, cfg)
