"""The text stage end to end on the smallest model: frozen vision, a text side, exported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_model import MINIMAL

from build_engine.text_train import TextTrainConfig, train_text
from media import clips
from videobert.model import VideoBERT, VideoBertConfig, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("text-train")
    torch.manual_seed(0)
    vision = VideoBERT(VideoBertConfig(**MINIMAL, labels=list(clips.MODEL_LABELS), num_frames=4)).eval()
    ckpt = tmp / "vision_in.pt"
    save_checkpoint(vision, str(ckpt), {"open_set": {"reject_threshold": 0.5, "fitted_on": "test"}})
    cfg = TextTrainConfig(windows=64, steps=4, batch_size=16, calib_windows=64, max_len=16, threads=1)
    logs: list[str] = []
    final = train_text(ckpt, tmp / "run", cfg, log=logs.append, progress=False)
    assert any("prompt temperature" in line for line in logs), logs
    return ckpt, final


def test_vision_is_frozen_and_text_side_added(trained: tuple[Path, Path]) -> None:
    before_path, final = trained
    before, after = load_checkpoint(str(before_path)), load_checkpoint(str(final))
    assert after.cfg.text is not None and before.cfg.text is None
    b = before.state_dict()
    for k, v in after.state_dict().items():
        if k in b:
            torch.testing.assert_close(v, b[k], rtol=0, atol=0, msg=k)
    raw = torch.load(str(final), weights_only=True)
    assert raw["open_set"]["reject_threshold"] == 0.5  # carried over
    assert raw["tokenizer"].startswith("{") and set(raw["default_prompts"]) == set(clips.MODEL_LABELS)
    assert raw["text_training"]["held_out_combos"]
    assert (final.parent / "vision.pt").is_file()
    # The classifier's scores are the vision model's; only the embedding changed space.
    x = torch.randint(0, 255, (2, 4, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(after(x)[0], before(x)[0])


def test_text_model_exports_and_encodes(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from build_engine.export import export_model
    from engines import load_engine

    result = export_model(trained[1], tmp_path / "m", calib_clips=4, check_clips=8)
    assert result.fp32_max_abs_diff["text_encoder"] <= 1e-4
    m = result.manifest
    assert m.text is not None and m.text.tokenizer == "tokenizer.json" and m.text.default_prompts
    assert {g for g in m.graphs["int8"]} >= {"text_encoder"}
    assert m.open_set is not None and m.open_set.reject_threshold == 0.5
    with load_engine(tmp_path / "m") as engine:
        v = engine.encode_text(["something moves left", "nothing moves"])
        _, emb = engine.infer_windows(np.zeros((1, 4, 32, 32, 3), np.uint8))
    assert v.shape == (2, emb.shape[1])


def test_text_stage_on_a_users_captioned_clips(tmp_path: Path) -> None:
    from media.clips import clip_rng, render_clip, write_mp4

    data = tmp_path / "data"
    data.mkdir()
    for i, label in enumerate(("move_left", "grow")):
        write_mp4(render_clip(label, clip_rng(3, i), 64, 36, 75, 25.0), data / f"{label}.mp4", 25.0)
    (data / "captions.jsonl").write_text(
        '{"file": "move_left.mp4", "captions": ["a car drives west", "traffic heading west"]}\n'
        '{"file": "grow.mp4", "caption": "a balloon inflates"}\n'
    )
    torch.manual_seed(0)
    vision = VideoBERT(VideoBertConfig(**MINIMAL, labels=list(clips.MODEL_LABELS), num_frames=4)).eval()
    save_checkpoint(vision, str(tmp_path / "v.pt"))
    logs: list[str] = []
    cfg = TextTrainConfig(steps=3, batch_size=4, max_len=16, threads=1, data=str(data))
    final = train_text(tmp_path / "v.pt", tmp_path / "run", cfg, log=logs.append, progress=False)
    assert any("captioned windows, 2 distinct captions" in line for line in logs), logs
    raw = torch.load(str(final), weights_only=True)
    assert "balloon" in raw["tokenizer"] and "inflates" in raw["tokenizer"]  # the user's words
    assert raw["text_training"]["data"] == str(data) and raw["text_training"]["held_out_combos"] == []
