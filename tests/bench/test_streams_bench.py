"""`vbw bench streams` runs end to end on a few cycles (its figures are BENCHMARKS.md's, not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_streams_bench_runs_a_few_cycles(tmp_path: Path, default_model_dir: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "vbw.cli",
            "bench",
            "streams",
            "--cycles",
            "3",
            "--warmup",
            "1",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "3 add/remove cycles" in run.stdout
    doc = json.loads(out.read_text())
    assert len(doc["post_ms"]) == len(doc["delete_ms"]) == 3
    assert doc["series_left"] == 0
