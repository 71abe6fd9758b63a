"""`vbw ingest` with zones (a real subprocess, Tansu): each zone is published as its own stream,
keyed `<source id>/<zone>`, so the Kafka workers downstream analyse zone streams."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml
from services.procs import free_port
from services.tansu import consume_all

from media.clips import write_mp4
from worker.frames import Frame
from worker.kafka.frame_codec import FrameDecoder

REPO = Path(__file__).resolve().parents[2]
LEFT, RIGHT = (230, 30, 30), (30, 30, 230)


def test_ingest_publishes_each_zone_as_its_own_stream(broker, tmp_path: Path):
    broker.create_topics({"frames": 2})
    img = np.zeros((20, 120, 160, 3), np.uint8)
    img[:, :, :80], img[:, :, 80:] = LEFT, RIGHT
    clip = tmp_path / "halves.mp4"
    write_mp4(img, clip, 10.0, crf=12)
    cfg = {
        "sources": [
            {
                "type": "file",
                "id": "cam1",
                "path": str(clip),
                "zones": [
                    {"name": "left", "rect": [0, 0, 0.5, 1]},
                    {"name": "right", "rect": [0.5, 0, 1, 1]},
                ],
            }
        ],
        "sampling": {"fps": None},
        "kafka": {"bootstrap_servers": [broker.bootstrap]},
        "ingest": {"topic": "frames", "size": [32, 32], "quality": 90},
        "metrics": {"host": "127.0.0.1", "port": free_port()},
    }
    path = tmp_path / "ingest.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("VBW_")}
    err = tmp_path / "ingest.err"
    proc = subprocess.run(
        [sys.executable, "-m", "vbw.cli", "ingest", "-c", str(path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=err.open("wb"),
        timeout=120,
    )
    assert proc.returncode == 0, err.read_text()
    msgs = consume_all(broker.bootstrap, "frames", 40, timeout=20)
    assert len(msgs) == 40
    dec = FrameDecoder((32, 32))
    by_stream: dict[str, list[Frame]] = defaultdict(list)
    for m in msgs:
        f = dec.decode(
            m.key(), m.value(), m.headers(), m.timestamp()[1], (m.topic(), m.partition(), m.offset())
        )
        assert isinstance(f, Frame), f
        by_stream[f.stream_id].append(f)
    assert sorted(by_stream) == ["cam1/left", "cam1/right"]  # no whole-frame stream without full_frame
    for sid, color in (("cam1/left", LEFT), ("cam1/right", RIGHT)):
        frames = sorted(by_stream[sid], key=lambda f: f.seq)
        assert [f.seq for f in frames] == list(range(20)), sid
        np.testing.assert_allclose(frames[5].image.reshape(-1, 3).mean(0), color, atol=12)
    assert "stopped: 40 frames published, 0 failed" in err.read_text()
