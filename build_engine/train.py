"""Training in three stages, as VideoBERT: visual words, masked visual-word pretraining, labels.

1. codebook: k-means over frame features of a FROZEN tokenizer (the frame encoder at its seeded
   initialisation, BatchNorm statistics calibrated), less each window's mean so the words
   describe what changes (see `word_features`). Their ids are the pretraining targets; since
   the tokenizer never trains, the targets cannot collapse however the model moves.
2. pretrain: hide ~30% of a window's frames and predict their visual words from the others.
3. finetune: cross-entropy on labels + supervised contrastive loss on the L2-normalised
   embedding, so windows of one label sit together in embedding space. Generated data has a
   ninth label, `none` (still scenes, lighting changes, other content, scene cuts: the training
   families of media.clips), a quarter of every batch.
4. calibrate: temperature scaling of the scores and the reject threshold, both fitted on
   held-out generated windows (a seed stream of their own), stored with the checkpoint.
Finally the shipped codebook is re-clustered on the trained encoder, so `quantize()` gives the
shipped model's own visual words (the tokenizer's codebook stays in the training state).

Data is indexed, not streamed: batch i of a stage is a pure function of (seed, stage, i), and
the torch seed is reset per step, so `--resume` continues exactly where a run stopped.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from build_engine import calibration
from build_engine.datasets import ANALYSIS_FPS, ANALYSIS_FPS_RANGE, GeneratedClips, VideoFolderDataset
from contracts.errors import VbwError
from media import clips
from videobert.model import VideoBERT, VideoBertConfig, load_checkpoint, save_checkpoint

STAGES = ("codebook", "pretrain", "finetune", "done")
# Seed-stream codes of the data that is not a training stage's: never the same windows.
HELD_OUT_CODES = {"validate": 9, "calibrate": 10}
STATE_NAME = "train_state.pt"
FINAL_NAME = "model.pt"
# Tag mixed into every training seed, so training streams never coincide with `vbw gen-clips`
# / `vbw eval` clip streams (those use [seed, index]).
TRAIN_STREAM = 0x7EA1


@dataclass
class TrainConfig:
    seed: int = 1
    batch_size: int = 32
    kmeans_clips: int = 512  # x T frames clustered
    kmeans_iters: int = 25
    pretrain_steps: int = 300
    finetune_steps: int = 3000  # a quarter of each batch is `none`; small slow turns need the steps
    lr: float = 1e-3
    min_lr_frac: float = 0.03
    warmup_frac: float = 0.05
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    mask_prob: float = 0.3  # frames are redundant, so mask more than BERT's 15%
    label_smoothing: float = 0.05
    supcon_weight: float = 0.3
    supcon_temperature: float = 0.1
    val_every: int = 500
    val_windows: int = 256
    calib_windows: int = 2048  # held-out windows the temperature and reject threshold are fitted on
    none_share: float = 0.25  # of each generated batch, when `none` is a label
    # Of the training stages' generated windows, drawn small, slow, noisy, on busy backgrounds
    # (clips.harden); the held-out validation and calibration windows stay the plain draw. 0 by
    # default (the shipped 0.2.1 run): 0.3 in the default run gave hard windows 0.961 right
    # (0.965 without) and did not fix the e2e clip it was for (BENCHMARKS: Training).
    hard_share: float = 0.0
    ckpt_every: int = 200
    fps_range: tuple[float, float] = ANALYSIS_FPS_RANGE
    data: str | None = None  # folder dataset instead of generated clips
    init: str | None = None  # start from these weights
    threads: int = 2

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "fps_range" in d:
            d["fps_range"] = tuple(d["fps_range"])
        return cls(**d)


def default_model_config(labels: list[str]) -> VideoBertConfig:
    """The shipped size: about 410k parameters, ~8 MB as fp32+fp16+int8 ONNX plus checkpoint."""
    return VideoBertConfig(labels=list(labels))


# --- losses and k-means ----------------------------------------------------------------------------


def kmeans(x: torch.Tensor, k: int, iters: int, seed: int) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding: [N, D] -> centroids [K, D].

    Written here in torch because scikit-learn is not in the venv and 30 lines do not justify a
    new training dependency; the data (a few thousand 96-d features) is small.
    """
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means: {n} features are fewer than {k} clusters; use more clips")
    centroids = [x[torch.randint(n, (1,), generator=g)]]
    d2 = ((x - centroids[0]) ** 2).sum(1)
    for _ in range(1, k):
        c = x[torch.multinomial(d2 + 1e-12, 1, generator=g)]
        centroids.append(c)
        d2 = torch.minimum(d2, ((x - c) ** 2).sum(1))
    c = torch.cat(centroids)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        counts = torch.bincount(assign, minlength=k).float()
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        empty = counts == 0
        c = torch.where(empty[:, None], c, sums / counts.clamp(min=1)[:, None])
        if empty.any():  # re-seed empty clusters at the worst-fitted points
            far = torch.cdist(x, c).min(1).values.topk(int(empty.sum())).indices
            c[empty] = x[far]
    return c


