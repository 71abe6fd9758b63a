"""VideoBERT, small. One readable file, in the manner of nanoGPT's model.py.

    uint8 frames --FrameEncoder--> features [D] --(per frame, cached)--+
                                                                      v
    [CLS] v1 .. vT --WindowEncoder (bidirectional transformer)--> CLS --> label scores
                                                                      --> L2-normalised embedding
                                                  token states v_i  --> masked visual-word logits

Visual words (VideoBERT's visual tokens) come from a k-means codebook over frame features.
`input_mode="tokens"` feeds the transformer the quantized words, as VideoBERT does;
`input_mode="features"` feeds the continuous features, as CBT does. Either way the codebook
gives the targets of masked visual-token prediction.

The two stages are separate modules so that they export to separate graphs: the worker runs
the frame encoder once per frame and the window encoder once per window.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class VideoBertConfig:
    image_size: int = 64  # square input, H = W
    num_frames: int = 16  # T
    labels: list[str] = field(default_factory=list)
    multi_label: bool = False  # sigmoid scores instead of softmax
    cnn_channels: tuple[int, ...] = (16, 32, 64, 64)  # one stride-2 conv block each
    feature_dim: int = 128  # D
    d_model: int = 128
    n_layers: int = 3
    n_heads: int = 4
    d_ff: int = 256
    dropout: float = 0.1
    codebook_size: int = 256  # K visual words
    embed_dim: int = 128  # E
    input_mode: Literal["features", "tokens"] = "features"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VideoBertConfig:
        d = dict(d)
        for k in ("cnn_channels", "mean", "std"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


class FrameEncoder(nn.Module):
    """uint8 [N, H, W, 3] RGB -> float [N, D]. Normalisation is part of the graph."""

    def __init__(self, cfg: VideoBertConfig):
        super().__init__()
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1) * 255.0)
        blocks: list[nn.Module] = []
        c_in = 3
        for c_out in cfg.cnn_channels:
            blocks += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
            c_in = c_out
        self.convs = nn.Sequential(*blocks)
        side = cfg.image_size // (2 ** len(cfg.cnn_channels))
        # Flatten, not global-pool: where the object is matters to motion.
        self.proj = nn.Linear(c_in * side * side, cfg.feature_dim)
        self.norm = nn.LayerNorm(cfg.feature_dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        x = self.convs(x)
        return self.norm(self.proj(x.flatten(1)))


class SelfAttention(nn.Module):
    def __init__(self, cfg: VideoBertConfig):
        super().__init__()
        assert cfg.d_model % cfg.n_heads == 0
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (y.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2) for y in (q, k, v))
        # Written out rather than F.scaled_dot_product_attention so the ONNX graph is plain
        # MatMul/Softmax that every runtime (and TensorRT's parser) handles. No mask: windows are full.
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = self.drop(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, t, c)
        return self.drop(self.out(y))


class Block(nn.Module):
    def __init__(self, cfg: VideoBertConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff),
            nn.GELU(),
            nn.Linear(cfg.d_ff, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class WindowEncoder(nn.Module):
    """float [B, T, D] frame features -> (scores [B, C], embedding [B, E])."""

    def __init__(self, cfg: VideoBertConfig):
        super().__init__()
        self.cfg = cfg
        # Visual-word codebook [K, D]; filled by k-means before pretraining.
        self.register_buffer("codebook", torch.zeros(cfg.codebook_size, cfg.feature_dim))
        if cfg.input_mode == "tokens":
            self.token_emb = nn.Embedding(cfg.codebook_size, cfg.d_model)
        else:
            self.in_proj = nn.Linear(cfg.feature_dim, cfg.d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.mask_emb = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.pos = nn.Parameter(torch.zeros(1, cfg.num_frames + 1, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head_labels = nn.Linear(cfg.d_model, cfg.num_labels)
        self.head_embed = nn.Linear(cfg.d_model, cfg.embed_dim)
        self.head_mlm = nn.Linear(cfg.d_model, cfg.codebook_size)
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.cls, std=0.02)
        nn.init.normal_(self.mask_emb, std=0.02)

    def quantize(self, features: torch.Tensor) -> torch.Tensor:
        """Nearest visual word per frame: [..., D] -> int64 [...]."""
        cb = self.codebook
        d2 = (features * features).sum(-1, keepdim=True) - 2 * features @ cb.t() + (cb * cb).sum(-1)
        return d2.argmin(-1)

    def encode(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Transformer states [B, T+1, d]; `mask` [B, T] bool hides frames for MLM."""
        if self.cfg.input_mode == "tokens":
            x = self.token_emb(self.quantize(features))
        else:
            x = self.in_proj(features)
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), self.mask_emb.to(x.dtype), x)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def heads(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(label logits [B, C], embedding [B, E] L2-normalised) from the CLS state."""
        cls = states[:, 0]
        e = self.head_embed(cls)
        e = e * torch.rsqrt((e * e).sum(-1, keepdim=True) + 1e-12)
        return self.head_labels(cls), e

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, embedding = self.heads(self.encode(features))
        scores = torch.sigmoid(logits) if self.cfg.multi_label else F.softmax(logits, dim=-1)
        return scores, embedding

    def forward_train(
        self, features: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(label logits [B, C], embedding [B, E], visual-word logits [B, T, K])."""
        states = self.encode(features, mask)
        logits, embedding = self.heads(states)
        return logits, embedding, self.head_mlm(states[:, 1:])


class VideoBERT(nn.Module):
    def __init__(self, cfg: VideoBertConfig):
        super().__init__()
        self.cfg = cfg
        self.frame_encoder = FrameEncoder(cfg)
        self.window_encoder = WindowEncoder(cfg)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] -> [B, T, D]."""
        b, t = frames.shape[:2]
        return self.frame_encoder(frames.reshape(b * t, *frames.shape[2:])).view(b, t, -1)

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole-window path: uint8 [B, T, H, W, 3] -> (scores, embedding)."""
        return self.window_encoder(self.encode_frames(clips))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def save_checkpoint(model: VideoBERT, path: str, extra: dict | None = None) -> None:
    """Weights and config only: the shipped checkpoint. Training state is saved by train.py."""
    torch.save({"config": model.cfg.to_dict(), "state_dict": model.state_dict(), **(extra or {})}, path)


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> VideoBERT:
    """Load a vbw checkpoint (ours or a user's fine-tuned one) and return the model in eval mode."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path}: not a vbw checkpoint (expected keys 'config' and 'state_dict')")
    model = VideoBERT(VideoBertConfig.from_dict(ckpt["config"]))
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: checkpoint does not fit the model: missing={missing} unexpected={unexpected}"
        )
    return model.eval()
