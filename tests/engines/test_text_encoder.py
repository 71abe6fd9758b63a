"""encode_text on every CPU backend: the same vectors as torch, in the window embedding's space.

Bounds as the other graphs': FP32 max abs diff <= 1e-4 against torch; FP16 and INT8 judged by
the decision they feed, the windows' best-matching prompt (zero-shot label), top-1 agreement
with FP32 >= 0.99 and >= 0.97 (the shipped model, on generated clips; the tiny random model
only bounds the cosine).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_engine import FakeEngine

from build_engine.captions import DEFAULT_PROMPTS, corpus
from engines import load_engine
from engines.base import TextUnavailable
from engines.manifest import load_manifest

SENTENCES = [*DEFAULT_PROMPTS.values(), "a small red key slides left", "A zebra!", *list(corpus(40, 7))[-40:]]


def test_tiny_text_encoder_fp32_matches_torch(tiny_model_dir: Path) -> None:
    with load_engine(tiny_model_dir, "torch") as ref, load_engine(tiny_model_dir, "onnxruntime") as ort:
        want, got = ref.encode_text(SENTENCES), ort.encode_text(SENTENCES)
        assert got.shape == (len(SENTENCES), ort.metadata.embed_dim) and got.dtype == np.float32
        assert float(np.abs(got - want).max()) <= 1e-4
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert ort.encode_text([]).shape == (0, ort.metadata.embed_dim)
        with pytest.raises(TypeError):
            ort.encode_text("one sentence")  # type: ignore[arg-type]


@pytest.mark.parametrize(("precision", "min_cos"), [("fp16", 0.995), ("int8", 0.95)])
def test_tiny_text_encoder_reduced_precision(tiny_model_dir: Path, precision: str, min_cos: float) -> None:
    with load_engine(tiny_model_dir) as fp32, load_engine(tiny_model_dir, "onnxruntime", precision) as low:
        cos = (fp32.encode_text(SENTENCES) * low.encode_text(SENTENCES)).sum(1)
    assert float(cos.min()) >= min_cos, cos.min()


def test_a_model_without_text_says_so() -> None:
    engine = FakeEngine()
    assert not engine.has_text
    with pytest.raises(TextUnavailable, match="no text encoder"):
        engine.encode_text(["x"])


@pytest.fixture(scope="module")
def shipped_text(default_model_dir: Path) -> Path:
    if load_manifest(default_model_dir, verify=False).text is None:
        pytest.skip("the shipped model has no text encoder")
    return default_model_dir


@pytest.fixture(scope="module")
def shipped_windows(shipped_text: Path) -> np.ndarray:
    from build_engine.export import calibration_clips
    from videobert.model import load_checkpoint

    m = load_manifest(shipped_text)
    clips = calibration_clips(load_checkpoint(str(shipped_text / m.checkpoint)), 256, 20_261_201)
    with load_engine(shipped_text, "torch") as ref:
        return np.concatenate([ref.infer_windows(clips[i : i + 64])[1] for i in range(0, len(clips), 64)])


def test_shipped_text_encoder_fp32_matches_torch(shipped_text: Path) -> None:
    with load_engine(shipped_text, "torch") as ref, load_engine(shipped_text) as ort:
        diff = float(np.abs(ort.encode_text(SENTENCES) - ref.encode_text(SENTENCES)).max())
    print(f"text_encoder fp32 max abs diff vs torch on {len(SENTENCES)} sentences: {diff:.2e}")
    assert diff <= 1e-4


@pytest.mark.parametrize(("precision", "min_agreement"), [("fp16", 0.99), ("int8", 0.97)])
def test_shipped_text_encoder_prompt_label_agreement(
    shipped_text: Path, shipped_windows: np.ndarray, precision: str, min_agreement: float
) -> None:
    prompts = list(load_manifest(shipped_text, verify=False).text.default_prompts.values())  # type: ignore[union-attr]
    with (
        load_engine(shipped_text, "torch") as ref,
        load_engine(shipped_text, "onnxruntime", precision) as low,
    ):
        want, got = ref.encode_text(prompts), low.encode_text(prompts)
    agreement = float(((shipped_windows @ got.T).argmax(1) == (shipped_windows @ want.T).argmax(1)).mean())
    cos = float((got * want).sum(1).min())
    print(
        f"text_encoder {precision}: prompt-label agreement {agreement:.4f} on {len(shipped_windows)} clips, least cosine {cos:.4f}"
    )
    assert agreement >= min_agreement
