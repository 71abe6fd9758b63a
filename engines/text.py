"""Prompts -> token ids for the text_encoder graph, with the tokenizer shipped in the model dir.

The tokenizer is Hugging Face `tokenizers` (a word-level model trained on the caption corpus by
`vbw train`), saved as `tokenizer.json`: it pads and truncates every sentence to the graph's
fixed length and wraps it in [CLS] ... [SEP] itself, so every engine feeds the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engines.manifest import ModelDirError


class TextTokenizer:
    def __init__(self, path: str | Path, max_len: int):
        try:
            from tokenizers import Tokenizer
        except ImportError as e:  # a runtime dependency; only missing in a broken install
            raise ModelDirError(f"{path}: the `tokenizers` package is needed to encode text: {e}") from e
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelDirError(f"{self.path}: tokenizer missing from the model directory")
        try:
            self._tok = Tokenizer.from_file(str(self.path))
        except Exception as e:  # tokenizers raises its own Exception subclass
            raise ModelDirError(f"{self.path}: not a readable tokenizer: {e}") from e
        self.max_len = max_len
        self._tok.enable_truncation(max_len)
        self._tok.enable_padding(length=max_len, pad_id=0, pad_token="[PAD]")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """int64 [len(texts), max_len] token ids."""
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of sentences, not one string")
        if not texts:
            return np.zeros((0, self.max_len), np.int64)
        enc = self._tok.encode_batch([str(t) for t in texts])
        return np.asarray([e.ids for e in enc], dtype=np.int64)

    def unknown_words(self, text: str) -> list[str]:
        """Words of `text` outside the vocabulary (they encode as [UNK]): worth a warning."""
        enc = self._tok.encode(text)
        return [text[a:b] for i, (a, b) in zip(enc.ids, enc.offsets, strict=True) if i == 1]
