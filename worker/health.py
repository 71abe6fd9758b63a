"""`/metrics`, `/healthz` and `/readyz` on one port.

- `/healthz` 200 while every watched worker thread (inference, sink) has beaten its heartbeat
  within `wedged_after_s`; 503 with the silent thread's name otherwise (a wedged engine call or sink).
- `/readyz` 503 until the engine is loaded and warmed and the sources have started; 200 after;
  503 again while shutting down, and while `/healthz` is 503 (a wedged worker serves nothing).

The server object is built here; `worker.runtime` serves it (first, so /readyz answers 503 while loading).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class Health:
    def __init__(self, wedged_after_s: float = 30.0):
        self.wedged_after_s = wedged_after_s
        self._lock = threading.Lock()
        self._beats: dict[str, float] = {}
        self._ready = False
        self._why = "starting"

    def beat(self, name: str) -> None:
        self._beats[name] = time.monotonic()  # a dict store is atomic under the GIL

    def unwatch(self, name: str) -> None:
        with self._lock:
            self._beats.pop(name, None)

    def set_ready(self, ready: bool, why: str = "") -> None:
        with self._lock:
            self._ready, self._why = ready, why

    def ready(self) -> tuple[bool, str]:
        with self._lock:
            if not self._ready:
                return False, self._why
        alive, why = self.alive()
        return (True, "ready") if alive else (False, why)

    def alive(self) -> tuple[bool, str]:
        now = time.monotonic()
        with self._lock:
            silent = {n: now - t for n, t in self._beats.items() if now - t > self.wedged_after_s}
        if silent:
            return False, "wedged: " + ", ".join(f"{n} silent {s:.0f}s" for n, s in sorted(silent.items()))
        return True, "ok"


def make_server(host: str, port: int, registry: CollectorRegistry, health: Health) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok, why = health.alive()
                self._send(200 if ok else 503, (why + "\n").encode())
            elif path == "/readyz":
                ok, why = health.ready()
                self._send(200 if ok else 503, (why + "\n").encode())
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
