"""VideoBERT, small. One readable file, in the manner of nanoGPT's model.py.

    uint8 frame t --FrameEncoder--> features f_t [D] = feature map [C, h, w]
    (f_t, f_t-1) --motion step--> token v_t [d]                 (per frame, cached)
    [CLS] v1 .. vT --WindowEncoder (bidirectional transformer)--> CLS --> label scores
                                                                      --> L2-normalised embedding
                                                  token states v_i  --> masked visual-word logits

Visual words (VideoBERT's visual tokens) come from a k-means codebook over frame features.
`input_mode="tokens"` feeds the transformer the quantized words, as VideoBERT does;
`input_mode="features"` feeds the continuous features, as CBT does. Either way the codebook
gives the targets of masked visual-token prediction.

In "features" mode a frame's token v_t is embedded from its feature map together with the
change since the previous frame, by a small convolution with wrap-around padding ("motion
embedding"). The labels are motions, and a convolution over (map, change) finds a shift or a
turn anywhere in the picture with the same weights; a transformer fed flattened maps would have
to learn every position's motion separately (it stayed at chance for 1,000 steps here).

The stages export to separate graphs: the worker runs the frame encoder and the motion
embedding's `step` (a frame with its predecessor) once per frame, and only the transformer
(`forward_tokens`) once per window.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from videobert.text_model import AlignHead, TextConfig, TextEncoder


@dataclass
class VideoBertConfig:
    image_size: int = 64  # square input, H = W
    num_frames: int = 16  # T
    labels: list[str] = field(default_factory=list)
    multi_label: bool = False  # sigmoid scores instead of softmax
    # Defaults are the shipped size: about 420k parameters, so fp32+fp16+int8 ONNX of all three
    # graphs plus the checkpoint stay under 10 MB, and training fits 15 minutes on 2 CPU cores.
    cnn_channels: tuple[int, ...] = (16, 32, 64)  # one stride-2 conv block each: 64px -> 8x8 map
    feature_dim: int = 512  # D = map channels x map side^2 (8 x 8 x 8)
    motion_channels: int = 48  # width of the motion embedding convolutions
    d_model: int = 96
    n_layers: int = 3
    n_heads: int = 4
    d_ff: int = 192
    dropout: float = 0.0  # generated data never repeats: nothing to regularise, it only slows
    codebook_size: int = 256  # K visual words
    embed_dim: int = 64  # E
    input_mode: Literal["features", "tokens"] = "features"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    # Temperature scaling (Guo et al. 2017): scores = softmax(logits / T), T fitted on held-out
    # clips after training so a score of 0.8 is right about 80% of the time. A constant in the
    # exported graphs, so every engine gives the same calibrated scores; training sees raw logits.
    score_temperature: float = 1.0
    # The text side (videobert.text_model.TextConfig as a dict), None for a vision-only model.
    # With it, the window embedding is the text-aligned one (AlignHead) and the model has a
    # text encoder: captions and windows compare by cosine.
    text: dict | None = None

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def map_side(self) -> int:
        return self.image_size // (2 ** len(self.cnn_channels))

    @property
    def map_channels(self) -> int:
        side = self.map_side
        if side < 1 or self.feature_dim % (side * side):
            raise ValueError(
                f"feature_dim={self.feature_dim} must be a multiple of the {side}x{side} feature map "
                f"(image_size={self.image_size}, {len(self.cnn_channels)} stride-2 blocks)"
            )
        return self.feature_dim // (side * side)

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
    """uint8 [N, H, W, 3] RGB -> float [N, D], a flattened [C, h, w] feature map.

    Normalisation is part of the graph. The map is not pooled: where things are is what motion
    is made of.
    """

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
        self.proj = nn.Conv2d(c_in, cfg.map_channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(cfg.map_channels)  # folds into the conv at export

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        return self.norm(self.proj(self.convs(x))).flatten(1)


class WrapConv(nn.Module):
    """3x3 convolution with wrap-around padding: the clips' objects leave one edge and enter the
    opposite one, so a motion is the same motion across the seam."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Written as concatenation rather than F.pad(mode="circular") so the graph is plain
        # Slice/Concat at every opset (ONNX Pad "wrap" needs opset 19).
        x = torch.cat([x[:, :, -1:], x, x[:, :, :1]], dim=2)
        x = torch.cat([x[:, :, :, -1:], x, x[:, :, :, :1]], dim=3)
        return self.conv(x)


