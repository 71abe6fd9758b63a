"""End to end on a real Tansu broker, every piece real:

`vbw gen-clips` labelled clips -> `vbw ingest` -> frames topic -> `vbw run` (the shipped model,
ONNX Runtime) -> labels and embeddings topics -> a confluent-kafka consumer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from kafka_helpers import TopicReader, escaped_errors, expected_windows
from services.tansu import FAST_GROUP, consume_all
from worker_helpers import WorkerProc, accuracy_at_least

from engines.manifest import load_manifest

REPO = Path(__file__).resolve().parents[2]
LABELS = ("move_left", "move_right", "move_up", "move_down", "grow", "shrink", "rotate_cw", "rotate_ccw")
CLIPS = 24  # three clips per label, 8 s each: 24 streams at once through one partition set


@pytest.fixture(scope="session")
def shipped_model(request: pytest.FixtureRequest) -> Path:
    # KAFKA_TESTS_MODEL=DIR points at a model being built, while developing.
    if os.environ.get("KAFKA_TESTS_MODEL"):
        return Path(os.environ["KAFKA_TESTS_MODEL"])
    return request.getfixturevalue("default_model_dir")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("VBW_")}


def _vbw(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vbw.cli", *args],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_ingest_run_confluent_every_window_labelled_and_embedded(broker, shipped_model, tmp_path):
    manifest = load_manifest(shipped_model, verify=False)
    t_model = manifest.num_frames
    clips = tmp_path / "clips"
    gen = _vbw(
        "gen-clips", "--out", str(clips), "--n", str(CLIPS), "--labels", ",".join(LABELS),
        "--frames", "200", "--seed", "4242",
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr[-2000:]
    records = [json.loads(line) for line in (clips / "labels.jsonl").read_text().splitlines()]
    truth = {f"{r['label']}-{i}": r["label"] for i, r in enumerate(records)}

    broker.create_topics({"frames": 3, "labels": 3, "emb": 3, "dlq": 1})
    ingest_cfg = tmp_path / "ingest.yaml"
    ingest_cfg.write_text(
        yaml.safe_dump(
            {
                "sources": [
                    {"type": "file", "id": sid, "path": str(clips / r["file"])}
                    for sid, r in zip(truth, records, strict=True)
                ],
                "engine": {"model_dir": str(shipped_model)},  # ingest publishes at the model's size
                "kafka": {"bootstrap_servers": [broker.bootstrap]},
                "ingest": {"topic": "frames"},
                "metrics": {"enabled": False},
            }
        )
    )
    ing = _vbw("ingest", "-c", str(ingest_cfg), timeout=300)
    assert ing.returncode == 0, ing.stderr[-3000:]
    frames = consume_all(broker.bootstrap, "frames", 10**9, timeout=5)
    per_stream = Counter(m.key().decode() for m in frames)
    assert set(per_stream) == set(truth)
    want = set()
    for sid, n in per_stream.items():
        want |= expected_windows([sid], n, t_model, 4, manifest.version)
    assert len(want) >= 30

    labels, emb = TopicReader(broker.bootstrap, "labels"), TopicReader(broker.bootstrap, "emb")
    labels.start()
    emb.start()
    cfg = {
        "sources": [
            {"type": "kafka", "id": "frames", "topics": ["frames"], "group_id": "e2e", "dead_letter_topic": "dlq",
             **FAST_GROUP}
        ],
        "windows": {"stride": 4},
        "engine": {"model_dir": str(shipped_model), "backend": "onnxruntime", "precision": "fp32"},
        "sinks": [
            {"type": "kafka", "topic": "labels"},
            {"type": "kafka", "topic": "emb", "payload": "embeddings", "dtype": "float32"},
        ],
        "kafka": {"bootstrap_servers": [broker.bootstrap]},
    }  # fmt: skip
    w = WorkerProc(tmp_path, cfg).start()
    try:
        w.wait_ready(120)
        deadline = time.monotonic() + 300
        while not (want <= labels.ids() and want <= emb.ids()):
            assert w.proc.poll() is None, w.stderr()[-3000:]
            assert time.monotonic() < deadline, f"{len(want - labels.ids())} windows missing"
            time.sleep(0.5)
        rc, _ = w.sigterm(timeout=60)
        assert rc == 0, w.stderr()[-3000:]
    finally:
        w.stop()
        labels.stop()
        emb.stop()
    assert not escaped_errors(w.stderr())

    docs = {d["window_id"]: d for d in labels.docs()}
    assert set(docs) == want
    complete = [d for d in docs.values() if d["complete"]]
    right = sum(d["labels"][0]["label"] == truth[d["stream_id"]] for d in complete)
    accuracy = right / len(complete)
    print(f"e2e over Kafka: {len(complete)} complete windows, top-1 accuracy {accuracy:.3f}")
    confusion = Counter((truth[d["stream_id"]], d["labels"][0]["label"]) for d in complete)
    accuracy_note = f"top-1 {accuracy:.3f}; (true, predicted): {dict(confusion)}"

    for m in emb.snapshot():
        h = {k: v.decode() for k, v in m.headers()}
        vec = np.frombuffer(m.value(), dtype=h["dtype"])
        assert vec.shape == (int(h["dim"]),) == (manifest.embed_dim,)
        assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-3
        assert h["vbw-model-version"] == manifest.version
        assert m.key().decode() == docs[h["window_id"]]["stream_id"]
    accuracy_at_least(accuracy, 0.90, accuracy_note)
