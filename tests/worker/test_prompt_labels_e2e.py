"""Zero-shot labels end to end: `vbw run` on a file source labels windows by the config's prompts,
and editing the prompts changes the published labels (after a restart; without retraining).

Needs a model with a text encoder: the shipped one, or VBW_TEXT_MODEL_DIR to try another."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from worker_helpers import WorkerProc

from engines.manifest import load_manifest

LEFT, RIGHT, STILL = "something moves to the left", "something moves to the right", "nothing moves"


@pytest.fixture(scope="module")
def text_model_dir() -> Path:
    path = Path(os.environ.get("VBW_TEXT_MODEL_DIR", "models/vbw-motion-small")).resolve()
    if not (path / "model.json").is_file() or load_manifest(path, verify=False).text is None:
        pytest.skip(f"{path}: no model with a text encoder")
    return path


def _top_labels(
    worker_proc: Callable[..., WorkerProc], tmp: Path, model: Path, clip: Path, prompts: dict[str, str]
) -> Counter:
    out = tmp / f"out-{len(list(tmp.glob('out-*')))}.jsonl"
    w = worker_proc(
        {
            "sources": [{"type": "file", "id": "cam", "path": str(clip)}],
            "engine": {"model_dir": str(model), "labels": {"prompts": prompts}},
            "sinks": [{"type": "jsonl", "path": str(out)}],
        },
        jsonl=out,
    )
    w.wait_ready(timeout=120)
    # 16 s at 5 fps = 80 frames; T=16, stride 8 -> 9 windows
    w.wait_for(lambda: len(w.windows()) >= 9, 120, "the clip's windows")
    rc, _ = w.sigterm(timeout=60)
    assert rc == 0, w.stderr()
    docs = w.windows()
    for d in docs:
        assert {ls["label"] for ls in d["labels"]} <= set(prompts), d["labels"]
        assert abs(sum(ls["score"] for ls in d["labels"]) - 1.0) < 1e-3 or len(d["labels"]) < len(prompts)
    return Counter(d["labels"][0]["label"] for d in docs)


def test_editing_prompts_changes_published_labels(
    worker_proc: Callable[..., WorkerProc],
    tmp_path: Path,
    text_model_dir: Path,
    all_label_clips: dict[str, Path],
) -> None:
    clip = all_label_clips["move_left"]
    first = _top_labels(
        worker_proc, tmp_path, text_model_dir, clip, {"left": LEFT, "right": RIGHT, "still": STILL}
    )
    assert first.most_common(1)[0][0] == "left", first
    # The same names, the sentences swapped: the labels follow the sentences.
    second = _top_labels(
        worker_proc, tmp_path, text_model_dir, clip, {"left": RIGHT, "right": LEFT, "still": STILL}
    )
    assert second.most_common(1)[0][0] == "right", second
    renamed = _top_labels(worker_proc, tmp_path, text_model_dir, clip, {"westward": LEFT, "other": STILL})
    assert renamed.most_common(1)[0][0] == "westward", renamed


def test_prompts_on_a_model_without_text_fail_at_start(
    worker_proc: Callable[..., WorkerProc],
    tmp_path: Path,
    all_label_clips: dict[str, Path],
    tiny_model_dir: Path,
) -> None:
    from build_engine.export import export_model
    from videobert.model import VideoBERT, load_checkpoint, save_checkpoint

    # A vision-only copy of the tiny model.
    model = load_checkpoint(str(tiny_model_dir / "checkpoint.pt"))
    text_keys = ("text_encoder.", "window_encoder.head_align.")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(text_keys)}
    model.cfg.text = None
    plain = VideoBERT(model.cfg)
    plain.load_state_dict(state)
    save_checkpoint(plain, str(tmp_path / "vision.pt"))
    export_model(tmp_path / "vision.pt", tmp_path / "m", calib_clips=4, check_clips=8, precisions=("fp32",))
    w = worker_proc(
        {
            "sources": [{"type": "file", "id": "cam", "path": str(all_label_clips["grow"])}],
            "engine": {"model_dir": str(tmp_path / "m"), "labels": {"prompts": {"a": "something grows"}}},
            "sinks": [{"type": "stdout"}],
        }
    )
    assert w.proc is not None
    assert w.proc.wait(timeout=120) != 0
    assert "engine.labels.prompts needs a model with a text encoder" in w.stderr()
