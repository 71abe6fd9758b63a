"""Checkpoint -> model directory: ONNX graphs in FP32, FP16 and INT8, plus model.json.

Graph, file and tensor names come from contracts.graph, which the engines read too:

    frame_encoder   uint8 frames [N, H, W, 3]                -> features [N, D]
    motion_encoder  float32 features [N, D], prev_features [N, D] -> tokens [N, d]
    window_encoder  float32 tokens [B, T, d]                 -> scores [B, C], embedding [B, E]
    whole_window    uint8 clips [B, T, H, W, 3]              -> scores [B, C], embedding [B, E]

The first two run once per frame (prev_features: the previous frame of the same window, or the
frame itself for a window's first frame); only the window encoder runs once per window.

Only the batch dimension is dynamic (T and the image size are fixed), which is what a TensorRT
optimisation profile over batch wants. Opset 18 keeps LayerNorm one `LayerNormalization` op.
Every FP32 graph is checked with onnx.checker and run in ONNX Runtime against torch before the
manifest is written; the manifest is written last, so a directory without one is incomplete.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from build_engine.precision import to_fp16, to_int8_qdq
from build_engine.trt_compat import trt_problems
from contracts.errors import VbwError
from contracts.graph import (
    CHECKPOINT_NAME,
    FEATURES,
    FRAME_ENCODER,
    FRAMES,
    GRAPH_IO,
    GRAPHS,
    MANIFEST_NAME,
    MOTION_ENCODER,
    PRECISIONS,
    PREV_FEATURES,
    TEXT_ENCODER,
    TOKENIZER_NAME,
    TOKENS,
    WHOLE_WINDOW,
    WINDOW_ENCODER,
    graph_filename,
)
from engines.base import window_predecessors
from engines.manifest import FileEntry, ModelManifest, Normalization, OpenSet, TextInfo, sha256_file
from videobert.model import VideoBERT, load_checkpoint, save_checkpoint

OPSET = 18
FP32_SCORE_TOLERANCE = 1e-4
# The shipped default model must fit in this; export warns past it. The whole-window graph
# repeats the stages' weights, so by default it is written in FP32 only (benchmarks, parity);
# engines compose the stage graphs for the other precisions.
SIZE_BUDGET_BYTES = 15_000_000
CALIB_FPS = 5.0  # fallback calibration clips: the worker's default analysis rate


class ExportError(VbwError, RuntimeError):
    """The export produced a graph that is invalid or disagrees with the torch model, or the
    checkpoint cannot be exported. Not retriable: the same checkpoint fails the same way."""


def _log(msg: str) -> None:
    print(f"[export] {msg}", file=sys.stderr, flush=True)


class _CastFirst(torch.nn.Module):
    """Feed a stage float32 straight from its uint8 input.

    TensorRT's ONNX parser accepts UINT8 only as a network input consumed by a Cast (its
    Transpose/Reshape do not take UINT8), while model.py permutes/reshapes before `.float()`.
    Casting first changes no value; the stage's own `.float()` then is a no-op.
    """

    def __init__(self, stage: torch.nn.Module):
        super().__init__()
        self.stage = stage

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.stage(x.float())


class _MotionStage(torch.nn.Module):
    """The per-frame token: (features [N, D], prev_features [N, D]) -> tokens [N, d]."""

    def __init__(self, window_encoder: torch.nn.Module):
        super().__init__()
        self.window_encoder = window_encoder

    def forward(self, features: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return self.window_encoder.step(features, prev)


class _TokenStage(torch.nn.Module):
    """The per-window stage: tokens [B, T, d] -> (scores, embedding)."""

    def __init__(self, window_encoder: torch.nn.Module):
        super().__init__()
        self.window_encoder = window_encoder

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.window_encoder.forward_tokens(tokens)


def _sample_inputs(model: VideoBERT, batch: int = 2) -> dict[str, tuple[torch.Tensor, ...]]:
    cfg = model.cfg
    s, t = cfg.image_size, cfg.num_frames
    g = torch.Generator().manual_seed(0)
    return {
        FRAME_ENCODER: (torch.randint(0, 256, (batch * t, s, s, 3), dtype=torch.uint8, generator=g),),
        MOTION_ENCODER: (
            torch.randn(batch * t, cfg.feature_dim, generator=g),
            torch.randn(batch * t, cfg.feature_dim, generator=g),
        ),
        WINDOW_ENCODER: (torch.randn(batch, t, cfg.d_model, generator=g),),
        WHOLE_WINDOW: (torch.randint(0, 256, (batch, t, s, s, 3), dtype=torch.uint8, generator=g),),
    }


def read_shapes_after_cast(proto: onnx.ModelProto) -> int:
    """Point `Shape(uint8 input)` at the input's Cast instead; returns how many were moved.

    The exporter reads the dynamic batch size off the graph input itself, and TensorRT's parser
    takes UINT8 only into a Cast. The cast tensor has the same shape.
    """
    g = proto.graph
    uint8_inputs = {i.name for i in g.input if i.type.tensor_type.elem_type == onnx.TensorProto.UINT8}
    cast_of = {n.input[0]: n.output[0] for n in g.node if n.op_type == "Cast" and n.input[0] in uint8_inputs}
    moved = 0
    for n in g.node:
        if n.op_type == "Shape" and n.input[0] in cast_of:
            n.input[0] = cast_of[n.input[0]]
            moved += 1
    if moved:  # the Cast may come after the Shape in node order
        from onnxruntime.transformers.onnx_model import OnnxModel

        OnnxModel(proto).topological_sort()
    return moved


def _text_ids(model: VideoBERT, batch: int = 2) -> torch.Tensor:
    """Sample token ids [B, L]: words then padding, as the tokenizer gives them."""
    text = model.cfg.text or {}
    ids = torch.zeros(batch, text["max_len"], dtype=torch.int64)
    ids[:, :5] = torch.arange(2, 7)
    return ids


def export_fp32_graph(model: VideoBERT, graph: str) -> onnx.ModelProto:
    """Trace one stage with the dynamo exporter; only dim 0 (batch) is dynamic."""
    if graph == TEXT_ENCODER:
        module: torch.nn.Module = model.text_encoder
        sample: tuple[torch.Tensor, ...] = (_text_ids(model),)
    else:
        module = {
            FRAME_ENCODER: _CastFirst(model.frame_encoder),
            MOTION_ENCODER: _MotionStage(model.window_encoder),
            WINDOW_ENCODER: _TokenStage(model.window_encoder),
            WHOLE_WINDOW: _CastFirst(model),
        }[graph]
        sample = _sample_inputs(model)[graph]
    inputs, outputs = GRAPH_IO[graph]
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(
        module.eval(),
        sample,
        input_names=list(inputs),
        output_names=list(outputs),
        dynamic_shapes=tuple({0: batch} for _ in inputs),  # one batch size shared by all inputs
        opset_version=OPSET,
        external_data=False,
        dynamo=True,
        verbose=False,
    )
    proto = program.model_proto
    proto.doc_string = f"vbw {graph}"
    got = tuple(i.name for i in proto.graph.input)
    if got != inputs:
        raise ExportError(f"{graph}: exported graph inputs {got}, expected {inputs}")
    read_shapes_after_cast(proto)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _ort_run(proto: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


@torch.no_grad()
def torch_outputs(model: VideoBERT, graph: str, *xs: np.ndarray) -> list[np.ndarray]:
    t = [torch.from_numpy(x) for x in xs]
    if graph == FRAME_ENCODER:
        return [model.frame_encoder(*t).numpy()]
    if graph == MOTION_ENCODER:
        return [model.window_encoder.step(*t).numpy()]
    if graph == WINDOW_ENCODER:
        return [y.numpy() for y in model.window_encoder.forward_tokens(*t)]
    if graph == TEXT_ENCODER:
        return [model.text_encoder(*t).numpy()]
    return [y.numpy() for y in model(*t)]


def check_fp32_parity(
    model: VideoBERT, graph: str, proto: onnx.ModelProto, xs: tuple[np.ndarray, ...]
) -> float:
    """Max abs difference of every output (features, tokens or scores); raises past the tolerance."""
    want = torch_outputs(model, graph, *xs)
    got = _ort_run(proto, dict(zip(GRAPH_IO[graph].inputs, xs, strict=True)))
    diffs = [float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True)]
    # Features and tokens feed a transformer, so hold them to the same bound as the scores.
    if max(diffs) > FP32_SCORE_TOLERANCE:
        raise ExportError(
            f"{graph}: ONNX Runtime differs from torch by {max(diffs):.2e} (> {FP32_SCORE_TOLERANCE:g})"
        )
    return max(diffs)


def top1_agreement(stages: dict[str, onnx.ModelProto], clips: np.ndarray, want: np.ndarray) -> float:
    """Top-1 agreement of the three stages run in ONNX Runtime with reference scores."""
    b, t = clips.shape[:2]
    feats = _ort_run(stages[FRAME_ENCODER], {FRAMES: clips.reshape(b * t, *clips.shape[2:])})[0]
    prev = window_predecessors(feats.reshape(b, t, -1)).reshape(b * t, -1)
    tokens = _ort_run(stages[MOTION_ENCODER], {FEATURES: feats, PREV_FEATURES: prev})[0]
    got = _ort_run(stages[WINDOW_ENCODER], {TOKENS: tokens.reshape(b, t, -1)})[0]
    return float((want.argmax(-1) == got.argmax(-1)).mean())


def synthetic_clips(model: VideoBERT, n: int, seed: int) -> np.ndarray:
    """A bright square drifting over noise: stand-in calibration data when no clip generator exists."""
    cfg = model.cfg
    s, t = cfg.image_size, cfg.num_frames
    rng = np.random.default_rng(seed)
    clips = rng.integers(0, 64, (n, t, s, s, 3), dtype=np.uint8)
    for i in range(n):
        size = int(rng.integers(s // 8, s // 3))
        x, y = rng.integers(0, s - size, 2)
        dx, dy = rng.integers(-2, 3, 2)
        colour = rng.integers(96, 256, 3, dtype=np.uint8)
        for f in range(t):
            cx = int(np.clip(x + dx * f, 0, s - size))
            cy = int(np.clip(y + dy * f, 0, s - size))
            clips[i, f, cy : cy + size, cx : cx + size] = colour
    return clips


def calibration_clips(model: VideoBERT, n: int, seed: int) -> np.ndarray:
    """uint8 [n, T, H, W, 3] realistic clips, labels balanced: the training data generator's windows
    (analysis frame rates, squashed aspect ratios) when it is available."""
    cfg = model.cfg
    s, t = cfg.image_size, cfg.num_frames
    try:
        from build_engine.datasets import GeneratedClips
    except ImportError:
        pass
    else:
        clips, _labels = GeneratedClips(seed=seed, num_frames=t, image_size=s, augment=False).batch(0, n)
        return np.ascontiguousarray(clips, dtype=np.uint8)
    try:
        from media.clips import LABELS, clip_rng, render_clip
    except ImportError:
        _log("media.clips not available: calibrating on synthetic drifting squares")
        return synthetic_clips(model, n, seed)
    return np.stack(
        [render_clip(LABELS[i % len(LABELS)], clip_rng(seed, i), s, s, t, CALIB_FPS) for i in range(n)]
    )


def _batches(xs: tuple[np.ndarray, ...], size: int) -> list[tuple[np.ndarray, ...]]:
    return [tuple(x[i : i + size] for x in xs) for i in range(0, len(xs[0]), size)]


@dataclass
class ExportResult:
    manifest: ModelManifest
    out_dir: Path
    fp32_max_abs_diff: dict[str, float] = field(default_factory=dict)
    top1_agreement: dict[str, float] = field(default_factory=dict)  # precision -> the three stages vs torch
    # precision -> the windows' prompt-label top-1 agreement with the torch fp32 text encoder
    text_top1_agreement: dict[str, float] = field(default_factory=dict)


def _save(proto: onnx.ModelProto, path: Path) -> None:
    onnx.save(proto, path)  # no external data: each graph is one self-contained file
    _log(f"wrote {path.name} ({path.stat().st_size / 1e6:.2f} MB)")


def write_manifest(
    model: VideoBERT,
    out_dir: Path,
    name: str,
    version: str,
    graphs: dict[str, dict[str, str]],
    training: dict[str, object],
    open_set: OpenSet | None = None,
    text: TextInfo | None = None,
) -> ModelManifest:
    """Hash every file in the directory (model.json excepted) and write model.json."""
    cfg = model.cfg
    files = {
        p.relative_to(out_dir).as_posix(): FileEntry(sha256=sha256_file(p), bytes=p.stat().st_size)
        for p in sorted(out_dir.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }
    manifest = ModelManifest(
        name=name,
        version=version,
        labels=list(cfg.labels),
        multi_label=cfg.multi_label,
        num_frames=cfg.num_frames,
        image_size=(cfg.image_size, cfg.image_size),
        normalization=Normalization(mean=cfg.mean, std=cfg.std),
        feature_dim=cfg.feature_dim,
        token_dim=cfg.d_model,
        embed_dim=cfg.embed_dim,
        graphs=graphs,
        checkpoint=CHECKPOINT_NAME,
        files=files,
        training=training,
        open_set=open_set,
        text=text,
    )
    (out_dir / MANIFEST_NAME).write_text(manifest.model_dump_json(by_alias=True, indent=2) + "\n")
    return manifest


NONE_LABEL = "none"


def open_set_of(model: VideoBERT, fitted: object) -> OpenSet | None:
    """model.json's open_set for a model with a `none` label: the temperature its graphs apply
    and the reject threshold `vbw train` fitted (0 when none was: the top label decides)."""
    if NONE_LABEL not in model.cfg.labels:
        return None
    info = fitted if isinstance(fitted, dict) else {}
    return OpenSet(
        none_label=NONE_LABEL,
        temperature=model.cfg.score_temperature,
        reject_threshold=float(info.get("reject_threshold", 0.0)),
        fitted_on=str(info.get("fitted_on", "")),
    )


def export_model(
    checkpoint: str | Path,
    out_dir: str | Path,
    name: str = "vbw-motion-small",
    version: str = "0.2.1",
    precisions: tuple[str, ...] = PRECISIONS,
    calib_clips: int = 32,
    calib_seed: int = 1234,
    clip_source: Callable[[VideoBERT, int, int], np.ndarray] | None = None,
    whole_window_precisions: tuple[str, ...] = ("fp32",),
    check_clips: int = 128,
) -> ExportResult:
    """Write the model directory for `checkpoint`; returns the manifest and the parity figures."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    unknown = set(precisions) - set(PRECISIONS)
    if unknown or "fp32" not in precisions:
        raise ValueError(f"precisions must include fp32 and be among {PRECISIONS}, got {precisions}")
    model = load_checkpoint(str(checkpoint))
    raw = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    training = raw.get("training", {}) if isinstance(raw.get("training"), dict) else {}
    open_set = open_set_of(model, raw.get("open_set"))
    cfg = model.cfg
    if not cfg.labels:
        raise ExportError(f"{checkpoint}: the model has no labels")
    if cfg.input_mode != "features":
        # Its per-frame step is token_emb(argmin distance to the codebook) and ignores the
        # previous frame; the engines' motion_encoder contract takes two inputs.
        raise ExportError(
            f"{checkpoint}: input_mode={cfg.input_mode!r} models cannot be exported; the engines' "
            "per-frame motion_encoder graph needs input_mode='features'"
        )
    _log(
        f"{checkpoint}: {model.num_params():,} parameters, T={cfg.num_frames}, {cfg.image_size}px, "
        f"{len(cfg.labels)} labels"
    )

    # Stale graphs from an earlier export would be hashed into the new manifest: remove them.
    for old in [*out.glob("*.onnx"), out / CHECKPOINT_NAME, out / MANIFEST_NAME, out / TOKENIZER_NAME]:
        old.unlink(missing_ok=True)

    source = clip_source or calibration_clips
    clips = source(model, calib_clips, calib_seed)
    check = source(model, check_clips, calib_seed + 1)  # held out from calibration
    with torch.no_grad():
        feats = model.encode_frames(torch.from_numpy(clips))
        tokens = model.window_encoder.embed(feats).numpy()
        feats = feats.numpy()
        check_feats = model.encode_frames(torch.from_numpy(check))
        check_tokens = model.window_encoder.embed(check_feats).numpy()
        check_scores = model.window_encoder(check_feats)[0].numpy()
        check_feats = check_feats.numpy()
    t, s, d = cfg.num_frames, cfg.image_size, cfg.feature_dim
    # The motion encoder's inputs: every frame of the clips with its window predecessor.
    steps = (feats.reshape(-1, d), window_predecessors(feats).reshape(-1, d))
    check_steps = (check_feats.reshape(-1, d), window_predecessors(check_feats).reshape(-1, d))
    calib = {
        FRAME_ENCODER: _batches((clips.reshape(-1, s, s, 3),), 64),
        MOTION_ENCODER: _batches(steps, 64),
        WINDOW_ENCODER: _batches((tokens,), 8),
        WHOLE_WINDOW: _batches((clips,), 4),
    }
    held_out = {
        FRAME_ENCODER: (check.reshape(-1, s, s, 3)[: 4 * t],),
        MOTION_ENCODER: tuple(x[: 4 * t] for x in check_steps),
        WINDOW_ENCODER: (check_tokens[:8],),
        WHOLE_WINDOW: (check[:8],),
    }

    result = ExportResult(manifest=None, out_dir=out)  # type: ignore[arg-type]
    graphs: dict[str, dict[str, str]] = {p: {} for p in precisions}
    stages: dict[str, dict[str, onnx.ModelProto]] = {p: {} for p in precisions}
    for graph in GRAPHS:
        wanted = [p for p in precisions if graph != WHOLE_WINDOW or p in whole_window_precisions]
        if not wanted:
            continue
        fp32 = export_fp32_graph(model, graph)
        result.fp32_max_abs_diff[graph] = check_fp32_parity(model, graph, fp32, held_out[graph])
        _log(f"{graph}: fp32 ONNX Runtime vs torch max abs diff {result.fp32_max_abs_diff[graph]:.2e}")
        variants = {"fp32": fp32} if "fp32" in wanted else {}
        if "fp16" in wanted:
            variants["fp16"] = to_fp16(fp32)
        if "int8" in wanted:
            feeds = [dict(zip(GRAPH_IO[graph].inputs, b, strict=True)) for b in calib[graph]]
            variants["int8"] = to_int8_qdq(fp32, feeds)
        for precision, proto in variants.items():
            filename = graph_filename(graph, precision)
            for problem in trt_problems(proto):  # TensorRT is not installable here: check its table
                _log(f"WARNING: {filename}: TensorRT's ONNX parser would reject it: {problem}")
            _save(proto, out / filename)
            graphs[precision][graph] = filename
            stages[precision][graph] = proto

    for precision in precisions:
        if precision != "fp32":
            result.top1_agreement[precision] = top1_agreement(stages[precision], check, check_scores)
            _log(
                f"{precision}: top-1 agreement with torch fp32 on {len(check)} held-out clips "
                f"{result.top1_agreement[precision]:.3f}"
            )

    text_info = None
    if cfg.text is not None:
        text_info = export_text(model, raw, out, precisions, check_tokens, result, graphs)
    # Weights + config (+ the tokenizer, so a re-export from the model directory keeps it).
    save_checkpoint(
        model, str(out / CHECKPOINT_NAME), extra={"tokenizer": raw["tokenizer"]} if cfg.text else None
    )
    result.manifest = write_manifest(model, out, name, version, graphs, training, open_set, text_info)
    total = sum(f.bytes for f in result.manifest.files.values())
    _log(f"wrote {out / MANIFEST_NAME}: {len(result.manifest.files)} files, {total / 1e6:.2f} MB in all")
    if total > SIZE_BUDGET_BYTES:
        per_param = total / model.num_params()
        _log(
            f"WARNING: {total / 1e6:.2f} MB is over the {SIZE_BUDGET_BYTES / 1e6:.0f} MB budget of a shipped "
            f"model (~{per_param:.1f} bytes per parameter here: at most "
            f"~{SIZE_BUDGET_BYTES / per_param / 1e3:.0f}k parameters fit)"
        )
    return result


