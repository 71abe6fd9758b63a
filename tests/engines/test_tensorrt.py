"""TensorRT: plan-cache keys and clear errors (pure, run everywhere), and the real engine where
tensorrt, pycuda and a GPU exist (skipped elsewhere, with the reason). No fake TensorRT."""

from __future__ import annotations

import importlib.util
import json
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from contracts.graph import (
    FRAME_ENCODER,
    MOTION_ENCODER,
    STAGES,
    WHOLE_WINDOW,
    WINDOW_ENCODER,
    graph_filename,
)
from engines import EngineUnavailable, load_engine
from engines.manifest import load_manifest
from engines.plan_cache import (
    PLAN_CACHE_ENV,
    PlanCache,
    PlanKey,
    Profile,
    default_cache_dir,
    timing_cache_name,
)
from engines.tensorrt_build import graph_profiles
from vbw.cli import main as vbw

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
HAVE_PYCUDA = importlib.util.find_spec("pycuda") is not None


def _gpu_reason() -> str | None:
    if not HAVE_TRT:
        return "tensorrt not installed"
    if not HAVE_PYCUDA:
        return "pycuda not installed"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            return "no CUDA GPU"
    except Exception as e:
        return f"no CUDA GPU ({e})"
    return None


SKIP_REASON = _gpu_reason()
needs_trt = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")

KEY = PlanKey(
    trt_version="10.13.0.35",
    compute_capability=(9, 0),
    onnx_sha256="ab" * 32,
    precision="fp16",
    profile=Profile(1, 8, 32),
)


# -- pure: plan cache and profiles ---------------------------------------------------------------


def test_profile_must_be_ordered_and_positive() -> None:
    assert str(Profile(1, 8, 32)) == "1-8-32"
    assert Profile(1, 8, 32).scaled(16) == Profile(1, 128, 512)
    for bad in [(0, 1, 2), (2, 1, 4), (1, 8, 4)]:
        with pytest.raises(ValueError, match="min <= opt <= max"):
            Profile(*bad)


def test_plan_key_changes_with_every_field() -> None:
    variants = [
        replace(KEY, trt_version="11.4.0.106"),
        replace(KEY, compute_capability=(8, 6)),
        replace(KEY, onnx_sha256="cd" * 32),
        replace(KEY, precision="int8"),
        replace(KEY, profile=Profile(1, 16, 32)),
    ]
    names = {KEY.filename(WINDOW_ENCODER)} | {k.filename(WINDOW_ENCODER) for k in variants}
    assert len(names) == 6
    assert len({KEY.digest(), *(k.digest() for k in variants)}) == 6
    assert replace(KEY) == KEY and KEY.digest() == replace(KEY).digest()  # stable
    name = KEY.filename(FRAME_ENCODER)
    assert name.startswith(f"{FRAME_ENCODER}.fp16.trt10.13.0.35.sm90.b1-8-32.") and name.endswith(".plan")
    assert KEY.filename(FRAME_ENCODER) != KEY.filename(WINDOW_ENCODER)


def test_plan_cache_store_load_invalidate(tmp_path: Path) -> None:
    cache = PlanCache(tmp_path / "plans")
    assert cache.load(KEY, WINDOW_ENCODER) is None
    path = cache.store(KEY, WINDOW_ENCODER, b"PLAN-BYTES")
    assert path.parent == tmp_path / "plans" and cache.load(KEY, WINDOW_ENCODER) == b"PLAN-BYTES"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["graph"] == WINDOW_ENCODER and meta["compute_capability"] == [9, 0] and meta["bytes"] == 10
    assert cache.load(replace(KEY, compute_capability=(8, 9)), WINDOW_ENCODER) is None  # other GPU: miss
    assert not list((tmp_path / "plans").glob("*.tmp"))  # atomic writes leave no temp files
    cache.invalidate(KEY, WINDOW_ENCODER)
    assert cache.load(KEY, WINDOW_ENCODER) is None and not path.with_suffix(".json").exists()


