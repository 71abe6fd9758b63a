"""The text encoder, the align head, the joint encoder and the InfoNCE loss (torch, no export)."""

from __future__ import annotations

import torch

from build_engine.text_train import info_nce
from videobert.text_model import JointEncoder, TextConfig, TextEncoder


def _encoder() -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder(
        TextConfig(vocab_size=30, max_len=10, d_model=16, n_layers=1, n_heads=2, d_ff=32, embed_dim=8)
    ).eval()


def test_padding_changes_nothing_and_output_is_unit_length() -> None:
    enc = _encoder()
    ids = torch.tensor([[2, 7, 9, 11, 3, 0, 0, 0, 0, 0], [2, 5, 3, 0, 0, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        full = enc(ids)
        short = enc(ids[:, :6])  # less padding: the same sentence
    torch.testing.assert_close(full, short, atol=1e-5, rtol=0)
    torch.testing.assert_close(full.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)


def test_joint_encoder_predicts_both_halves() -> None:
    enc = _encoder()
    joint = JointEncoder(enc, codebook_size=12, num_frames=4)
    assert joint.text_emb is enc.tok_emb  # shared embeddings
    t_logits, w_logits = joint(torch.tensor([[2, 7, 4, 3, 0]]), torch.tensor([[1, 12, 5, 0]]))
    assert t_logits.shape == (1, 5, 30) and w_logits.shape == (1, 4, 12)


def test_info_nce_prefers_aligned_pairs_and_counts_every_positive() -> None:
    torch.manual_seed(1)
    x = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    eye = torch.eye(6, dtype=torch.bool)
    scale = torch.tensor(10.0)
    aligned = info_nce(x, x, eye, scale)
    shuffled = info_nce(x, x.roll(1, 0), eye, scale)
    assert aligned < shuffled
    # with every pair a positive, the loss is zero: nothing to tell apart
    assert float(info_nce(x, x.roll(1, 0), torch.ones(6, 6, dtype=torch.bool), scale)) < 1e-5


def test_masked_loss_of_a_batch_with_nothing_masked_is_zero_not_nan() -> None:
    from build_engine.text_train import masked_ce

    logits = torch.randn(2, 3, 5, requires_grad=True)
    assert float(masked_ce(logits, torch.full((2, 3), -100))) == 0.0
    assert float(masked_ce(logits, torch.tensor([[1, -100, -100], [-100, -100, 4]]))) > 0
