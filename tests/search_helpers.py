"""Windows for the search tests: real `WindowResult`s, as the worker's sinks publish them."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np

from worker.frames import Window
from worker.messages import LabelScore, ModelRef, WindowMessage, window_id
from worker.sinks.base import WindowResult

DIM = 16


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def result(
    stream: str,
    start: int,
    vector: np.ndarray | None = None,
    capture_time: float | None = None,
    version: str = "1.0",
    dim: int = DIM,
) -> WindowResult:
    emb = unit(
        np.random.default_rng(hash((stream, start)) % 2**32).normal(size=dim) if vector is None else vector
    )
    wid = window_id(stream, start, version)
    ct = time.time() if capture_time is None else capture_time
    msg = WindowMessage(
        window_id=wid,
        stream_id=stream,
        index=start // 4,
        start_seq=start,
        end_seq=start + 15,
        start_pts=start / 8,
        end_pts=(start + 15) / 8,
        frames=16,
        complete=True,
        capture_time=ct,
        labels=[LabelScore(label="move_left", score=0.9)],
        model=ModelRef(name="vbw-motion-small", version=version, backend="onnxruntime", precision="fp32"),
        latency_ms=5.0,
        worker="test",
        produced_at=datetime.now(UTC),
    )
    w = Window(
        stream, start // 4, start, start + 15, start / 8, (start + 15) / 8, 16, True, ct, window_id=wid
    )
    return WindowResult(message=msg, embedding=emb, scores=np.array([0.9], np.float32), window=w)


class IndexProc:
    """`vbw index -c FILE` as a real subprocess, with its /metrics port."""

    def __init__(self, tmp, bootstrap: str, db, **index) -> None:
        import yaml
        from services.procs import free_port

        self.port = free_port()
        self.tmp = tmp
        cfg = {
            "kafka": {"bootstrap_servers": [bootstrap]},
            "index": {
                "db": str(db),
                "metrics_port": self.port,
                "metrics_host": "127.0.0.1",
                "progress_s": 1.0,
                "session_timeout_ms": 2000,
                "heartbeat_interval_ms": 500,
                **index,
            },
        }
        self.config_path = tmp / f"index-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.stderr_path = tmp / f"index-{self.port}.stderr"
        self.proc = None

    def start(self, *extra: str) -> IndexProc:
        import os
        import subprocess
        import sys
        from pathlib import Path

        repo = Path(__file__).resolve().parents[1]
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("VBW_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vbw.cli", "index", "-c", str(self.config_path), *extra],
            cwd=repo,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr_path.open("wb"),
        )
        return self

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def metrics(self) -> str:
        from worker_helpers import http_get

        return http_get(f"http://127.0.0.1:{self.port}/metrics", 2.0)[1]

    def metric(self, name: str, **labels: str) -> float:
        from worker_helpers import metric_value

        try:
            return metric_value(self.metrics(), name, **labels)
        except OSError:
            return -1.0

    def stop(self) -> None:
        from services.procs import stop_process

        if self.proc is not None:
            stop_process(self.proc, grace=15)
