"""`vbw bench reconnect`: how soon frames flow again after a camera outage.

A live test camera (vbw/bench/rtsp_camera.py: a GStreamer RTSP server, run with Debian's
/usr/bin/python3) feeds one `RtspSource` in this process, with the worker's reconnect settings.
Each trial kills the camera with SIGKILL (it loses power), keeps it down for the outage, starts it
again on the same port and measures from "listening again" (the camera's READY line, printed once
its port is bound) to the first new frame the source hands over (decoded and resized, at
`ctx.emit`), next to the attempts and the outage the source logged for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from worker.config import parse_config
from worker.frames import Frame
from worker.metrics import Metrics
from worker.runtime import Runtime
from worker.sources.context import SourceContextBase
from worker.sources.rtsp import RtspSource

SYSTEM_PYTHON = Path("/usr/bin/python3")
CAMERA_SCRIPT = Path(__file__).with_name("rtsp_camera.py")
GST_PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
    "gstreamer1.0-plugins-ugly gstreamer1.0-rtsp"
)
STREAM = "cam1"


def camera_problem() -> str | None:
    """None if the test camera can run here, else what is missing and how to install it."""
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} is missing (the camera needs Debian's Python with GStreamer bindings)"
    probe = subprocess.run(
        [str(SYSTEM_PYTHON), str(CAMERA_SCRIPT), "--check"], capture_output=True, text=True, timeout=60
    )
    if probe.returncode:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return f"GStreamer RTSP server missing or incomplete ({last}); install: apt-get install -y {GST_PACKAGES}"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Camera:
    """The test camera process, stopped by its PID. `start()` returns when its port listens."""

    def __init__(self, port: int, log_path: Path):
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{STREAM}"

    def start(self, timeout: float = 60.0) -> float:
        """Start it; return time.monotonic() at its READY line (the port is bound by then)."""
        cmd = [str(SYSTEM_PYTHON), str(CAMERA_SCRIPT), "--port", str(self.port), "--mount", STREAM]
        with self.log_path.open("ab") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(timeout=0.5):
                    line = self.proc.stdout.readline()
                    if line.startswith(b"READY"):
                        return time.monotonic()
                    if not line:  # stdout closed: the camera died
                        break
        self.kill()
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"camera on port {self.port} did not start: {' | '.join(tail) or 'no output'}")

    def kill(self) -> None:
        """SIGKILL, as a power cut: no RTSP TEARDOWN, the connection just ends."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


class _Events(Metrics):
    """The worker's metrics, plus what the bench times: stream up/down, attempts and frames, with
    time.monotonic() stamps."""

    def __init__(self) -> None:
        super().__init__()
        self.cond = threading.Condition()
        self.up = False
        self.frame_times: list[float] = []
        self.attempts: list[float] = []

    def stream_up(self, stream_id: str, up: bool) -> None:
        super().stream_up(stream_id, up)
        with self.cond:
            self.up = up
            self.cond.notify_all()

    def reconnect(self, stream_id: str) -> None:
        super().reconnect(stream_id)
        with self.cond:
            self.attempts.append(time.monotonic())

    def frame(self) -> None:
        with self.cond:
            self.frame_times.append(time.monotonic())
            self.cond.notify_all()

    def wait_for(self, what: Callable[[], bool], timeout: float, label: str) -> None:
        with self.cond:
            if not self.cond.wait_for(what, timeout):
                raise RuntimeError(f"{label}: not within {timeout:.0f}s")


class _TimingCtx(SourceContextBase):
    """Only times frames: nothing downstream, nothing dropped."""

    def emit(self, frame: Frame) -> bool:
        self.received(frame)
        self.metrics.frame()  # type: ignore[attr-defined]
        return True

    def stream_reset(self, stream_id: str, reason: str, emit_partial: bool = True) -> None: ...
    def drop_streams(self, stream_ids: Iterable[str], reason: str) -> None: ...

    def load(self) -> float:
        return 0.0


