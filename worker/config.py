"""The worker's configuration: one pydantic-settings model, loaded from YAML, overridden by env.

    VBW_ENGINE__BACKEND=torch VBW_METRICS__PORT=9200 vbw run -c configs/rtsp.yaml

Environment variables win over the file (`VBW_` prefix, `__` between nested keys; list and
dict values as JSON, e.g. `VBW_SINKS='[{"type": "stdout"}]'`). Every model forbids unknown
keys, so a typo is an error, and `load_config` reports every problem at once with its path.

Source and sink entries are discriminated unions on `type`: a new kind (Kafka) adds its config
class to `SourceConfig` / `SinkConfig` below and a builder to `worker/sources/__init__.py` /
`worker/sinks/__init__.py`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import AfterValidator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from contracts.errors import VbwError
from media.zones import Zone, polygon_area, self_intersects
from worker.events_config import EventsConfig
from worker.kafka.config import IngestConfig, KafkaConnectionConfig, KafkaSinkConfig, KafkaSourceConfig

ENV_PREFIX = "VBW_"
ENV_NESTED_DELIMITER = "__"
DEFAULT_MODEL_DIR = Path("models/vbw-motion-small")

# Stream ids become metric label values, Kafka keys and file names: keep them plain.
StreamId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplingConfig(_Section):
    """Which decoded frames are analysed."""

    fps: float | None = Field(
        5.0,
        gt=0,
        le=240,
        description="analysed frames per second per stream (the shipped model is trained at 4-8); null = every "
        "frame. File and RTSP sources (and `vbw ingest`) only: a kafka source analyses every frame message",
    )
    keyframes_only: bool = Field(
        False, description="decode key frames only (the decoder skips the rest), then apply fps"
    )


class ReconnectConfig(_Section):
    """Fast TCP probes early in an outage, exponential backoff with jitter otherwise
    (worker.backoff.ReconnectPolicy)."""

    initial_s: float = Field(0.5, gt=0, description="first backoff delay")
    max_s: float = Field(30.0, gt=0, description="delay cap")
    multiplier: float = Field(2.0, ge=1, description="growth per failed attempt")
    jitter: float = Field(0.5, ge=0, le=1, description="fraction of the delay drawn at random")
    probe_interval_s: float = Field(
        0.5,
        gt=0,
        description="early in an outage, TCP-probe the camera's RTSP port this often: a returning "
        "camera is found within this",
    )
    probe_for_s: float = Field(
        300.0,
        ge=0,
        description="probe that often for this long into an outage, then back off "
        "(initial_s..max_s); 0 = back off from the start",
    )
    probe_timeout_s: float = Field(
        1.0, gt=0, description="TCP connect limit of one probe (a camera that is off never answers)"
    )


# A zone's stream id is `<source id>/<zone name>`: the slash cannot occur in a source id, so a
# zone stream never collides with another source's stream.
ZONE_SEPARATOR = "/"
ZoneName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


def zone_stream_id(source_id: str, zone_name: str) -> str:
    return f"{source_id}{ZONE_SEPARATOR}{zone_name}"


Unit = Annotated[float, Field(ge=0, le=1)]


class ZoneConfig(_Section):
    """A named area of the frame, analysed as the stream `<source id>/<name>` (media.zones)."""

    name: ZoneName = Field(description="zone name; its stream id is `<source id>/<name>`")
    rect: tuple[Unit, Unit, Unit, Unit] | None = Field(
        None, description="[x0, y0, x1, y1] in frame fractions (0..1, origin top left)"
    )
    polygon: list[tuple[Unit, Unit]] | None = Field(
        None,
        description="[[x, y], ...] 3 or more vertices in frame fractions; its bounding box is analysed, "
        "the outside masked",
    )

    @model_validator(mode="after")
    def _one_shape(self) -> ZoneConfig:
        if (self.rect is None) == (self.polygon is None):
            raise ValueError(f"zone {self.name!r}: give exactly one of rect or polygon")
        if self.rect is not None:
            x0, y0, x1, y1 = self.rect
            if not (x0 < x1 and y0 < y1):
                raise ValueError(f"zone {self.name!r}: rect needs x0 < x1 and y0 < y1, got {list(self.rect)}")
        elif self.polygon is not None:
            if len(self.polygon) < 3:
                raise ValueError(f"zone {self.name!r}: a polygon needs 3 or more vertices")
            if self_intersects(self.polygon):
                raise ValueError(f"zone {self.name!r}: polygon edges cross each other")
            if polygon_area(self.polygon) <= 1e-9:
                raise ValueError(f"zone {self.name!r}: polygon has no area")
        return self

    def zone(self) -> Zone:
        if self.rect is not None:
            return Zone.from_rect(self.name, *self.rect)
        return Zone.from_polygon(self.name, self.polygon or [])


def _unique_zones(v: list[ZoneConfig]) -> list[ZoneConfig]:
    seen: set[str] = set()
    dups = sorted({z.name for z in v if z.name in seen or seen.add(z.name)})  # type: ignore[func-returns-value]
    if dups:
        raise ValueError(f"duplicate zone name(s): {', '.join(dups)}")
    return v


Zones = Annotated[
    list[ZoneConfig],
    AfterValidator(_unique_zones),
    Field(
        description="named areas, each analysed as its own stream `<id>/<name>` (the frame is decoded "
        "once); [] = the whole frame only"
    ),
]
FullFrame = Annotated[
    bool,
    Field(
        description="with zones: also analyse the whole frame, as stream `<id>` (without zones it always is)"
    ),
]


class _ZonedSource(_Section):
    """The sources that decode video themselves (file, rtsp) and so can cut zones. The fields
    are declared by each subclass, so they keep their place in its key order."""

    if TYPE_CHECKING:
        id: str
        zones: list[ZoneConfig]
        full_frame: bool

    def stream_ids(self) -> list[str]:
        """Every stream this source emits: `<id>` (whole frame), then `<id>/<zone>` in order."""
        whole = [self.id] if self.full_frame or not self.zones else []
        return whole + [zone_stream_id(self.id, z.name) for z in self.zones]


class FileSourceConfig(_ZonedSource):
    type: Literal["file"]
    id: StreamId = Field(description="stream id: metric label, window ids, Kafka key")
    path: Path = Field(
        description="any container/codec PyAV can open; a relative path is relative to the working directory"
    )
    realtime: bool = Field(False, description="pace frames to their timestamps, like a live camera")
    loop: bool = Field(False, description="start again at the end (a reset closes the windows)")
    sampling: SamplingConfig | None = Field(None, description="override of the top-level sampling")
    zones: Zones = []
    full_frame: FullFrame = False


class RtspSourceConfig(_ZonedSource):
    type: Literal["rtsp"]
    id: StreamId = Field(description="stream id: metric label, window ids, Kafka key (never the URL)")
    url: SecretStr = Field(description="rtsp:// or rtsps:// URL; credentials allowed, never logged")
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTP transport")
    open_timeout_s: float = Field(10.0, gt=0, description="connect + DESCRIBE/SETUP/PLAY limit")
    read_timeout_s: float = Field(5.0, gt=0, description="a read blocking longer than this fails")
    stall_timeout_s: float = Field(10.0, gt=0, description="reconnect when no frame for this long")
    reconnect: ReconnectConfig = ReconnectConfig()
    sampling: SamplingConfig | None = Field(None, description="override of the top-level sampling")
    zones: Zones = []
    full_frame: FullFrame = False

    @field_validator("url")
    @classmethod
    def _rtsp_url(cls, v: SecretStr) -> SecretStr:
        parts = urlsplit(v.get_secret_value())
        if parts.scheme not in ("rtsp", "rtsps") or not parts.hostname:
            raise ValueError("must be an rtsp:// or rtsps:// URL with a host")
        return v


# Add new source kinds here (and a builder in worker/sources/__init__.py).
SourceConfig = Annotated[FileSourceConfig | RtspSourceConfig | KafkaSourceConfig, Field(discriminator="type")]


class WindowsConfig(_Section):
    size: int | None = Field(None, ge=1, description="frames per window T; null = the model's T")
    stride: int = Field(4, ge=1, description="frames between window starts")
    max_gap: int = Field(0, ge=0, description="missing frames tolerated inside a window; more closes it")
    partial: Literal["drop", "pad", "emit"] = Field(
        "drop",
        description="window cut short by a gap/reset/end: drop it, pad it to T with its last "
        "frame, or emit it as is (shorter input); counted either way",
    )
    min_partial_frames: int = Field(1, ge=1, description="partial windows shorter than this are dropped")


class BatchingConfig(_Section):
    """Dynamic batching across streams, as in Triton: run when full or when the oldest waited long enough."""

    max_batch: int = Field(8, ge=1, le=1024, description="windows per encode_windows call")
    max_delay_ms: float = Field(20.0, ge=0, description="longest a window waits for a batch to fill")
    frame_max_batch: int = Field(32, ge=1, le=4096, description="frames per encode_frames call")
    frame_max_delay_ms: float = Field(5.0, ge=0, description="longest a frame waits for a batch to fill")


class LabelsConfig(_Section):
    """Zero-shot labels (a model with a text encoder): each prompt's name is a label, scored by
    the window embedding's similarity to the sentence (worker.prompt_labels; docs/text.md)."""

    prompts: dict[str, str] = Field(
        min_length=1,
        description='label name -> sentence, e.g. {"left": "something moves to the left"}',
    )

    @model_validator(mode="after")
    def _non_empty(self) -> LabelsConfig:
        bad = [k for k, v in self.prompts.items() if not k.strip() or not v.strip()]
        if bad:
            raise ValueError(f"prompts with an empty name or sentence: {bad}")
        return self


