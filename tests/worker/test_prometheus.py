"""Metrics and health of a running `vbw run`: promtool-clean /metrics, a real Prometheus scraping it,
and /readyz 503 while the engine loads and warms, 200 after."""

from __future__ import annotations

import contextlib
import time

import pytest
from services.prometheus import PrometheusServer, prometheus_available, promtool_check_metrics
from worker_helpers import DESIGN_METRICS, http_get, metric_value

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", autouse=True)
def _needs_prometheus():
    why = prometheus_available()
    if why:
        pytest.skip(why)


def test_metrics_health_and_a_real_prometheus(tmp_path, labelled_clips, default_model_dir, worker_proc):
    w = worker_proc(
        {
            "sources": [
                {"type": "file", "id": lb, "path": str(p), "realtime": True, "loop": True}
                for lb, p in labelled_clips.items()
            ],
            # a long warm-up keeps /readyz at 503 long enough to be seen for sure
            "engine": {"model_dir": str(default_model_dir), "warmup_runs": 50},
            "sinks": [{"type": "jsonl", "path": str(tmp_path / "out.jsonl")}],
        }
    )
    # Poll from the very start: the HTTP port opens before the engine loads.
    codes: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not codes or codes[-1] != 200):
        with contextlib.suppress(OSError):
            codes.append(http_get(w.base + "/readyz", 1.0)[0])
        time.sleep(0.005)
    assert codes and codes[0] == 503, f"first /readyz answer {codes[:1]}, want 503 while loading"
    assert codes.count(503) >= 3
    assert codes[-1] == 200, w.stderr()
    assert set(codes) <= {200, 503}
    assert http_get(w.base + "/healthz")[0] == 200

    w.wait_for(lambda: metric_value(w.metrics(), "vbw_windows_emitted_total") >= 3, 60, "windows")
    text = w.metrics()
    lint = promtool_check_metrics(text)
    assert lint.returncode == 0 and lint.stdout.strip() == "" and lint.stderr.strip() == "", (
        lint.stdout + lint.stderr
    )
    for name in sorted(DESIGN_METRICS):
        assert f"# TYPE {name.removesuffix('_total')} " in text or f"# TYPE {name} " in text, name
    assert metric_value(text, "vbw_stream_up", stream="grow") == 1
    for stage in ("decode", "encode_frames", "encode_windows", "publish"):
        assert metric_value(text, "vbw_stage_seconds_count", stage=stage) > 0, stage
    assert metric_value(text, "vbw_end_to_end_latency_seconds_count") > 0

    with PrometheusServer([f"127.0.0.1:{w.port}"], tmp_path / "prom") as prom:
        deadline = time.monotonic() + 90
        value = 0.0
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                res = prom.query("sum(vbw_windows_emitted_total)")
                if res:
                    value = float(res[0]["value"][1])
                    if value >= 1:
                        break
            time.sleep(0.5)
        assert value >= 1, "Prometheus never saw vbw_windows_emitted_total >= 1"
        up = prom.query('up{job="vbw"}')
        assert up and up[0]["value"][1] == "1"
    rc, _ = w.sigterm(timeout=30)
    assert rc == 0
    assert "Traceback" not in w.stderr()
