"""`vbw bench engine` runs end to end (tiny model, one short repeat) and reports every workload.

No timing assertions: the figures belong in BENCHMARKS.md, not in pass/fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engines import load_engine
from vbw.bench.engine import bench_cell, measure
from vbw.cli import main as vbw


def test_measure_excludes_warmup_and_takes_median() -> None:
    calls: list[int] = []
    timing = measure(lambda: calls.append(1), repeats=3, warmup=2, min_time=0.0)
    assert timing.repeats == 3 and timing.calls_per_repeat >= 1
    assert len(calls) == 2 + 1 + 3 * timing.calls_per_repeat
    assert timing.seconds_per_call >= 0


def test_bench_cell_reports_consistent_rates(tiny_model_dir: Path) -> None:
    with load_engine(tiny_model_dir, intra_op_threads=1) as engine:
        cell = bench_cell(engine, batch=2, stride=4, repeats=1, warmup=1, min_time=0.0)
    assert (cell.backend, cell.precision, cell.batch, cell.num_frames, cell.stride) == (
        "onnxruntime",
        "fp32",
        2,
        8,
        4,
    )
    for rate in (
        cell.frames_per_s,
        cell.steps_per_s,
        cell.windows_per_s,
        cell.incremental_windows_per_s,
        cell.whole_windows_per_s,
        cell.recompute_windows_per_s,
    ):
        assert np.isfinite(rate) and rate > 0
    assert cell.incremental_stream_frames_per_s == pytest.approx(cell.incremental_windows_per_s * 4)
    assert cell.incremental_gain == pytest.approx(cell.incremental_windows_per_s / cell.whole_windows_per_s)
    assert cell.recompute_gain == pytest.approx(cell.incremental_windows_per_s / cell.recompute_windows_per_s)
    with load_engine(tiny_model_dir, intra_op_threads=1) as engine, pytest.raises(ValueError, match="stride"):
        bench_cell(engine, batch=1, stride=9, repeats=1, warmup=1, min_time=0.0)


def test_cli_table_and_json(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "engine", "--model", str(tiny_model_dir), "--backends", "onnxruntime,torch"]
    args += ["--precisions", "fp32,int8", "--batches", "1,8", "--repeats", "1", "--warmup", "1"]
    args += ["--min-time", "0", "--threads", "1", "--json", str(out)]
    assert vbw(args) == 0
    printed = capsys.readouterr().out
    assert "batch 8, fp32: onnxruntime" in printed and "vs torch eager" in printed
    assert "incremental" in printed and "whole-window recompute" in printed and "recomp fr/s" in printed
    doc = json.loads(out.read_text())
    cells = {(r["backend"], r["precision"], r["batch"]) for r in doc["results"]}
    assert cells == {
        ("onnxruntime", "fp32", 1),
        ("onnxruntime", "fp32", 8),
        ("onnxruntime", "int8", 1),
        ("onnxruntime", "int8", 8),
        ("torch", "fp32", 1),
        ("torch", "fp32", 8),
    }
    assert doc["skipped"] == [
        {
            "backend": "torch",
            "precision": "int8",
            "reason": "torch backend runs fp32 or fp16 (CUDA), not int8",
        }
    ]
    assert doc["machine"]["cpus"] >= 1


def test_cli_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert vbw(["bench", "engine", "--model", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
