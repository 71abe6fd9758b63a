"""The text side of VideoBERT: a caption encoder aligned with the window embedding, and the joint
video-text transformer used for the masked-token objective. Readable in one file, like model.py.

    token ids [B, L] (padded with 0) --TextEncoder--> masked mean of the states --> L2-normalised [B, E]
    window token states [B, T+1, d] --AlignHead--> L2-normalised [B, E]   (the published embedding)

`TextEncoder` and `AlignHead` are trained with InfoNCE so a caption and its window meet in one
space: `engine.encode_text(prompts)` and the worker's published window embedding compare by
cosine. `JointEncoder` is VideoBERT's own objective: one transformer over
`[CLS] text [SEP] visual words`, predicting hidden text tokens and hidden visual words from the
rest. It is used only in training (its word embeddings are the text encoder's), so the shipped
graphs do not carry it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

PAD_ID = 0  # the tokenizer's [PAD]; the encoder masks it out of attention and pooling


@dataclass
class TextConfig:
    vocab_size: int
    max_len: int = 24  # token ids per sentence, [CLS] and [SEP] included, padded with PAD_ID
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128
    embed_dim: int = 64  # E, the window embedding's width
    # Cosine-similarity temperature of prompt scores (zero-shot labels), fitted on held-out clips.
    prompt_temperature: float = 0.05

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TextConfig:
        return cls(**d)


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + 1e-12)


class MaskedSelfAttention(nn.Module):
    """Self-attention that ignores padded keys (`bias` is 0 or -1e4 per key; -1e4 fits FP16)."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (y.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2) for y in (q, k, v))
        # Written out (MatMul/Softmax) for the same reason as model.SelfAttention: every parser.
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1))) + bias[:, None, None, :]
        y = (F.softmax(att, dim=-1) @ v).transpose(1, 2).reshape(b, t, c)
        return self.out(y)


class TextBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = MaskedSelfAttention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), bias)
        return x + self.mlp(self.ln2(x))


def key_bias(keep: torch.Tensor) -> torch.Tensor:
    """0 where a key is attended, -1e4 where it is padding: [B, L] bool -> float."""
    return (1.0 - keep.float()) * -1e4


class TextEncoder(nn.Module):
    """int64 token ids [B, L] -> L2-normalised sentence embedding [B, E] (the text_encoder graph)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Parameter(torch.zeros(1, cfg.max_len, cfg.d_model))
        self.blocks = nn.ModuleList(
            TextBlock(cfg.d_model, cfg.n_heads, cfg.d_ff) for _ in range(cfg.n_layers)
        )
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.embed_dim)
        # InfoNCE temperature as CLIP learns it: logits = exp(logit_scale) * cosine.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.tok_emb.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        keep = ids != PAD_ID
        x = self.tok_emb(ids) + self.pos[:, : ids.shape[1]]
        bias = key_bias(keep)
        for block in self.blocks:
            x = block(x, bias)
        x = self.ln_f(x)
        w = keep.to(x.dtype).unsqueeze(-1)
        pooled = (x * w).sum(1) / w.sum(1).clamp(min=1.0)
        return l2_normalise(self.proj(pooled))


class AlignHead(nn.Module):
    """Window transformer states [B, T+1, d] -> L2-normalised embedding [B, E] in the text space.

    Reads the CLS state (what the classifier reads: the motion) and the mean of the frame states
    (what the window shows: the object's look), so a caption's colour and shape can be matched.
    """

    def __init__(self, d_model: int, embed_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, embed_dim)
        )

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        x = torch.cat([states[:, 0], states[:, 1:].mean(dim=1)], dim=-1)
        return l2_normalise(self.net(x))


class JointEncoder(nn.Module):
    """VideoBERT's joint model (training only): `[CLS] text [SEP] v1..vT` -> masked-token logits.

    Text tokens share the text encoder's embedding table (and its output layer is tied to it);
    visual words are the frozen codebook's ids. Segment embeddings tell the halves apart.
    """

    def __init__(self, text_encoder: TextEncoder, codebook_size: int, num_frames: int, n_layers: int = 2):
        super().__init__()
        cfg = text_encoder.cfg
        d = cfg.d_model
        self.text_emb = text_encoder.tok_emb  # shared
        self.word_emb = nn.Embedding(codebook_size + 1, d)  # + [MASK] word
        self.mask_word = codebook_size
        self.segment = nn.Parameter(torch.zeros(2, d))
        self.pos = nn.Parameter(torch.zeros(1, cfg.max_len + num_frames, d))
        self.blocks = nn.ModuleList(TextBlock(d, cfg.n_heads, cfg.d_ff) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head_words = nn.Linear(d, codebook_size)
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.segment, std=0.02)

    def forward(self, ids: torch.Tensor, words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(text logits [B, L, V], visual-word logits [B, T, K]) for ids [B, L], words [B, T]."""
        ell = ids.shape[1]
        x = (
            torch.cat([self.text_emb(ids) + self.segment[0], self.word_emb(words) + self.segment[1]], dim=1)
            + self.pos[:, : ell + words.shape[1]]
        )
        keep = torch.cat([ids != PAD_ID, torch.ones_like(words, dtype=torch.bool)], dim=1)
        bias = key_bias(keep)
        for block in self.blocks:
            x = block(x, bias)
        x = self.ln_f(x)
        return x[:, :ell] @ self.text_emb.weight.t(), self.head_words(x[:, ell:])
