"""`vbw bench streams`: add/remove cycles through the stream API of a real `vbw run` subprocess.

A worker runs one steady file source (the sample clip, paced, looped) with the stream API on.
Each cycle POSTs a second file source, waits until its first frame is counted (GET), and
DELETEs it (the DELETE answers once its windows are published). After a warm-up, the worker's
thread count and RSS (/proc/PID/status) are read before and after the measured cycles, so a
source whose thread, decoder, window state or metric series outlived its removal shows as
growth. The HTTP client is the standard library's (the bench runs on a run-time install).

With `--cameras N`, N live RTSP cameras are then added one at a time (the test camera of `vbw bench
reconnect`, a GStreamer RTSP server; 320x180, 25 fps), each timed from the POST to its first
window in the JSONL sink (the config's sampling and the model's T decide most of it: T frames at
`sampling.fps`), then deleted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TOKEN = "bench-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> tuple[int, float]:
    """(threads, RSS in MB) of a process."""
    fields = dict(l.split(":", 1) for l in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in l)  # noqa: E741
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0]) / 1024


@dataclass
class StreamsResult:
    cycles: int
    warmup: int
    threads_before: int
    threads_after: int
    threads_peak: int
    rss_before_mb: float
    rss_after_mb: float
    post_ms: list[float] = field(default_factory=list)
    first_frame_ms: list[float] = field(default_factory=list)
    delete_ms: list[float] = field(default_factory=list)
    series_left: int = 0
    sampling_fps: float = 0.0
    camera_first_window_ms: list[float] = field(default_factory=list)

    def table(self) -> str:
        def p(xs: list[float], q: float) -> float:
            return statistics.quantiles(xs, n=100)[int(q) - 1] if len(xs) > 1 else (xs[0] if xs else 0.0)

        rows = [
            f"{self.cycles} add/remove cycles (after {self.warmup} warm-up cycles)",
            f"threads      {self.threads_before} -> {self.threads_after} (peak {self.threads_peak})",
            f"RSS          {self.rss_before_mb:.1f} -> {self.rss_after_mb:.1f} MB "
            f"({self.rss_after_mb - self.rss_before_mb:+.1f} MB)",
            f"series left  {self.series_left} (metric lines naming a removed stream)",
        ]
        for name, xs in (
            ("POST -> 201", self.post_ms),
            ("POST -> first frame counted", self.first_frame_ms),
            ("DELETE -> 204 (drained)", self.delete_ms),
        ):
            rows.append(
                f"{name:<28} p50 {p(xs, 50):7.1f} ms   p95 {p(xs, 95):7.1f} ms   max {max(xs):7.1f} ms"
            )
        xs = self.camera_first_window_ms
        if xs:
            rows.append(
                f"RTSP camera POST -> first window published ({len(xs)} cameras, sampling {self.sampling_fps:g} fps): "
                f"p50 {p(xs, 50) / 1000:.2f} s, max {max(xs) / 1000:.2f} s"
            )
        return "\n".join(rows)


class _Client:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: Any = None, auth: bool = False) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {TOKEN}")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                text = r.read()
                is_json = r.headers.get_content_type() == "application/json"
                return r.status, json.loads(text) if text and is_json else text
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()


def _wait(cond: Any, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():
                return
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited {proc.returncode} waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.01)


def _windows_of(path: Path, stream: str) -> int:
    if not path.exists():
        return 0
    needle = f'"stream_id":"{stream}"'
    return sum(needle in line.replace(" ", "") for line in path.read_text().splitlines())


def run_streams_bench(
    clip: Path, model: Path, cycles: int, warmup: int, cameras: int = 0, fps: float = 5.0
) -> StreamsResult:
    with tempfile.TemporaryDirectory(prefix="vbw-bench-streams-") as tmp_s:
        tmp = Path(tmp_s)
        (tmp / "token").write_text(TOKEN)
        mport, aport = _free_port(), _free_port()
        src = {"type": "file", "path": str(clip.resolve()), "realtime": True, "loop": True}
        cfg = {
            "sources": [{**src, "id": "steady"}],
            "engine": {"model_dir": str(model.resolve())},
            "sampling": {"fps": fps},
            "sinks": [{"type": "jsonl", "path": str(tmp / "out.jsonl")}],
            "metrics": {"host": "127.0.0.1", "port": mport},
            "api": {"enabled": True, "host": "127.0.0.1", "port": aport, "token_file": str(tmp / "token")},
            "logging": {"level": "WARNING"},
        }
        (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("VBW_")}
        err = (tmp / "stderr").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "vbw.cli", "run", "-c", str(tmp / "config.yaml")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            metrics, api = _Client(f"http://127.0.0.1:{mport}"), _Client(f"http://127.0.0.1:{aport}")
            _wait(lambda: metrics.call("GET", "/readyz")[0] == 200, 120, "ready worker", proc)
            _wait(lambda: api.call("GET", "/streams")[0] == 200, 30, "stream API", proc)
            post_ms: list[float] = []
            first_ms: list[float] = []
            delete_ms: list[float] = []

            def cycle(i: int, record: bool) -> None:
                sid = f"churn-{i}"
                t0 = time.perf_counter()
                code, body = api.call("POST", "/streams", {**src, "id": sid}, auth=True)
                t1 = time.perf_counter()
                if code != 201:
                    raise RuntimeError(f"POST {sid}: {code} {body}")
                _wait(
                    lambda: api.call("GET", f"/streams/{sid}")[1]["streams"][0]["frames_in"] >= 1,
                    60,
                    f"{sid}'s first frame",
                    proc,
                )
                t2 = time.perf_counter()
                code, body = api.call("DELETE", f"/streams/{sid}", auth=True)
                t3 = time.perf_counter()
                if code != 204:
                    raise RuntimeError(f"DELETE {sid}: {code} {body}")
                if record:
                    post_ms.append((t1 - t0) * 1000)
                    first_ms.append((t2 - t0) * 1000)
                    delete_ms.append((t3 - t2) * 1000)

            for i in range(warmup):
                cycle(i, False)
            threads0, rss0 = proc_status(proc.pid)
            peak = threads0
            for i in range(warmup, warmup + cycles):
                cycle(i, True)
                peak = max(peak, proc_status(proc.pid)[0])
            threads1, rss1 = proc_status(proc.pid)
            text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()
            left = sum('stream="churn-' in line for line in text.splitlines())
            camera_ms = _cameras(api, proc, tmp, cameras) if cameras else []
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            err.close()
        return StreamsResult(
            cycles=cycles,
            warmup=warmup,
            threads_before=threads0,
            threads_after=threads1,
            threads_peak=peak,
            rss_before_mb=rss0,
            rss_after_mb=rss1,
            post_ms=post_ms,
            first_frame_ms=first_ms,
            delete_ms=delete_ms,
            series_left=left,
            sampling_fps=fps,
            camera_first_window_ms=camera_ms,
        )


def _cameras(api: _Client, proc: subprocess.Popen, tmp: Path, n: int) -> list[float]:
    """POST -> first window of `n` RTSP cameras added one after another (each deleted after)."""
    from vbw.bench.reconnect import Camera, camera_problem, free_port

    why = camera_problem()
    if why:
        raise RuntimeError(why)
    cam = Camera(free_port(), tmp / "camera.log")
    cam.start()
    out: list[float] = []
    try:
        for k in range(n):
            sid = f"cam-{k}"
            t0 = time.perf_counter()
            code, body = api.call("POST", "/streams", {"type": "rtsp", "id": sid, "url": cam.url}, auth=True)
            if code != 201:
                raise RuntimeError(f"POST {sid}: {code} {body}")
            _wait(lambda s=sid: _windows_of(tmp / "out.jsonl", s) >= 1, 60, f"{sid}'s first window", proc)
            out.append((time.perf_counter() - t0) * 1000)
            code, body = api.call("DELETE", f"/streams/{sid}", auth=True)
            if code != 204:
                raise RuntimeError(f"DELETE {sid}: {code} {body}")
    finally:
        cam.kill()
    return out
