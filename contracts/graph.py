"""The model directory's layout: graph (stage) names, their files, their tensor names.

`vbw export` writes graphs under these names and every engine binds them by these names, so
they are defined here once. They are also the names of the files shipped in models/ and of
every model directory users exported: renaming one breaks those directories.

    frame_encoder   frames [N, H, W, 3] uint8                  -> features [N, D]
    motion_encoder  features [N, D], prev_features [N, D]      -> tokens [N, d]
    window_encoder  tokens [B, T, d]                           -> scores [B, C], embedding [B, E]
    whole_window    clips [B, T, H, W, 3] uint8                -> scores [B, C], embedding [B, E]
    text_encoder    input_ids [B, L] int64 (0 = padding)       -> text_embedding [B, E]

The text encoder (models trained with the text stage) maps `tokenizer.json`'s ids of a
sentence into the space of the window encoder's `embedding`: compare them by dot product.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final, Literal, NamedTuple

# -- files of a model directory ----------------------------------------------------------------
MANIFEST_NAME: Final = "model.json"
CHECKPOINT_NAME: Final = "checkpoint.pt"
TOKENIZER_NAME: Final = "tokenizer.json"  # Hugging Face `tokenizers` JSON, text models only

# -- graphs ------------------------------------------------------------------------------------
FRAME_ENCODER: Final = "frame_encoder"
MOTION_ENCODER: Final = "motion_encoder"
WINDOW_ENCODER: Final = "window_encoder"
WHOLE_WINDOW: Final = "whole_window"
# What the incremental path needs, in the order a frame goes through them.
STAGES: Final = (FRAME_ENCODER, MOTION_ENCODER, WINDOW_ENCODER)
GRAPHS: Final = (*STAGES, WHOLE_WINDOW)
TEXT_ENCODER: Final = "text_encoder"  # only in models with a text side

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: Final[tuple[Precision, ...]] = ("fp32", "fp16", "int8")

# -- tensors -----------------------------------------------------------------------------------
FRAMES: Final = "frames"
FEATURES: Final = "features"
PREV_FEATURES: Final = "prev_features"
TOKENS: Final = "tokens"
CLIPS: Final = "clips"
SCORES: Final = "scores"
EMBEDDING: Final = "embedding"
INPUT_IDS: Final = "input_ids"
TEXT_EMBEDDING: Final = "text_embedding"


class GraphIO(NamedTuple):
    """A graph's input and output tensor names, in the graph's order."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


GRAPH_IO: Final = MappingProxyType(
    {
        FRAME_ENCODER: GraphIO((FRAMES,), (FEATURES,)),
        MOTION_ENCODER: GraphIO((FEATURES, PREV_FEATURES), (TOKENS,)),
        WINDOW_ENCODER: GraphIO((TOKENS,), (SCORES, EMBEDDING)),
        WHOLE_WINDOW: GraphIO((CLIPS,), (SCORES, EMBEDDING)),
        TEXT_ENCODER: GraphIO((INPUT_IDS,), (TEXT_EMBEDDING,)),
    }
)


def graph_filename(graph: str, precision: str) -> str:
    """`frame_encoder.onnx` for FP32 (the names before reduced precisions existed), else
    `frame_encoder.int8.onnx`."""
    if graph not in GRAPH_IO:
        raise ValueError(f"unknown graph {graph!r}; the graphs are {', '.join(GRAPH_IO)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return f"{graph}.onnx" if precision == "fp32" else f"{graph}.{precision}.onnx"
