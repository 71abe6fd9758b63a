"""A real Prometheus server scraping given targets, and promtool, for tests (loopback, free port).

The one launcher of the suite: targets with the target labels a ServiceMonitor would give
(namespace, pod, container), optional rule files, and a start that returns only once the server
is ready (its HTTP API answers 503 "Service Unavailable" until the TSDB is open).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from services.procs import free_port, stop_process, wait_for_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def prometheus_available() -> str | None:
    for tool in (PROMETHEUS, PROMTOOL):
        if not Path(tool).exists():
            return f"{tool} missing (apt-get install prometheus)"
    return None


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess:
    """`promtool check metrics` on an exposition text; returncode 0 and no output when clean."""
    return subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )


class PrometheusServer:
    """`targets`: addresses, or {address: target labels}. All are scraped as job "vbw"."""

    def __init__(
        self,
        targets: Iterable[str] | Mapping[str, Mapping[str, str]],
        workdir: Path,
        scrape_interval: str = "1s",
        rule_files: Iterable[Path] = (),
        ready_timeout: float = 120.0,
    ):
        self.targets = dict(targets) if isinstance(targets, Mapping) else {t: {} for t in targets}
        self.workdir = workdir
        self.port = free_port()
        self.scrape_interval = scrape_interval
        self.rule_files = [str(p) for p in rule_files]
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "rule_files": self.rule_files,
            "scrape_configs": [
                {
                    "job_name": "vbw",
                    "static_configs": [
                        {"targets": [addr], "labels": dict(labels)} for addr, labels in self.targets.items()
                    ],
                }
            ],
        }

    def start(self) -> PrometheusServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=(self.workdir / "prometheus.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(self.port, self.ready_timeout)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(self.base + "/-/ready", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):  # 503 while starting, or not listening yet
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"prometheus not ready within {self.ready_timeout:.0f} s:\n{self.log()[-3000:]}"
                )
            time.sleep(0.2)

    def log(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET /api/v1/PATH; the JSON document, also for a 4xx/5xx with an error document."""
        url = f"{self.base}/api/v1/{path}?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:  # 400 "bad_data" for a bad query, 422, 503
            body = e.read()
            try:
                return json.loads(body)
            except ValueError:
                return {"status": "error", "error": f"HTTP {e.code}: {body[:200]!r}"}

    def query_doc(self, promql: str) -> dict[str, Any]:
        """The whole /api/v1/query answer (status, data or error)."""
        return self.api("query", query=promql)

    def query(self, promql: str) -> list[dict]:
        doc = self.query_doc(promql)
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts, pending or firing, with their labels and state."""
        doc = self.api("alerts")
        assert doc["status"] == "success", doc
        return doc["data"]["alerts"]

    def rules(self) -> dict[str, dict[str, Any]]:
        """Every loaded rule by name (alert or record), with its health and last error."""
        doc = self.api("rules")
        assert doc["status"] == "success", doc
        return {r["name"]: r for g in doc["data"]["groups"] for r in g["rules"]}

    def wait_for(self, promql: str, timeout: float, what: str) -> list[dict]:
        """Poll until the query returns a non-empty result; that result."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.query_doc(promql)
            if doc.get("status") == "success" and doc["data"]["result"]:
                return doc["data"]["result"]
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout:.0f} s ({promql}): {doc}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=10)
            self.proc = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
