"""`vbw index` settings, validated before anything starts.

A YAML file (`vbw index -c FILE`) with the worker's `kafka:` section (brokers and security,
docs/kafka.md) and an `index:` section; command-line flags override single fields:

    kafka: {bootstrap_servers: [broker-1:9093], security: {protocol: SASL_SSL, ...}}
    index:
      db: /var/lib/vbw/index          # a directory, or s3://bucket/index
      topic: vbw.embeddings
      events_topic: vbw.events        # optional: snapshots of the events' peak windows
      group_id: vbw-index
      metrics_port: 9108
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.errors import VbwError
from worker.kafka.config import KafkaConnectionConfig, TopicName


class IndexConfigError(VbwError, ValueError):
    """The index settings are wrong; the message lists every problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IndexSettings(_Section):
    db: str = Field(min_length=1, description="index location: a directory, or an object-store URI")
    topic: TopicName = Field("vbw.embeddings", description="embeddings topic (sink payload: embeddings)")
    events_topic: TopicName | None = Field(
        None, description="events topic, read for the snapshot of each event's peak window"
    )
    group_id: str = Field("vbw-index", min_length=1, description="consumer group of the indexers")
    auto_offset_reset: str = Field("earliest", pattern="^(earliest|latest)$")
    max_poll_records: int = Field(2000, ge=1, description="records per poll, written as one batch")
    session_timeout_ms: int = Field(10000, ge=1000)
    heartbeat_interval_ms: int = Field(3000, ge=100)
    metrics_port: int | None = Field(9108, ge=0, le=65535, description="/metrics port; null = none")
    metrics_host: str = Field("0.0.0.0", description="address /metrics listens on")
    progress_s: float = Field(10.0, gt=0, description="a progress line at most this often")
    compact_every: int = Field(200, ge=0, description="compact the index every N writes (0 = never)")


class IndexFileConfig(_Section):
    kafka: KafkaConnectionConfig = Field(default_factory=KafkaConnectionConfig)
    index: IndexSettings


def load(path: Path | None, overrides: dict) -> IndexFileConfig:
    raw: dict = {}
    if path is not None:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise IndexConfigError(f"{path}: {e}") from e
        if not isinstance(raw, dict):
            raise IndexConfigError(f"{path}: expected a mapping with `kafka` and `index`")
    index = dict(raw.get("index") or {})
    kafka = dict(raw.get("kafka") or {})
    for k, v in overrides.items():
        if v is None:
            continue
        if k == "bootstrap_servers":
            kafka[k] = v
        else:
            index[k] = v
    try:
        return IndexFileConfig.model_validate({**raw, "kafka": kafka, "index": index})
    except ValidationError as e:
        lines = [f"  {'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors(include_url=False)]
        raise IndexConfigError(
            f"{path or 'vbw index'}: {len(lines)} problem(s)\n" + "\n".join(lines)
        ) from None