class EngineConfig(_Section):
    model_dir: Path = Field(
        DEFAULT_MODEL_DIR,
        description="model directory with model.json; a relative path is relative to the working directory "
        "(the images' is /opt/vbw)",
    )
    backend: Literal["onnxruntime", "torch", "tensorrt"] = "onnxruntime"
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    threads: int | None = Field(None, ge=1, description="intra-op threads; null = the runtime's default")
    options: dict[str, Any] = Field(default_factory=dict, description="extra options for the backend")
    top_k: int = Field(3, ge=1, description="labels per message")
    labels: LabelsConfig | None = Field(
        None,
        description="null = the model's classifier head; {prompts: {name: sentence}} = zero-shot labels "
        "from the text encoder (encoded at start)",
    )
    warmup_runs: int = Field(
        1,
        ge=0,
        description="warm-up passes over every stage at full batch before /readyz turns 200 (0 = none)",
    )


class JsonlSinkConfig(_Section):
    type: Literal["jsonl"]
    path: Path = Field(
        description="file to append vbw.window/v1 (or vbw.event/v1) lines to; a relative path is relative to "
        "the working directory"
    )
    payload: Literal["windows", "events", "embeddings"] = Field(
        "windows",
        description="one line per window, or per segment event (see `events`), or per window with its "
        "`embedding` added (the input of `vbw index --jsonl`)",
    )
    name: str = Field("jsonl", description="label of vbw_published_total{topic}")
    fsync: bool = Field(False, description="fsync at each flush (slower, survives power loss)")


