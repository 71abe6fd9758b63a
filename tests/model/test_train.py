"""Training end to end on a tiny model: every stage runs, checkpoints load, resume is exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_model import MINIMAL

from build_engine.train import STATE_NAME, Stopped, TrainConfig, kmeans, supcon_loss, train
from media import clips
from videobert.model import VideoBERT, VideoBertConfig, load_checkpoint, save_checkpoint


def tiny_model() -> VideoBertConfig:
    return VideoBertConfig(**MINIMAL, labels=list(clips.LABELS), num_frames=4)


def tiny_train_config(**kw) -> TrainConfig:
    base = dict(
        seed=5,
        batch_size=8,
        kmeans_clips=16,
        kmeans_iters=3,
        pretrain_steps=3,
        finetune_steps=4,
        val_every=2,
        val_windows=8,
        ckpt_every=2,
        threads=1,
    )
    return TrainConfig(**{**base, **kw})


def test_train_every_stage_then_resume_exactly(tmp_path: Path) -> None:
    quiet = dict(progress=False, log=lambda _: None)
    full = train(tiny_train_config(), tmp_path / "full", model_cfg=tiny_model(), **quiet)
    for name in ("stage1_codebook.pt", "stage2_pretrained.pt", STATE_NAME, "model.pt"):
        assert (tmp_path / "full" / name).is_file(), name
    model = load_checkpoint(str(full))
    raw = torch.load(full, weights_only=True)
    assert raw["training"]["seed"] == 5 and raw["training"]["steps"] == {"pretrain": 3, "finetune": 4}
    assert model.window_encoder.codebook.abs().sum() > 0

    # Stop in the middle of fine-tuning, as a killed run would, then resume from its state.
    with pytest.raises(Stopped):
        train(tiny_train_config(), tmp_path / "cut", model_cfg=tiny_model(), stop_at=("finetune", 3), **quiet)
    resumed = train(tiny_train_config(), tmp_path / "cut", resume=tmp_path / "cut" / STATE_NAME, **quiet)
    a = torch.load(full, weights_only=True)["state_dict"]
    b = torch.load(resumed, weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=f"{k} differs after resume")


def test_fine_tune_from_checkpoint_on_a_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for i, label in enumerate(("spin_left", "spin_right")):
        for j in range(2):
            src = clips.LABELS[6 + i]  # user labels with their own names
            (data / label).mkdir(parents=True, exist_ok=True)
            frames = clips.render_clip(src, clips.clip_rng(9, 2 * i + j), 64, 36, 30, 25.0)
            clips.write_mp4(frames, data / label / f"{j}.mp4", 25.0)
    init = tmp_path / "init.pt"
    save_checkpoint(VideoBERT(tiny_model()), str(init))
    out = train(
        tiny_train_config(data=str(data), init=str(init)), tmp_path / "ft", progress=False, log=lambda _: None
    )
    model = load_checkpoint(str(out))
    assert model.cfg.labels == ["spin_left", "spin_right"]
    assert model.window_encoder.head_labels.out_features == 2
    assert not (tmp_path / "ft" / "stage2_pretrained.pt").exists()  # fine-tuning only


def test_resume_refuses_what_is_not_a_training_state(tmp_path: Path) -> None:
    ckpt = tmp_path / "weights.pt"
    save_checkpoint(VideoBERT(tiny_model()), str(ckpt))
    with pytest.raises(ValueError, match="not a vbw training state"):
        train(tiny_train_config(), tmp_path / "x", resume=ckpt, progress=False, log=lambda _: None)
    with pytest.raises(FileNotFoundError):
        train(
            tiny_train_config(),
            tmp_path / "x",
            resume=tmp_path / "nope.pt",
            progress=False,
            log=lambda _: None,
        )


def test_checkpoint_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt: not a readable torch checkpoint"):
        load_checkpoint(str(junk))
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match=r"other\.pt: not a vbw checkpoint"):
        load_checkpoint(str(other))
    bad_cfg = tmp_path / "bad_cfg.pt"
    torch.save({"config": {"no_such_field": 1}, "state_dict": {}}, bad_cfg)
    with pytest.raises(ValueError, match="config does not match"):
        load_checkpoint(str(bad_cfg))
    model = VideoBERT(tiny_model())
    sd = model.state_dict()
    sd["window_encoder.head_labels.weight"] = torch.zeros(3, 3)
    shapes = tmp_path / "shapes.pt"
    torch.save({"config": model.cfg.to_dict(), "state_dict": sd}, shapes)
    with pytest.raises(ValueError, match="do not fit"):
        load_checkpoint(str(shapes))
    sd = model.state_dict()
    del sd["window_encoder.codebook"]
    missing = tmp_path / "missing_key.pt"
    torch.save({"config": model.cfg.to_dict(), "state_dict": sd}, missing)
    with pytest.raises(ValueError, match="missing="):
        load_checkpoint(str(missing))


def test_open_set_training_calibrates_and_records_the_reject_rule(tmp_path: Path) -> None:
    """With the `none` label, training ends by fitting the temperature and the reject threshold on
    held-out windows; the model applies the temperature to its scores, raw logits train."""
    cfg = VideoBertConfig(**MINIMAL, labels=list(clips.MODEL_LABELS), num_frames=4)
    final = train(
        tiny_train_config(calib_windows=32),
        tmp_path / "os",
        model_cfg=cfg,
        progress=False,
        log=lambda _: None,
    )
    raw = torch.load(final, weights_only=True)
    fitted = raw["open_set"]
    model = load_checkpoint(str(final))
    assert model.cfg.labels[-1] == clips.NONE
    assert fitted["temperature"] == pytest.approx(model.cfg.score_temperature, rel=1e-5)
    assert model.cfg.score_temperature != 1.0 and 0.0 <= fitted["reject_threshold"] < 1.0
    assert fitted["nll_after"] <= fitted["nll_before"] + 1e-9  # the fit can only lower held-out NLL
    assert raw["training"]["calibration"] == fitted
    with torch.no_grad():
        x = torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8)
        logits, _, _ = model.window_encoder.forward_train(model.encode_frames(x))
        scores, _ = model(x)
    want = torch.softmax(logits / model.cfg.score_temperature, dim=-1)
    torch.testing.assert_close(scores, want)
    # A model without `none` (the old 8 motions) keeps its scores as trained, and no reject rule.
    plain = train(
        tiny_train_config(), tmp_path / "plain", model_cfg=tiny_model(), progress=False, log=lambda _: None
    )
    raw = torch.load(plain, weights_only=True)
    assert "open_set" not in raw and load_checkpoint(str(plain)).cfg.score_temperature == 1.0


def test_generated_data_refuses_labels_it_cannot_draw(tmp_path: Path) -> None:
    cfg = VideoBertConfig(**MINIMAL, labels=["jump", "none"], num_frames=4)
    with pytest.raises(ValueError, match="folder dataset"):
        train(tiny_train_config(), tmp_path / "x", model_cfg=cfg, progress=False, log=lambda _: None)


def test_kmeans_and_supcon() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in centres])
    found = kmeans(x, 3, 10, seed=1)
    d = torch.cdist(centres, found).min(1).values
    assert torch.all(d < 0.2)
    with pytest.raises(ValueError, match="fewer than"):
        kmeans(x[:2], 3, 2, seed=0)
    y = torch.tensor([0, 0, 1, 1])
    good = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1, 0.01], [0, 1], [0.01, 1]]), dim=1)
    bad = good[[0, 2, 1, 3]]
    assert supcon_loss(good, y, 0.1) < supcon_loss(bad, y, 0.1)
    # Label 1 (`none`: unrelated content) is not pulled together: as if each of its windows were
    # alone in its class, so only label 0's anchors count.
    for emb in (good, bad):
        torch.testing.assert_close(
            supcon_loss(emb, y, 0.1, no_positives=1), supcon_loss(emb, torch.tensor([0, 0, 2, 3]), 0.1)
        )
    assert supcon_loss(bad, y, 0.1, no_positives=1) != supcon_loss(bad, y, 0.1)
