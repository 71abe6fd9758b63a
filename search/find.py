"""The two questions `vbw search` asks: windows like a sentence, windows like a window."""

from __future__ import annotations

from dataclasses import replace

from search.query import BadQuery, Filter
from search.store import Hit, WindowIndex
from search.text import TextEncoder


def by_text(index: WindowIndex, encoder: TextEncoder, text: str, k: int, flt: Filter) -> list[Hit]:
    """Windows nearest to the sentence. `flt.model_version` should name the encoder's model: the
    vectors of two model versions are not in one space."""
    if not text.strip():
        raise BadQuery("empty query text")
    vec = encoder.encode_text([text])[0]
    return index.search(vec, k, flt)


def like(index: WindowIndex, window_id: str, k: int, flt: Filter) -> list[Hit]:
    """Windows nearest to an indexed window, of its model version, the window itself left out."""
    w = index.get(window_id)
    if w is None:
        raise BadQuery(f"window {window_id} is not in the index {index.uri}")
    return index.search(w.vector, k, replace(flt, model_version=w.model_version, exclude_id=window_id))