def test_timing_cache_is_per_tensorrt_build_and_gpu(tmp_path: Path) -> None:
    cache = PlanCache(tmp_path)
    assert cache.load_timing_cache("10.13", (9, 0)) == b""
    cache.store_timing_cache("10.13", (9, 0), b"T")
    assert cache.load_timing_cache("10.13", (9, 0)) == b"T"
    assert cache.load_timing_cache("10.13", (8, 0)) == b""
    assert cache.load_timing_cache("11.4", (9, 0)) == b""
    assert timing_cache_name("10.13", (9, 0)) == "timing.trt10.13.sm90.cache"


def test_default_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(PLAN_CACHE_ENV, str(tmp_path / "p"))
    assert default_cache_dir() == tmp_path / "p"
    monkeypatch.delenv(PLAN_CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "vbw" / "plans"


def test_graph_profiles_scale_frames_by_t(tiny_model_dir: Path) -> None:
    m = load_manifest(tiny_model_dir)
    windows = Profile(1, 4, 16)
    fp32 = graph_profiles(m, "fp32", windows)
    frames = Profile(1, 32, 128)  # T = 8 frames per window
    assert fp32[FRAME_ENCODER] == (graph_filename(FRAME_ENCODER, "fp32"), frames)
    assert fp32[MOTION_ENCODER] == (graph_filename(MOTION_ENCODER, "fp32"), frames)  # per frame too
    assert fp32[WINDOW_ENCODER] == (graph_filename(WINDOW_ENCODER, "fp32"), windows)
    assert fp32[WHOLE_WINDOW] == (graph_filename(WHOLE_WINDOW, "fp32"), windows)
    assert WHOLE_WINDOW not in graph_profiles(m, "int8", windows)  # composed from the stages


# -- clear errors where TensorRT cannot run ------------------------------------------------------


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")
def test_engine_says_tensorrt_is_missing(tiny_model_dir: Path) -> None:
    with pytest.raises(EngineUnavailable, match="tensorrt not installed"):
        load_engine(tiny_model_dir, "tensorrt", "fp16")


@pytest.mark.skipif(SKIP_REASON is None, reason="TensorRT and a GPU are present here")
def test_build_engine_exits_2_with_one_line_reason(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert vbw(["build-engine", "--model", str(tiny_model_dir), "--precision", "fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("vbw build-engine: cannot build TensorRT plans here:")


def test_build_engine_rejects_bad_arguments(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert vbw(["build-engine", "--model", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert vbw(["build-engine", "--model", str(tiny_model_dir), "--min", "8", "--opt", "4"]) == 2
    assert "min <= opt <= max" in capsys.readouterr().err


# -- the real thing: only where tensorrt, pycuda and a GPU exist ---------------------------------


def _clips(model_dir: Path, n: int) -> np.ndarray:
    m = load_manifest(model_dir, verify=False)
    h, w = m.image_size
    return np.random.default_rng(5).integers(0, 256, (n, m.num_frames, h, w, 3), dtype=np.uint8)


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_trt
@pytest.mark.parametrize(
    ("precision", "atol", "min_agree"), [("fp32", 1e-4, 1.0), ("fp16", 2e-2, 0.9), ("int8", 1e-1, 0.8)]
)
def test_tensorrt_matches_onnxruntime(
    tiny_model_dir: Path, tmp_path: Path, precision: str, atol: float, min_agree: float
) -> None:
    clips = _clips(tiny_model_dir, 12)
    with load_engine(tiny_model_dir) as ref:
        want_scores, _ = ref.infer_windows(clips)
    engine = load_engine(tiny_model_dir, "tensorrt", precision, cache_dir=tmp_path, max_batch=8, opt_batch=4)
    try:
        scores, emb = engine.infer_windows(clips)  # 12 > max batch 8: split in two
        assert scores.dtype == np.float32 and scores.shape == want_scores.shape
        assert np.abs(scores - want_scores).max() <= atol
        assert (scores.argmax(1) == want_scores.argmax(1)).mean() >= min_agree
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-2)
        b, t = clips.shape[:2]
        feats = engine.encode_frames(clips.reshape(b * t, *clips.shape[2:])).reshape(b, t, -1)
        inc, _ = engine.encode_windows(feats)
        assert np.abs(inc - scores).max() <= max(atol, 1e-4)
        # Tokens cached per frame (each with its predecessor), token 0 redone by the engine.
        flat = feats.reshape(b * t, -1)
        tokens = engine.encode_steps(flat, np.concatenate([flat[:1], flat[:-1]]))
        cached, _ = engine.encode_token_windows(feats[:, 0], tokens.reshape(b, t, -1))
        assert np.abs(cached - scores).max() <= max(atol, 1e-4)
    finally:
        engine.close()


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_trt
def test_plans_are_cached_and_bad_plans_rebuilt_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    clips = _clips(tiny_model_dir, 2)
    with load_engine(tiny_model_dir, "tensorrt", "fp16", cache_dir=tmp_path) as first:
        want = first.infer_windows(clips)[0]
    plans = sorted(tmp_path.glob("*.plan"))
    assert {p.name.split(".")[0] for p in plans} == {*STAGES, "text_encoder"}  # the tiny model has text
    assert list(tmp_path.glob("timing.*.cache"))
    stamps = {p: p.stat().st_mtime_ns for p in plans}
    with load_engine(tiny_model_dir, "tensorrt", "fp16", cache_dir=tmp_path, build_missing=False) as second:
        np.testing.assert_allclose(second.infer_windows(clips)[0], want, atol=1e-6)
    assert {p: p.stat().st_mtime_ns for p in plans} == stamps  # loaded, not rebuilt
    plans[0].write_bytes(b"not a plan")
    with load_engine(tiny_model_dir, "tensorrt", "fp16", cache_dir=tmp_path) as third:
        np.testing.assert_allclose(third.infer_windows(clips)[0], want, atol=1e-2)
    assert plans[0].read_bytes() != b"not a plan"


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_trt
def test_cuda_context_belongs_to_the_inference_thread(tiny_model_dir: Path, tmp_path: Path) -> None:
    engine = load_engine(tiny_model_dir, "tensorrt", "fp32", cache_dir=tmp_path)
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            engine.encode_tokens(np.zeros((1, 8, 32), np.float32))
        except RuntimeError as e:
            errors.append(e)

    try:
        engine.warmup()  # initialises the context in this thread
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        assert errors and "thread" in str(errors[0])
    finally:
        engine.close()


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_trt
def test_vbw_build_engine_fills_the_cache(tiny_model_dir: Path, tmp_path: Path) -> None:
    rc = vbw(
        [
            "build-engine",
            "--model",
            str(tiny_model_dir),
            "--precision",
            "all",
            "--cache",
            str(tmp_path),
            "--max",
            "8",
        ]
    )
    assert rc == 0
    assert len(list(tmp_path.glob("*.plan"))) == 10  # fp32: 4 graphs, fp16 and int8: 3 each


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_trt
@pytest.mark.parametrize(("precision", "min_cos"), [("fp32", 0.9999), ("fp16", 0.995), ("int8", 0.95)])
def test_encode_text_matches_onnxruntime(
    tiny_model_dir: Path, tmp_path: Path, precision: str, min_cos: float
) -> None:
    sentences = ["something moves left", "a small red key slides slowly to the left", "nothing moves"]
    with load_engine(tiny_model_dir) as ref:
        want = ref.encode_text(sentences)
    engine = load_engine(tiny_model_dir, "tensorrt", precision, cache_dir=tmp_path)
    try:  # the inference thread is this one: encode_text runs its own plan (int64 ids in)
        got = engine.encode_text(sentences)
    finally:
        engine.close()
    assert got.shape == want.shape
    assert float((got * want).sum(1).min()) >= min_cos
