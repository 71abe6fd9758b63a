"""`vbw ingest` (edge mode) as a real subprocess: a video file to a frames topic on Tansu."""

from __future__ import annotations

import fractions
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import yaml
from kafka_helpers import synthetic_image
from services.procs import free_port
from services.tansu import consume_all

from worker.frames import Frame
from worker.kafka.frame_codec import FrameDecoder

REPO = Path(__file__).resolve().parents[2]


def write_clip(path: Path, n: int, size=(120, 160), fps: int = 25) -> Path:
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.height, s.width = size
        s.pix_fmt = "yuv420p"
        s.time_base = fractions.Fraction(1, fps)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(synthetic_image(0, i, size), format="rgb24")
            frame.pts = i
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def ingest_config(tmp: Path, bootstrap: str, clip: Path, **source) -> Path:
    cfg = {
        "sources": [{"type": "file", "id": "clip-1", "path": str(clip), **source}],
        "sampling": {"fps": None},
        "kafka": {"bootstrap_servers": [bootstrap]},
        "ingest": {"topic": "frames", "size": [32, 32], "quality": 90},
        "metrics": {"host": "127.0.0.1", "port": free_port()},
        "pipeline": {"shutdown_grace_s": 10},
    }
    path = tmp / "ingest.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_ingest(config: Path, tmp: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("VBW_")}
    return subprocess.Popen(
        [sys.executable, "-m", "vbw.cli", "ingest", "-c", str(config)],
        cwd=REPO,
        env=env,
        stdout=(tmp / "ingest.out").open("wb"),
        stderr=(tmp / "ingest.err").open("wb"),
    )


def test_ingest_publishes_every_frame_of_a_file_then_exits_0(broker, tmp_path):
    broker.create_topics({"frames": 2})
    clip = write_clip(tmp_path / "clip.mp4", 50)
    proc = run_ingest(ingest_config(tmp_path, broker.bootstrap, clip), tmp_path)
    assert proc.wait(60) == 0, (tmp_path / "ingest.err").read_text()
    msgs = consume_all(broker.bootstrap, "frames", 50, timeout=20)
    assert len(msgs) == 50
    dec = FrameDecoder((32, 32))
    frames = []
    for m in msgs:
        out = dec.decode(
            m.key(), m.value(), m.headers(), m.timestamp()[1], (m.topic(), m.partition(), m.offset())
        )
        assert isinstance(out, Frame), out
        frames.append(out)
    assert {f.stream_id for f in frames} == {"clip-1"}
    assert [f.seq for f in frames] == list(range(50))
    assert [f.pts for f in frames] == sorted(f.pts for f in frames)
    assert abs(frames[1].pts - frames[0].pts - 0.04) < 1e-6
    assert all(f.image.shape == (32, 32, 3) for f in frames)
    assert np.ptp(frames[10].image) > 100  # a picture, not a flat field
    assert "stopped: 50 frames published, 0 failed" in (tmp_path / "ingest.err").read_text()


def test_ingest_marks_loops_with_a_reset_header_and_stops_on_sigterm(broker, tmp_path):
    broker.create_topics({"frames": 1})
    clip = write_clip(tmp_path / "clip.mp4", 20)
    proc = run_ingest(ingest_config(tmp_path, broker.bootstrap, clip, loop=True, realtime=True), tmp_path)
    try:
        msgs = consume_all(broker.bootstrap, "frames", 45, timeout=30)
        assert len(msgs) >= 45, (tmp_path / "ingest.err").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0, (tmp_path / "ingest.err").read_text()
    seqs = [int(dict(m.headers())["vbw-seq"]) for m in msgs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # never reused across loops
    resets = [i for i, m in enumerate(msgs) if "vbw-reset" in dict(m.headers())]
    assert resets[:2] == [20, 40], resets
    assert dict(msgs[20].headers())["vbw-reset"] == b"loop"


def test_ingest_reports_its_own_config_problems_with_the_schemas(tmp_path: Path, capsys) -> None:
    """Before anything starts: a kafka source (ingest publishes cameras and files) and no frame
    size (neither ingest.size nor a model to take it from), reported together, exit 2."""
    from vbw.cli import main

    cfg = tmp_path / "ingest.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "sources": [{"type": "kafka", "id": "k1", "topics": ["frames"]}],
                "engine": {"model_dir": str(tmp_path / "no-model")},
                "kafka": {"bootstrap_servers": ["127.0.0.1:1"]},
            }
        )
    )
    assert main(["ingest", "-c", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "2 problems" in err
    assert "sources.0.type: vbw ingest publishes file and rtsp sources" in err
    assert "ingest.size: not set, and no model to take it from" in err
    assert "Traceback" not in err
