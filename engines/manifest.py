"""`model.json`: what a model directory holds and how to feed it.

The manifest is the contract between `vbw export` (writer) and every engine (reader).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.errors import VbwError
from contracts.graph import MANIFEST_NAME


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str
    bytes: int


class Normalization(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Applied inside the graphs to uint8 RGB / 255; recorded here for users and checks.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class OpenSet(BaseModel):
    """How a model says "nothing": its `none` label, its calibration and its reject rule.

    The scores every engine returns are already calibrated (`temperature` is applied inside the
    window graphs; it is recorded here so the raw scores can be recovered, as `vbw eval` does
    for the calibration error before). A window is read as a motion only when that motion is the
    top label and its score is at least `reject_threshold`; otherwise it is `none_label`.
    """

    model_config = ConfigDict(extra="forbid")
    none_label: str = "none"
    temperature: float = Field(gt=0)  # scores = softmax(logits / temperature)
    reject_threshold: float = Field(ge=0, le=1)  # least top motion score that names a motion
    fitted_on: str = ""  # what the temperature and the threshold were fitted on

    def decide(self, scores: Sequence[float], labels: Sequence[str]) -> str:
        """The open-set decision for one window's scores: its motion, or `none_label`."""
        best = max(range(len(labels)), key=lambda i: scores[i])
        if labels[best] == self.none_label or scores[best] < self.reject_threshold:
            return self.none_label
        return labels[best]


class TextInfo(BaseModel):
    """The text side of a model trained with the text stage: how to turn sentences into vectors
    comparable with the window `embedding` (the `text_encoder` graph of each precision)."""

    model_config = ConfigDict(extra="forbid")
    tokenizer: str  # tokenizer.json (Hugging Face `tokenizers`), relative to the model directory
    max_len: int = Field(gt=2)  # token ids per sentence, padded with 0
    # Prompt (zero-shot) scores = softmax(cosine / prompt_temperature) over the prompts, the
    # temperature fitted on held-out clips with the default prompts.
    prompt_temperature: float = Field(gt=0)
    default_prompts: dict[str, str] = Field(default_factory=dict)  # label -> sentence
    training: dict[str, object] = Field(default_factory=dict)


class ModelManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_: Literal["vbw.model/v1"] = Field("vbw.model/v1", alias="schema")
    name: str
    version: str
    labels: list[str]
    multi_label: bool = False
    num_frames: int  # T
    image_size: tuple[int, int]  # (height, width) the frame encoder expects
    normalization: Normalization
    feature_dim: int  # D, frame feature width (frame_encoder -> motion_encoder)
    # d, per-frame token width (motion_encoder -> window_encoder); absent in model dirs exported
    # before the per-frame motion tokens, which the engines refuse with "re-export".
    token_dim: int | None = None
    embed_dim: int  # E
    # Graph files per precision, named by contracts.graph: {"fp32": {"frame_encoder": "frame_encoder.onnx", ...}, ...}
    graphs: dict[str, dict[str, str]]
    checkpoint: str | None = None
    files: dict[str, FileEntry]  # sha256 of every file in the directory, by relative name
    training: dict[str, object] = Field(default_factory=dict)
    # Models that can say "nothing" (a `none` label, calibrated scores, a reject threshold);
    # None for models that must always name one of their labels.
    open_set: OpenSet | None = None
    # Models with a text encoder (`encode_text`, zero-shot prompt labels); None for vision only.
    text: TextInfo | None = None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ModelDirError(VbwError):
    """A model directory is missing, incomplete or corrupt: re-export or re-download it."""


def load_manifest(model_dir: str | Path, verify: bool = True) -> ModelManifest:
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST_NAME
    if not path.is_file():
        raise ModelDirError(f"{path}: no model manifest (is {model_dir} a model directory?)")
    try:
        manifest = ModelManifest.model_validate_json(path.read_bytes())
    except ValueError as e:
        raise ModelDirError(f"{path}: invalid manifest: {e}") from e
    if verify:
        for rel, entry in manifest.files.items():
            f = model_dir / rel
            if not f.is_file():
                raise ModelDirError(f"{f}: listed in {MANIFEST_NAME} but missing")
            got = sha256_file(f)
            if got != entry.sha256:
                raise ModelDirError(
                    f"{f}: sha256 {got[:12]}… does not match {MANIFEST_NAME} ({entry.sha256[:12]}…)"
                )
    return manifest
