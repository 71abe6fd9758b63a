"""What a text query needs from a model: sentences in, unit vectors in the window-embedding space.

`engines.Engine.encode_text` is that (a model directory with a text encoder); anything with the
method and the model's version serves, which lets a search use another encoder of the same space.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from search.query import BadQuery


class TextEncoder(Protocol):
    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Sentences -> float32 [N, E], L2-normalised, comparable with window embeddings."""
        ...


def load_text_encoder(
    model_dir: Path, backend: str = "onnxruntime", precision: str = "fp32"
) -> tuple[TextEncoder, str]:
    """The model's engine as a text encoder, and the model version its vectors belong to."""
    from engines import load_engine

    engine = load_engine(model_dir, backend=backend, precision=precision)
    if not getattr(engine, "has_text", False):
        name, version = engine.metadata.name, engine.metadata.version
        engine.close()
        raise BadQuery(
            f"model {name} {version} ({model_dir}) has no text encoder, so it cannot search by text; "
            "use --like WINDOW_ID, or a model trained with the text stage (--model DIR)"
        )
    return engine, engine.metadata.version
