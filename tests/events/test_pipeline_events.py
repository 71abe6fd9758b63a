"""Events through the whole worker pipeline (file source, the shipped model, JSONL sinks): every
event valid, segments well formed and made of published windows, metrics at 0 from the start,
text lines on stdout, and events when every sink takes events only."""

from __future__ import annotations

import io
import json
from pathlib import Path

import jsonschema
import pytest
from worker_helpers import read_jsonl

from worker.config import parse_config
from worker.metrics import Metrics
from worker.pipeline import Pipeline
from worker.sinks.jsonl import StdoutSink

REPO = Path(__file__).resolve().parents[2]
SCHEMA = jsonschema.Draft202012Validator(json.loads((REPO / "schemas" / "vbw.event.v1.json").read_text()))


def run_pipeline(cfg_doc: dict, sinks=None) -> tuple[int, Metrics]:
    cfg = parse_config(cfg_doc)
    metrics = Metrics()
    p = Pipeline(cfg, metrics=metrics, install_signals=False, sinks=sinks)
    return p.run(), metrics


def config(model: Path, tmp: Path, **extra) -> dict:
    return {
        "sources": [{"type": "file", "id": "sample", "path": str(REPO / "samples" / "demo.mp4")}],
        "sampling": {"fps": 5},
        "windows": {"stride": 4},
        "engine": {"model_dir": str(model), "threads": 1},
        "sinks": [
            {"type": "jsonl", "path": str(tmp / "windows.jsonl")},
            {"type": "jsonl", "path": str(tmp / "events.jsonl"), "payload": "events", "name": "events"},
        ],
        "metrics": {"enabled": False},
        **extra,
    }


def test_events_of_the_demo_are_valid_segments_of_published_windows(default_model_dir, tmp_path):
    rc, metrics = run_pipeline(
        config(default_model_dir, tmp_path, events={"default": {"update_every_s": 2.0}})
    )
    assert rc == 0
    windows = {w["window_id"]: w for w in read_jsonl(tmp_path / "windows.jsonl")}
    events = read_jsonl(tmp_path / "events.jsonl")
    assert events, "the demo's motions made no event"
    for e in events:
        SCHEMA.validate(e)
        assert e["start_window_id"] in windows and e["peak_window_id"] in windows
        assert e["start_pts"] < e["end_pts"] and e["start_time"] < e["end_time"]
        assert e["mean_score"] <= e["peak_score"] and e["zone"] is None and e["source_id"] == "sample"
    assert len({e["event_id"] for e in events}) == len(events)
    by_segment: dict[str, list[dict]] = {}
    for e in events:
        by_segment.setdefault(e["segment_id"], []).append(e)
    for seg in by_segment.values():  # start, updates in order, end (the file's end closes the last one)
        kinds = [e["type"] for e in seg]
        assert kinds[0] == "start" and kinds[-1] == "end" and set(kinds[1:-1]) <= {"update"}
        assert [e["update"] for e in seg[1:-1]] == list(range(1, len(seg) - 1))
    ends = [e for e in events if e["type"] == "end"]
    assert ends[-1]["end_reason"] == "break"  # the file ended with a motion
    get = metrics.registry.get_sample_value
    for kind in ("start", "end"):
        n = sum(1 for e in events if e["type"] == kind)
        assert (
            sum(
                get("vbw_events_total", {"stream": "sample", "label": lb, "type": kind}) or 0
                for lb in {e["label"] for e in events}
            )
            == n
        )
    assert get("vbw_events_total", {"stream": "sample", "label": "rotate_ccw", "type": "update"}) is not None
    assert get("vbw_segments_open", {"stream": "sample", "label": "grow"}) == 0
    assert get("vbw_published_total", {"topic": "events"}) == len(events)


def test_text_lines_on_stdout_and_a_worker_with_event_sinks_only(default_model_dir, tmp_path):
    buf = io.StringIO()
    out = StdoutSink("text", name="stdout", stream=buf, events=True)
    doc = config(default_model_dir, tmp_path, events={"labels": ["move_left", "grow"]})
    rc, _ = run_pipeline(doc, sinks=[out])
    assert rc == 0
    lines = buf.getvalue().splitlines()
    assert lines and all(line.split()[2] in ("move_left", "grow") for line in lines)
    assert any(" start " in line for line in lines) and any(" end " in line for line in lines)


def test_labels_the_model_lacks_stop_the_start(default_model_dir, tmp_path):
    rc, _ = run_pipeline(config(default_model_dir, tmp_path, events={"labels": ["juggle"]}))
    assert rc != 0


@pytest.mark.parametrize("yaml_keys", ["on: 0.7", "off: 0.3"])
def test_yaml_on_off_keys_are_refused_with_a_message(yaml_keys, tmp_path):
    import yaml

    from worker.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump({"sources": [{"type": "file", "id": "a", "path": "x.mp4"}]})
        + f"events:\n  default: {{{yaml_keys}}}\n"
    )
    with pytest.raises(ConfigError, match=r"events\.default: YAML reads the keys on: and off: as true/false"):
        load_config(path)
