"""Write deploy/grafana/vbw-dashboard.json, the Grafana dashboard of vbw workers.

    python deploy/grafana/build_dashboard.py          # rewrite the JSON
    python deploy/grafana/build_dashboard.py --check  # exit 1 if it is out of date

The panels are written as code so every PromQL expression sits in one readable list; the JSON is
committed for import (Grafana > Dashboards > Import, or a provisioning ConfigMap). tests/deploy
parses each expression with promtool and checks every metric it names against a running worker.
Metric names: README "Metrics and health" (worker/metrics.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "vbw-dashboard.json"
DS = {"type": "prometheus", "uid": "${datasource}"}

# Selectors from the template variables. Stream-labelled metrics also filter by stream.
POD = 'namespace=~"$namespace", pod=~"$pod"'
STREAM = POD + ', stream=~"$stream"'
RATE = "[$__rate_interval]"


class Layout:
    """Places panels left to right on Grafana's 24-column grid, rows top to bottom."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = self.y = 0
        self.row_h = 0

    def row(self, title: str) -> None:
        self.y += self.row_h
        self.x, self.row_h = 0, 0
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
            }
        )
        self.y += 1

    def add(self, panel: dict[str, Any], w: int = 8, h: int = 8) -> None:
        if self.x + w > 24:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        panel["datasource"] = DS
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def target(expr: str, legend: str = "", ref: str = "A", **extra: Any) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, **extra}


def timeseries(
    title: str, targets: list[dict[str, Any]], unit: str, desc: str, **field: Any
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "description": desc,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, **field}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
    }


def stat(title: str, expr: str, desc: str, color: str) -> dict[str, Any]:
    return {
        "type": "stat",
        "title": title,
        "description": desc,
        "targets": [target(expr, instant=True)],
        "fieldConfig": {
            "defaults": {"unit": "none", "color": {"mode": "fixed", "fixedColor": color}},
            "overrides": [],
        },
        "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"},
    }