def _wrap_shift(x: torch.Tensor, dim: int, step: int) -> torch.Tensor:
    """x rolled by `step` (+1 or -1) along `dim` with wrap-around, as Slice/Concat (no Roll op)."""
    if step == 1:
        return torch.cat([x.narrow(dim, x.size(dim) - 1, 1), x.narrow(dim, 0, x.size(dim) - 1)], dim=dim)
    return torch.cat([x.narrow(dim, 1, x.size(dim) - 1), x.narrow(dim, 0, 1)], dim=dim)


class MotionEmbedding(nn.Module):
    """Features [B, T, C*h*w] -> tokens [B, T, d], one frame at a time (`step`).

    Each frame's map f, its change since the previous frame d, and the products of d with the
    map's spatial gradients go through shared convolutions, pooled over the picture. The
    products are the gradient (optical-flow) motion cue: for a shift by v, d ~ -v . grad f, so
    d * df/dx has the sign of -v_x whatever the object's colour against its background. A
    convolution could only approximate such products, and in practice learnt the kind of motion
    (horizontal, vertical, scale, turn) but never its direction.
    """

    def __init__(self, cfg: VideoBertConfig):
        super().__init__()
        self.c, self.side = cfg.map_channels, cfg.map_side
        m = cfg.motion_channels
        self.net = nn.Sequential(
            WrapConv(4 * self.c, m),
            nn.GELU(),
            WrapConv(m, m, stride=2 if self.side >= 4 else 1),
            nn.GELU(),
            WrapConv(m, 2 * m),
            nn.GELU(),
        )
        self.out = nn.Linear(4 * m, cfg.d_model)

    def step(self, features: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """One token per frame: features [N, D] and the previous frame's [N, D] -> [N, d].

        Depends on nothing else in the window, so the worker computes it once per frame.
        """
        n = features.shape[0]
        f = features.reshape(n, self.c, self.side, self.side)
        d = f - prev.reshape(n, self.c, self.side, self.side)
        gx = (_wrap_shift(f, 3, -1) - _wrap_shift(f, 3, 1)) * 0.5
        gy = (_wrap_shift(f, 2, -1) - _wrap_shift(f, 2, 1)) * 0.5
        x = self.net(torch.cat([f, d, d * gx, d * gy], dim=1))
        # Mean says how much of a motion there is; max finds a small object's motion anywhere.
        x = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return self.out(x)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features [B, T, D] -> tokens [B, T, d]; a window's first frame sees no change."""
        b, t, dim = features.shape
        prev = torch.cat([features[:, :1], features[:, :-1]], dim=1)
        return self.step(features.reshape(b * t, dim), prev.reshape(b * t, dim)).view(b, t, -1)


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
    """float [B, T, D] frame features -> (scores [B, C], embedding [B, E]).

    Two parts, exported as two graphs: `step` (per frame: features and the previous frame's ->
    token) and `forward_tokens` (per window: the transformer and heads over T tokens).
    """

    def __init__(self, cfg: VideoBertConfig):
        super().__init__()
        self.cfg = cfg
        # Visual-word codebook [K, D]; filled by k-means before pretraining.
        self.register_buffer("codebook", torch.zeros(cfg.codebook_size, cfg.feature_dim))
        if cfg.input_mode == "tokens":
            self.token_emb = nn.Embedding(cfg.codebook_size, cfg.d_model)
        else:
            self.motion = MotionEmbedding(cfg)
            # Masked frames are hidden from the motion embedding too (their change would tell).
            self.mask_feature = nn.Parameter(torch.zeros(cfg.feature_dim))
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.mask_emb = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.pos = nn.Parameter(torch.zeros(1, cfg.num_frames + 1, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head_labels = nn.Linear(cfg.d_model, cfg.num_labels)
        self.head_embed = nn.Linear(cfg.d_model, cfg.embed_dim)
        self.head_mlm = nn.Linear(cfg.d_model, cfg.codebook_size)
        if cfg.text is not None:
            self.head_align = AlignHead(cfg.d_model, TextConfig.from_dict(cfg.text).embed_dim)
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.cls, std=0.02)
        nn.init.normal_(self.mask_emb, std=0.02)

    def quantize(self, features: torch.Tensor) -> torch.Tensor:
        """Nearest visual word per frame: [..., D] -> int64 [...]."""
        cb = self.codebook
        d2 = (features * features).sum(-1, keepdim=True) - 2 * features @ cb.t() + (cb * cb).sum(-1)
        return d2.argmin(-1)

    def step(self, features: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """A frame's token [N, d] from its features [N, D] and its window predecessor's [N, D]
        (the frame itself for a window's first frame). The motion_encoder graph."""
        if self.cfg.input_mode == "tokens":
            return self.token_emb(self.quantize(features))
        return self.motion.step(features, prev)

    def embed(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens [B, T, d] of whole windows of features [B, T, D]."""
        if self.cfg.input_mode == "tokens":
            return self.token_emb(self.quantize(features))
        if mask is not None:
            features = torch.where(mask.unsqueeze(-1), self.mask_feature.to(features.dtype), features)
        return self.motion(features)

    def encode_tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Transformer states [B, T+1, d] from tokens [B, T, d]; `mask` [B, T] bool hides frames."""
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), self.mask_emb.to(x.dtype), x)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def encode(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Transformer states [B, T+1, d]; `mask` [B, T] bool hides frames for MLM."""
        return self.encode_tokens(self.embed(features, mask), mask)

    def heads(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(label logits [B, C], embedding [B, E] L2-normalised) from the states.

        The embedding is the text-aligned one when the model has a text side (what the worker
        publishes and `vbw search` compares with `encode_text`), else the label-contrastive one.
        """
        cls = states[:, 0]
        if self.cfg.text is not None:
            return self.head_labels(cls), self.head_align(states)
        return self.head_labels(cls), self.label_embedding(states)

    def label_embedding(self, states: torch.Tensor) -> torch.Tensor:
        """The supervised-contrastive embedding of the CLS state (vision training's)."""
        e = self.head_embed(states[:, 0])
        return e * torch.rsqrt((e * e).sum(-1, keepdim=True) + 1e-12)

    def forward_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens [B, T, d] -> (calibrated scores [B, C], embedding [B, E]): the window_encoder graph."""
        logits, embedding = self.heads(self.encode_tokens(tokens))
        if self.cfg.score_temperature != 1.0:
            logits = logits / self.cfg.score_temperature
        scores = torch.sigmoid(logits) if self.cfg.multi_label else F.softmax(logits, dim=-1)
        return scores, embedding

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_tokens(self.embed(features))

    def forward_train(
        self, features: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(label logits [B, C], label-contrastive embedding [B, E], visual-word logits [B, T, K])."""
        states = self.encode(features, mask)
        return self.head_labels(states[:, 0]), self.label_embedding(states), self.head_mlm(states[:, 1:])


class VideoBERT(nn.Module):
    def __init__(self, cfg: VideoBertConfig):
        super().__init__()
        self.cfg = cfg
        self.frame_encoder = FrameEncoder(cfg)
        self.window_encoder = WindowEncoder(cfg)
        if cfg.text is not None:
            self.text_encoder = TextEncoder(TextConfig.from_dict(cfg.text))

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] -> [B, T, D]."""
        b, t = frames.shape[:2]
        return self.frame_encoder(frames.reshape(b * t, *frames.shape[2:])).view(b, t, -1)

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole-window path: uint8 [B, T, H, W, 3] -> (scores, embedding)."""
        return self.window_encoder(self.encode_frames(clips))

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """int64 token ids [B, L] -> L2-normalised [B, E] in the window embedding's space."""
        if self.cfg.text is None:
            raise ValueError("this model has no text encoder (trained without the text stage)")
        return self.text_encoder(ids)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def save_checkpoint(model: VideoBERT, path: str, extra: dict | None = None) -> None:
    """Weights and config only: the shipped checkpoint. Training state is saved by train.py."""
    torch.save({"config": model.cfg.to_dict(), "state_dict": model.state_dict(), **(extra or {})}, path)


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> VideoBERT:
    """Load a vbw checkpoint (ours or a user's fine-tuned one) and return the model in eval mode."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        # weights_only: a checkpoint from elsewhere cannot run code when it is loaded.
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path}: not a vbw checkpoint (expected keys 'config' and 'state_dict')")
    try:
        cfg = VideoBertConfig.from_dict(ckpt["config"])
    except TypeError as e:
        raise ValueError(f"{path}: checkpoint config does not match VideoBertConfig: {e}") from e
    model = VideoBERT(cfg)
    try:
        missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{path}: checkpoint weights do not fit its config: {e}") from e
    if missing or unexpected:
        raise ValueError(
            f"{path}: checkpoint does not fit the model: missing={missing} unexpected={unexpected}"
        )
    return model.eval()