class _ReconnectLines(logging.Handler):
    """Keeps the source's "reconnected after ..." lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == "reconnected":
            self.lines.append(record.getMessage())


@dataclass
class ReconnectBenchSpec:
    trials: int = 10
    outage_s: float = 5.0
    within_s: float = 2.0  # the target: first new frame this soon after the camera listens
    settle_s: float = 2.0  # frames flowing this long before the next kill
    port: int | None = None
    reconnect: dict[str, float] = field(default_factory=dict)  # sources[type=rtsp].reconnect keys


@dataclass
class Trial:
    index: int
    down_s: float  # kill -> the source saw the stream end
    outage_s: float  # kill -> camera listening again
    first_frame_s: float  # camera listening again -> first new frame at ctx.emit
    attempts_down: int  # attempts the source made while the camera was down
    log_line: str  # the source's one "reconnected" line for this outage


@dataclass
class ReconnectBenchResult:
    spec: ReconnectBenchSpec
    reconnect: dict[str, float]  # the effective reconnect settings
    trials: list[Trial]

    @property
    def first_frame_s(self) -> list[float]:
        return [t.first_frame_s for t in self.trials]

    @property
    def median_s(self) -> float:
        return statistics.median(self.first_frame_s)

    @property
    def max_s(self) -> float:
        return max(self.first_frame_s)

    @property
    def within(self) -> int:
        return sum(s <= self.spec.within_s for s in self.first_frame_s)

    def table(self) -> str:
        settings = ", ".join(f"{k}={v:g}" for k, v in self.reconnect.items())
        lines = [
            f"camera outage {self.spec.outage_s:g} s (SIGKILL, restart on the same port); reconnect: {settings}",
            f"{'trial':>5} {'down s':>7} {'outage s':>8} {'first frame s':>13} {'attempts':>8}  logged",
        ]
        for t in self.trials:
            lines.append(
                f"{t.index:>5} {t.down_s:>7.2f} {t.outage_s:>8.2f} {t.first_frame_s:>13.2f} "
                f"{t.attempts_down:>8}  {t.log_line}"
            )
        lines.append(
            f"listening again -> first new frame: median {self.median_s:.2f} s, max {self.max_s:.2f} s, "
            f"{self.within}/{len(self.trials)} within {self.spec.within_s:g} s"
        )
        return "\n".join(lines)


def run_reconnect_bench(
    spec: ReconnectBenchSpec, progress: Callable[[str], None] | None = None
) -> ReconnectBenchResult:
    problem = camera_problem()
    if problem:
        raise RuntimeError(problem)
    say = progress or (lambda _m: None)
    with tempfile.TemporaryDirectory(prefix="vbw-bench-reconnect-") as tmp:
        cam = Camera(spec.port or free_port(), Path(tmp) / "camera.log")
        cfg = parse_config(
            {"sources": [{"type": "rtsp", "id": STREAM, "url": cam.url, "reconnect": spec.reconnect}]}
        )
        sc = cfg.sources[0]
        reconnect = sc.reconnect.model_dump()  # type: ignore[union-attr]
        events = _Events()
        rt = Runtime(logging.getLogger("vbw.bench"), grace_s=30.0, install_signals=False)
        handler = _ReconnectLines()
        src_log = logging.getLogger("vbw.source")
        old_level = src_log.level
        src_log.setLevel(logging.INFO)  # the reconnect lines are INFO
        src_log.addHandler(handler)
        trials: list[Trial] = []
        try:
            cam.start()
            source = RtspSource(sc, cfg)  # type: ignore[arg-type]
            ctx = _TimingCtx(source, rt, events, (64, 64))
            rt.start_source(source, ctx)
            events.wait_for(lambda: bool(events.frame_times), 60, "first frame from the camera")
            for i in range(1, spec.trials + 1):
                t_up = events.frame_times[-1]
                ctx.wait(max(0.0, t_up + spec.settle_s - time.monotonic()))
                n_lines = len(handler.lines)
                t_kill = time.monotonic()
                cam.kill()
                events.wait_for(lambda: not events.up, 60, f"trial {i}: the source seeing the camera gone")
                t_down = time.monotonic()
                ctx.wait(max(0.0, t_kill + spec.outage_s - time.monotonic()))
                t_listen = cam.start()
                with events.cond:
                    attempts_down = sum(t_kill <= a < t_listen for a in events.attempts)
                events.wait_for(
                    lambda t=t_listen: bool(events.frame_times) and events.frame_times[-1] > t,
                    120,
                    f"trial {i}: first frame after the restart",
                )
                t_frame = next(t for t in events.frame_times if t > t_listen)
                line = handler.lines[n_lines] if len(handler.lines) > n_lines else "(no line)"
                trial = Trial(i, t_down - t_kill, t_listen - t_kill, t_frame - t_listen, attempts_down, line)
                trials.append(trial)
                say(f"trial {i}: first new frame {trial.first_frame_s:.2f} s after the camera listened again")
        finally:
            cam.kill()
            rt.shutdown(lambda: True)  # the source gets half the grace to return
            rt.close()
            src_log.removeHandler(handler)
            src_log.setLevel(old_level)
    return ReconnectBenchResult(spec, reconnect, trials)
