"""Metrics and health of a running `vbw run`: promtool-clean /metrics, a real Prometheus scraping it,
and /readyz 503 while the engine loads and warms, 200 after; then the metrics and health objects
alone (aggregated stream state, series at 0 before their first event, buckets, /readyz vs /healthz)."""

from __future__ import annotations

import contextlib
import time

import pytest
from services.prometheus import PrometheusServer, prometheus_available, promtool_check_metrics
from worker_helpers import DESIGN_METRICS, http_get, metric_value


@pytest.fixture()
def _needs_prometheus() -> None:
    why = prometheus_available()
    if why:
        pytest.skip(why)


@pytest.mark.e2e
@pytest.mark.usefixtures("_needs_prometheus")
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


# --- the metrics and health objects, without a worker -------------------------------------------
def _series(text: str) -> dict[str, float]:
    """{'name{labels}': value} of an exposition, labels in prometheus_client's order."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_aggregated_stream_up_says_a_stream_is_down() -> None:
    """per_stream_labels false: stream="all" is 1 only while every known stream is up, and
    vbw_streams_known / vbw_streams_up count them (a camera that never opened is not hidden)."""
    from prometheus_client import generate_latest

    from worker.metrics import Metrics

    m = Metrics(per_stream_labels=False)
    for sid in ("cam-1", "cam-2", "cam-3"):
        m.register_stream(sid)
    m.stream_up("cam-1", True)
    m.stream_up("cam-2", True)  # cam-3 never opens
    s = _series(generate_latest(m.registry).decode())
    assert s['vbw_stream_up{stream="all"}'] == 0
    assert (s["vbw_streams_known"], s["vbw_streams_up"]) == (3, 2)
    m.stream_up("cam-3", True)
    s = _series(generate_latest(m.registry).decode())
    assert s['vbw_stream_up{stream="all"}'] == 1
    assert (s["vbw_streams_known"], s["vbw_streams_up"]) == (3, 3)
    m.stream_up("cam-1", False)
    s = _series(generate_latest(m.registry).decode())
    assert s['vbw_stream_up{stream="all"}'] == 0 and s["vbw_streams_up"] == 2
    # Per-stream labels: each stream says its own state, the counts are the same.
    p = Metrics(per_stream_labels=True)
    p.register_stream("a")
    p.register_stream("b")
    p.stream_up("a", True)
    s = _series(generate_latest(p.registry).decode())
    assert (s['vbw_stream_up{stream="a"}'], s['vbw_stream_up{stream="b"}']) == (1, 0)
    assert (s["vbw_streams_known"], s["vbw_streams_up"]) == (2, 1)


def test_a_stream_gone_to_another_worker_leaves_no_up_series() -> None:
    """A Kafka partition moved: its streams' up state goes with it (a 0 left here would fire
    VbwStreamDown while the new owner reports the stream up)."""
    from prometheus_client import generate_latest

    from worker.metrics import Metrics

    for per_stream in (True, False):
        m = Metrics(per_stream_labels=per_stream)
        for sid in ("cam-1", "cam-2"):
            m.stream_up(sid, True)
            m.register_stream(sid)  # the first frame registers it after: still up
        m.stream_up("cam-2", False)
        m.stream_gone("cam-2")
        m.stream_gone("cam-9")  # never known: nothing happens
        s = _series(generate_latest(m.registry).decode())
        ups = {k: v for k, v in s.items() if k.startswith("vbw_stream_up{")}
        assert ups == (
            {'vbw_stream_up{stream="cam-1"}': 1} if per_stream else {'vbw_stream_up{stream="all"}': 1}
        )
        assert (s["vbw_streams_known"], s["vbw_streams_up"]) == (1, 1)


def test_counters_exist_at_zero_before_their_first_event() -> None:
    """Panels of a healthy worker read 0, not "No data": the label sets known up front exist."""
    from prometheus_client import generate_latest

    from worker.metrics import FRAME_DROP_REASONS, PARTIAL_POLICIES, WINDOW_CLOSE_REASONS, Metrics

    for per_stream, label in ((True, "cam-1"), (False, "all")):
        m = Metrics(per_stream_labels=per_stream)
        m.register_stream("cam-1")
        s = _series(generate_latest(m.registry).decode())
        for reason in FRAME_DROP_REASONS:
            assert s[f'vbw_frames_dropped_total{{reason="{reason}",stream="{label}"}}'] == 0, reason
        for reason in WINDOW_CLOSE_REASONS:
            assert s[f'vbw_windows_dropped_total{{reason="{reason}"}}'] == 0, reason
            for policy in PARTIAL_POLICIES:
                assert s[f'vbw_windows_partial_total{{policy="{policy}",reason="{reason}"}}'] == 0
        for name in ("vbw_decode_errors_total", "vbw_stream_reconnects_total", "vbw_windows_emitted_total"):
            assert s[f'{name}{{stream="{label}"}}'] == 0, name
    assert {"overload", "late", "out_of_order", "engine_error"} <= set(FRAME_DROP_REASONS)
    assert {"gap", "eos", "loop", "reconnect", "shutdown", "engine_error"} <= set(WINDOW_CLOSE_REASONS)


def test_batch_size_buckets_hold_each_small_size_alone() -> None:
    """Unit-wide buckets up to 16, so ceil(histogram_quantile(...)) of integer sizes is exact
    (with (0,1] as the first bucket, a plain quantile of batches of 1 reads 0.9)."""
    from worker.metrics import Metrics

    m = Metrics()
    edges = [float(b) for b in m.batch_size._upper_bounds]
    assert edges[:16] == [float(i) for i in range(1, 17)]
    assert all(float(e).is_integer() for e in edges[:-1]) and edges == sorted(edges)


def test_ingest_publish_latency_is_its_own_metric() -> None:
    """Frame publish on an ingest pod (~ms) and window capture-to-ack on a worker (~100s of ms)
    are different quantities: one histogram each, so a sum over pods never mixes them."""
    from worker.metrics import Metrics

    m = Metrics()
    assert m.ingest_publish_latency._name == "vbw_ingest_publish_latency_seconds"
    assert m.end_to_end._name == "vbw_end_to_end_latency_seconds"


def test_readyz_is_503_while_healthz_is(tmp_path) -> None:
    """A wedged worker is not ready either: /readyz follows /healthz's 503 and its reason."""
    import threading

    from prometheus_client import CollectorRegistry

    from worker.health import Health, make_server

    health = Health(wedged_after_s=0.5)
    server = make_server("127.0.0.1", 0, CollectorRegistry(), health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        health.beat("sink")
        health.set_ready(True)
        assert http_get(base + "/readyz")[0] == 200
        deadline = time.monotonic() + 30
        while http_get(base + "/healthz")[0] != 503:  # the sink stops beating
            assert time.monotonic() < deadline, "healthz never reported the silent sink"
            time.sleep(0.1)
        code, body = http_get(base + "/readyz")
        assert code == 503 and "wedged" in body and "sink" in body, (code, body)
        health.beat("sink")  # it recovers: ready again
        assert http_get(base + "/healthz")[0] == 200
        assert http_get(base + "/readyz") == (200, "ready\n")
        health.set_ready(False, "stopping")  # draining: not ready, whatever the heartbeats say
        assert http_get(base + "/readyz") == (503, "stopping\n")
    finally:
        server.shutdown()
        server.server_close()
