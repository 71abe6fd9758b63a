"""ONNX Runtime engine on CPU against the torch reference, and its clear errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from contracts.graph import FRAME_ENCODER, MANIFEST_NAME, MOTION_ENCODER, WINDOW_ENCODER, graph_filename
from engines import EngineUnavailable, load_engine
from engines.manifest import ModelDirError, load_manifest
from engines.onnxruntime_engine import resolve_providers


def _clips(model_dir: Path, n: int, seed: int = 0) -> np.ndarray:
    m = load_manifest(model_dir, verify=False)
    h, w = m.image_size
    return np.random.default_rng(seed).integers(0, 256, (n, m.num_frames, h, w, 3), dtype=np.uint8)


def test_fp32_matches_torch(tiny_model_dir: Path) -> None:
    clips = _clips(tiny_model_dir, 6)
    frames = clips.reshape(-1, *clips.shape[2:])
    with (
        load_engine(tiny_model_dir, "onnxruntime", "fp32") as ort_engine,
        load_engine(tiny_model_dir, "torch", "fp32") as ref,
    ):
        f_ort, f_ref = ort_engine.encode_frames(frames), ref.encode_frames(frames)
        assert f_ort.dtype == np.float32 and f_ort.shape == f_ref.shape
        assert np.abs(f_ort - f_ref).max() <= 1e-4
        feats = f_ref.reshape(6, clips.shape[1], -1)
        for got, want in zip(ort_engine.encode_windows(feats), ref.encode_windows(feats), strict=True):
            assert got.dtype == np.float32 and np.abs(got - want).max() <= 1e-4
        for got, want in zip(ort_engine.infer_windows(clips), ref.infer_windows(clips), strict=True):
            assert np.abs(got - want).max() <= 1e-4


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_incremental_equals_whole_window(tiny_model_dir: Path, precision: str) -> None:
    clips = _clips(tiny_model_dir, 5, seed=1)
    b, t = clips.shape[:2]
    with load_engine(tiny_model_dir, "onnxruntime", precision) as engine:
        feats = engine.encode_frames(clips.reshape(b * t, *clips.shape[2:])).reshape(b, t, -1)
        inc_scores, inc_emb = engine.encode_windows(feats)
        whole_scores, whole_emb = engine.infer_windows(clips)
    assert inc_scores.shape == (b, 5) and inc_emb.shape == (b, 16)
    np.testing.assert_allclose(inc_scores, whole_scores, atol=1e-5)
    np.testing.assert_allclose(inc_emb, whole_emb, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(inc_emb, axis=1), 1.0, atol=2e-3)


def test_metadata_and_warmup(tiny_model_dir: Path) -> None:
    with load_engine(tiny_model_dir, max_batch=4, intra_op_threads=1) as engine:
        m = engine.metadata
        assert (m.backend, m.precision, m.device, m.name, m.version) == (
            "onnxruntime",
            "fp32",
            "cpu",
            "tiny",
            "0.0.1",
        )
        assert (m.num_frames, m.image_size, m.feature_dim, m.token_dim, m.embed_dim, m.max_batch) == (
            8,
            (32, 32),
            32,
            32,
            16,
            4,
        )
        assert m.labels == ("a", "b", "c", "d", "e")
        engine.warmup()


@pytest.mark.parametrize(
    "options",
    [
        {"allow_spinning": True},
        {"intra_op_threads": 1, "inter_op_threads": 1},
        {"graph_optimization": "disable"},
        {"providers": ["CPUExecutionProvider"]},
        {"providers": "auto"},
    ],
)
def test_session_options_do_not_change_results(tiny_model_dir: Path, options: dict) -> None:
    clips = _clips(tiny_model_dir, 2, seed=2)
    with load_engine(tiny_model_dir) as base, load_engine(tiny_model_dir, **options) as engine:
        assert "CPUExecutionProvider" in engine.providers
        np.testing.assert_allclose(engine.infer_windows(clips)[0], base.infer_windows(clips)[0], atol=1e-5)


def test_provider_resolution() -> None:
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers("cuda", available) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers("auto", available) == available
    with pytest.raises(EngineUnavailable, match="TensorrtExecutionProvider not available"):
        resolve_providers("tensorrt", available)


def test_bad_inputs_get_one_line_errors(tiny_model_dir: Path) -> None:
    with load_engine(tiny_model_dir) as engine:
        with pytest.raises(ValueError, match=r"frames must be uint8 \[N, 32, 32, 3\], got float32"):
            engine.encode_frames(np.zeros((2, 32, 32, 3), np.float32))
        with pytest.raises(ValueError, match=r"features must be \[B, 8, 32\]"):
            engine.encode_windows(np.zeros((2, 7, 32), np.float32))
        with pytest.raises(ValueError, match=r"clips must be uint8 \[B, 8, 32, 32, 3\]"):
            engine.infer_windows(np.zeros((1, 8, 16, 16, 3), np.uint8))


def test_bad_options(tiny_model_dir: Path) -> None:
    with pytest.raises(TypeError, match="unknown options"):
        load_engine(tiny_model_dir, threads=2)
    with pytest.raises(ValueError, match="graph_optimization"):
        load_engine(tiny_model_dir, graph_optimization="max")
    with pytest.raises(EngineUnavailable, match="not available in this build"):
        load_engine(tiny_model_dir, providers="cuda")
    with pytest.raises(EngineUnavailable, match="unknown backend 'openvino'"):
        load_engine(tiny_model_dir, "openvino")


def test_missing_and_corrupt_model_dirs(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="does not exist"):
        load_engine(tmp_path / "absent")
    with pytest.raises(ModelDirError, match="no model manifest"):
        load_engine(tmp_path)

    bad = tmp_path / "corrupt"
    shutil.copytree(tiny_model_dir, bad)
    window_fp32 = graph_filename(WINDOW_ENCODER, "fp32")
    with (bad / window_fp32).open("r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ModelDirError, match=rf"{re.escape(window_fp32)}: sha256 .* does not match"):
        load_engine(bad)

    missing = tmp_path / "missing"
    shutil.copytree(tiny_model_dir, missing)
    frame_int8 = graph_filename(FRAME_ENCODER, "int8")
    (missing / frame_int8).unlink()
    with pytest.raises(
        ModelDirError, match=rf"{re.escape(frame_int8)}: listed in {re.escape(MANIFEST_NAME)} but missing"
    ):
        load_engine(missing, precision="int8")

    old = tmp_path / "before-motion-tokens"  # exported before the motion_encoder graph existed
    shutil.copytree(tiny_model_dir, old)
    doc = json.loads((old / MANIFEST_NAME).read_text())
    del doc["token_dim"]
    for graphs in doc["graphs"].values():
        del graphs[MOTION_ENCODER]
    (old / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(ModelDirError, match=rf"no fp32 {MOTION_ENCODER} graph or no token_dim.*re-export"):
        load_engine(old)

    no_int8 = tmp_path / "no-int8"
    shutil.copytree(tiny_model_dir, no_int8)
    doc = json.loads((no_int8 / MANIFEST_NAME).read_text())
    del doc["graphs"]["int8"]
    (no_int8 / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(ModelDirError, match=r"no int8 frame/window graphs .* present: fp32, fp16"):
        load_engine(no_int8, precision="int8")
