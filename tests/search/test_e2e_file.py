"""The whole path on the bundled sample: `vbw run` (shipped model, file source, a JSONL sink with
`payload: embeddings`) -> `vbw index --jsonl` -> `vbw search --like`, each a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def vbw(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vbw.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_sample_video_to_search(tmp_path, default_model_dir):
    cfg = {
        "sources": [{"type": "file", "id": "sample", "path": str(REPO / "samples" / "demo.mp4")}],
        "sampling": {"fps": 5},
        "windows": {"stride": 4},
        "engine": {"model_dir": str(default_model_dir), "threads": 1},
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "w.jsonl"), "payload": "embeddings"}],
        "metrics": {"enabled": False},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    out = vbw("run", "-c", str(tmp_path / "run.yaml"))
    assert out.returncode == 0, out.stderr[-3000:]
    docs = [json.loads(line) for line in (tmp_path / "w.jsonl").read_text().splitlines()]
    assert len(docs) >= 5

    out = vbw("index", "--db", str(tmp_path / "ix"), "--jsonl", str(tmp_path / "w.jsonl"), "--no-metrics")
    assert out.returncode == 0, out.stderr
    assert f"the index holds {len({d['window_id'] for d in docs})}" in out.stderr

    target = docs[len(docs) // 2]
    out = vbw("search", "--db", str(tmp_path / "ix"), "--like", target["window_id"], "-k", "3", "--json")
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert len(hits) == 3 and target["window_id"] not in {h["window_id"] for h in hits}
    by_id = {d["window_id"]: d for d in docs}
    v = np.asarray(target["embedding"], np.float32)
    want = sorted(
        (d for d in by_id.values() if d["window_id"] != target["window_id"]),
        key=lambda d: -float(np.asarray(d["embedding"], np.float32) @ v),
    )[:3]
    assert [h["window_id"] for h in hits] == [d["window_id"] for d in want]
    for h in hits:
        d = by_id[h["window_id"]]
        assert (h["stream_id"], h["start_pts"], h["end_pts"], h["end_time"]) == (
            "sample",
            d["start_pts"],
            d["end_pts"],
            d["capture_time"],
        )
        assert h["model_version"] == d["model"]["version"]
