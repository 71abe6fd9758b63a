"""One runtime for every program (`vbw run`, `vbw ingest`, the benches): the threads' life cycle.

- Named daemon threads (`spawn`); a `required` one that ends stops the program.
- SIGTERM/SIGINT: a graceful stop within the grace; a second signal forces it (no more waiting).
- The /metrics, /healthz, /readyz server (`serve_http`), started first so /readyz answers 503
  while the program loads.
- One thread per source (`start_source`): a source that raises ends alone, logged as one line;
  `SourceFailed` and any other exception count as a failure, the input's end does not.
- A registry of the running sources: `stop_source` stops one of them at runtime (the stream API,
  a config reload) without touching the others; the program then drains its streams.
- SIGHUP: `on_hangup` (a config reload), when the program sets it.
- The main loop (`watch`): stop once every source of an all-finite set has ended, or a required
  thread died.
- Shutdown (`shutdown`): sources get half the grace to return; the program drains what is in
  flight; then sources with `commits_after_drain` (Kafka) are joined, after the sinks drained.
- Exit code (`exit_code`): 1 when work was cut off by the grace or every source failed.

The program owns what flows between threads (the pipeline's queues, ingest's producer); this
module owns the threads themselves. `worker.sources.context.SourceContextBase` reads its events.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from contracts.errors import VbwError
from worker.health import Health, make_server
from worker.sources.base import Source, SourceFailed
from worker.sources.context import SourceContextBase

IDLE_S = 0.1  # longest the main loop sleeps without looking at its threads

_source_log = logging.getLogger("vbw.source")  # where sources log their own one-line errors


class StartupError(VbwError):
    """The program cannot start (metrics port, engine, model, sink). One line, no traceback.
    Not retriable unless raised with `retriable=contracts.errors.is_retriable(cause)` (a sink's
    broker that is not up yet, say)."""


class _StopEvery(threading.Event):
    """The program-wide stop of the sources: setting it also sets each source's own stop event
    (`SourceContextBase.stop_event`), which alone stops one source removed at runtime."""

    def __init__(self) -> None:
        super().__init__()
        self._each: weakref.WeakSet[threading.Event] = weakref.WeakSet()  # a removed source's goes
        self._each_lock = threading.Lock()

    def listen(self, ev: threading.Event) -> None:
        with self._each_lock:
            self._each.add(ev)
        if self.is_set():
            ev.set()

    def set(self) -> None:
        super().set()
        with self._each_lock:
            each = list(self._each)
        for ev in each:
            ev.set()


class Runtime:
    def __init__(
        self,
        log: logging.Logger,
        *,
        grace_s: float,
        health: Health | None = None,
        install_signals: bool = True,
    ) -> None:
        self.log = log  # the program's logger: its lines keep their logger name
        self.grace_s = grace_s
        self.health = health or Health()
        self._install_signals = install_signals
        self.threads: dict[str, threading.Thread] = {}
        self.sources: list[Source] = []  # the running ones (start_source adds, stop_source removes)
        self.failed: set[str] = set()  # ids of the sources that ended by failing
        self.stop_sources = _StopEvery()  # sources: return from run()
        self.on_hangup: Callable[[], None] | None = None  # SIGHUP (config reload)
        self._sources_lock = threading.Lock()  # sources and threads change from API threads
        self.drained = threading.Event()  # the program drained at shutdown: no more feedback
        self.started = threading.Event()
        self.stop_reason = ""
        self.force = False  # second signal: stop waiting for anything
        self.deadline = float("inf")  # set when shutdown begins
        self.http_port: int | None = None
        self._stop_requested = threading.Event()  # main loop: begin shutdown
        self._required: list[str] = []
        self._http: Any = None
        self._rc: int | None = None

    # -- the whole run --------------------------------------------------------------------------
    def run(
        self, start: Callable[[], None], finish: Callable[[], int], tick: Callable[[], None] | None = None
    ) -> int:
        """Signals, `start()` (StartupError: one line, exit 1), ready, `watch(tick)`, `finish()`."""
        self.install_signals()
        try:
            start()
        except StartupError as e:
            self.log.error("cannot start: %s", e)
            self.close()
            return 1
        self.health.set_ready(True)
        self.started.set()
        self.watch(tick)
        return finish()

    def run_in_background(self, run: Callable[[], int]) -> None:
        """`run` in a thread of this runtime (benches): then `started.wait`, `stop`, `join`."""
        self.spawn("main", lambda: setattr(self, "_rc", run()))

    def join(self, timeout: float | None = None) -> int | None:
        """The exit code of the background run, None while it is still running."""
        t = self.threads["main"]
        t.join(timeout)
        return None if t.is_alive() else self._rc

    # -- threads --------------------------------------------------------------------------------
    def spawn(self, name: str, target: Callable[..., Any], *args: Any, required: bool = False) -> None:
        t = threading.Thread(target=target, args=args, name=f"vbw-{name}", daemon=True)
        with self._sources_lock:
            self.threads[name] = t
        if required:
            self._required.append(name)
        t.start()

    def alive(self, name: str) -> bool:
        t = self.threads.get(name)
        return t is not None and t.is_alive()

    # -- HTTP -----------------------------------------------------------------------------------
    def serve_http(self, host: str, port: int, registry: CollectorRegistry) -> int:
        """/metrics, /healthz, /readyz on `host:port` (0: any free port). Returns the port."""
        try:
            self._http = make_server(host, port, registry, self.health)
        except OSError as e:
            raise StartupError(f"metrics port {host}:{port}: {e.strerror or e}") from None
        self.http_port = self._http.server_address[1]
        self.spawn("http", self._http.serve_forever)
        self.log.info("metrics on http://%s:%d/metrics", host, self.http_port)
        return self.http_port

    def close(self) -> None:
        """Stop the HTTP server (the last thing a program does)."""
        if self._http is not None:
            with contextlib.suppress(Exception):
                self._http.shutdown()
                self._http.server_close()
            self._http = None

    # -- stopping -------------------------------------------------------------------------------
    def install_signals(self) -> None:
        if self._install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
            if self.on_hangup is not None:
                signal.signal(signal.SIGHUP, self._on_hangup)

    def _on_hangup(self, _signum: int, _frame: Any) -> None:
        # Not in the handler itself: a reload drains and starts sources, which takes seconds.
        if self.on_hangup is not None and not self._stop_requested.is_set():
            self.spawn("sighup", self.on_hangup)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self._stop_requested.is_set():
            self.log.warning("%s again: exiting now", name)
            self.force = True
            return
        self.log.info("%s: stopping (grace %.1fs)", name, self.grace_s)
        self.stop(name)

    def stop(self, reason: str = "stop requested") -> None:
        """Begin a graceful shutdown (thread-safe, idempotent)."""
        if not self._stop_requested.is_set():
            self.stop_reason = reason
            self._stop_requested.set()

    # -- sources --------------------------------------------------------------------------------
    def start_source(self, source: Source, ctx: SourceContextBase) -> None:
        """`source.run(ctx)` in a thread of its own, named after the source."""
        with self._sources_lock:
            self.sources.append(source)
            self.failed.discard(source.id)
        self.spawn(f"source:{source.id}", self._source_main, source, ctx)

    def running_sources(self) -> list[Source]:
        with self._sources_lock:
            return list(self.sources)

    def stop_source(self, source: Source, ctx: SourceContextBase, timeout: float) -> bool:
        """Stop one running source alone (the others go on) and forget it. True when its thread
        returned within `timeout`; a thread still blocked (an RTSP read) is left to return by
        itself: its context refuses its frames from now on."""
        ctx.stop_event.set()
        name = f"source:{source.id}"
        t = self.threads.get(name)
        if t is not None:
            t.join(timeout)
        alive = t is not None and t.is_alive()
        if alive:
            self.log.warning("%s still blocked after %.1fs; leaving it", name, timeout)
        with self._sources_lock:
            if source in self.sources:
                self.sources.remove(source)
            if self.threads.get(name) is t:
                del self.threads[name]
            self.failed.discard(source.id)
        return not alive

    def _source_main(self, source: Source, ctx: SourceContextBase) -> None:
        try:
            source.run(ctx)
        except SourceFailed as e:
            self.failed.add(source.id)
            _source_log.error("%s", e, extra={"stream": e.source_id, "event": e.what})
        except Exception as e:  # a broken source ends alone; the others go on
            self.failed.add(source.id)
            self.log.error(
                "source %s failed: %s: %s",
                source.describe(),
                type(e).__name__,
                e,
                exc_info=self.log.isEnabledFor(logging.DEBUG),
            )
            ctx.source_raised()

    # -- main loop ------------------------------------------------------------------------------
    def watch(self, tick: Callable[[], None] | None = None) -> None:
        """Until a stop is requested: `tick()` every IDLE_S, stop when every source of an
        all-finite set has ended or a required thread has."""
        while not self._stop_requested.wait(IDLE_S):
            if tick is not None:
                tick()
            sources = self.running_sources()  # sources come and go at runtime (stream API)
            finite = bool(sources) and all(s.finite for s in sources)
            if finite and not any(self.alive(f"source:{s.id}") for s in sources):
                self.stop("every source ended")
            for name in self._required:
                if not self.alive(name):
                    self.stop(f"{name} thread ended")

    # -- shutdown -------------------------------------------------------------------------------
    def remaining(self, deadline: float | None = None) -> float:
        """Seconds left until `deadline` (default: the grace's end); 0 once forced."""
        end = self.deadline if deadline is None else deadline
        return 0.0 if self.force else max(0.0, end - time.monotonic())

    def shutdown(self, drain: Callable[[], bool]) -> bool:
        """Stop the sources, `drain()` what is in flight, then join the sources that commit after
        the drain. True if `drain` finished its work in time."""
        grace = self.grace_s
        self.deadline = time.monotonic() + grace
        self.health.set_ready(False, "shutting down")
        self.stop_sources.set()
        # Sources get up to half the grace (an RTSP read can block until its read timeout).
        src_deadline = time.monotonic() + grace / 2
        # Sources that commit after the last ack (Kafka) keep running until the program drained.
        sources = self.running_sources()
        lingering = sorted(f"source:{s.id}" for s in sources if s.commits_after_drain)
        for s in sources:
            name = f"source:{s.id}"
            if name not in lingering:
                t = self.threads[name]
                t.join(max(0.0, src_deadline - time.monotonic()))
                if t.is_alive():
                    self.log.warning("%s still blocked at shutdown; leaving it", name)
        ok = drain()
        self.drained.set()  # also when the drain died or ran out of grace
        for name in lingering:
            t = self.threads[name]
            t.join(max(0.5, self.remaining()))
            if t.is_alive():
                self.log.warning("%s did not finish its last commit within the grace", name)
        return ok

    def every_source_failed(self) -> bool:
        sources = self.running_sources()
        return bool(sources) and all(s.id in self.failed for s in sources)

    def exit_code(self, ok: bool) -> int:
        """0, or 1 when work was cut off (`ok` False) or every source failed (each logged its line)."""
        if self.every_source_failed():
            self.log.error("every source failed (%s)", ", ".join(sorted(self.failed)))
            return 1
        return 0 if ok else 1
