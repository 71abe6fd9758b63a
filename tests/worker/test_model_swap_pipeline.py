"""Hot model swap in a running pipeline (the shipped model on ONNX Runtime, looping file sources,
the JSONL sink): in-process, a swap mid-run, a failing one, an unchanged one; end to end, `vbw
run` whose config's engine section names another model mid-run, reloaded on SIGHUP. Every
stream's windows change model_version exactly once, every window in order, none missing."""

from __future__ import annotations

import itertools
import json
import shutil
import signal
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from worker_helpers import metric_value, read_jsonl, wait_until

from worker.config import EngineConfig, load_config, parse_config
from worker.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "vbw-motion-small"
STRIDE = 4
OLD = json.loads((SHIPPED / "model.json").read_text())["version"]  # the shipped model's
NEW = f"{OLD}+swap"


def bumped_model(root: Path, suffix: str = "swap") -> Path:
    """A copy of the shipped model under another version (what a retrained model looks like to
    the worker: a directory whose model.json differs)."""
    out = root / f"model-{suffix}"
    shutil.copytree(SHIPPED, out, ignore=shutil.ignore_patterns("checkpoint.pt"))
    meta = json.loads((out / "model.json").read_text())
    meta["version"] = f"{meta['version']}+{suffix}"
    meta["files"].pop("checkpoint.pt", None)
    (out / "model.json").write_text(json.dumps(meta, indent=2))
    return out


