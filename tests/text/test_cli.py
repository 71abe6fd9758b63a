"""`vbw eval --zero-shot` on the shipped model, and `vbw train`'s text-stage flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from vbw.cli import main as vbw


def test_eval_zero_shot_reports_every_figure(
    default_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = vbw(
        ["eval", "--zero-shot", "--model", str(default_model_dir), "--clips", "32", "--combo-clips", "2"]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    for what in (
        "zero-shot: top-1",
        "closed-set classifier motions top-1",
        "recall@5",
        "window-to-window mAP",
    ):
        assert what in out
    assert "target zero_shot_top1 >= 0.85" in out


def test_eval_zero_shot_on_a_model_without_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert vbw(["eval", "--zero-shot", "--model", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text-only"], "--text-only adds the text stage to a trained checkpoint: give it --init"),
        (["--text-only", "--no-text", "--init", "x.pt"], "contradict"),
        (["--text-steps", "0"], "must be positive"),
    ],
)
def test_train_text_flags_are_checked(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert vbw(["train", "--out", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
