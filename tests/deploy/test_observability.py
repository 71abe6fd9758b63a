"""The Grafana dashboard and the alert rules speak the worker's real metrics.

- Every PromQL expression (panels, template variables, rules) passes promtool's parser.
- Every metric an expression names is on the /metrics of a running `vbw run` (started here with a
  small file-source config), or is recorded by our own rules, or is Prometheus's `up`.
- A real Prometheus scrapes that worker with the target labels the ServiceMonitor gives
  (namespace, pod, container), loads the rules, and runs every expression without error; panels
  whose metrics have samples return data.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from services.procs import free_port, stop_process, wait_for_port
from services.prometheus import PROMETHEUS, PROMTOOL, prometheus_available
from worker_helpers import DESIGN_METRICS

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy/prometheus/vbw-alerts.yaml"
DASHBOARD = REPO / "deploy/grafana/vbw-dashboard.json"
SHIPPED_MODEL = REPO / "models/vbw-motion-small"
NAMESPACE, POD = "vbw-test", "vbw-worker-0"
# Values for Grafana's variables: for parsing, and for the queries against the real Prometheus.
VARIABLES = {"namespace": NAMESPACE, "pod": POD, "stream": ".*", "__rate_interval": "15s"}


# --- the expressions ------------------------------------------------------------------------------
def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for panel in _dashboard()["panels"]:
        for t in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {t['refId']}", t["expr"]))
    for v in _dashboard()["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["definition"])
            assert m, f"variable {v['name']}: expected label_values(SELECTOR, LABEL), got {v['definition']}"
            out.append((f"variable {v['name']}", m.group(1)))
    return out


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def rule_exprs() -> list[tuple[str, str]]:
    return [(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for r in rules()]


def substitute(expr: str, values: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in values, f"unknown dashboard variable ${name} in {expr}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def metric_names(expr: str) -> set[str]:
    """Metric names of every selector in a PromQL expression, from its parsed syntax tree."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for n in node:
                walk(n)
            return
        if type(node).__name__ == "VectorSelector":
            if node.name:
                names.add(node.name)
            names.update(m.value for m in node.matchers.matchers if m.name == "__name__")
            return
        for attr in ("lhs", "rhs", "expr", "param", "args", "vector_selector"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, str | int | float):
                walk(child)

    walk(promql_parser.parse(expr))
    return names


ALL_EXPRS = dashboard_exprs() + rule_exprs()


def test_metric_names_walker() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x=~"y"}[5m]))) > 1 '
        'and on (pod) b unless deriv(c:rec[10m:1m]) or -{__name__="d"} + count(e == 0) or vector(0)'
    ) == {"a_bucket", "b", "c:rec", "d", "e"}


def test_dashboard_in_sync() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "deploy/grafana/build_dashboard.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


def test_dashboard_variables_and_coverage() -> None:
    dash = _dashboard()
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "namespace", "pod", "stream"} <= names
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}"
    shown = set().union(*(metric_names(substitute(e, VARIABLES)) for _, e in dashboard_exprs()))
    bare = {re.sub(r"_(bucket|sum|count)$", "", n) for n in shown}
    missing = DESIGN_METRICS - shown - bare
    assert not missing, f"metrics of the design with no panel: {sorted(missing)}"


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    why = prometheus_available()
    if why:
        pytest.fail(why)
    doc = {
        "groups": [
            {
                "name": "parse-check",
                "rules": [
                    {"record": f"check:expr_{i}", "expr": substitute(expr, VARIABLES)}
                    for i, (_, expr) in enumerate(ALL_EXPRS)
                ],
            }
        ]
    }
    path = tmp_path / "exprs.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(ALL_EXPRS)} rules found" in out.stdout
    # ...and promtool does reject a broken expression.
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "r", "expr": "sum by (a (x)"}]}]})
    )
    assert (
        subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, timeout=60).returncode
        != 0
    )


def test_alert_rules_check_and_unit_tests() -> None:
    """`promtool check rules` and `promtool test rules` (a firing and a silent case per alert)."""
    out = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    tests = ALERTS.with_name("vbw-alerts.test.yaml")
    out = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    # Each alert has a case where it fires and one where it stays silent.
    cases = yaml.safe_load(tests.read_text())["tests"]
    for alert in (r["alert"] for r in rules() if "alert" in r):
        evals = [a for c in cases for a in c.get("alert_rule_test", []) if a["alertname"] == alert]
        assert any(e["exp_alerts"] for e in evals), f"{alert}: no firing case"
        assert any(not e["exp_alerts"] for e in evals), f"{alert}: no silent case"


def test_alerts_have_runbooks() -> None:
    ops = (REPO / "docs/operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", ops, re.M)
    }
    for r in rules():
        if "alert" in r:
            runbook = r["annotations"]["runbook"]
            assert runbook == f"docs/operations.md#{r['alert'].lower()}", runbook
            assert runbook.split("#")[1] in anchors, f"docs/operations.md has no section {r['alert']}"


