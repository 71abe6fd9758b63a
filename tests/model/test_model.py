"""The model's per-frame motion step is the window's motion embedding, frame by frame."""

from __future__ import annotations

import torch
from tiny_model import MINIMAL

from videobert.model import VideoBERT, VideoBertConfig

CFG = dict(MINIMAL, labels=["a", "b", "c"], num_frames=6)


def _model() -> VideoBERT:
    torch.manual_seed(0)
    model = VideoBERT(VideoBertConfig(**CFG)).eval()
    with torch.no_grad():  # non-zero mask parameters, as after training
        model.window_encoder.mask_feature.normal_()
        model.window_encoder.mask_emb.normal_()
    return model


@torch.no_grad()
def test_tokens_from_cached_stream_steps_equal_the_window_forward() -> None:
    model, t = _model(), CFG["num_frames"]
    we = model.window_encoder
    stream = torch.randn(t + 5, CFG["feature_dim"])
    # Each stream frame's token once, with the stream's previous frame (frame 0: itself).
    tokens = we.step(stream, torch.cat([stream[:1], stream[:-1]]))
    for s in range(0, 6):
        window = tokens[s : s + t].clone()
        window[0] = we.step(stream[s : s + 1], stream[s : s + 1])[0]  # a window's first frame: no change
        got = we.forward_tokens(window[None])
        want = we(stream[None, s : s + t])
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, atol=1e-6, rtol=0)


@torch.no_grad()
def test_masked_frames_stay_hidden_from_the_motion_embedding() -> None:
    model = _model()
    we = model.window_encoder
    feats = torch.randn(2, CFG["num_frames"], CFG["feature_dim"])
    mask = torch.zeros(2, CFG["num_frames"], dtype=torch.bool)
    mask[:, 2] = True
    changed = feats.clone()
    changed[:, 2] += 5.0  # what a masked frame holds, and so its change to frame 3, must not tell
    for a, b in zip(we.forward_train(feats, mask), we.forward_train(changed, mask), strict=True):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(we.forward_train(feats)[0], we.forward_train(changed)[0])


def test_state_dict_keys_unchanged() -> None:
    keys = set(_model().state_dict())
    assert {"window_encoder.motion.out.weight", "window_encoder.mask_feature", "window_encoder.pos"} <= keys
    assert not any(".step" in k for k in keys)
