"""Zero-shot labels: a window's label scores from its embedding's similarity to prompt sentences.

`engine.labels: {prompts: {name: "sentence", ...}}` in the config replaces the classifier head's
labels with the prompts' names. The prompts are encoded once (`PromptLabels.encode`, in the
inference thread, the only one a TensorRT engine may be called from); each window's scores are
then a softmax over cosine similarities divided by the model's fitted `prompt_temperature`
(model.json `text`), so a score reads like the classifier's calibrated ones. Re-encode with
`PromptLabels.encode` when the prompts or the model change (InferenceStage.set_prompts, and
begin_swap with the new engine config's prompts): the object is immutable, so swapping it is one
assignment.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from engines.base import Engine

log = logging.getLogger("vbw.prompt_labels")


@dataclass(frozen=True)
class PromptLabels:
    prompts: tuple[tuple[str, str], ...]  # (label name, sentence), in config order
    vectors: np.ndarray  # [P, E] L2-normalised prompt embeddings
    temperature: float

    @property
    def labels(self) -> list[str]:
        return [name for name, _ in self.prompts]

    @classmethod
    def encode(
        cls, engine: Engine, prompts: Mapping[str, str], temperature: float | None = None
    ) -> PromptLabels:
        """Encode `prompts` with `engine` (a model with a text encoder; TextUnavailable if not).
        `temperature` defaults to the model's fitted prompt temperature."""
        items = tuple((str(k), str(v)) for k, v in prompts.items())
        if not items:
            raise ValueError("engine.labels.prompts is empty")
        vectors = engine.encode_text([s for _, s in items])
        if temperature is None:
            temperature = prompt_temperature(engine)
        tok = engine.text_tokenizer
        for name, sentence in items:
            unknown = tok.unknown_words(sentence) if tok is not None else []
            if unknown:  # they encode as [UNK]: the prompt means less than it says
                log.warning(
                    "prompt %r (%r): words the model never saw in a caption: %s", name, sentence, unknown
                )
        return cls(items, vectors, float(temperature))

    def same_prompts(self, prompts: Mapping[str, str]) -> bool:
        return self.prompts == tuple((str(k), str(v)) for k, v in prompts.items())

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """float32 [B, P]: softmax over the prompts of cosine / temperature (rows sum to 1)."""
        z = (np.asarray(embeddings, np.float32) @ self.vectors.T) / self.temperature
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def prompt_temperature(engine: Engine) -> float:
    manifest = getattr(engine, "manifest", None)
    text = getattr(manifest, "text", None)
    return float(text.prompt_temperature) if text is not None else 0.05