def by_stream(docs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for d in docs:
        out[d["stream_id"]].append(d)
    return out


def assert_one_switch_no_gap(windows: list[dict], old: str, new: str) -> int:
    """In order, every index once, start_seq on the stride grid (the file loops: a reset starts
    a new grid at the next frame), one model change, old then new. Returns the switch index."""
    assert [w["index"] for w in windows] == list(range(len(windows)))
    versions = [w["model"]["version"] for w in windows]
    changes = [i for i in range(1, len(versions)) if versions[i] != versions[i - 1]]
    assert len(changes) == 1 and versions[0] == old and versions[-1] == new, versions
    for a, b in itertools.pairwise(windows):
        if a["complete"]:  # the next window starts a stride later, or right after a loop's reset
            assert b["start_seq"] in (a["start_seq"] + STRIDE, a["end_seq"] + 1), (a, b)
        else:  # a partial window closed the run of frames: the next starts right after it
            assert b["start_seq"] == a["end_seq"] + 1, (a, b)
    return changes[0]


@pytest.fixture()
def run_pipeline(tmp_path: Path, labelled_clips: dict[str, Path]):
    pipes: list[Pipeline] = []

    def start(engine: dict | None = None, config_file: bool = False) -> tuple[Pipeline, Path]:
        out = tmp_path / "windows.jsonl"
        raw = {
            "sources": [
                {"type": "file", "id": f"cam{i}", "path": str(p), "loop": True}
                for i, p in enumerate(labelled_clips.values())
            ],
            "sinks": [{"type": "jsonl", "path": str(out)}],
            "windows": {"stride": STRIDE, "partial": "pad"},
            "engine": {"model_dir": str(SHIPPED), "threads": 1, **(engine or {})},
            "metrics": {"enabled": False},
        }
        path = None
        if config_file:  # a worker that reloads this file (worker.reload)
            path = tmp_path / "worker.yaml"
            path.write_text(yaml.safe_dump(raw))
        cfg = load_config(path) if path is not None else parse_config(raw)
        p = Pipeline(cfg, install_signals=False, config_path=path)
        p.run_in_background()
        assert p.wait_started(120), "pipeline did not start"
        pipes.append(p)
        return p, out

    yield start
    for p in pipes:
        p.stop()
        p.join(60)


def sample(p: Pipeline, name: str, **labels: str) -> float:
    return p.metrics.registry.get_sample_value(name, labels) or 0.0


def test_swap_mid_run_switches_each_stream_once_without_a_gap(run_pipeline, tmp_path: Path) -> None:
    p, out = run_pipeline()
    old = p.engine
    assert old is not None
    wait_until(lambda: len(by_stream(read_jsonl(out))) == 3, 60, "windows from every stream")
    new_dir = bumped_model(tmp_path)
    res = p.swap_model(EngineConfig(model_dir=new_dir, threads=1)).result(120)
    assert res.outcome == "switched" and res.new_version == NEW, res
    assert res.old_version == OLD

    def switched() -> bool:
        s = by_stream(read_jsonl(out))
        return len(s) == 3 and all(w[-1]["model"]["version"] == NEW for w in s.values())

    wait_until(switched, 60, "new-model windows on every stream")
    wait_until(lambda: p.engine is not old and old._frame is None, 30, "the old model released (closed)")
    p.stop()
    assert p.join(60) == 0
    for sid, ws in by_stream(read_jsonl(out)).items():
        k = assert_one_switch_no_gap(ws, OLD, NEW)
        assert ws[k]["window_id"] != ws[k - 1]["window_id"], sid
    assert sample(p, "vbw_model_swaps_total", result="switched") == 1
    assert (
        sample(
            p,
            "vbw_engine_info",
            version=NEW,
            model="vbw-motion-small",
            backend="onnxruntime",
            precision="fp32",
        )
        == 1
    )


def test_a_failing_swap_keeps_the_old_model(run_pipeline, tmp_path: Path, tiny_model_dir: Path) -> None:
    p, out = run_pipeline()
    wait_until(lambda: len(read_jsonl(out)) >= 3, 60, "windows")
    res = p.swap_model(EngineConfig(model_dir=tmp_path / "nowhere")).result(60)
    assert res.outcome == "failed" and "nowhere" in (res.error or ""), res
    broken = bumped_model(tmp_path, "broken")
    (broken / "window_encoder.onnx").write_bytes(b"not onnx")  # sha256 no longer matches
    res = p.swap_model(EngineConfig(model_dir=broken)).result(60)
    assert res.outcome == "failed" and "window_encoder.onnx" in (res.error or ""), res
    res = p.swap_model(EngineConfig(model_dir=tiny_model_dir)).result(60)  # T=8, 32x32
    assert res.outcome == "failed" and "without a restart" in (res.error or ""), res
    res = p.swap_model(EngineConfig(model_dir=SHIPPED, threads=1)).result(60)
    assert res.outcome == "unchanged", res
    n = len(read_jsonl(out))
    wait_until(lambda: len(read_jsonl(out)) > n + 3, 60, "windows after the failed swaps")
    p.stop()
    assert p.join(60) == 0
    assert {d["model"]["version"] for d in read_jsonl(out)} == {OLD}
    assert sample(p, "vbw_model_swaps_total", result="failed") == 3
    assert sample(p, "vbw_model_swaps_total", result="unchanged") == 1
    assert sample(p, "vbw_model_swaps_total", result="switched") == 0


def test_vbw_run_swaps_the_model_on_reload_without_a_gap(worker_proc, labelled_clips, tmp_path: Path) -> None:
    out = tmp_path / "windows.jsonl"
    config = {
        "sources": [
            {"type": "file", "id": f"cam{i}", "path": str(p), "loop": True}
            for i, p in enumerate(labelled_clips.values())
        ],
        "sinks": [{"type": "jsonl", "path": str(out)}],
        "windows": {"stride": STRIDE, "partial": "pad"},
        "engine": {"model_dir": str(SHIPPED), "threads": 1},
    }
    w = worker_proc(config, out)
    w.wait_ready(120)
    w.wait_for(lambda: all(len(ws) >= 3 for ws in by_stream(w.windows()).values()) and len(by_stream(w.windows())) == 3, 60, "old-model windows on every stream")  # fmt: skip

    new_dir = bumped_model(tmp_path)
    cfg = yaml.safe_load(w.config_path.read_text())
    cfg["engine"]["model_dir"] = str(new_dir)
    tmp = w.config_path.with_suffix(".new")
    tmp.write_text(yaml.safe_dump(cfg))
    tmp.replace(w.config_path)  # whole, as a ConfigMap update lands
    assert w.proc is not None
    w.proc.send_signal(signal.SIGHUP)

    def new_on_every_stream(n: int) -> bool:
        s = by_stream(w.windows())
        return len(s) == 3 and all(sum(d["model"]["version"] == NEW for d in ws) >= n for ws in s.values())

    w.wait_for(lambda: new_on_every_stream(3), 120, "new-model windows on every stream")
    metrics = w.metrics()
    assert metric_value(metrics, "vbw_model_swaps_total", result="switched") == 1
    assert metric_value(metrics, "vbw_model_swaps_total", result="failed") == 0
    assert metric_value(metrics, "vbw_engine_info", version=NEW) == 1
    rc, _ = w.sigterm(60)
    assert rc == 0, w.stderr()[-3000:]

    streams = by_stream(w.windows())
    assert sorted(streams) == ["cam0", "cam1", "cam2"]
    for ws in streams.values():
        assert_one_switch_no_gap(ws, OLD, NEW)
    log = w.stderr()
    assert "model swap: loading" in log and "hand over at their next window boundary" in log
    assert "released" in log  # the old model was closed once no stream needed it


def test_a_new_model_written_over_the_model_dir_swaps_on_reload(run_pipeline, tmp_path: Path) -> None:
    """The engine section stays; the directory it names gets a new model.json (a new model
    volume, a symlink swapped): a reload sees it and swaps."""
    live = bumped_model(tmp_path, "live")  # the running model, version OLD+live
    p, out = run_pipeline({"model_dir": str(live)}, config_file=True)
    wait_until(lambda: len(by_stream(read_jsonl(out))) == 3, 60, "windows from every stream")
    assert p.reloader.reload("SIGHUP").result == "unchanged"
    meta = json.loads((live / "model.json").read_text())
    meta["version"] = "9.9.9"
    (live / "model.json").write_text(json.dumps(meta, indent=2))
    res = p.reloader.reload("SIGHUP")
    assert res.result == "applied", res

    def switched() -> bool:
        s = by_stream(read_jsonl(out))
        return len(s) == 3 and all(w[-1]["model"]["version"] == "9.9.9" for w in s.values())

    wait_until(switched, 60, "new-model windows on every stream")
    assert p.reloader.reload("SIGHUP").result == "unchanged"  # the swapped-in model is the running one
    p.stop()
    assert p.join(60) == 0
    for ws in by_stream(read_jsonl(out)).values():
        assert_one_switch_no_gap(ws, f"{OLD}+live", "9.9.9")
    assert sample(p, "vbw_model_swaps_total", result="switched") == 1
