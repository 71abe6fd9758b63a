"""The shipped model directory: size budget, manifest integrity, its open set (`none`, calibrated
scores, reject threshold), and accuracy through real video."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from build_engine.datasets import decode_analysis_frames
from contracts.graph import MANIFEST_NAME, PRECISIONS, STAGES, WHOLE_WINDOW
from engines.manifest import load_manifest, sha256_file
from media import clips

SIZE_BUDGET = 10 * 1024 * 1024


def test_shipped_dir_fits_the_size_budget(default_model_dir: Path) -> None:
    total = sum(f.stat().st_size for f in default_model_dir.rglob("*") if f.is_file())
    assert total <= SIZE_BUDGET, f"{default_model_dir}: {total / 1e6:.2f} MB > 10 MB"
    manifest = load_manifest(default_model_dir, verify=False)
    for precision in PRECISIONS:
        assert set(STAGES) <= set(manifest.graphs[precision]), precision
    assert WHOLE_WINDOW in manifest.graphs["fp32"]


def test_manifest_lists_every_file_with_its_sha256(default_model_dir: Path) -> None:
    manifest = load_manifest(default_model_dir, verify=True)
    on_disk = {f.name for f in default_model_dir.iterdir() if f.is_file() and f.name != MANIFEST_NAME}
    assert set(manifest.files) == on_disk
    for name, entry in manifest.files.items():
        assert sha256_file(default_model_dir / name) == entry.sha256
    assert manifest.name == "vbw-motion-small"
    assert manifest.labels == list(clips.MODEL_LABELS)
    assert manifest.training.get("analysis_fps") == 5.0
    assert isinstance(manifest.training.get("seed"), int)


def test_open_set_is_recorded_and_baked_into_the_graphs(default_model_dir: Path) -> None:
    from videobert.model import load_checkpoint

    manifest = load_manifest(default_model_dir, verify=False)
    os_ = manifest.open_set
    assert os_ is not None and os_.none_label == clips.NONE == manifest.labels[-1]
    assert 0.3 <= os_.reject_threshold < 1.0 and "held-out" in os_.fitted_on
    cfg = load_checkpoint(str(default_model_dir / manifest.checkpoint)).cfg
    assert cfg.score_temperature == os_.temperature != 1.0
    cal = manifest.training["calibration"]
    assert isinstance(cal, dict) and cal["ece_after"] <= cal["ece_before"]


def test_eval_cli_prints_accuracy(default_model_dir: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "vbw.cli",
            "eval",
            "--model",
            str(default_model_dir),
            "--clips",
            "40",
            "--seed",
            "424242",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    last = out.strip().splitlines()[-1]
    assert last.startswith("accuracy=") and len(last) == len("accuracy=0.973")
    assert float(last.split("=")[1]) >= 0.85, out
    # The open-set figures, one line each, with the families' table (a few clips each here).
    figures = dict(ln.split("  ")[0].split("=") for ln in out.splitlines() if "=" in ln and "(" in ln)
    assert set(figures) == {"motions_top1", "none_on_static", "ece_after", "auroc_ood"}, out
    assert float(figures["none_on_static"]) >= 0.85 and float(figures["auroc_ood"]) >= 0.8, out
    for family in (*clips.NONE_FAMILIES, *clips.OOD_FAMILIES):
        assert any(ln.startswith(family + " ") for ln in out.splitlines()), family


def test_every_window_of_a_long_clip_keeps_its_label(default_model_dir: Path, tmp_path: Path) -> None:
    """20 s single-label clips (25 fps, sampled to 5 fps, T=16 stride 4) straddle wraps and resets."""
    from engines import load_engine

    with load_engine(default_model_dir, "onnxruntime", "fp32") as engine:
        t = engine.metadata.num_frames
        bad = {}
        for i, label in enumerate(clips.LABELS):
            params = clips.sample_params(label, clips.clip_rng(777, i))
            path = tmp_path / f"{label}.mp4"
            clips.write_mp4(clips.iter_clip_frames(params, 160, 90, 500, 25.0), path, 25.0)
            _, frames = decode_analysis_frames(path, 64, 5.0)
            feats = engine.encode_frames(frames)
            # The worker's path: each frame's token once (prev = the stream's previous frame).
            tokens = engine.encode_steps(feats, np.concatenate([feats[:1], feats[:-1]]))
            starts = list(range(0, len(frames) - t + 1, 4))
            scores, _ = engine.encode_token_windows(
                feats[starts], np.stack([tokens[s : s + t] for s in starts])
            )
            wrong = int((scores.argmax(1) != i).sum())
            if wrong:
                bad[label] = f"{wrong}/{len(starts)}"
        # Allow one stray window in all the classes together, no more.
        assert sum(int(v.split("/")[0]) for v in bad.values()) <= 1, bad


def test_long_none_stretches_stay_none(default_model_dir: Path, tmp_path: Path) -> None:
    """20 s of each kind of training `none` content (no cut: a stretch of one scene), T=16 stride 4:
    the open-set decision is `none` in every window but one, over all the families together."""
    from engines import load_engine

    manifest = load_manifest(default_model_dir, verify=False)
    assert manifest.open_set is not None
    with load_engine(default_model_dir, "onnxruntime", "fp32") as engine:
        t = engine.metadata.num_frames
        bad, total = {}, 0
        for family in clips.SCENE_FAMILIES:
            for i in range(2):
                params = clips.sample_none(family, clips.family_rng(778, family, i))
                path = tmp_path / f"{family}{i}.mp4"
                clips.write_mp4(clips.iter_clip_frames(params, 160, 90, 500, 25.0), path, 25.0)
                _, frames = decode_analysis_frames(path, 64, 5.0)
                feats = engine.encode_frames(frames)
                tokens = engine.encode_steps(feats, np.concatenate([feats[:1], feats[:-1]]))
                starts = list(range(0, len(frames) - t + 1, 4))
                scores, _ = engine.encode_token_windows(
                    feats[starts], np.stack([tokens[s : s + t] for s in starts])
                )
                said = [manifest.open_set.decide(list(s), manifest.labels) for s in scores]
                wrong = [lb for lb in said if lb != clips.NONE]
                total += len(said)
                if wrong:
                    bad[f"{family}{i}"] = wrong
    assert sum(len(v) for v in bad.values()) <= 1, (bad, total)
