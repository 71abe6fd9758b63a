"""The Grafana dashboard and the alert rules tell the truth about a running fleet.

Offline: every PromQL expression (panels, template variables, rules) passes promtool's parser,
the alert rules pass `promtool test rules` (a firing and a silent case per alert), each alert has
a runbook.

Live: a real Prometheus scrapes, with the target labels the ServiceMonitor gives (namespace, pod,
container), a file-source `vbw run`, an edge `vbw ingest` publishing a looped clip to a Tansu
broker, and a `vbw run` reading that topic as a consumer group with Kafka sinks, and a `vbw index` reading that worker's embeddings
into a search index. Then:
- every metric an expression names is exported by one of them (or recorded by our rules, or
  comes from outside vbw: EXTERNAL_METRICS), and every metric they export has a panel;
- every expression runs; every panel, variable and recording rule has data, except the short
  allow-list NO_DATA_OK (each with its reason); every alert expression is empty and no alert is
  pending or firing on this healthy fleet;
- and when the Kafka worker stops while ingest goes on, the consumer-lag series vanish and
  VbwFramesNotConsumed goes pending (the alert exists for exactly that case).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from services.procs import free_port, stop_process
from services.prometheus import PROMTOOL, PrometheusServer, prometheus_available
from services.tansu import FAST_GROUP, Tansu
from worker_helpers import DESIGN_METRICS

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy/prometheus/vbw-alerts.yaml"
DASHBOARD = REPO / "deploy/grafana/vbw-dashboard.json"
SHIPPED_MODEL = REPO / "models/vbw-motion-small"
NAMESPACE = "vbw-test"
FILE_POD, KAFKA_POD, INGEST_POD = "vbw-file-0", "vbw-worker-0", "vbw-ingest-0"
INDEX_POD = "vbw-index-0"  # `vbw index`: search-index metrics only, no frames, no design metrics
FRAMES, LABELS, EMBEDDINGS, DLQ = "vbw.frames", "vbw.labels", "vbw.embeddings", "vbw.frames.dlq"
GROUP = "vbw-workers"  # the group the alert VbwConsumerLagUnattended names
# Grafana's variables set to "All": for parsing, and for the queries against the real Prometheus.
# $__range: the dashboard's time range; 5m covers the whole life of the test's fleet.
VARIABLES = {"namespace": ".*", "pod": ".*", "stream": ".*", "__rate_interval": "15s", "__range": "5m"}
# Metrics the expressions may name that no vbw process exports, and where they come from.
EXTERNAL_METRICS = {
    "up": "Prometheus itself, one per scrape target",
    "kafka_consumergroup_lag": "kafka-exporter (deploy/k8s/components/kafka-exporter), broker-side lag",
}
# Expressions that have no data on a healthy fleet, and why. Alert expressions are not listed:
# every one of them must be empty here.
NO_DATA_OK = {
    "panel 'Consumer lag by topic' B": "broker-side lag from kafka-exporter, which the suite does not "
    "run (no binary here); promtool tests cover VbwConsumerLagUnattended, its alert",
}


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


# --- a fleet: file worker, edge ingest -> Tansu -> Kafka worker --------------------------------------
def _http(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@dataclass
class Proc:
    """One `vbw` process of the fleet: its scrape target labels, metrics port and log."""

    pod: str
    container: str
    argv: list[str]
    port: int
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("VBW_")}
        self.proc = subprocess.Popen(
            self.argv, cwd=cwd, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT
        )

    def metrics(self) -> str:
        return _http(self.base + "/metrics")[1]

    def tail(self) -> str:
        return f"--- {self.pod} ({self.container}) log:\n" + self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> int | None:
        return stop_process(self.proc, grace=20) if self.proc is not None else None


@dataclass
class Fleet:
    broker: Tansu
    procs: dict[str, Proc] = field(default_factory=dict)

    def targets(self) -> dict[str, dict[str, str]]:
        return {
            f"127.0.0.1:{p.port}": {"namespace": NAMESPACE, "pod": p.pod, "container": p.container}
            for p in self.procs.values()
        }

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.procs.values())


def _sample(text: str, name: str) -> float:
    """Sum of a metric's samples in an exposition (0 when absent)."""
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def _wait(cond: Callable[[], bool], timeout: float, what: str, fleet: Fleet) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for p in fleet.procs.values():
            if p.proc is not None and p.proc.poll() is not None:
                pytest.fail(f"{p.pod} exited {p.proc.returncode} waiting for {what}\n{fleet.logs()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s\n{fleet.logs()}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model; until it is committed, the tests' tiny model (metric names do not
    depend on the weights)."""
    if (SHIPPED_MODEL / "model.json").is_file():
        return SHIPPED_MODEL
    from tiny_model import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, deploy, model_dir: Path) -> Iterator[Fleet]:
    """The three processes, each as its pod runs it (`vbw run -c FILE`, `vbw ingest -c FILE`), on
    looping real-time clips, up to windows on both workers."""
    from media.clips import clip_rng, render_clip, write_mp4

    tmp = tmp_path_factory.mktemp("fleet")
    # 8 s: at the default 5 analysed fps a loop holds 40 frames, enough for full T=16 windows
    # (a loop is a stream reset, so a shorter clip would only ever drop partial windows).
    clip = tmp / "grow.mp4"
    write_mp4(render_clip("grow", clip_rng(7, 0), 160, 96, 200, 25.0), clip, 25.0)
    broker = Tansu(log_path=tmp / "tansu.log").start()
    fleet = Fleet(broker)
    try:
        broker.create_topics({FRAMES: 2, LABELS: 1, EMBEDDINGS: 1, DLQ: 1})
        engine = {"model_dir": str(model_dir), "threads": 1}
        kafka = {"bootstrap_servers": [broker.bootstrap]}
        configs = {
            FILE_POD: ("worker", "run", {
                "sources": [{"type": "file", "id": "cam-1", "path": str(clip), "loop": True, "realtime": True}],
                "windows": {"stride": 4},
                "engine": engine,
                # Events on (every label of the model but none): the Events panels' series.
                "sinks": [
                    {"type": "jsonl", "path": str(tmp / "windows.jsonl")},
                    {"type": "jsonl", "path": str(tmp / "events.jsonl"), "payload": "events"},
                ],
            }),
            INGEST_POD: ("ingest", "ingest", {
                "sources": [{"type": "file", "id": "cam-2", "path": str(clip), "loop": True, "realtime": True}],
                "engine": engine,  # frames go out at the model's input size
                "ingest": {"topic": FRAMES},
                "kafka": kafka,
            }),
            KAFKA_POD: ("worker", "run", {
                "sources": [{
                    "type": "kafka", "id": "frames", "topics": [FRAMES], "group_id": GROUP,
                    "dead_letter_topic": DLQ, "commit_interval_s": 0.5, **FAST_GROUP,
                }],
                "windows": {"stride": 4},
                "engine": engine,
                "sinks": [
                    {"type": "kafka", "topic": LABELS},
                    {"type": "kafka", "topic": EMBEDDINGS, "payload": "embeddings"},
                ],
                "kafka": kafka,
                "pipeline": {"worker_id": KAFKA_POD},
            }),
        }  # fmt: skip
        for pod, (container, command, cfg) in configs.items():
            port = free_port()
            cfg = {**cfg, "metrics": {"host": "127.0.0.1", "port": port}}
            cfg["pipeline"] = {"shutdown_grace_s": 10, **cfg.get("pipeline", {})}
            path = tmp / f"{pod}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            argv = [deploy.vbw_exe(), command, "-c", str(path)]
            if command == "run":
                argv = [deploy.vbw_exe(), *deploy.worker_command[1:], str(path)]  # the images' command
            fleet.procs[pod] = Proc(pod, container, argv, port, tmp / f"{pod}.log")
        # The search index reads the Kafka worker's embeddings (docs/search.md); its own config file.
        port = free_port()
        path = tmp / f"{INDEX_POD}.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "kafka": kafka,
                    "index": {
                        "db": str(tmp / "index"),
                        "topic": EMBEDDINGS,
                        "group_id": "vbw-index",
                        "metrics_host": "127.0.0.1",
                        "metrics_port": port,
                        "progress_s": 2.0,
                        **FAST_GROUP,
                    },
                }
            )
        )
        argv = [deploy.vbw_exe(), "index", "-c", str(path)]
        fleet.procs[INDEX_POD] = Proc(INDEX_POD, "index", argv, port, tmp / f"{INDEX_POD}.log")
        for p in fleet.procs.values():
            p.start(tmp)

        def flowing() -> bool:
            with contextlib.suppress(OSError):
                if any(_http(p.base + "/readyz")[0] != 200 for p in fleet.procs.values()):
                    return False
                m = {pod: p.metrics() for pod, p in fleet.procs.items()}
                return (
                    _sample(m[FILE_POD], "vbw_windows_emitted_total") >= 1
                    and _sample(m[KAFKA_POD], "vbw_windows_emitted_total") >= 1
                    and _sample(m[INGEST_POD], "vbw_published_total") >= 1
                    and _sample(m[INDEX_POD], "vbw_index_windows") >= 1
                )
            return False

        # Generous: three processes load models and decode on two busy cores.
        _wait(flowing, 180, "windows from both workers and frames from ingest", fleet)
        yield fleet
    finally:
        for p in fleet.procs.values():
            p.stop()
        broker.stop()


@pytest.fixture(scope="module")
def scrapes(fleet: Fleet) -> dict[str, str]:
    return {pod: p.metrics() for pod, p in fleet.procs.items()}


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


@pytest.mark.e2e
def test_every_named_metric_is_exported_by_the_fleet(scrapes: dict[str, str]) -> None:
    declared = set().union(*(exported_names(t)[0] for t in scrapes.values()))
    recorded = {r["record"] for r in rules() if "record" in r}
    problems = []
    for where, expr in ALL_EXPRS:
        for name in metric_names(substitute(expr, VARIABLES)):
            if name not in declared and name not in recorded and name not in EXTERNAL_METRICS:
                problems.append(f"{where}: {name}")
    assert not problems, "metrics no vbw process exports:\n" + "\n".join(problems)
    for pod, text in scrapes.items():
        if pod == INDEX_POD:
            continue  # not a worker: the index's own metrics (docs/search.md)
        families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
        assert not DESIGN_METRICS - families, (
            f"{pod}: design metrics missing: {sorted(DESIGN_METRICS - families)}"
        )


@pytest.mark.e2e
def test_every_exported_metric_has_a_panel(scrapes: dict[str, str]) -> None:
    """A metric nobody can see is a metric nobody watches (dead letters had no panel)."""
    families = set().union(*(re.findall(r"^# TYPE (vbw_\S+) ", t, re.M) for t in scrapes.values()))
    families = {f for f in families if not f.endswith("_created")}  # prometheus_client's creation times
    shown = set().union(*(metric_names(substitute(e, VARIABLES)) for _, e in dashboard_exprs()))
    bare = {re.sub(r"_(bucket|sum|count)$", "", n) for n in shown}
    missing = {f for f in families if f not in shown and f not in bare and f + "_total" not in shown}
    assert not missing, f"exported metrics with no panel: {sorted(missing)}"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, fleet: Fleet) -> Iterator[PrometheusServer]:
    why = prometheus_available()
    if why:
        pytest.fail(why)
    prom = PrometheusServer(fleet.targets(), tmp_path_factory.mktemp("prometheus"), rule_files=[ALERTS])
    prom.start()
    try:
        # Enough scrapes that 15 s rates have two points on every pod, and the Kafka worker's lag.
        for pod in set(fleet.procs) - {INDEX_POD}:
            prom.wait_for(
                f'sum(rate(vbw_frames_received_total{{pod="{pod}"}}[15s])) > 0', 90, f"frame rate of {pod}"
            )
        prom.wait_for("vbw_kafka_consumer_lag", 90, "consumer lag from the Kafka worker")
        # Windows seen to flow, not just to exist: two scrapes of one count read as "no window in
        # 10 minutes" to VbwNoWindowsFromReadyWorker (pending, for a few seconds after start).
        for pod in (FILE_POD, KAFKA_POD):
            prom.wait_for(
                f'increase(vbw_windows_emitted_total{{pod="{pod}"}}[1m]) > 0', 90, f"windows from {pod}"
            )
        prom.wait_for(
            f'increase(vbw_published_total{{pod="{INGEST_POD}"}}[1m]) > 0', 90, "frames from ingest"
        )
        prom.wait_for(
            'increase(vbw_index_written_total{kind="window"}[1m]) > 0 and on (pod) vbw_index_consumer_lag',
            90,
            "windows written to the search index",
        )
        # ...and a rule evaluation that saw all of it (the rules share one group, so one pass).
        t0 = float(prom.query("time()")[1])  # a scalar: [time, value]
        prom.wait_for(f"timestamp(vbw:kafka_consumer_lag:sum) > {t0}", 60, "a rule evaluation")
        yield prom
    finally:
        prom.stop()


def _rule_kind(where: str) -> str:
    return (
        "alert" if where.startswith("rule ") and any(r.get("alert") == where[5:] for r in rules()) else "data"
    )


@pytest.mark.e2e
def test_every_expression_has_data_and_no_alert_fires(prometheus: PrometheusServer, fleet: Fleet) -> None:
    up = prometheus.query('up{job="vbw"}')
    assert sorted((r["metric"]["pod"], r["value"][1]) for r in up) == sorted((p, "1") for p in fleet.procs), (
        up
    )
    loaded = prometheus.rules()
    assert {r.get("alert") or r.get("record") for r in rules()} == set(loaded)
    assert all(r.get("health") == "ok" for r in loaded.values()), {
        n: r.get("lastError") for n, r in loaded.items()
    }
    assert set(NO_DATA_OK) <= {w for w, _ in ALL_EXPRS}, "NO_DATA_OK names an expression that does not exist"
    errors, empty, stale_ok, alerting = [], [], [], []
    for where, expr in ALL_EXPRS:
        q = substitute(expr, VARIABLES)
        doc = prometheus.query_doc(q)
        if doc.get("status") != "success":
            errors.append(f"{where}: {doc.get('error')}")
            continue
        result = doc["data"]["result"]
        if _rule_kind(where) == "alert":
            if result:
                alerting.append(f"{where}: {result}")
        elif where in NO_DATA_OK:
            if result:
                stale_ok.append(f"{where} has data now: drop it from NO_DATA_OK")
        elif not result:
            empty.append(f"{where}: {q}")
    assert not errors, "\n".join(errors)
    assert not empty, "expressions with no data on a healthy fleet:\n" + "\n".join(empty)
    assert not stale_ok, "\n".join(stale_ok)
    assert not alerting, (
        "alert expressions true on a healthy fleet:\n" + "\n".join(alerting) + "\n" + fleet.logs()
    )
    active = prometheus.alerts()
    assert not active, f"alerts pending or firing on a healthy fleet: {active}"
    assert not prometheus.query("ALERTS"), "ALERTS has series on a healthy fleet"


def _panel_expr(title: str, ref: str) -> str:
    [panel] = [p for p in _dashboard()["panels"] if p.get("title") == title]
    [t] = [t for t in panel["targets"] if t["refId"] == ref]
    return t["expr"]


@pytest.mark.e2e
def test_batch_size_quantile_lands_on_integers(prometheus: PrometheusServer) -> None:
    """Every batch of the one-stream file worker holds 1 window: its p90 is 1, not 0.9."""
    expr = _panel_expr("Batch size", "B")
    [one] = prometheus.query(substitute(expr, {**VARIABLES, "pod": FILE_POD}))
    assert float(one["value"][1]) == 1.0, one
    for r in prometheus.query(substitute(expr, VARIABLES)):
        assert float(r["value"][1]).is_integer() and float(r["value"][1]) >= 1, r


@pytest.mark.e2e
def test_latency_metrics_do_not_mix_ingest_and_workers(prometheus: PrometheusServer) -> None:
    """Ingest's frame publish and the workers' window latency are two metrics: "All pods" of the
    end-to-end panel is the workers' alone."""

    def counts(metric: str) -> dict[str, float]:
        return {r["metric"]["pod"]: float(r["value"][1]) for r in prometheus.query(f"{metric}_count")}

    e2e, ingest = counts("vbw_end_to_end_latency_seconds"), counts("vbw_ingest_publish_latency_seconds")
    assert e2e.get(INGEST_POD, 0) == 0 and ingest[INGEST_POD] > 0, (e2e, ingest)
    for pod in (FILE_POD, KAFKA_POD):
        assert e2e[pod] > 0 and ingest.get(pod, 0) == 0, (pod, e2e, ingest)


