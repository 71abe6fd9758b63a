"""The run-time install (no torch, onnx, model code, training tools or tqdm) runs `vbw demo` and
`vbw bench pipeline`: each runs in a subprocess whose imports of those packages fail, as they
would where they are not installed. The demo's readable lines and accuracy, and a short bench
run's report (no timing asserts), are checked on the way.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "demo.mp4"
# Top-level packages the run-time install does not have (pyproject: the import-linter contract).
BLOCKED = ("torch", "onnx", "onnxscript", "onnxconverter_common", "tqdm", "videobert", "build_engine")

# Runs `vbw ARGS...` with a meta-path finder in front that refuses the blocked packages, then
# reports any blocked module that got in anyway (exit 3).
_LAUNCHER = """
import sys

BLOCKED = frozenset(sys.argv[1].split(","))


class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the run-time install)", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
from vbw.cli import main

rc = main(sys.argv[2:])
heavy = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
print("heavy modules:", heavy, file=sys.stderr)
sys.exit(rc or (3 if heavy else 0))
"""

pytestmark = pytest.mark.e2e


def run_runtime_only(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("VBW_")}
    return subprocess.run(
        [sys.executable, "-c", _LAUNCHER, ",".join(BLOCKED), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_the_launcher_blocks_the_training_tools() -> None:
    """The check is real: `vbw train` needs build_engine, which the launcher refuses."""
    r = run_runtime_only(["train", "--help"], timeout=60)
    assert r.returncode != 0
    assert "not in the run-time install" in r.stderr


def test_demo_runs_without_torch_and_prints_one_line_per_window(default_model_dir: Path) -> None:
    if not SAMPLE.is_file():
        pytest.skip(f"bundled sample missing: {SAMPLE}")
    r = run_runtime_only(["demo", "--model", str(default_model_dir)], timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "heavy modules: []" in r.stderr
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


def test_bench_pipeline_runs_without_torch(tmp_path: Path, default_model_dir: Path) -> None:
    out = tmp_path / "bench.json"
    r = run_runtime_only(
        [
            "bench", "pipeline",
            "--model", str(default_model_dir), "--width", "320", "--height", "180", "--video-seconds", "3",
            "--rounds", "1", "--ceiling-seconds", "1", "--trial-seconds", "2", "--trial-warmup", "2",
            "--max-streams", "2", "--cache", str(tmp_path / "cache"), "--json", str(out),
        ],
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "heavy modules: []" in r.stderr
    doc = json.loads(out.read_text())
    assert set(doc["ceilings"]) == {"decode", "encode_frames", "assemble", "encode_windows", "sink"}
    assert doc["e2e_fps"] > 0 and doc["trials"]
    assert "streams sustained without drops" in r.stdout