# --- the text encoder ------------------------------------------------------------------------------


def text_parity_sentences(n: int, seed: int) -> list[str]:
    """Captions of the generated clips' language (the calibration and check sentences)."""
    from build_engine.captions import corpus

    return list(corpus(n, seed))[-n:]


def fp16_text_tail(proto: onnx.ModelProto) -> list[str]:
    """Nodes after the text encoder's last projection (the L2 normalisation): kept FP32."""
    nodes = list(proto.graph.node)
    last = max(i for i, n in enumerate(nodes) if n.op_type in ("Gemm", "MatMul"))
    return [n.name for n in nodes[last + 1 :]]


def text_top1_agreement(
    proto: onnx.ModelProto, prompt_ids: np.ndarray, want: np.ndarray, windows: np.ndarray
) -> tuple[float, float]:
    """(top-1 agreement, least cosine) of a text encoder variant with the reference prompt
    embeddings `want` [P, E]: the share of windows [W, E] whose best-matching prompt (their
    zero-shot label) is the same, the bound the other graphs' scores are held to; and the
    least cosine between a prompt's two embeddings."""
    got = _ort_run(proto, {GRAPH_IO[TEXT_ENCODER].inputs[0]: prompt_ids})[0]
    agree = float(((windows @ got.T).argmax(1) == (windows @ want.T).argmax(1)).mean())
    return agree, float((got * want).sum(1).min())