def supcon_loss(
    emb: torch.Tensor, y: torch.Tensor, temperature: float, no_positives: int | None = None
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) on L2-normalised embeddings.

    Windows of label `no_positives` (`none`: many unrelated kinds of content) are not pulled
    together; they only serve as negatives for the others.
    """
    sim = emb @ emb.t() / temperature
    self_mask = torch.eye(len(y), dtype=torch.bool, device=emb.device)
    sim = sim.masked_fill(self_mask, -1e9)
    pos = (y[:, None] == y[None, :]) & ~self_mask
    if no_positives is not None:
        pos &= (y != no_positives)[:, None]
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    has_pos = pos.any(1)
    per_anchor = -(log_prob * pos).sum(1) / pos.sum(1).clamp(min=1)
    return per_anchor[has_pos].mean() if has_pos.any() else emb.sum() * 0


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine down to min_lr_frac."""
    warm = max(1, int(total * cfg.warmup_frac))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    p = (step - warm) / max(1, total - warm)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def random_mask(b: int, t: int, p: float, g: torch.Generator) -> torch.Tensor:
    m = torch.rand(b, t, generator=g) < p
    none = ~m.any(1)  # every window predicts at least one frame
    m[none, torch.randint(t, (int(none.sum()),), generator=g)] = True
    return m


# --- data ------------------------------------------------------------------------------------------


class Data:
    """Batches for a stage: generated clips, or a user's folder dataset."""

    def __init__(self, cfg: TrainConfig, model_cfg: VideoBertConfig, folder: VideoFolderDataset | None):
        self.cfg, self.folder = cfg, folder
        # Generated data follows the model's labels (any of the generator's: the motions, none).
        generated = [lb for lb in model_cfg.labels if lb in clips.MODEL_LABELS]
        if folder is None and model_cfg.labels and generated != list(model_cfg.labels):
            raise ValueError(
                f"labels {model_cfg.labels}: generated clips have only {list(clips.MODEL_LABELS)}; "
                "train other labels from a folder dataset (--data)"
            )
        self.labels = list(folder.labels) if folder else list(model_cfg.labels or clips.MODEL_LABELS)
        self.model_cfg = model_cfg

    @property
    def none_index(self) -> int | None:
        return self.labels.index(clips.NONE) if clips.NONE in self.labels else None

    def batch(self, stage: str, index: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        code = STAGES.index(stage) if stage in STAGES else HELD_OUT_CODES[stage]
        if self.folder is not None:
            x, y = self.folder.batch(index, batch_size, seed=self.cfg.seed * 10 + code)
        else:
            gen = GeneratedClips(
                seed=(TRAIN_STREAM, self.cfg.seed, code),
                num_frames=self.model_cfg.num_frames,
                image_size=self.model_cfg.image_size,
                labels=tuple(self.labels),
                fps_range=self.cfg.fps_range,
                none_share=self.cfg.none_share,
                hard_share=self.cfg.hard_share if stage in STAGES else 0.0,
            )
            x, y = gen.batch(index, batch_size)
        return torch.from_numpy(x), torch.from_numpy(y)


# --- checkpoints -----------------------------------------------------------------------------------


class Stopped(VbwError):
    """Training stopped on request (`stop_at`) after saving its state. Retriable: running it
    again with `resume` (`vbw train --resume`) continues from that state."""

    retriable = True


@dataclass
class TrainState:
    stage: str = "codebook"
    step: int = 0  # steps done in `stage`
    history: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0


def save_state(
    path: Path,
    model: VideoBERT,
    tokenizer: torch.nn.Module | None,
    opt: torch.optim.Optimizer | None,
    state: TrainState,
    cfg: TrainConfig,
) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "config": model.cfg.to_dict(),
            "state_dict": model.state_dict(),
            "tokenizer": tokenizer.state_dict() if tokenizer is not None else None,
            "optimizer": opt.state_dict() if opt is not None else None,
            "train_config": asdict(cfg),
            "train_state": asdict(state),
        },
        tmp,
    )
    tmp.replace(path)  # never leave a half-written state behind