def build() -> dict[str, Any]:
    L = Layout()
    L.row("Throughput")
    L.add(
        timeseries(
            "Frames in",
            [target(f"sum by (pod) (rate(vbw_frames_received_total{{{STREAM}}}{RATE}))", "{{pod}}")],
            "fps",
            "Frames handed to the pipeline after fps sampling, per pod.",
        )
    )
    L.add(
        timeseries(
            "Windows out",
            [target(f"sum by (pod) (rate(vbw_windows_emitted_total{{{STREAM}}}{RATE}))", "{{pod}}")],
            "ops",
            "Windows sent to the sinks (complete and partial), per pod.",
        )
    )
    L.add(
        timeseries(
            "Published (sink acks)",
            [target(f"sum by (topic) (rate(vbw_published_total{{{POD}}}{RATE}))", "{{topic}}")],
            "ops",
            "Windows acknowledged per output topic or sink.",
        )
    )

    L.row("Latency")
    e2e = f"sum by (le) (rate(vbw_end_to_end_latency_seconds_bucket{{{POD}}}{RATE}))"
    L.add(
        timeseries(
            "End-to-end latency (capture to publish ack)",
            [
                target(f"histogram_quantile(0.5, {e2e})", "p50", "A"),
                target(f"histogram_quantile(0.99, {e2e})", "p99", "B"),
            ],
            "s",
            "From the capture of a window's newest frame to the ack of its last sink. "
            "The VbwEndToEndLatencyHigh alert fires when p99 stays above 2.5 s.",
            thresholds={
                "mode": "absolute",
                "steps": [{"color": "green", "value": None}, {"color": "red", "value": 2.5}],
            },
            custom={"thresholdsStyle": {"mode": "dashed"}},
        ),
        w=12,
    )
    ingest = f"sum by (pod, le) (rate(vbw_ingest_publish_latency_seconds_bucket{{{POD}}}{RATE}))"
    L.add(
        timeseries(
            "Ingest publish latency (capture to broker ack)",
            [
                target(f"histogram_quantile(0.5, {ingest})", "{{pod}} p50", "A"),
                target(f"histogram_quantile(0.99, {ingest})", "{{pod}} p99", "B"),
            ],
            "s",
            "Edge ingest pods (vbw ingest): from the capture of a frame to the broker's ack of its "
            "message. Its own metric, so it never mixes with the workers' window latency.",
        ),
        w=12,
    )
    stage = f"sum by (stage, le) (rate(vbw_stage_seconds_bucket{{{POD}}}{RATE}))"
    L.add(
        timeseries(
            "Stage latency",
            [
                target(f"histogram_quantile(0.5, {stage})", "{{stage}} p50", "A"),
                target(f"histogram_quantile(0.99, {stage})", "{{stage}} p99", "B"),
            ],
            "s",
            "Per call: decode (per frame), encode_frames and encode_windows (per batch), publish (per window, to ack).",
        ),
        w=12,
    )
    L.add(
        timeseries(
            "Batch size",
            [
                target(
                    f"sum by (pod) (rate(vbw_batch_size_sum{{{POD}}}{RATE}))"
                    f" / sum by (pod) (rate(vbw_batch_size_count{{{POD}}}{RATE}))",
                    "{{pod}} mean",
                    "A",
                ),
                # Sizes are integers and the buckets one wide up to 16: ceil makes the
                # interpolated quantile exact (batches of 1 would read 0.9 without it).
                target(
                    "ceil(histogram_quantile(0.9, sum by (le) "
                    f"(rate(vbw_batch_size_bucket{{{POD}}}{RATE}))))",
                    "p90 (all pods)",
                    "B",
                ),
            ],
            "none",
            "Windows per encode_windows call. Near 1 under load: the batcher's max_delay_ms is too short.",
        )
    )
    L.add(
        timeseries(
            "Queue depth",
            [target(f"max by (pod, queue) (vbw_queue_depth{{{POD}}})", "{{pod}} {{queue}}")],
            "none",
            "Items waiting between pipeline stages. A full frames queue means inference is the bottleneck.",
        )
    )
    L.add(
        timeseries(
            "Engine calls",
            [target(f"sum by (stage) (rate(vbw_stage_seconds_count{{{POD}}}{RATE}))", "{{stage}}")],
            "ops",
            "Calls per second of each stage.",
        )
    )

    L.row("Drops and errors")
    L.add(
        timeseries(
            "Frames dropped by reason",
            [target(f"sum by (reason) (rate(vbw_frames_dropped_total{{{STREAM}}}{RATE}))", "{{reason}}")],
            "fps",
            "Frames dropped before entering a window (overload of a live source, late, out of order...).",
        )
    )
    L.add(
        timeseries(
            "Windows dropped or partial by reason",
            [
                target(
                    f"sum by (reason) (rate(vbw_windows_dropped_total{{{POD}}}{RATE}))",
                    "dropped: {{reason}}",
                    "A",
                ),
                target(
                    f"sum by (policy, reason) (rate(vbw_windows_partial_total{{{POD}}}{RATE}))",
                    "{{policy}}: {{reason}}",
                    "B",
                ),
            ],
            "ops",
            "Partial windows (cut by a gap, reset or end) dropped, padded or emitted, per windows.partial.",
        )
    )
    L.add(
        timeseries(
            "Decode and publish errors",
            [
                target(
                    f"sum by (stream) (rate(vbw_decode_errors_total{{{STREAM}}}{RATE}))",
                    "decode {{stream}}",
                    "A",
                ),
                target(
                    f"sum by (topic) (rate(vbw_publish_errors_total{{{POD}}}{RATE}))",
                    "publish {{topic}}",
                    "B",
                ),
            ],
            "ops",
            "Open/demux/decode failures per stream; windows a sink gave up on per topic (VbwPublishErrors).",
        )
    )

    L.row("Streams")

    def streams(state: str) -> str:
        # Named streams count once each, whichever pods report them (a camera behind ingest is
        # on its ingest pod and on the worker reading its partition); pods without per-stream
        # labels (one stream="all" series) add their counts, which the stream filter cannot narrow.
        value = "1" if state == "up" else "0"
        up = f"vbw_streams_up{{{POD}}}"
        counts = up if state == "up" else f"(vbw_streams_known{{{POD}}} - {up})"
        named = f'count(count by (stream) (vbw_stream_up{{{STREAM}, stream!="all"}} == {value}))'
        pooled = f'sum({counts} and on (namespace, pod) vbw_stream_up{{{POD}, stream="all"}})'
        return f"({named} or vector(0)) + ({pooled} or vector(0))"

    L.add(
        stat(
            "Streams up",
            streams("up"),
            "Streams delivering frames. Pods without per-stream labels count all their streams.",
            "green",
        ),
        w=4,
        h=6,
    )
    L.add(
        stat(
            "Streams down",
            streams("down"),
            "Streams without frames (reconnecting, or never opened). VbwStreamDown fires after 2 "
            "minutes (VbwStreamsDown for pods without per-stream labels).",
            "red",
        ),
        w=4,
        h=6,
    )
    L.add(
        {
            "type": "state-timeline",
            "title": "Stream up / down",
            "description": '1 while the stream delivers frames. stream="all" (a pod without per-stream '
            "labels): 1 only while every stream of the pod does.",
            "targets": [target(f"max by (pod, stream) (vbw_stream_up{{{STREAM}}})", "{{pod}} {{stream}}")],
            "fieldConfig": {
                "defaults": {
                    "mappings": [
                        {
                            "type": "value",
                            "options": {
                                "0": {"text": "down", "color": "red"},
                                "1": {"text": "up", "color": "green"},
                            },
                        }
                    ]
                },
                "overrides": [],
            },
            "options": {"showValue": "never"},
        },
        w=16,
        h=6,
    )
    L.add(
        timeseries(
            "Reconnects",
            [
                target(
                    f"sum by (stream) (increase(vbw_stream_reconnects_total{{{STREAM}}}{RATE}))", "{{stream}}"
                )
            ],
            "none",
            "Reconnect attempts after a lost or stalled stream (exponential backoff with jitter).",
        ),
        w=24,
    )

    # Segments and their events (worker/segmenter.py, vbw.event/v1): one series per stream and
    # label of interest, at 0 from the stream's start, so a quiet camera reads 0, not "No data".
    L.row("Events")
    events = f"vbw_events_total{{{STREAM}"
    L.add(
        timeseries(
            "Segments started by label and stream",
            [
                target(
                    f'60 * sum by (stream, label) (rate({events}, type="start"}}{RATE}))',
                    "{{stream}} {{label}}",
                )
            ],
            "opm",
            "Start events per minute: a label held long enough (events.default/rules: on, k, "
            "min_duration_s) in a stream or zone (cam1/door).",
        ),
        w=12,
    )
    L.add(
        timeseries(
            "Events by type",
            [target(f"60 * sum by (type) (rate({events}}}{RATE}))", "{{type}}")],
            "opm",
            "Events per minute published to the event sinks, by type: start, update (periodic, "
            "events update_every_s), end.",
        ),
        w=12,
    )
    L.add(
        timeseries(
            "Open segments",
            [target(f"sum by (stream, label) (vbw_segments_open{{{STREAM}}})", "{{stream}} {{label}}")],
            "none",
            "Segments started and not yet ended, per stream and label: what is going on now. One "
            "that stays open for hours is a label stuck above its off-threshold.",
            custom={"drawStyle": "line", "lineInterpolation": "stepAfter"},
        ),
        w=12,
    )
    L.add(
        {
            "type": "table",
            "title": "Segments started in the time range",
            "description": "Start events per stream and label over the dashboard's time range "
            "(`vbw summarize` draws them, with snapshots).",
            "targets": [
                target(
                    f'sum by (stream, label) (increase({events}, type="start"}}[$__range]))',
                    format="table",
                    instant=True,
                )
            ],
            "transformations": [
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "indexByName": {"stream": 0, "label": 1, "Value": 2},
                        "renameByName": {"Value": "segments"},
                    },
                }
            ],
            "fieldConfig": {"defaults": {"decimals": 0}, "overrides": []},
            "options": {"showHeader": True, "sortBy": [{"displayName": "segments", "desc": True}]},
        },
        w=12,
    )

    L.row("Kafka")
    L.add(
        timeseries(
            "Consumer lag by topic",
            [
                target(
                    'sum by (topic) (max by (topic, partition) (vbw_kafka_consumer_lag{namespace=~"$namespace"}))',
                    "{{topic}} (workers)",
                    "A",
                ),
                target(
                    'sum by (topic) (kafka_consumergroup_lag{namespace=~"$namespace", consumergroup="vbw-workers"})',
                    "{{topic}} (broker)",
                    "B",
                ),
            ],
            "none",
            "Messages behind the partition ends, across the consumer group (each partition counted once), "
            "as the workers report it and as the broker does (kafka-exporter): only the broker's line "
            "goes on when no worker runs (VbwConsumerLagUnattended). KEDA adds workers as it grows; "
            "VbwConsumerLagGrowing fires when it keeps growing above 1000.",
        ),
        w=12,
    )
    L.add(
        timeseries(
            "Consumer lag by partition",
            [
                target(
                    f"max by (pod, topic, partition) (vbw_kafka_consumer_lag{{{POD}}})",
                    "{{topic}}/{{partition}} {{pod}}",
                )
            ],
            "none",
            "Lag of each partition on the pod that owns it; a stuck partition stands out here.",
        ),
        w=12,
    )
    L.add(
        timeseries(
            "Dead letters",
            [
                target(
                    f"sum by (topic, reason) (increase(vbw_kafka_dead_letters_total{{{POD}}}{RATE}))",
                    "{{topic}} {{reason}}",
                )
            ],
            "none",
            "Input messages that were not frames, by topic and reason: sent to the dead-letter topic "
            "(or counted and skipped without one). VbwKafkaDeadLetters fires on any.",
        ),
        w=12,
    )
    L.add(
        timeseries(
            "Frames published by ingest",
            [
                target(
                    f'sum by (topic) (rate(vbw_published_total{{{POD}, container="ingest"}}{RATE}))',
                    "{{topic}}",
                )
            ],
            "fps",
            "Frames the edge ingest pods publish per frames topic. With no worker reading the topic, "
            "VbwFramesNotConsumed fires.",
        ),
        w=12,
    )

    L.row("Engine")
    L.add(
        {
            "type": "table",
            "title": "Engine per pod",
            "description": "The loaded model and runtime of each ready worker.",
            "targets": [
                target(
                    f'max by (pod, model, version, backend, precision) (vbw_engine_info{{{POD}, backend!=""}})',
                    format="table",
                    instant=True,
                )
            ],
            "transformations": [
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True, "Value": True},
                        "indexByName": {"pod": 0, "model": 1, "version": 2, "backend": 3, "precision": 4},
                    },
                }
            ],
            "fieldConfig": {"defaults": {}, "overrides": []},
            "options": {"showHeader": True},
        },
        w=24,
        h=6,
    )

    L.add(
        timeseries(
            "Config reloads and model swaps",
            [
                target(
                    f"sum by (pod, result) (increase(vbw_config_reload_total{{{POD}}}{RATE}))",
                    "reload {{pod}} {{result}}",
                ),
                target(
                    f"sum by (pod, result) (increase(vbw_model_swaps_total{{{POD}}}{RATE}))",
                    "model swap {{pod}} {{result}}",
                    ref="B",
                ),
            ],
            "none",
            "Config reloads (SIGHUP, a change of the mounted file, POST /config/reload) by result: "
            "applied, unchanged, rejected (invalid, or a change that needs a restart: the old config "
            "runs on), failed (a source did not start). VbwConfigReloadRejected fires on rejected or "
            "failed. Hot model swaps by result: switched, failed (the old model runs on), unchanged.",
        ),
        w=24,
        h=6,
    )

    # `vbw index` pods (docs/search.md): how far behind the cameras the searchable windows are.
    L.row("Search index")
    L.add(
        timeseries(
            "Index lag",
            [target(f"max by (pod) (vbw_index_lag_seconds{{{POD}}})", "{{pod}}")],
            "s",
            "At each index write: now less the capture time of the newest window written. A window is "
            "searchable this long after its camera saw it (VbwSearchIndexBehind above 5 minutes).",
        )
    )
    L.add(
        timeseries(
            "Index backlog",
            [
                target(
                    f"sum by (topic) (max by (topic, partition) (vbw_index_consumer_lag{{{POD}}}))",
                    "{{topic}}",
                )
            ],
            "none",
            "Embeddings (and events) messages not yet indexed, per topic, as the index pods report it.",
        )
    )
    L.add(
        timeseries(
            "Index size",
            [
                target(f"sum by (pod) (vbw_index_windows{{{POD}}})", "{{pod}} windows", "A"),
                target(f"sum by (pod) (vbw_index_size_bytes{{{POD}}})", "{{pod}} bytes", "B"),
            ],
            "short",
            "Windows in the index (a replay does not raise it: upsert by window_id) and its bytes on disk.",
        )
    )
    L.add(
        timeseries(
            "Index writes",
            [
                target(f"sum by (kind) (rate(vbw_index_written_total{{{POD}}}{RATE}))", "{{kind}}", "A"),
                target(
                    f"sum by (reason) (rate(vbw_index_bad_messages_total{{{POD}}}{RATE}))",
                    "bad: {{reason}}",
                    "B",
                ),
            ],
            "ops",
            "Windows and snapshots written per second; messages skipped as not indexable, by reason "
            "(each logged with its topic, partition and offset).",
        ),
        w=12,
    )
    L.add(
        timeseries(
            "Index write time p95",
            [
                target(
                    f"histogram_quantile(0.95, sum by (le) (rate(vbw_index_write_seconds_bucket{{{POD}}}{RATE})))",
                    "p95",
                )
            ],
            "s",
            "Time to write one polled batch to the index, before its offsets are committed.",
        ),
        w=12,
    )

    def var(name: str, query: str, label: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "query": {"query": query, "refId": f"{name}-var"},
            "definition": query,
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
        }

    return {
        "title": "vbw workers",
        "uid": "vbw-workers",
        "description": "vbw streaming video analytics: throughput, latency, drops, streams, Kafka lag, engines.",
        "tags": ["vbw"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "links": [],
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                var("namespace", "label_values(vbw_engine_info, namespace)", "Namespace"),
                var("pod", 'label_values(vbw_engine_info{namespace=~"$namespace"}, pod)', "Pod"),
                var(
                    "stream",
                    'label_values(vbw_stream_up{namespace=~"$namespace", pod=~"$pod"}, stream)',
                    "Stream",
                ),
            ]
        },
        "panels": L.panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report whether the JSON is current")
    args = ap.parse_args(argv)
    want = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != want:
            print(f"{OUT} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(want)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
