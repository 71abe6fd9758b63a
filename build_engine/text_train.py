"""The text stage of `vbw train`: a caption encoder aligned with a trained (frozen) vision model.

On top of the visual-word pretraining and label fine-tuning of train.py, with the vision model
frozen (so the classifier keeps exactly its scores and calibration):

1. tokenizer: a word-level `tokenizers` model trained on the caption corpus (and the user's
   captions with --data);
2. windows: captioned generated windows (build_engine.captions; the held-out (motion, shape,
   colour) combinations never drawn), or the user's captioned clips; their frozen transformer
   states and visual words are computed once and cached;
3. joint training of the text encoder and the window's AlignHead:
   - contrastive video-text alignment: InfoNCE, both directions, between the window embedding
     and its caption's embedding. Windows that show the same thing (same motion, or `none`;
     same captions for a user's clips) are positives of each other, not negatives;
   - VideoBERT's joint objective: masked text tokens and masked visual words predicted by one
     transformer over `[CLS] caption [SEP] visual words` (videobert.text_model.JointEncoder);
4. calibration: the temperature of prompt scores (softmax over cosine similarities to the
   prompts), fitted on held-out windows with the default prompt per label.

The result is the same checkpoint with the text side added (`cfg.text`, the tokenizer as JSON).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from build_engine import calibration, captions
from build_engine.text_tokenizer import SPECIAL_TOKENS, train_tokenizer
from videobert.model import VideoBERT, VideoBertConfig, save_checkpoint
from videobert.text_model import JointEncoder, TextConfig

TEXT_STREAM = 0x7E47  # seed-stream tag of the text stage's generated windows
MASK_ID = SPECIAL_TOKENS.index("[MASK]")
FIRST_WORD_ID = len(SPECIAL_TOKENS)


@dataclass
class TextTrainConfig:
    seed: int = 1
    windows: int = 2048  # captioned training windows (frozen states cached)
    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.01
    joint_weight: float = 0.5  # weight of the masked-token (VideoBERT joint) losses
    text_mask_prob: float = 0.15
    word_mask_prob: float = 0.3
    calib_windows: int = 1024
    max_len: int = 24
    threads: int = 2
    data: str | None = None  # a user's captioned clips (captions.jsonl) instead of generated


@dataclass
class Cached:
    states: torch.Tensor  # [N, T+1, d] frozen window transformer states
    words: torch.Tensor  # [N, T] visual-word ids
    keys: list[str]  # what a window shows; equal keys are positives
    attrs: list[captions.Attributes] | None  # generated windows: their attributes
    sentences: list[list[str]] | None  # user windows: their captions


def _key(a: captions.Attributes) -> str:
    # Every `none` family is one key: "nothing moves" must match all of them (the label's prompt).
    return a.motion


@torch.no_grad()
def encode_windows(model: VideoBERT, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen (states [B, T+1, d], visual words [B, T]) of uint8 windows."""
    feats = model.encode_frames(torch.from_numpy(x))
    return model.window_encoder.encode(feats), model.window_encoder.quantize(feats)


