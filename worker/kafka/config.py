"""Config entries for Kafka: the shared connection, the frames source, the output sinks.

    kafka:                       # top-level section: one connection for every Kafka entry
      bootstrap_servers: [broker-1:9092]
      security: {protocol: SASL_SSL, sasl_mechanism: SCRAM-SHA-512, username: vbw,
                 password: {file: /run/secrets/kafka}, ca_file: /etc/vbw/ca.pem}
    sources:
      - {type: kafka, id: frames, topics: [vbw.frames], group_id: vbw, dead_letter_topic: vbw.frames.dlq}
    sinks:
      - {type: kafka, topic: vbw.labels}
      - {type: kafka, topic: vbw.embeddings, payload: embeddings, dtype: float16}

These models are plugged into `worker.config` (its source and sink unions and the `kafka`
section); they do not import it, so there is no cycle.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from worker.kafka.security import KafkaSecurity

# Kafka's legal topic names.
TopicName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")]
HostPort = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:\[\]-]+:[0-9]{1,5}$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConnectionConfig(_Section):
    """Brokers and security, shared by the source, the sinks, the dead-letter producer and ingest."""

    bootstrap_servers: list[HostPort] = Field(
        default_factory=lambda: ["localhost:9092"],
        min_length=1,
        description="host:port of one or more brokers",
    )
    client_id: str = Field("vbw", description="client.id prefix seen by the brokers")
    security: KafkaSecurity = Field(default_factory=KafkaSecurity, description="TLS and SASL")
    request_timeout_ms: int = Field(30000, ge=1000, description="broker request timeout")

    def kafka_python(self) -> dict:
        """Common kafka-python keyword arguments (secrets resolved here, at client build time)."""
        return {
            "bootstrap_servers": list(self.bootstrap_servers),
            "request_timeout_ms": self.request_timeout_ms,
            **self.security.kafka_python(),
        }

    def confluent(self) -> dict:
        return {"bootstrap.servers": ",".join(self.bootstrap_servers), **self.security.confluent()}

    def describe(self) -> str:
        return f"{','.join(self.bootstrap_servers)} {self.security.describe()}"


class ProducerTuning(_Section):
    """The producer's knobs. Defaults favour throughput with bounded latency (see BENCHMARKS.md)."""

    acks: Literal["all", "1", "0"] = Field("all", description="'all' is required for at-least-once")
    enable_idempotence: bool = Field(True, description="no duplicates from the producer's own retries")
    batch_size: int = Field(256 << 10, ge=1024, description="bytes per partition batch")
    linger_ms: int = Field(10, ge=0, description="wait this long for a batch to fill")
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "none", description="batch compression (JPEG and float payloads compress little)"
    )
    max_request_size: int = Field(8 << 20, ge=1024, description="largest request / message, bytes")
    delivery_timeout_ms: int = Field(30000, ge=1000, description="a send not acked by then is retried")
    max_pending: int = Field(20000, ge=1, description="unacked messages before publish blocks")

    def kafka_python(self) -> dict:
        return {
            "acks": {"all": "all", "1": 1, "0": 0}[self.acks],
            "enable_idempotence": self.enable_idempotence,
            "batch_size": self.batch_size,
            "linger_ms": self.linger_ms,
            "compression_type": None if self.compression == "none" else self.compression,
            "max_request_size": self.max_request_size,
            "delivery_timeout_ms": self.delivery_timeout_ms,
            # request timeout must fit inside the delivery timeout
            "request_timeout_ms": min(30000, self.delivery_timeout_ms - 500),
            "allow_auto_create_topics": False,
            # never block the caller for a minute on missing metadata (topic gone after a broker restart)
            "max_block_ms": 5000,
            # building a producer bootstraps eagerly; a down broker must not block its thread long
            "bootstrap_timeout_ms": 5000,
        }

    @model_validator(mode="after")
    def _idempotence_needs_all(self) -> ProducerTuning:
        if self.enable_idempotence and self.acks != "all":
            raise ValueError("enable_idempotence needs acks: all")
        return self


class KafkaSourceConfig(_Section):
    """Frames from a consumer group: key = stream id, value = JPEG or raw RGB (see docs)."""

    type: Literal["kafka"]
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", description="source id (logs)")
    topics: list[TopicName] = Field(min_length=1, description="frames topics")
    group_id: str = Field(
        "vbw", min_length=1, description="consumer group; workers sharing it split partitions"
    )
    dead_letter_topic: TopicName | None = Field(
        None, description="bad frame messages go here with the reason; null = count and log only"
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a group without a committed offset starts"
    )
    max_message_bytes: int = Field(8 << 20, ge=1024, description="larger frame messages are dead-lettered")
    max_poll_records: int = Field(500, ge=1, description="records per poll()")
    max_partition_fetch_bytes: int = Field(8 << 20, ge=1024, description="per-partition fetch size")
    session_timeout_ms: int = Field(10000, ge=1000, description="group session timeout")
    heartbeat_interval_ms: int = Field(3000, ge=100, description="group heartbeat interval")
    max_poll_interval_ms: int = Field(300000, ge=1000, description="longest gap between polls")
    commit_interval_s: float = Field(1.0, gt=0, description="how often acked progress is committed")
    align_windows: bool = Field(
        True,
        description="start each stream's windows at a seq that is a multiple of the stride, so a "
        "replay after a crash cuts the same windows (same window_id)",
    )

    @model_validator(mode="after")
    def _check(self) -> KafkaSourceConfig:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        if self.dead_letter_topic and self.dead_letter_topic in self.topics:
            raise ValueError("dead_letter_topic must not be one of the input topics")
        return self


class KafkaSinkConfig(_Section):
    """One output topic: labels (vbw.window/v1 JSON), embeddings (raw little-endian floats) or
    events (vbw.event/v1 JSON)."""

    type: Literal["kafka"]
    topic: TopicName = Field(description="output topic; key = stream id")
    payload: Literal["labels", "embeddings", "events"] = Field(
        "labels",
        description="what goes in the value: vbw.window/v1 labels, an embedding, or vbw.event/v1 segment events "
        "(key = stream id)",
    )
    dtype: Literal["float32", "float16"] = Field("float32", description="embedding element type")
    name: str | None = Field(None, description="label of vbw_published_total{topic}; null = the topic")
    producer: ProducerTuning = Field(default_factory=ProducerTuning, description="producer tuning")

    @property
    def sink_name(self) -> str:
        return self.name or self.topic


class IngestConfig(_Section):
    """`vbw ingest` (edge mode): the config's file/RTSP sources are published to a frames topic."""

    topic: TopicName = Field("vbw.frames", description="frames topic ingest publishes to; key = stream id")
    format: Literal["jpeg", "raw"] = Field("jpeg", description="frame encoding: JPEG or raw RGB")
    quality: int = Field(90, ge=1, le=100, description="JPEG quality")
    size: tuple[int, int] | None = Field(
        None, description="[height, width] to publish at; null = the model's input size (engine.model_dir)"
    )
    producer: ProducerTuning = Field(
        default_factory=lambda: ProducerTuning(max_pending=2000), description="producer tuning"
    )