# --- a running worker and a real Prometheus scraping it ---------------------------------------------
def _http(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model; until it is committed, the tests' tiny model (metric names do not
    depend on the weights)."""
    if (SHIPPED_MODEL / "model.json").is_file():
        return SHIPPED_MODEL
    from tiny_model import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, deploy, model_dir: Path) -> Iterator[dict[str, Any]]:
    """`vbw run -c FILE` on a looping, real-time-paced generated clip; its metrics port."""
    from media.clips import clip_rng, render_clip, write_mp4

    tmp = tmp_path_factory.mktemp("worker")
    clip = tmp / "grow.mp4"
    # 8 s: at the default 5 analysed fps a loop holds 40 frames, enough for full T=16 windows
    # (a loop is a stream reset, so a shorter clip would only ever drop partial windows).
    write_mp4(render_clip("grow", clip_rng(7, 0), 160, 96, 200, 25.0), clip, 25.0)
    port = free_port()
    config = {
        "sources": [{"type": "file", "id": "cam-1", "path": str(clip), "loop": True, "realtime": True}],
        "windows": {"stride": 4},
        "engine": {"model_dir": str(model_dir), "threads": 1},
        "sinks": [{"type": "jsonl", "path": str(tmp / "windows.jsonl")}],
        "metrics": {"host": "127.0.0.1", "port": port},
    }
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    argv = [deploy.vbw_exe(), *deploy.worker_command[1:], str(cfg)]  # the images' command
    log = tmp / "worker.log"
    proc = subprocess.Popen(argv, cwd=tmp, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError):
                status, _ = _http(base + "/readyz")
                metrics = _http(base + "/metrics")[1]
                if status == 200 and re.search(r"^vbw_windows_emitted_total\{.*\} [1-9]", metrics, re.M):
                    ready = True
                    break
            time.sleep(0.2)
        assert ready, f"worker not ready with windows within 120 s:\n{log.read_text()[-3000:]}"
        yield {"base": base, "port": port, "log": log}
    finally:
        stop_process(proc, grace=20)


def exported_names(text: str) -> tuple[set[str], set[str]]:
    """(names the exposition declares, names that carry samples). A labelled family with no
    children yet (Kafka lag on a file-source worker) is declared by its # TYPE line."""
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
    declared: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        declared.update(name + s for s in suffixes.get(kind, ("",)))
        if kind == "counter":
            declared.add(name if name.endswith("_total") else name + "_total")
    sampled = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M))
    return declared, sampled


@pytest.fixture(scope="module")
def scrape(worker: dict[str, Any]) -> str:
    return _http(worker["base"] + "/metrics")[1]


@pytest.mark.e2e
def test_every_named_metric_is_exported_by_a_running_worker(scrape: str) -> None:
    declared, _ = exported_names(scrape)
    recorded = {r["record"] for r in rules() if "record" in r}
    problems = []
    for where, expr in ALL_EXPRS:
        for name in metric_names(substitute(expr, VARIABLES)):
            if name not in declared and name not in recorded and name != "up":
                problems.append(f"{where}: {name}")
    assert not problems, "metrics the worker does not export:\n" + "\n".join(problems)
    families = set(re.findall(r"^# TYPE (\S+) ", scrape, re.M))
    assert not DESIGN_METRICS - families, f"design metrics missing: {sorted(DESIGN_METRICS - families)}"


class Prometheus:
    """A real Prometheus scraping the worker with the ServiceMonitor's target labels, with our rules."""

    def __init__(self, workdir: Path, target: str):
        self.port = free_port()
        cfg = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {
                    "job_name": "vbw",
                    "static_configs": [
                        {
                            "targets": [target],
                            "labels": {"namespace": NAMESPACE, "pod": POD, "container": "worker"},
                        }
                    ],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=(workdir / "prometheus.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, 30)
        # The HTTP API answers 503 "Service Unavailable" until the TSDB is open: wait for ready.
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("prometheus not ready within 120 s")
            time.sleep(0.2)

    def api(self, path: str, **params: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:  # 400 with an error document for a bad query
            return json.loads(e.read())

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)

    def stop(self) -> None:
        stop_process(self.proc, grace=10)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, worker: dict[str, Any]) -> Iterator[Prometheus]:
    why = prometheus_available()
    if why:
        pytest.fail(why)
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), f"127.0.0.1:{worker['port']}")
    try:
        # Wait for enough scrapes that 15 s rates have two points.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            res = prom.query(f'sum(rate(vbw_frames_received_total{{pod="{POD}"}}[15s])) > 0')
            if res.get("status") == "success" and res["data"]["result"]:
                break
            time.sleep(0.5)
        else:
            pytest.fail("Prometheus saw no frame rate from the worker within 60 s")
        yield prom
    finally:
        prom.stop()


@pytest.mark.e2e
def test_queries_run_against_a_real_prometheus(prometheus: Prometheus, scrape: str) -> None:
    up = prometheus.query('up{job="vbw"}')["data"]["result"]
    assert [r["value"][1] for r in up] == ["1"], up  # `up`, named by VbwWorkerNotReady, exists
    _, sampled = exported_names(scrape)
    recorded = {r["record"] for r in rules() if "record" in r}
    problems, empty = [], []
    for where, expr in ALL_EXPRS:
        q = substitute(expr, VARIABLES)
        res = prometheus.query(q)
        if res.get("status") != "success":
            problems.append(f"{where}: {res.get('error')}")
            continue
        names = metric_names(q)
        if where.startswith(("panel", "variable")) and names <= sampled and not res["data"]["result"]:
            empty.append(f"{where}: {q}")
    assert not problems, "\n".join(problems)
    # Selectors match the labels Prometheus really has (namespace, pod, stream, le, stage...).
    assert not empty, "panels with data in the scrape but an empty result:\n" + "\n".join(empty)
    assert recorded  # evaluated by the server below
    groups = prometheus.api("rules")["data"]["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    assert {r.get("alert") or r.get("record") for r in rules()} == set(loaded)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(r.get("health") != "ok" for r in loaded.values()):
        time.sleep(0.5)
        loaded = {r["name"]: r for g in prometheus.api("rules")["data"]["groups"] for r in g["rules"]}
    assert all(r.get("health") == "ok" for r in loaded.values()), {
        n: r.get("lastError") for n, r in loaded.items()
    }
    # The worker is ready: the not-ready alert is silent for it.
    assert not prometheus.query('vbw_engine_info{backend="", container!="ingest"} == 1')["data"]["result"]