class StdoutSinkConfig(_Section):
    type: Literal["stdout"]
    format: Literal["json", "text"] = Field(
        "json", description="vbw.window/v1 (or vbw.event/v1) lines, or one readable line"
    )
    payload: Literal["windows", "events"] = Field(
        "windows", description="one line per window, or per segment event (see `events`)"
    )
    name: str = Field("stdout", description="label of vbw_published_total{topic}")


# Add new sink kinds here (and a builder in worker/sinks/__init__.py).
SinkConfig = Annotated[JsonlSinkConfig | StdoutSinkConfig | KafkaSinkConfig, Field(discriminator="type")]


class MetricsConfig(_Section):
    enabled: bool = Field(True, description="serve /metrics, /healthz and /readyz")
    host: str = Field("0.0.0.0", description="listen address")
    port: int = Field(9108, ge=0, le=65535, description="listen port (0 = any free port)")
    per_stream_labels: bool = Field(
        True, description="label per-stream metrics by stream id; false = one 'all' series (large fleets)"
    )
    wedged_after_s: float = Field(
        30.0, gt=0, description="/healthz fails when a worker thread is silent this long"
    )


class ApiConfig(_Section):
    """The stream API (worker.api): GET /streams open, writes with a bearer token."""

    enabled: bool = Field(False, description="serve the stream API (`vbw run` only)")
    host: str = Field(
        "127.0.0.1",
        description="listen address; a port of its own, apart from /metrics, so the write API can be "
        "bound or firewalled apart from the scrape port",
    )
    port: int = Field(9110, ge=0, le=65535, description="listen port (0 = any free port)")
    token_file: Path | None = Field(
        None,
        description="file holding the bearer token writes need (a Kubernetes Secret mount; read at each "
        "request, so a rotated Secret applies); null = every write is refused",
    )
    watch_config: bool = Field(
        True, description="reload the config file when it changes (SIGHUP reloads it either way)"
    )
    watch_interval_s: float = Field(2.0, gt=0, description="how often the config file is checked")


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = Field(False, alias="json", description="one JSON object per log line")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PipelineConfig(_Section):
    frame_queue: int = Field(256, ge=1, description="frames waiting for the frame encoder")
    result_queue: int = Field(256, ge=1, description="windows waiting for the sinks")
    high_water: float = Field(0.8, gt=0, le=1, description="queue fill above which sources are congested")
    low_water: float = Field(0.5, ge=0, lt=1, description="queue fill below which congestion ends")
    shutdown_grace_s: float = Field(10.0, gt=0, description="SIGTERM to exit, at most")
    worker_id: str | None = Field(None, description="`worker` field of messages; null = host name")


