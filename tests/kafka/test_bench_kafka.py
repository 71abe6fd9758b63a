"""`vbw bench kafka` runs end to end on a private Tansu broker and reports both runs and the ratio.

No timing assertions: the figures go to BENCHMARKS.md with the command that made them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_kafka_reports_worker_and_raw_ceiling(tiny_model_dir, tmp_path):
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("VBW_")}
    proc = subprocess.run(
        [sys.executable, "-m", "vbw.cli", "bench", "kafka", "--model", str(tiny_model_dir),
         "--streams", "2", "--frames", "60", "--partitions", "2", "--json", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "raw kafka-python consume + produce" in proc.stdout
    assert "same + JPEG decode to model RGB" in proc.stdout
    assert "worker / raw ceiling:" in proc.stdout
    result = json.loads(out.read_text())
    assert result["frames"] == 120
    assert result["windows"] == 2 * len(range(0, 60 - 8 + 1, 4))
    assert result["worker_frames_per_s"] > 0 and result["raw_frames_per_s"] > 0
    assert abs(result["ratio"] - result["worker_frames_per_s"] / result["raw_frames_per_s"]) < 1e-9
