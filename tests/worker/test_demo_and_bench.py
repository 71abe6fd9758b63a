"""`vbw demo` (the README's main job) and a short smoke run of `vbw bench pipeline` (no timing asserts)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "demo.mp4"

pytestmark = pytest.mark.e2e


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("VBW_")}


def test_demo_prints_one_line_per_window(default_model_dir):
    if not SAMPLE.is_file():
        pytest.skip(f"bundled sample missing: {SAMPLE}")
    r = subprocess.run(
        [sys.executable, "-m", "vbw.cli", "demo", "--model", str(default_model_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("sample ")]
    assert len(lines) >= 10
    # stream, time span, top labels with scores
    pat = re.compile(r"^sample\s+\d+\.\d\ds -\s+\d+\.\d\ds\s+(\w+ \d\.\d\d\s*){3}")
    assert all(pat.match(ln) for ln in lines), lines[:3]
    m = re.search(r"top-1 right in (\d+)/(\d+) windows", r.stdout)
    assert m, r.stdout[-500:]
    right, judged = int(m.group(1)), int(m.group(2))
    assert judged >= 8 and right / judged >= 0.8, r.stdout


def test_bench_pipeline_smoke(tmp_path, tiny_model_dir):
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [
            sys.executable, "-m", "vbw.cli", "bench", "pipeline",
            "--model", str(tiny_model_dir), "--width", "320", "--height", "180", "--video-seconds", "3",
            "--rounds", "1", "--ceiling-seconds", "1", "--trial-seconds", "2", "--trial-warmup", "2",
            "--max-streams", "2", "--cache", str(tmp_path / "cache"), "--json", str(out),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=_env(),
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert set(doc["ceilings"]) == {"decode", "encode_frames", "assemble", "encode_windows", "sink"}
    assert doc["e2e_fps"] > 0 and doc["trials"]
    assert "streams sustained without drops" in r.stdout


def test_the_worker_runs_without_importing_torch(default_model_dir):
    """The run-time install has no torch: the worker with the ONNX Runtime engine must never
    import it (nor the model code that needs it)."""
    code = (
        "import sys\n"
        "from vbw.cli import main\n"
        f"rc = main(['demo', '--model', {str(default_model_dir)!r}])\n"
        "heavy = sorted(m for m in ('torch', 'onnx', 'videobert.model') if m in sys.modules)\n"
        "print('heavy modules:', heavy, file=sys.stderr)\n"
        "sys.exit(rc or (3 if heavy else 0))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, env=_env()
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "heavy modules: []" in r.stderr
