"""Captions from the generator's parameters, the tokenizer trained on them, the held-out combos."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from build_engine import captions
from build_engine.text_tokenizer import train_tokenizer
from media import clips


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from engines.text import TextTokenizer

    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    path.write_text(train_tokenizer(captions.corpus(2000), 24))
    return TextTokenizer(path, 24)


@pytest.mark.parametrize(
    ("rgb", "name"),
    [
        ((1.0, 0.0, 0.0), "red"),
        ((0.0, 0.8, 0.1), "green"),
        ((0.1, 0.2, 0.9), "blue"),
        ((0.95, 0.9, 0.1), "yellow"),
        ((1.0, 1.0, 1.0), "white"),
        ((0.02, 0.02, 0.03), "black"),
        ((0.5, 0.5, 0.52), "grey"),
    ],
)
def test_colour_names(rgb: tuple[float, float, float], name: str) -> None:
    assert captions.colour_name(rgb) == name


@given(st.tuples(*[st.floats(0, 1)] * 3))
def test_every_colour_has_one_of_the_names(rgb: tuple[float, float, float]) -> None:
    assert captions.colour_name(rgb) in captions.COLOURS
    # the grey axis never gets a hue name
    if max(rgb) - min(rgb) < 0.01:
        assert captions.colour_name(rgb) in ("white", "grey", "black")


@settings(max_examples=60, deadline=None)
@given(label=st.sampled_from(clips.MODEL_LABELS), seed=st.integers(0, 2**31))
def test_captions_name_what_the_clip_shows_in_known_words(label: str, seed: int, tokenizer) -> None:
    rng = np.random.default_rng(seed)
    p = clips.sample_params(label, rng)
    a = captions.attributes(p)
    sentence = captions.caption(a, rng)
    assert tokenizer.unknown_words(sentence) == [], sentence
    if label == clips.NONE:
        assert a.motion == clips.NONE
        return
    assert any(w in sentence for w in captions.MOTION_WORDS[label]), sentence
    ids = tokenizer.encode([sentence])[0]
    assert ids[0] == 2 and 3 in ids  # [CLS] ... [SEP], padded with 0
    assert (ids[list(ids).index(3) + 1 :] == 0).all()


def test_a_motion_caption_never_names_another_motion() -> None:
    rng = np.random.default_rng(0)
    for label in clips.LABELS:
        others = [w for lb, ws in captions.MOTION_WORDS.items() if lb != label for w in ws]
        for _ in range(50):
            s = captions.caption(captions.attributes(clips.sample_params(label, rng)), rng)
            assert not any(f" {w}" in f" {s}" and w not in captions.MOTION_WORDS[label] for w in others), s


def test_held_out_combos_never_drawn_for_training_and_only_drawn_for_eval() -> None:
    train = captions.CaptionedClips(seed=(1,), image_size=32, num_frames=4)
    seen = set()
    for i in range(3):
        _, attrs = train.batch(i, 48)
        seen |= {a.combo for a in attrs}
    assert not seen & set(captions.HELD_OUT_COMBOS)
    held = captions.CaptionedClips(seed=(2,), image_size=32, num_frames=4, only=captions.HELD_OUT_COMBOS)
    x, attrs = held.batch(0, 16)
    assert x.shape == (16, 4, 32, 32, 3)
    assert {a.combo for a in attrs} == set(captions.HELD_OUT_COMBOS)


def test_combo_prompts_and_default_prompts_tokenize_fully(tokenizer) -> None:
    for c in captions.HELD_OUT_COMBOS:
        assert tokenizer.unknown_words(captions.combo_caption(c)) == []
    assert captions.combo_caption(("shrink", "triangle", "orange")).startswith("an orange")
    for s in captions.DEFAULT_PROMPTS.values():
        assert tokenizer.unknown_words(s) == []
    assert set(captions.DEFAULT_PROMPTS) == set(clips.MODEL_LABELS)


def test_tokenizer_normalises_case_punctuation_and_spelling(tokenizer) -> None:
    a, b = tokenizer.encode(["A shape changes colour.", "a SHAPE changes color!"])
    assert (a == b).all()
    assert tokenizer.unknown_words("a zebra moves left") == ["zebra"]
    with pytest.raises(TypeError):
        tokenizer.encode("one string")  # type: ignore[arg-type]
