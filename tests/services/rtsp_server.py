"""Start/stop a real GStreamer RTSP server (tests/services/gst_rtsp_server.py) from tests.

It runs under Debian's /usr/bin/python3 (python3-gi), on loopback, on a free port, and is
stopped by PID. Usage:

    with RtspServer({"cam1": clip_a, "cam2": clip_b}) as srv:
        url = srv.url("cam1")
        srv.stop(); ...; srv.start()   # restart on the same port (reconnect tests)
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from services.procs import free_port, stop_process, wait_for_port

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).with_name("gst_rtsp_server.py")


def rtsp_available() -> str | None:
    """None if the server can run here, else why not (for pytest.skip)."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} missing"
    probe = subprocess.run(
        [
            SYSTEM_PYTHON,
            "-c",
            "import gi; gi.require_version('GstRtspServer','1.0'); from gi.repository import GstRtspServer",
        ],
        capture_output=True,
        timeout=30,
    )
    if probe.returncode:
        return (
            "GStreamer RTSP server bindings missing (apt-get install python3-gi gir1.2-gst-rtsp-server-1.0)"
        )
    if shutil.which("gst-inspect-1.0") is None:
        return None  # the tools package is optional; the bindings are what matter
    return None


class RtspServer:
    def __init__(self, mounts: dict[str, str | Path], port: int | None = None, log_path: Path | None = None):
        self.mounts = {k: str(v) for k, v in mounts.items()}
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount}"

    def start(self, timeout: float = 20.0) -> None:
        cmd = [SYSTEM_PYTHON, str(SCRIPT), "--port", str(self.port)]
        for name, path in self.mounts.items():
            cmd += ["--mount", f"{name}={path}"]
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=out)
        try:
            wait_for_port(self.port, timeout)
        except TimeoutError:
            self.stop()
            raise
        time.sleep(0.2)

    def stop(self, sig_kill: bool = False) -> None:
        if self.proc is not None:
            import signal

            stop_process(self.proc, grace=5.0, sig=signal.SIGKILL if sig_kill else signal.SIGTERM)
            self.proc = None

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
