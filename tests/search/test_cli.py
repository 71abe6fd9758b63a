"""`vbw index --jsonl` and `vbw search` as a user runs them (real subprocesses, real index)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from search_helpers import result

from worker.sinks.jsonl import JsonlSink

REPO = Path(__file__).resolve().parents[2]


def vbw(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vbw.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> tuple[Path, list]:
    tmp = tmp_path_factory.mktemp("cli")
    results = [result(f"cam{i % 2}", 4 * i, capture_time=1_800_000_000.0 + 2 * i) for i in range(24)]
    sink = JsonlSink(tmp / "windows.jsonl", embeddings=True)
    sink.open()
    for r in results:
        sink.publish(r, lambda err: None)
    sink.close()
    with (tmp / "windows.jsonl").open("a") as f:
        f.write("this is not json\n")
        ev = {"schema": "vbw.event/v1", "peak_window_id": results[3].message.window_id, "snapshot": "s/3.jpg"}
        f.write(json.dumps(ev) + "\n")
    db = tmp / "index"
    for _ in range(2):  # the second run is a replay: nothing changes
        out = vbw("index", "--db", str(db), "--jsonl", str(tmp / "windows.jsonl"), "--no-metrics")
        assert out.returncode == 0, out.stderr
        assert "windows.jsonl:25: not-json" in out.stderr
        assert "the index holds 24" in out.stderr
    return db, results


def test_like_json_and_filters(indexed):
    db, results = indexed
    target = results[3].message
    out = vbw("search", "--db", str(db), "--like", target.window_id, "-k", "30", "--json")
    assert out.returncode == 0, out.stderr
    docs = json.loads(out.stdout)
    assert len(docs) == 23 and target.window_id not in {d["window_id"] for d in docs}
    want = sorted(
        (r for r in results if r.message.window_id != target.window_id),
        key=lambda r: -float(r.embedding @ results[3].embedding),
    )
    assert [d["window_id"] for d in docs] == [r.message.window_id for r in want]
    # filters: one stream, a time range (ISO), k
    out = vbw(
        "search", "--db", str(db), "--like", target.window_id, "--stream", "cam0",
        "--since", "1800000010", "--until", "2027-01-15T08:00:20Z", "-k", "3", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    docs = json.loads(out.stdout)
    assert len(docs) == 3
    for d in docs:
        assert d["stream_id"] == "cam0" and d["end_time"] >= 1_800_000_010
        assert d["start"].endswith("Z") and set(d) >= {"score", "start_pts", "end_pts", "snapshot"}


def test_table_shows_the_snapshot(indexed):
    db, results = indexed
    out = vbw("search", "--db", str(db), "--like", results[4].message.window_id, "-k", "24")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["#", "score", "stream", "start"]
    row = next(line for line in lines if results[3].message.window_id in line)
    assert "s/3.jpg" in row and "2027-01-15T" in row


def test_text_with_the_shipped_model(indexed, default_model_dir, tmp_path):
    """The shipped model's text query: against an index of its own windows it answers (the exact
    cosine ranking); against an index of vectors of another size it says so; a model without a
    text encoder is refused with the way out (--like)."""
    db, _ = indexed
    text = "a small red square moving left"
    manifest = json.loads((default_model_dir / "model.json").read_text())
    if "text_encoder" not in json.dumps(manifest):
        out = vbw("search", "--db", str(db), text, "--model", str(default_model_dir))
        assert out.returncode == 2
        assert "has no text encoder" in out.stderr and "--like" in out.stderr
        return
    from engines import load_engine
    from search.records import window
    from search.store import WindowIndex

    engine = load_engine(default_model_dir)
    m = engine.metadata
    rng = np.random.default_rng(5)
    t, (h, w) = m.num_frames, m.image_size
    _, emb = engine.infer_windows(rng.integers(0, 256, size=(8, t, h, w, 3), dtype=np.uint8))
    q = engine.encode_text([text])[0]
    engine.close()
    assert emb.shape[1] == q.shape[0] != 16  # the fixture's index holds 16-dim vectors

    # an index of this model's own windows: an answer, the exact cosine ranking
    own = [
        window(f"w{i}", f"cam{i % 2}", i, i + 3.0, 1000.0 + i, m.name, m.version, e)
        for i, e in enumerate(emb)
    ]
    WindowIndex(tmp_path / "own").upsert(own)
    out = vbw(
        "search", "--db", str(tmp_path / "own"), text, "--model", str(default_model_dir), "-k", "3", "--json"
    )
    assert out.returncode == 0, out.stderr
    docs = json.loads(out.stdout)
    want = sorted(own, key=lambda x: -float(x.vector @ q))[:3]
    assert [d["window_id"] for d in docs] == [x.window_id for x in want]
    assert docs[0]["score"] == pytest.approx(float(want[0].vector @ q), abs=1e-4)

    # the fixture's index (16-dim vectors): a clear error naming both sizes, no answer
    out = vbw("search", "--db", str(db), text, "--model", str(default_model_dir))
    assert out.returncode != 0 and out.stdout == ""
    assert f"query of dim {q.shape[0]}, index holds dim 16" in out.stderr, out.stderr


def test_user_errors_are_clear(indexed, tmp_path):
    db, _ = indexed
    assert "give a text or --like" in vbw("search", "--db", str(db)).stderr
    out = vbw("search", "--db", str(db), "--like", "nope", "--since", "yesterday")
    assert out.returncode == 2 and "time 'yesterday'" in out.stderr
    out = vbw("search", "--db", str(db), "--like", "nope")
    assert out.returncode == 2 and "not in the index" in out.stderr
    out = vbw("search", "--db", str(tmp_path / "empty"), "--like", "x")
    assert out.returncode == 1 and "is empty" in out.stderr
    out = vbw(
        "index", "--db", str(tmp_path / "i"), "--jsonl", str(tmp_path / "missing.jsonl"), "--no-metrics"
    )
    assert out.returncode == 2 and "no such file" in out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("index: {db: x, metrics_port: 99999, surprise: 1}\n")
    out = vbw("index", "-c", str(bad))
    assert out.returncode == 2 and "metrics_port" in out.stderr and "surprise" in out.stderr


_WITHOUT_LANCEDB = """
import sys


class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "lancedb":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
from vbw.cli import main

sys.exit(main(sys.argv[1:]))
"""


def test_without_the_search_extra_the_commands_say_what_to_install(tmp_path):
    """A run-time-only install (no `search` extra): one line naming the extra, exit 1."""
    for args in (
        ["search", "--db", str(tmp_path), "--like", "x"],
        ["index", "--db", str(tmp_path), "--no-metrics"],
    ):
        out = subprocess.run(
            [sys.executable, "-c", _WITHOUT_LANCEDB, *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 1, out.stderr
        assert "pip install 'vbw[search]'" in out.stderr and "Traceback" not in out.stderr