def generated_windows(model: VideoBERT, n: int, seed: tuple[int, ...], batch: int = 64) -> Cached:
    gen = captions.CaptionedClips(seed=seed, num_frames=model.cfg.num_frames, image_size=model.cfg.image_size)
    states, words, attrs = [], [], []
    for i in range(max(1, n // batch)):
        x, a = gen.batch(i, batch)
        s, w = encode_windows(model, x)
        states.append(s)
        words.append(w)
        attrs += a
    return Cached(torch.cat(states), torch.cat(words), [_key(a) for a in attrs], attrs, None)


def user_windows(model: VideoBERT, root: str, log: Callable[[str], None]) -> Cached:
    from build_engine.text_data import load_captioned_windows

    cw = load_captioned_windows(root, model.cfg.num_frames, model.cfg.image_size)
    for err in cw.errors:
        log(f"text data: skipped {err}")
    states, words = [], []
    for i in range(0, len(cw.frames), 64):
        s, w = encode_windows(model, cw.frames[i : i + 64])
        states.append(s)
        words.append(w)
    keys = [" | ".join(sorted(s)) for s in cw.sentences]
    log(f"text data: {root}: {len(keys)} captioned windows, {len(set(keys))} distinct captions")
    return Cached(torch.cat(states), torch.cat(words), keys, None, cw.sentences)


def with_text(model: VideoBERT, text_cfg: TextConfig) -> VideoBERT:
    """A copy of a (vision) model with a fresh text side; the vision weights are kept as they are."""
    vision = {
        k: v
        for k, v in model.state_dict().items()
        if not k.startswith(("text_encoder.", "window_encoder.head_align."))
    }
    cfg = VideoBertConfig.from_dict({**model.cfg.to_dict(), "text": text_cfg.to_dict()})
    out = VideoBERT(cfg)
    missing, unexpected = out.load_state_dict(vision, strict=False)
    if unexpected or any(not k.startswith(("text_encoder.", "window_encoder.head_align.")) for k in missing):
        raise ValueError(f"vision weights do not fit: missing={missing} unexpected={unexpected}")
    return out


def info_nce(win: torch.Tensor, txt: torch.Tensor, pos: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with several positives: -log(sum of positives' probability), both ways."""
    logits = scale * win @ txt.t()
    neg_inf = torch.finfo(logits.dtype).min
    lp_v = torch.log_softmax(logits, dim=1).masked_fill(~pos, neg_inf)
    lp_t = torch.log_softmax(logits.t(), dim=1).masked_fill(~pos.t(), neg_inf)
    return -(torch.logsumexp(lp_v, 1).mean() + torch.logsumexp(lp_t, 1).mean()) / 2


def mask_tokens(
    ids: torch.Tensor, words: torch.Tensor, cfg: TextTrainConfig, mask_word: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(masked ids, text targets, masked words, word targets); targets -100 where not predicted."""
    maskable = ids >= FIRST_WORD_ID
    m_t = (torch.rand(ids.shape, generator=g) < cfg.text_mask_prob) & maskable
    m_w = torch.rand(words.shape, generator=g) < cfg.word_mask_prob
    return (
        ids.masked_fill(m_t, MASK_ID),
        ids.masked_fill(~m_t, -100),
        words.masked_fill(m_w, mask_word),
        words.masked_fill(~m_w, -100),
    )


def masked_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the predicted (masked) positions; 0 when a batch masked none (a small
    batch can), where cross_entropy's mean over nothing would be NaN."""
    if not bool((targets != -100).any()):
        return logits.sum() * 0
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


def prompt_labels_of(labels: list[str]) -> list[str]:
    return [captions.DEFAULT_PROMPTS.get(lb, lb.replace("_", " ")) for lb in labels]


class Tokenize:
    def __init__(self, tokenizer_json: str):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_str(tokenizer_json)

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([e.ids for e in self.tok.encode_batch(texts)], dtype=torch.int64)


@torch.no_grad()
def fit_prompt_temperature(
    model: VideoBERT, tokenize: Tokenize, cached: Cached, labels: list[str]
) -> tuple[float, float]:
    """(temperature, top-1) of prompt scores softmax(cos / T) on held-out windows."""
    model.eval()
    prompts = model.encode_text(tokenize(prompt_labels_of(labels)))
    win = model.window_encoder.head_align(cached.states)
    sims = (win @ prompts.t()).double().numpy()
    y = np.array([labels.index(k) for k in cached.keys])
    t = calibration.fit_temperature(sims, y, lo=1e-3, hi=1.0)
    return t, float((sims.argmax(1) == y).mean())


def vision_extras(raw: dict, checkpoint: Path) -> dict:
    """What the vision checkpoint records about its training and open-set rule. A model
    directory's checkpoint.pt holds weights only: then they come from its model.json."""
    extra = {k: raw[k] for k in ("training", "open_set") if k in raw}
    manifest_path = checkpoint.parent / "model.json"
    if "open_set" not in extra and manifest_path.is_file():
        import json

        manifest = json.loads(manifest_path.read_text())
        if manifest.get("open_set"):
            extra["open_set"] = {
                k: v for k, v in manifest["open_set"].items() if k in ("reject_threshold", "fitted_on")
            }
        if manifest.get("training") and "training" not in extra:
            extra["training"] = manifest["training"]
    return extra


def train_text(
    checkpoint: str | Path,
    out_dir: str | Path,
    cfg: TextTrainConfig,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> Path:
    """Add the text side to `checkpoint` (frozen); writes OUT/model.pt and returns its path.
    The vision-only checkpoint is kept beside it as OUT/vision.pt."""
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    raw = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    vision_cfg = VideoBertConfig.from_dict(raw["config"])
    vision_cfg.text = None
    base = VideoBERT(vision_cfg)
    base.load_state_dict(
        {
            k: v
            for k, v in raw["state_dict"].items()
            if not k.startswith(("text_encoder.", "window_encoder.head_align."))
        }
    )
    base.eval()
    vision_path = out / "vision.pt"
    if Path(checkpoint).resolve() != vision_path.resolve():
        save_checkpoint(
            base, str(vision_path), extra={k: raw[k] for k in ("training", "open_set") if k in raw}
        )

    t0 = time.time()
    if cfg.data:
        cached = user_windows(base, cfg.data, log)
        extra_text = [s for ss in (cached.sentences or []) for s in ss]
    else:
        cached = generated_windows(base, cfg.windows, (TEXT_STREAM, cfg.seed, 0))
        extra_text = []
    log(f"text: {len(cached.keys)} windows rendered and encoded (frozen vision) in {time.time() - t0:.1f}s")
    tok_json = train_tokenizer([*captions.corpus(seed=cfg.seed), *extra_text], cfg.max_len)
    tokenize = Tokenize(tok_json)
    text_cfg = TextConfig(
        vocab_size=tokenize.tok.get_vocab_size(), max_len=cfg.max_len, embed_dim=vision_cfg.embed_dim
    )
    torch.manual_seed(cfg.seed)
    model = with_text(base, text_cfg)
    model.requires_grad_(False)
    model.eval()
    trainable = [model.text_encoder, model.window_encoder.head_align]
    joint = JointEncoder(model.text_encoder, vision_cfg.codebook_size, vision_cfg.num_frames)
    params = [p for m in trainable for p in m.parameters()] + [
        p for n, p in joint.named_parameters() if not n.startswith("text_emb.")
    ]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    log(
        f"text: tokenizer {text_cfg.vocab_size} words; text encoder "
        f"{sum(p.numel() for p in model.text_encoder.parameters()):,} + align head "
        f"{sum(p.numel() for p in model.window_encoder.head_align.parameters()):,} parameters "
        f"(joint encoder {sum(p.numel() for n, p in joint.named_parameters() if not n.startswith('text_emb.')):,}, training only)"
    )
    for m in (*trainable, joint):
        m.train()
    n = len(cached.keys)
    keys = np.array(cached.keys)
    bar = tqdm(total=cfg.steps, desc="text", unit="step", disable=not progress, dynamic_ncols=True)
    ema = None
    for step in range(cfg.steps):
        rng = np.random.default_rng([TEXT_STREAM, cfg.seed, 1, step])
        g = torch.Generator().manual_seed(int(rng.integers(2**62)))
        idx = rng.choice(n, size=min(cfg.batch_size, n), replace=False)
        if cached.attrs is not None:
            sentences = [captions.caption(cached.attrs[i], rng) for i in idx]
        else:
            sentences = [str(rng.choice(cached.sentences[i])) for i in idx]  # type: ignore[index]
        ids = tokenize(sentences)
        states, words = cached.states[idx], cached.words[idx]
        lr = cfg.lr * min(1.0, (step + 1) / 50) * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * step / cfg.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        txt = model.text_encoder(ids)
        win = model.window_encoder.head_align(states)
        pos = torch.from_numpy(keys[idx][:, None] == keys[idx][None, :])
        scale = model.text_encoder.logit_scale.clamp(max=np.log(100.0)).exp()
        nce = info_nce(win, txt, pos, scale)
        m_ids, t_tgt, m_words, w_tgt = mask_tokens(ids, words, cfg, joint.mask_word, g)
        t_logits, w_logits = joint(m_ids, m_words)
        mlm_t, mlm_w = masked_ce(t_logits, t_tgt), masked_ce(w_logits, w_tgt)
        loss = nce + cfg.joint_weight * (mlm_t + mlm_w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lv = (nce.item(), mlm_t.item(), mlm_w.item())
        ema = lv if ema is None else tuple(0.95 * a + 0.05 * b for a, b in zip(ema, lv, strict=True))
        bar.update(1)
        bar.set_postfix(nce=f"{ema[0]:.3f}", mlm_text=f"{ema[1]:.2f}", mlm_words=f"{ema[2]:.2f}")
    bar.close()
    model.eval()

    info: dict = {
        "steps": cfg.steps,
        "windows": n,
        "final_loss": {
            "info_nce": round(ema[0], 4),
            "mlm_text": round(ema[1], 4),
            "mlm_words": round(ema[2], 4),
        }
        if ema
        else {},
        "held_out_combos": [list(c) for c in captions.HELD_OUT_COMBOS] if not cfg.data else [],
        "data": cfg.data or "generated captions (build_engine.captions)",
        "vision": "frozen (classifier scores and calibration unchanged)",
    }
    labels = list(vision_cfg.labels)
    if not cfg.data and all(k in labels for k in cached.keys):
        held = generated_windows(base, cfg.calib_windows, (TEXT_STREAM, cfg.seed, 2))
        temp, top1 = fit_prompt_temperature(model, tokenize, held, labels)
        text_cfg.prompt_temperature = temp
        info["prompt_calibration"] = {
            "temperature": round(temp, 6),
            "default_prompts_top1": round(top1, 4),
            "fitted_on": f"{len(held.keys)} held-out generated windows, default prompt per label",
        }
        log(
            f"text: prompt temperature {temp:.4f}; default prompts top-1 {top1:.3f} on {len(held.keys)} held-out windows"
        )
    model.cfg.text = text_cfg.to_dict()
    model.window_encoder.cfg.text = model.cfg.text
    info["wall_s"] = round(time.time() - t_start, 1)
    info["config"] = asdict(cfg)
    extra = vision_extras(raw, Path(checkpoint))
    extra["text_training"] = info
    extra["tokenizer"] = tok_json
    extra["default_prompts"] = dict(zip(labels, prompt_labels_of(labels), strict=True))
    final = out / "model.pt"
    save_checkpoint(model, str(final), extra=extra)
    log(f"text: done in {info['wall_s']:.0f}s; wrote {final}")
    return final