class SnapshotsConfig(_Section):
    """The key frame of each event's peak window, as a JPEG in a local directory (worker.snapshots)."""

    enabled: bool = Field(
        False,
        description="store event snapshots; file and RTSP sources then keep a small copy of every frame "
        "(`width` wide) for them",
    )
    dir: Path = Field(
        Path("snapshots"),
        description="directory of the store (a volume in Kubernetes); a relative path is relative to the "
        "working directory",
    )
    width: int = Field(
        320, ge=16, le=4096, description="snapshot width in pixels (height by the frame's aspect)"
    )
    quality: int = Field(85, ge=1, le=100, description="JPEG quality")
    max_count: int | None = Field(
        10000, ge=1, description="keep at most this many (oldest go first); null = no limit"
    )
    max_age_s: float | None = Field(
        7 * 86400.0, gt=0, description="delete snapshots older than this; null = no limit"
    )
    prune_interval_s: float = Field(60.0, gt=0, description="prune by age this often, besides at each save")
    reference: Literal["relative", "file_uri"] = Field(
        "relative", description="what events carry: a path relative to `dir`, or an absolute file:// URI"
    )


class VbwConfig(BaseSettings):
    """The whole worker configuration."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        case_sensitive=False,
    )

    sources: list[SourceConfig] = Field(min_length=1, description="inputs, one thread each")
    sampling: SamplingConfig = SamplingConfig()
    windows: WindowsConfig = WindowsConfig()
    batching: BatchingConfig = BatchingConfig()
    engine: EngineConfig = EngineConfig()
    sinks: list[SinkConfig] = Field(
        default_factory=lambda: [StdoutSinkConfig(type="stdout")], min_length=1, description="outputs"
    )
    metrics: MetricsConfig = MetricsConfig()
    api: ApiConfig = Field(
        default_factory=ApiConfig, description="stream API and config reload (docs/operations.md)"
    )
    logging: LoggingConfig = LoggingConfig()
    pipeline: PipelineConfig = PipelineConfig()
    snapshots: SnapshotsConfig = SnapshotsConfig()
    events: EventsConfig = Field(
        default_factory=EventsConfig,
        description="segments and their events, for sinks with `payload: events`",
    )
    kafka: KafkaConnectionConfig = Field(
        default_factory=KafkaConnectionConfig, description="brokers and security for every kafka entry"
    )
    ingest: IngestConfig = Field(default_factory=IngestConfig, description="`vbw ingest` (edge mode) only")

    @field_validator("sources")
    @classmethod
    def _unique_ids(cls, v: list[Any]) -> list[Any]:
        seen: set[str] = set()
        dups = sorted({s.id for s in v if s.id in seen or seen.add(s.id)})
        if dups:
            raise ValueError(f"duplicate source id(s): {', '.join(dups)}")
        return v

    @model_validator(mode="after")
    def _events_need_a_changelog(self) -> VbwConfig:
        # A Kafka source replays after a crash; open segments must survive it (docs/events.md).
        kafka = any(s.type == "kafka" for s in self.sources)
        if kafka and self.takes_events() and not self.events.changelog_topic:
            raise ValueError(
                "events.changelog_topic: required when a kafka source feeds a sink with payload: events "
                "(segment state must survive a restart)"
            )
        return self

    def takes_events(self) -> bool:
        """A sink publishes segment events, so the segmenter runs."""
        return any(s.payload == "events" for s in self.sinks)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML document arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)

    def sampling_for(self, source: SourceConfig) -> SamplingConfig:
        return source.sampling or self.sampling

    def key_width(self) -> int | None:
        """Width of the key image sources keep of each frame for snapshots; None when off."""
        return self.snapshots.width if self.snapshots.enabled else None

    def worker_id(self) -> str:
        return self.pipeline.worker_id or socket.gethostname()


class ConfigProblem(NamedTuple):
    path: str  # dotted field path, "" for the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(VbwError):
    """The config has problems; `problems` lists every one of them. Not retriable."""

    def __init__(self, source: str, problems: list[ConfigProblem]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s): " + "; ".join(map(str, problems)))


_UNION_TAGS = {"file", "rtsp", "jsonl", "stdout", "kafka"}


def _path(loc: tuple[int | str, ...]) -> str:
    # pydantic puts the discriminator tag into the location (sources.0.rtsp.url); drop it.
    parts: list[str] = []
    for i, p in enumerate(loc):
        if isinstance(p, str) and i > 0 and isinstance(loc[i - 1], int) and p in _UNION_TAGS:
            continue
        parts.append(str(p))
    return ".".join(parts)


def _problems(err: ValidationError) -> list[ConfigProblem]:
    return problems_of(err.errors(include_url=False))


def problems_of(errors: Any, drop_first: bool = False) -> list[ConfigProblem]:
    """pydantic's error dicts as problems with dotted paths. `drop_first`: the location starts
    with where the document was (FastAPI's "body"), and the entry itself may be a tagged union."""
    out = []
    for e in errors:
        loc = tuple(e["loc"])
        if drop_first:
            loc = loc[1:]
            if loc and loc[0] in _UNION_TAGS:
                loc = loc[1:]
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "union_tag_invalid":
            msg = f"unknown type {e['input'].get('type')!r}" if isinstance(e["input"], dict) else msg
        out.append(ConfigProblem(_path(loc), msg))
    return out


def parse_config(data: Mapping[str, Any], source: str = "<config>") -> VbwConfig:
    """Validate a config document (+ environment). Raises ConfigError listing every problem."""
    try:
        return VbwConfig(**dict(data))
    except ValidationError as e:
        raise ConfigError(source, _problems(e)) from None


def load_config(path: str | Path) -> VbwConfig:
    """Read and validate a YAML config file (+ environment). Raises ConfigError."""
    path = Path(path)
    src = str(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(src, [ConfigProblem("", f"cannot read: {e.strerror or e}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(
            src, [ConfigProblem("", f"not valid YAML: {where}{getattr(e, 'problem', e)}")]
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(src, [ConfigProblem("", "the top level must be a mapping of sections")])
    return parse_config(data, src)


def env_overrides() -> list[str]:
    """Names of the VBW_ variables in the environment (for a log line; values may be secrets)."""
    return sorted(k for k in os.environ if k.upper().startswith(ENV_PREFIX))