@pytest.mark.e2e
def test_healthy_streams_read_up(prometheus: PrometheusServer) -> None:
    """Two cameras (cam-1 on the file worker; cam-2 on ingest, and on the Kafka worker that reads
    its partition): 2 up, 0 down, and every pod's known streams are up. Polled: a looping file
    is down for the instant between two loops."""

    def state() -> tuple[float, float, dict[str, tuple[str, str]]]:
        up, down = (
            float(prometheus.query(substitute(_panel_expr(t, "A"), VARIABLES))[0]["value"][1])
            for t in ("Streams up", "Streams down")
        )
        known = {r["metric"]["pod"]: r["value"][1] for r in prometheus.query("vbw_streams_known")}
        ups = {r["metric"]["pod"]: r["value"][1] for r in prometheus.query("vbw_streams_up")}
        return up, down, {pod: (known[pod], ups.get(pod, "")) for pod in known}

    deadline = time.monotonic() + 30
    while (got := state())[:2] != (2, 0) or any(k != u for k, u in got[2].values()):
        assert time.monotonic() < deadline, got
        time.sleep(0.5)
    assert got[2][FILE_POD] == got[2][INGEST_POD] == ("1", "1"), got


@pytest.mark.e2e
def test_no_worker_reading_the_frames_topic_is_alerted(prometheus: PrometheusServer, fleet: Fleet) -> None:
    """Every Kafka worker stopped while ingest goes on: the workers' own lag disappears (the
    finding: VbwConsumerLagGrowing can never fire then) and VbwFramesNotConsumed goes pending.
    Runs last in this module: it stops the Kafka worker."""
    assert fleet.procs[KAFKA_POD].stop() == 0, fleet.procs[KAFKA_POD].tail()
    deadline = time.monotonic() + 60
    while prometheus.query("vbw_kafka_consumer_lag or vbw:kafka_consumer_lag:sum"):
        assert time.monotonic() < deadline, "the stopped worker's lag series did not go stale"
        time.sleep(0.5)
    [alert] = prometheus.wait_for('ALERTS{alertname="VbwFramesNotConsumed"}', 60, "VbwFramesNotConsumed")
    assert alert["metric"]["alertstate"] == "pending" and alert["metric"]["topic"] == FRAMES, alert
    # ...because the frames keep coming: ingest still publishes to the topic.
    assert prometheus.query(f'rate(vbw_published_total{{pod="{INGEST_POD}", topic="{FRAMES}"}}[15s]) > 0')
