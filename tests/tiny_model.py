"""A tiny randomly initialised VideoBERT exported once per test session (tests/export, tests/engines).

Small enough to export in a few seconds; shaped like the real one (two stages, three precisions).
Both areas' conftests call `tiny_model_dir`, and the cache makes it one export per session.
"""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from pathlib import Path

TINY = dict(
    image_size=32,
    num_frames=8,
    labels=["a", "b", "c", "d", "e"],
    cnn_channels=(8, 16, 16),
    feature_dim=32,
    d_model=32,
    n_layers=2,
    n_heads=2,
    d_ff=64,
    codebook_size=16,
    embed_dim=16,
)

TINY_TEXT = dict(max_len=12, d_model=16, n_layers=1, n_heads=2, d_ff=32)
TINY_PROMPTS = {
    "a": "something moves left",
    "b": "something moves right",
    "c": "something grows",
    "d": "something shrinks",
    "e": "nothing moves",
}

# The smallest model of the shipped architecture (a 2-block CNN, one transformer layer), for
# the training and model tests: add labels and num_frames.
MINIMAL = dict(
    image_size=32,
    cnn_channels=(8, 8),
    feature_dim=4 * 8 * 8,
    motion_channels=8,
    d_model=16,
    n_layers=1,
    n_heads=2,
    d_ff=32,
    codebook_size=16,
    embed_dim=8,
)


@cache
def tiny_model_dir(root: Path) -> Path:
    import torch

    from build_engine.captions import corpus
    from build_engine.export import export_model
    from build_engine.text_tokenizer import train_tokenizer
    from build_engine.text_train import with_text
    from videobert.model import VideoBERT, VideoBertConfig, save_checkpoint
    from videobert.text_model import TextConfig

    torch.manual_seed(0)
    fields = {f.name for f in dataclasses.fields(VideoBertConfig)}
    extra = {"motion_channels": 8} if "motion_channels" in fields else {}
    model = VideoBERT(VideoBertConfig(**TINY, **extra)).eval()
    # Spread the scores: a freshly initialised head gives near-uniform softmax, and ties make
    # top-1 comparisons meaningless.
    with torch.no_grad():
        model.window_encoder.head_labels.weight.mul_(20.0)
    # A text side too (text_encoder graph, tokenizer.json), so every graph of the contract is there.
    tokenizer = train_tokenizer(corpus(300), TINY_TEXT["max_len"])
    vocab = len(json.loads(tokenizer)["model"]["vocab"])
    model = with_text(model, TextConfig(vocab_size=vocab, embed_dim=TINY["embed_dim"], **TINY_TEXT)).eval()
    ckpt = root / "tiny.pt"
    extra = {
        "training": {"note": "random init, tests only"},
        "tokenizer": tokenizer,
        "default_prompts": TINY_PROMPTS,
    }
    save_checkpoint(model, str(ckpt), extra)
    out = root / "tiny-model"
    export_model(ckpt, out, name="tiny", version="0.0.1", calib_clips=8)
    return out
