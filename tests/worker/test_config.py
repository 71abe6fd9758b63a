"""Config: example files, every-problem-at-once reporting via the real CLI, env overrides, README table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.config import ConfigError, load_config, parse_config
from worker.config_docs import current_block, readme_block

REPO = Path(__file__).resolve().parents[2]
VBW = [sys.executable, "-m", "vbw.cli"]


def vbw(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.upper().startswith("VBW_")}
    e.update(env or {})
    return subprocess.run([*VBW, *args], cwd=REPO, capture_output=True, text=True, env=e, timeout=60)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_are_valid(path: Path):
    r = vbw("validate-config", str(path))
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_three_mistakes_all_reported_exit_2(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "sources:\n"
        "  - {type: rtsp, id: cam1, url: 'http://not-rtsp/x'}\n"  # 1: wrong scheme
        "windows: {stride: 0}\n"  # 2: out of range
        "batching: {max_batch: 8, max_dealy_ms: 5}\n"  # 3: typo'd key
    )
    r = vbw("validate-config", str(bad))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[0] == f"{bad}: 3 problems:"
    body = "\n".join(lines[1:])
    assert "sources.0.url: must be an rtsp:// or rtsps:// URL" in body
    assert "windows.stride:" in body
    assert "batching.max_dealy_ms: unknown key" in body
    assert "Traceback" not in r.stderr


def test_run_validates_before_starting(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: []\nengine: {backend: cuda}\nmetrics: {port: 99999}\n")
    r = vbw("run", "-c", str(bad))
    assert r.returncode == 2
    assert "3 problems" in r.stderr
    assert "sources:" in r.stderr and "engine.backend:" in r.stderr and "metrics.port:" in r.stderr
    assert "Traceback" not in r.stderr


def test_yaml_syntax_error_has_a_line_number(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  - {type: file, id: a\n")
    r = vbw("validate-config", str(bad))
    assert r.returncode == 2
    assert "not valid YAML: line" in r.stderr


def test_missing_file_is_a_problem_not_a_traceback(tmp_path: Path):
    r = vbw("validate-config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "cannot read" in r.stderr and "Traceback" not in r.stderr


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    f = tmp_path / "c.yaml"
    f.write_text("sources: [{type: file, id: a, path: x.mp4}]\nengine: {backend: onnxruntime, threads: 1}\n")
    monkeypatch.setenv("VBW_ENGINE__THREADS", "2")
    monkeypatch.setenv("VBW_METRICS__PER_STREAM_LABELS", "false")
    monkeypatch.setenv("VBW_SINKS", '[{"type": "jsonl", "path": "o.jsonl"}]')
    cfg = load_config(f)
    assert cfg.engine.threads == 2 and cfg.engine.backend == "onnxruntime"
    assert cfg.metrics.per_stream_labels is False
    assert cfg.sinks[0].type == "jsonl"
    monkeypatch.setenv("VBW_WINDOWS__STRIDE", "zero")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert [p.path for p in e.value.problems] == ["windows.stride"]


def test_secrets_stay_out_of_repr():
    cfg = parse_config({"sources": [{"type": "rtsp", "id": "c", "url": "rtsp://u:hunter2@h/s"}]})
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg.model_dump())


def test_duplicate_ids_rejected():
    with pytest.raises(ConfigError) as e:
        parse_config(
            {"sources": [{"type": "file", "id": "a", "path": "x"}, {"type": "file", "id": "a", "path": "y"}]}
        )
    assert "duplicate source id(s): a" in str(e.value)


def test_readme_config_table_is_current():
    text = (REPO / "README.md").read_text()
    block = current_block(text)
    assert block is not None, "README.md lacks the config-table markers"
    assert block == readme_block(), "README config table is stale: run `python -m worker.config_docs --write`"