def export_text(
    model: VideoBERT,
    raw: dict,
    out: Path,
    precisions: tuple[str, ...],
    check_tokens: np.ndarray,
    result: ExportResult,
    graphs: dict[str, dict[str, str]],
) -> TextInfo:
    """text_encoder in every precision, tokenizer.json, and the manifest's `text` entry."""
    from build_engine.precision import to_fp16
    from engines.text import TextTokenizer

    text = model.cfg.text or {}
    tok_json = raw.get("tokenizer")
    if not isinstance(tok_json, str):
        raise ExportError("the checkpoint has a text encoder but no tokenizer (train it with `vbw train`)")
    (out / TOKENIZER_NAME).write_text(tok_json)
    tokenizer = TextTokenizer(out / TOKENIZER_NAME, text["max_len"])
    calib_ids = tokenizer.encode(text_parity_sentences(256, 1234))
    check_ids = tokenizer.encode(text_parity_sentences(256, 1235))
    prompts = raw.get("default_prompts")
    prompt_ids = (
        tokenizer.encode(list(prompts.values())) if isinstance(prompts, dict) and prompts else check_ids
    )
    with torch.no_grad():
        want = model.text_encoder(torch.from_numpy(prompt_ids)).numpy()
        windows = model.window_encoder.forward_tokens(torch.from_numpy(check_tokens))[1].numpy()
    fp32 = export_fp32_graph(model, TEXT_ENCODER)
    diff = check_fp32_parity(model, TEXT_ENCODER, fp32, (check_ids[:32],))
    result.fp32_max_abs_diff[TEXT_ENCODER] = diff
    _log(f"{TEXT_ENCODER}: fp32 ONNX Runtime vs torch max abs diff {diff:.2e}")
    variants = {"fp32": fp32}
    if "fp16" in precisions:
        variants["fp16"] = to_fp16(fp32, keep_fp32_nodes=fp16_text_tail(fp32))
    if "int8" in precisions:
        variants["int8"] = to_int8_qdq(fp32, [calib_ids[i : i + 32] for i in range(0, len(calib_ids), 32)])
    for precision, proto in variants.items():
        filename = graph_filename(TEXT_ENCODER, precision)
        for problem in trt_problems(proto):
            _log(f"WARNING: {filename}: TensorRT's ONNX parser would reject it: {problem}")
        _save(proto, out / filename)
        graphs[precision][TEXT_ENCODER] = filename
        if precision != "fp32":
            agree, cos = text_top1_agreement(proto, prompt_ids, want, windows)
            result.text_top1_agreement[precision] = agree
            _log(
                f"{TEXT_ENCODER} {precision}: prompt-label top-1 agreement with torch fp32 on "
                f"{len(windows)} held-out windows {agree:.3f}, least prompt cosine {cos:.4f}"
            )
    return TextInfo(
        tokenizer=TOKENIZER_NAME,
        max_len=int(text["max_len"]),
        prompt_temperature=float(text.get("prompt_temperature", 0.05)),
        default_prompts=dict(prompts) if isinstance(prompts, dict) else {},
        training=dict(raw["text_training"]) if isinstance(raw.get("text_training"), dict) else {},
    )
