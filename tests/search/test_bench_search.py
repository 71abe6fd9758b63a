"""`vbw bench search` runs end to end on a small index (its figures are BENCHMARKS.md's, not
asserted here): every answer exact, and a replay does not change the count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_search_small(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "vbw.cli", "bench", "search", "--windows", "3000", "--streams", "10",
         "--queries", "30", "--batch", "200", "--compact-every", "5", "--engine", "vbw-index", "lancedb",
         "--target-p95-ms", "1e9", "--json", str(tmp_path / "r.json"), "--dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    results = {r["engine"]: r for r in json.loads((tmp_path / "r.json").read_text())}
    assert set(results) == {"vbw-index", "lancedb"}
    for r in results.values():
        assert r["windows"] == 3000 and r["dim"] == 64 and r["recall"] == 1.0
        assert r["ingest_rate"] > 0 and 0 < r["p50_ms"] <= r["p95_ms"]
    assert results["vbw-index"]["replay_changed"] is False
    assert results["lancedb"]["replay_changed"] is None  # the raw client is not checked
    assert "p95" in out.stdout and "recall@10 1.000" in out.stdout
