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
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from contracts.errors import VbwError
from worker.config import ENV_NESTED_DELIMITER, ENV_PREFIX
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
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a group without a committed offset starts"
    )
    max_poll_records: int = Field(2000, ge=1, description="records per poll, written as one batch")
    session_timeout_ms: int = Field(10000, ge=1000)
    heartbeat_interval_ms: int = Field(3000, ge=100)
    metrics_port: int | None = Field(9108, ge=0, le=65535, description="/metrics port; null = none")
    metrics_host: str = Field("0.0.0.0", description="address /metrics listens on")
    progress_s: float = Field(10.0, gt=0, description="a progress line at most this often")
    compact_every: int = Field(200, ge=0, description="compact the index every N writes (0 = never)")
    retention_s: float | None = Field(
        None, gt=0, description="delete windows older than this at each compaction; null = keep all"
    )


class IndexFileConfig(BaseSettings):
    """The file, with the worker's environment overrides: `VBW_KAFKA__SECURITY__USERNAME`
    (the Kafka Secret in Kubernetes), `VBW_INDEX__DB`, ..."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        case_sensitive=False,
    )
    kafka: KafkaConnectionConfig = Field(default_factory=KafkaConnectionConfig)
    index: IndexSettings

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)  # the environment overrides the file, as the worker's


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
    flags = {k: v for k, v in overrides.items() if v is not None}
    for k, v in flags.items():
        (kafka if k == "bootstrap_servers" else index)[k] = v
    try:
        # file < environment (the settings sources), then the command line's flags on top
        cfg = IndexFileConfig(**{**raw, "kafka": kafka, "index": index})
        if not flags:
            return cfg
        # Section by section: validating the whole settings class would read the environment again.
        kafka_flags = {k: v for k, v in flags.items() if k == "bootstrap_servers"}
        index_flags = {k: v for k, v in flags.items() if k != "bootstrap_servers"}
        return cfg.model_copy(
            update={
                "index": IndexSettings.model_validate({**cfg.index.model_dump(), **index_flags}),
                "kafka": cfg.kafka.model_copy(
                    update={
                        "bootstrap_servers": kafka_flags.get("bootstrap_servers", cfg.kafka.bootstrap_servers)
                    }
                ),
            }
        )
    except ValidationError as e:
        lines = [f"  {'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors(include_url=False)]
        raise IndexConfigError(
            f"{path or 'vbw index'}: {len(lines)} problem(s)\n" + "\n".join(lines)
        ) from None