def load_state(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training state to resume from")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict) or "train_state" not in raw or "state_dict" not in raw:
        raise ValueError(f"{path}: not a vbw training state (written by `vbw train` as {STATE_NAME})")
    return raw


# --- the stages ------------------------------------------------------------------------------------


def make_tokenizer(model: VideoBERT) -> torch.nn.Module:
    """A frozen copy of the frame encoder: the visual-word feature extractor."""
    tok = copy.deepcopy(model.frame_encoder)
    for p in tok.parameters():
        p.requires_grad_(False)
    return tok.eval()


@torch.no_grad()
def frame_features(encoder: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    b, t = x.shape[:2]
    return encoder(x.reshape(b * t, *x.shape[2:])).view(b, t, -1)


@torch.no_grad()
def word_features(tokenizer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the visual words describe: each frame's features minus the window's mean.

    Words of raw features mostly name the static background, and predicting a hidden frame's
    background from its neighbours teaches nothing (fine-tuning after it was worse than none).
    Less the window's mean, what is left is where the moving object is at that instant and how
    it looks then, so filling in a hidden frame means following the motion.
    """
    f = frame_features(tokenizer, x)
    return f - f.mean(dim=1, keepdim=True)


@torch.no_grad()
def calibrate_batchnorm(encoder: torch.nn.Module, batches: list[torch.Tensor]) -> None:
    """Set BatchNorm running statistics from data (cumulative average) without training."""
    bns = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    encoder.train()
    for x in batches:
        encoder(x.reshape(-1, *x.shape[2:]))
    for m in bns:
        m.momentum = 0.1
    encoder.eval()


def build_codebook(
    model: VideoBERT, tokenizer: torch.nn.Module, data: Data, cfg: TrainConfig, log: Callable[[str], None]
) -> None:
    bs = cfg.batch_size
    n_batches = max(1, cfg.kmeans_clips // bs)
    batches = [data.batch("codebook", i, bs)[0] for i in range(n_batches)]
    calibrate_batchnorm(tokenizer, batches)
    feats = torch.cat([word_features(tokenizer, x).flatten(0, 1) for x in batches])
    k = model.cfg.codebook_size
    t0 = time.time()
    model.window_encoder.codebook.copy_(kmeans(feats, k, cfg.kmeans_iters, cfg.seed))
    ids = model.window_encoder.quantize(feats)
    used = int(torch.unique(ids).numel())
    log(
        f"codebook: k-means K={k} over {len(feats)} frame features in {time.time() - t0:.1f}s, {used} words used"
    )


def _step_rng(cfg: TrainConfig, stage: str, step: int) -> torch.Generator:
    seed = (cfg.seed * 1_000_003 + STAGES.index(stage) * 100_003 + step) & 0x7FFFFFFFFFFF
    torch.manual_seed(seed)  # dropout
    return torch.Generator().manual_seed(seed)  # masks


def make_optimizer(model: VideoBERT, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # Norms, biases, positions and special tokens are not shrunk, as in nanoGPT.
        (decay if p.dim() >= 2 and "pos" not in name else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))


@torch.no_grad()
def validate(model: VideoBERT, val: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    model.eval()
    correct = total = 0
    for x, y in val:
        scores, _ = model(x)
        correct += int((scores.argmax(1) == y).sum())
        total += len(y)
    model.train()
    return correct / max(1, total)


def run_stage(
    stage: str,
    model: VideoBERT,
    tokenizer: torch.nn.Module,
    opt: torch.optim.Optimizer,
    data: Data,
    cfg: TrainConfig,
    state: TrainState,
    out: Path,
    log: Callable[[str], None],
    progress: bool,
    val: list[tuple[torch.Tensor, torch.Tensor]],
    stop_at: tuple[str, int] | None = None,
) -> None:
    from tqdm import tqdm

    total = cfg.pretrain_steps if stage == "pretrain" else cfg.finetune_steps
    frozen_frames = model.cfg.input_mode == "tokens"  # words need a fixed encoder
    model.train()
    if frozen_frames:
        model.frame_encoder.eval()
    bar = tqdm(
        total=total, initial=state.step, desc=stage, unit="step", disable=not progress, dynamic_ncols=True
    )
    ema_loss = ema_acc = None
    t_start = time.time() - state.elapsed_s
    while state.step < total:
        step = state.step
        g = _step_rng(cfg, stage, step)
        x, y = data.batch(stage, step, cfg.batch_size)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, cfg)
        if stage == "pretrain":
            targets = model.window_encoder.quantize(word_features(tokenizer, x))
            mask = random_mask(x.shape[0], x.shape[1], cfg.mask_prob, g)
            feats = model.encode_frames(x)
            _, _, mlm = model.window_encoder.forward_train(feats, mask)
            loss = F.cross_entropy(mlm[mask], targets[mask])
            acc = float((mlm[mask].argmax(-1) == targets[mask]).float().mean())
        else:
            feats = model.encode_frames(x)
            logits, emb, _ = model.window_encoder.forward_train(feats)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            if cfg.supcon_weight > 0:
                loss = loss + cfg.supcon_weight * supcon_loss(
                    emb, y, cfg.supcon_temperature, no_positives=data.none_index
                )
            acc = float((logits.argmax(1) == y).float().mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        state.step += 1
        lv = loss.item()
        ema_loss = lv if ema_loss is None else 0.95 * ema_loss + 0.05 * lv
        ema_acc = acc if ema_acc is None else 0.95 * ema_acc + 0.05 * acc
        bar.update(1)
        bar.set_postfix(loss=f"{ema_loss:.3f}", acc=f"{ema_acc:.3f}", lr=f"{opt.param_groups[0]['lr']:.1e}")
        state.elapsed_s = time.time() - t_start
        done = state.step == total
        if stage == "finetune" and val and (state.step % cfg.val_every == 0 or done):
            va = validate(model, val)
            bar.write(f"{stage} step {state.step}/{total}: val_acc={va:.3f} loss={ema_loss:.3f}")
            state.history.append({"stage": stage, "step": state.step, "val_acc": va, "loss": ema_loss})
        if state.step % cfg.ckpt_every == 0 or done or stop_at == (stage, state.step):
            save_state(out / STATE_NAME, model, tokenizer, opt, state, cfg)
        if stop_at == (stage, state.step):
            bar.close()
            raise Stopped(f"stopped at {stage} step {state.step}; resume with {out / STATE_NAME}")
    bar.close()
    log(
        f"{stage}: {total} steps, final loss {ema_loss if ema_loss is not None else float('nan'):.3f} "
        f"acc {ema_acc if ema_acc is not None else float('nan'):.3f}"
    )


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: str | Path | None = None,
    model_cfg: VideoBertConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_at: tuple[str, int] | None = None,
) -> Path:
    """Run (or resume) every stage; returns the path of the final weights-only checkpoint.

    `stop_at=(stage, step)` saves the state and raises `Stopped` there, as an interrupted run would.
    """
    torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wall0 = time.time()

    raw = load_state(Path(resume)) if resume else None
    if raw is not None:
        cfg = TrainConfig.from_dict({**raw["train_config"], "threads": cfg.threads})
        state = TrainState(**raw["train_state"])
        log(f"resuming {resume}: stage {state.stage}, step {state.step}")

    # The window shape the data must have: from the state or checkpoint we continue, else the defaults.
    if raw is not None:
        shape_cfg = VideoBertConfig.from_dict(raw["config"])
    elif cfg.init:
        shape_cfg = load_checkpoint(cfg.init).cfg
    else:
        shape_cfg = model_cfg or VideoBertConfig()
    folder = None
    if cfg.data:
        folder = VideoFolderDataset(
            cfg.data, num_frames=shape_cfg.num_frames, image_size=shape_cfg.image_size, progress=progress
        )
        log(f"data: {cfg.data}: {len(folder)} videos, labels {folder.labels}")
        for err in folder.errors:
            log(f"data: skipped {err}")

    if raw is not None:
        model = VideoBERT(VideoBertConfig.from_dict(raw["config"]))
        model.load_state_dict(raw["state_dict"])
    elif cfg.init:
        model = load_checkpoint(cfg.init)
        labels = folder.labels if folder else list(clips.MODEL_LABELS)
        # Fine-tuning moves the logits: the old calibration no longer holds (calibrate refits it).
        model.cfg.score_temperature = 1.0
        if model.cfg.labels != labels:
            log(f"init: {cfg.init}: new label head for {labels} (was {model.cfg.labels})")
            model.cfg.labels = labels
            model.window_encoder.cfg.labels = labels
            model.window_encoder.head_labels = torch.nn.Linear(model.cfg.d_model, len(labels))
        model.train()
    else:
        torch.manual_seed(cfg.seed)
        base = model_cfg or default_model_config(folder.labels if folder else list(clips.MODEL_LABELS))
        if folder is not None:
            base.labels = folder.labels
        model = VideoBERT(base)
    if raw is None:
        # A checkpoint to start from has its codebook and has been pretrained: fine-tune only.
        state = TrainState(stage="finetune" if cfg.init else "codebook")
    log(f"model: {model.num_params():,} parameters, {model.cfg.to_dict()}")
    data = Data(cfg, model.cfg, folder)

    tokenizer = make_tokenizer(model)
    if raw is not None and raw.get("tokenizer") is not None:
        tokenizer.load_state_dict(raw["tokenizer"])
    if model.cfg.input_mode == "tokens":
        model.frame_encoder.requires_grad_(False)

    val = []
    if folder is None:
        n = max(1, cfg.val_windows // cfg.batch_size)
        val = [data.batch("validate", i, cfg.batch_size) for i in range(n)]

    if state.stage == "codebook":
        build_codebook(model, tokenizer, data, cfg, log)
        save_checkpoint(model, str(out / "stage1_codebook.pt"))
        state = TrainState(stage="pretrain", history=state.history)
        save_state(out / STATE_NAME, model, tokenizer, None, state, cfg)

    opt = make_optimizer(model, cfg)
    if raw is not None and raw.get("optimizer") is not None and state.stage == raw["train_state"]["stage"]:
        opt.load_state_dict(raw["optimizer"])

    if state.stage == "pretrain":
        run_stage("pretrain", model, tokenizer, opt, data, cfg, state, out, log, progress, val, stop_at)
        save_checkpoint(model, str(out / "stage2_pretrained.pt"))
        state = TrainState(stage="finetune", history=state.history)
        opt = make_optimizer(model, cfg)
        save_state(out / STATE_NAME, model, tokenizer, opt, state, cfg)

    if state.stage == "finetune":
        run_stage("finetune", model, tokenizer, opt, data, cfg, state, out, log, progress, val, stop_at)
        if model.cfg.input_mode == "features":
            recluster_codebook(model, data, cfg)
        open_set = calibrate(model, data, cfg, log)
        state = TrainState(stage="done", step=0, history=state.history)
        state.history.append({"stage": "calibrate", **open_set})
        save_state(out / STATE_NAME, model, tokenizer, None, state, cfg)

    final = out / FINAL_NAME
    model.eval()
    extra: dict = {"training": training_info(cfg, state, model, time.time() - wall0)}
    fitted = next((h for h in reversed(state.history) if h.get("stage") == "calibrate"), None)
    if fitted is not None and "reject_threshold" in fitted:
        extra["open_set"] = {k: v for k, v in fitted.items() if k != "stage"}
        extra["training"]["calibration"] = extra["open_set"]
    save_checkpoint(model, str(final), extra=extra)
    log(f"wrote {final}")
    return final


@torch.no_grad()
def recluster_codebook(model: VideoBERT, data: Data, cfg: TrainConfig) -> None:
    """The shipped codebook: visual words of the trained encoder (see the module docstring)."""
    model.eval()
    n_batches = max(1, cfg.kmeans_clips // cfg.batch_size)
    feats = torch.cat(
        [
            model.encode_frames(data.batch("codebook", i, cfg.batch_size)[0]).flatten(0, 1)
            for i in range(n_batches)
        ]
    )
    model.window_encoder.codebook.copy_(kmeans(feats, model.cfg.codebook_size, cfg.kmeans_iters, cfg.seed))
    model.train()


@torch.no_grad()
def held_out_logits(model: VideoBERT, data: Data, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(raw label logits [N, C], labels [N]) of the held-out calibration windows."""
    model.eval()
    xs, ys = [], []
    for i in range(max(1, cfg.calib_windows // cfg.batch_size)):
        x, y = data.batch("calibrate", i, cfg.batch_size)
        logits, _, _ = model.window_encoder.forward_train(model.encode_frames(x))
        xs.append(logits.double().numpy())
        ys.append(y.numpy())
    model.train()
    return np.concatenate(xs), np.concatenate(ys)


def calibrate(model: VideoBERT, data: Data, cfg: TrainConfig, log: Callable[[str], None]) -> dict:
    """Temperature scaling and the reject threshold, fitted on held-out generated windows.

    Sets the model's `score_temperature` (the exported graphs apply it) and returns what the
    checkpoint and model.json record. A folder dataset has no held-out stream: its scores stay
    as trained (temperature 1) and it gets no reject threshold.
    """
    if data.folder is not None or data.none_index is None or model.cfg.multi_label:
        model.cfg.score_temperature = 1.0
        log("calibrate: skipped (generated data with a `none` label only); temperature 1")
        return {"temperature": 1.0}
    t0 = time.time()
    logits, y = held_out_logits(model, data, cfg)
    temperature = calibration.fit_temperature(logits, y)
    before = calibration.softmax(logits)
    after = calibration.softmax(logits / temperature)
    threshold = calibration.choose_threshold(after, y, data.labels, clips.NONE)
    model.cfg.score_temperature = temperature
    info = {
        "temperature": round(temperature, 6),
        "reject_threshold": threshold,
        "fitted_on": f"{len(y)} held-out generated windows (seed stream calibrate)",
        "nll_before": round(calibration.nll(logits, y, 1.0), 4),
        "nll_after": round(calibration.nll(logits, y, temperature), 4),
        "ece_before": round(calibration.ece(before, y), 4),
        "ece_after": round(calibration.ece(after, y), 4),
        "accuracy": round(float((after.argmax(1) == y).mean()), 4),
    }
    log(
        f"calibrate: temperature {temperature:.3f} (ECE {info['ece_before']:.4f} -> {info['ece_after']:.4f}), "
        f"reject threshold {threshold:.2f}, on {len(y)} held-out windows in {time.time() - t0:.1f}s"
    )
    return info


def training_info(cfg: TrainConfig, state: TrainState, model: VideoBERT, wall_s: float) -> dict:
    """What model.json records about how the model was made."""
    last_val = next((h["val_acc"] for h in reversed(state.history) if "val_acc" in h), None)
    return {
        "data": cfg.data or "generated (media.clips)",
        "seed": cfg.seed,
        "seed_streams": f"numpy default_rng([{TRAIN_STREAM}, seed, stage, batch]); eval/gen-clips use [seed, index]",
        "analysis_fps": ANALYSIS_FPS,
        "analysis_fps_range": list(cfg.fps_range),
        "source_fps": "25/30 sampled to the analysis rate, and native-rate clips",
        "steps": {"pretrain": cfg.pretrain_steps, "finetune": cfg.finetune_steps},
        "batch_size": cfg.batch_size,
        "parameters": model.num_params(),
        "val_acc_in_memory": last_val,
        "init": cfg.init,
        "wall_s_last_session": round(wall_s, 1),
    }


def steps_for_minutes(cfg: TrainConfig, minutes: float, log: Callable[[str], None] = print) -> TrainConfig:
    """Size pretrain/finetune steps to a wall-clock budget by timing a few real steps here.

    The step counts are then fixed for the run (and recorded), so a resumed run does the same
    work; only choosing them depends on this machine's speed.
    """
    torch.set_num_threads(cfg.threads)
    model = VideoBERT(default_model_config(list(clips.MODEL_LABELS)))
    data = Data(cfg, model.cfg, None)
    opt = make_optimizer(model, cfg)
    times = []
    for i in range(4):
        t0 = time.time()
        x, y = data.batch("validate", 1000 + i, cfg.batch_size)
        logits, _, _ = model.window_encoder.forward_train(model.encode_frames(x))
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.time() - t0)
    per_step = float(np.median(times[1:]))
    fixed_s = 45.0  # k-means, validation, checkpoints, final re-clustering
    steps = max(10, int((minutes * 60 - fixed_s) / per_step))
    pre = max(1, steps // 5)
    log(
        f"--minutes {minutes}: {per_step:.3f}s per step here -> {pre} pretrain + {steps - pre} finetune steps"
    )
    return TrainConfig.from_dict({**asdict(cfg), "pretrain_steps": pre, "finetune_steps": steps - pre})
