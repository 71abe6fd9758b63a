"""`vbw search "sentence"` end to end with a real text encoder: the tests' tiny model (random
weights, a text side exported like the shipped one's). Its windows are indexed with their real
embeddings (the engine's own), and the CLI's answer must be the exact cosine ranking of those
windows against the engine's `encode_text` of the sentence, among the model's version only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_model import tiny_model_dir

from engines import load_engine
from search.records import window
from search.store import WindowIndex

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.getbasetemp())


def test_text_query_ranks_the_models_windows(model_dir, tmp_path):
    engine = load_engine(model_dir)
    assert engine.has_text
    m = engine.metadata
    rng = np.random.default_rng(3)
    t, (h, w) = m.num_frames, m.image_size
    clips = rng.integers(0, 256, size=(12, t, h, w, 3), dtype=np.uint8)
    _, emb = engine.infer_windows(clips)
    text = "a small red square moving left"
    q = engine.encode_text([text])[0]
    engine.close()

    ix = WindowIndex(tmp_path / "ix")
    ws = [
        window(f"w{i}", f"cam{i % 2}", i, i + 3.0, 1000.0 + i, m.name, m.version, e)
        for i, e in enumerate(emb)
    ]
    # the same vectors under another model version: never an answer to this model's text
    other = [
        window(f"old{i}", "cam0", i, i + 3.0, 1000.0 + i, m.name, "0.0-old", e) for i, e in enumerate(emb)
    ]
    ix.upsert([*ws, *other])

    out = subprocess.run(
        [sys.executable, "-m", "vbw.cli", "search", text, "--db", str(tmp_path / "ix"),
         "--model", str(model_dir), "-k", "5", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    docs = json.loads(out.stdout)
    want = sorted(ws, key=lambda x: -float(x.vector @ q))[:5]
    assert [d["window_id"] for d in docs] == [x.window_id for x in want]
    for d, x in zip(docs, want, strict=True):
        assert d["model_version"] == m.version
        assert d["score"] == pytest.approx(float(x.vector @ q), abs=1e-4)

    # --stream narrows it to one camera
    out = subprocess.run(
        [sys.executable, "-m", "vbw.cli", "search", text, "--db", str(tmp_path / "ix"),
         "--model", str(model_dir), "--stream", "cam1", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert {d["stream_id"] for d in json.loads(out.stdout)} == {"cam1"}
