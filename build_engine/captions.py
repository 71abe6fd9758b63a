"""Captions for generated clips: sentences composed from the generator's own parameters.

A clip's `ClipParams` say what it shows (motion, speed, shape, colour, size, background, or a
`none` family); `attributes` names them in words and `caption` puts the words into one of
several paraphrase templates, dropping some details at random so that short prompts ("something
moves left") and long ones ("a small red key slides slowly to the left on a striped background")
are both in the training distribution.

`HELD_OUT_COMBOS` are (motion, shape, colour) combinations no training caption ever shows:
`vbw eval --zero-shot` renders fresh clips of them and asks the text side to name them.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from build_engine.datasets import ASPECTS, analysis_times, augment_window
from media import clips

# Shapes as a caption says them (media.clips.SHAPES are code names).
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "triangle": ("triangle",),
    "ell": ("ell", "l shape"),
    "key": ("key",),
    "pacman": ("pacman", "pie"),
}
COLOURS: tuple[str, ...] = (
    "red",
    "orange",
    "yellow",
    "green",
    "cyan",
    "blue",
    "purple",
    "pink",
    "white",
    "grey",
    "black",
)
MOTION_WORDS: dict[str, tuple[str, ...]] = {
    "move_left": ("moves left", "moves to the left", "slides left", "goes left", "drifts leftward"),
    "move_right": ("moves right", "moves to the right", "slides right", "goes right", "drifts rightward"),
    "move_up": ("moves up", "moves upward", "slides up", "goes up", "rises"),
    "move_down": ("moves down", "moves downward", "slides down", "goes down", "falls"),
    "grow": ("grows", "gets bigger", "expands", "grows larger", "swells"),
    "shrink": ("shrinks", "gets smaller", "contracts", "shrinks away", "dwindles"),
    "rotate_cw": ("turns clockwise", "rotates clockwise", "spins clockwise"),
    "rotate_ccw": (
        "turns counterclockwise",
        "rotates counterclockwise",
        "spins anticlockwise",
        "turns anticlockwise",
    ),
}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "solid": ("on a plain background", "against a plain backdrop"),
    "gradient": ("on a gradient background", "against a shaded backdrop"),
    "blobs": ("on a blotchy background", "against a patchy backdrop"),
    "stripes": ("on a striped background", "against a striped backdrop"),
}
NONE_WORDS: dict[str, tuple[str, ...]] = {
    "static": ("nothing moves", "a still scene", "the scene is static", "nothing happens"),
    "lighting": ("the light changes and nothing moves", "the scene gets brighter or darker"),
    "appear": ("a shape blinks in and out", "an object appears and disappears"),
    "recolor": ("a shape changes colour", "an object switches colour"),
    "sway": ("a shape sways back and forth", "an object wobbles in place"),
    "cut": ("the scene cuts to another", "a cut between two scenes"),
    "shake": ("the camera shakes", "a shaky still scene"),
    "texture": ("a churning texture", "moving stripes everywhere"),
    "crowd": ("several shapes move", "many objects move at once"),
    "colour": ("the light turns warm and cool", "the colour of the light changes"),
}
SUBJECTS = ("something", "an object", "a shape", "the object")

# (motion, shape, colour) never in a training caption; one per motion, so a prompt per
# combination is also a prompt per motion (the zero-shot check's prompt set).
HELD_OUT_COMBOS: tuple[tuple[str, str, str], ...] = (
    ("move_left", "key", "red"),
    ("move_right", "triangle", "blue"),
    ("move_up", "pacman", "green"),
    ("move_down", "ell", "yellow"),
    ("grow", "key", "purple"),
    ("shrink", "triangle", "orange"),
    ("rotate_cw", "pacman", "cyan"),
    ("rotate_ccw", "ell", "pink"),
)

# The default zero-shot prompt per model label (model.json records them).
DEFAULT_PROMPTS: dict[str, str] = {
    "move_left": "something moves to the left",
    "move_right": "something moves to the right",
    "move_up": "something moves up",
    "move_down": "something moves down",
    "grow": "something grows",
    "shrink": "something shrinks",
    "rotate_cw": "something turns clockwise",
    "rotate_ccw": "something turns counterclockwise",
    clips.NONE: "nothing moves",
}


def colour_name(rgb: tuple[float, float, float]) -> str:
    """The basic colour word for an RGB colour in 0..1 (hue bands, then lightness and greys)."""
    h, lightness, s = colorsys.rgb_to_hls(*rgb)
    if s < 0.25 or max(rgb) - min(rgb) < 0.12:
        return "white" if lightness > 0.75 else "black" if lightness < 0.25 else "grey"
    if lightness < 0.12:
        return "black"
    if lightness > 0.93:
        return "white"
    deg = h * 360
    if deg < 15 or deg >= 330:
        return "pink" if lightness > 0.7 else "red"
    if deg < 45:
        return "orange"
    if deg < 70:
        return "yellow"
    if deg < 160:
        return "green"
    if deg < 200:
        return "cyan"
    if deg < 255:
        return "blue"
    if deg < 290:
        return "purple"
    return "pink"


@dataclass(frozen=True)
class Attributes:
    """What a caption may say about a clip, in words."""

    motion: str  # a motion label, or "none"
    family: str = ""  # the none family
    shape: str = ""
    colour: str = ""
    size: str = ""  # small | large | "" (medium)
    speed: str = ""  # slowly | quickly | ""
    background: str = ""
    striped: bool = False

    @property
    def combo(self) -> tuple[str, str, str]:
        return (self.motion, self.shape, self.colour)


def attributes(p: clips.ClipParams) -> Attributes:
    """A clip's attributes from its parameters."""
    if p.label == clips.NONE:
        return Attributes(motion=clips.NONE, family=p.family or "static")
    size = ""
    if p.size0 < math.exp((2 * math.log(clips.SIZE_MIN) + math.log(clips.SIZE_MAX)) / 3):
        size = "small"
    elif p.size0 > math.exp((math.log(clips.SIZE_MIN) + 2 * math.log(clips.SIZE_MAX)) / 3):
        size = "large"
    if p.label.startswith("move_"):
        rate, lo, hi = math.hypot(p.vx, p.vy), *clips.SPEED_RANGE
    elif p.label in ("grow", "shrink"):
        rate, lo, hi = abs(p.grow), *clips.GROW_RANGE
    else:
        rate, lo, hi = abs(p.spin), *clips.SPIN_RANGE
    third = (hi - lo) / 3
    speed = "slowly" if rate < lo + third else "quickly" if rate > hi - third else ""
    return Attributes(
        motion=p.label,
        shape=p.shape,
        colour=colour_name(p.color),
        size=size,
        speed=speed,
        background=p.bg_kind,
        striped=p.stripe_freq > 0,
    )


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def caption(a: Attributes, rng: np.random.Generator) -> str:
    """One sentence for a clip's attributes, template and details drawn from `rng`."""
    if a.motion == clips.NONE:  # half the time what the family shows, else that nothing moves
        family = a.family if rng.random() < 0.5 else "static"
        return _pick(rng, NONE_WORDS.get(family, NONE_WORDS["static"]))
    motion = _pick(rng, MOTION_WORDS[a.motion])
    if rng.random() < 0.15:  # motion only: what a short prompt says
        return f"{_pick(rng, SUBJECTS)} {motion}"
    words = []
    if a.size and rng.random() < 0.5:
        words.append(a.size)
    if rng.random() < 0.85:
        words.append(a.colour)
    if a.striped and rng.random() < 0.3:
        words.append("striped")
    noun = _pick(rng, SHAPE_WORDS[a.shape]) if rng.random() < 0.85 else "shape"
    subject = " ".join(["a", *words, noun])
    if a.speed and rng.random() < 0.5:
        motion = f"{motion} {a.speed}" if rng.random() < 0.5 else f"{a.speed} {motion}"
    tail = f" {_pick(rng, BACKGROUND_WORDS[a.background])}" if rng.random() < 0.3 else ""
    template = int(rng.integers(3))
    if template == 0:
        return f"{subject} {motion}{tail}"
    if template == 1:
        return f"a video where {subject} {motion}{tail}"
    return f"{subject} that {motion}{tail}"


def combo_caption(combo: tuple[str, str, str]) -> str:
    """The zero-shot prompt for a (motion, shape, colour) combination."""
    motion, shape, colour = combo
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} {SHAPE_WORDS[shape][0]} {MOTION_WORDS[motion][0]}"


def corpus(n: int = 20000, seed: int = 0) -> Iterator[str]:
    """Sentences covering every word the templates use: the tokenizer's training text."""
    rng = np.random.default_rng([seed, 0xC0])
    for words in (*MOTION_WORDS.values(), *NONE_WORDS.values(), *BACKGROUND_WORDS.values()):
        yield from words
    yield from DEFAULT_PROMPTS.values()
    yield " ".join(COLOURS)
    yield " ".join(w for ws in SHAPE_WORDS.values() for w in ws)
    yield "a video where something that moves shape striped small large slowly quickly"
    for _ in range(n):
        motion = clips.LABELS[int(rng.integers(len(clips.LABELS)))]
        a = Attributes(
            motion=motion,
            shape=clips.SHAPES[int(rng.integers(len(clips.SHAPES)))],
            colour=COLOURS[int(rng.integers(len(COLOURS)))],
            size=("small", "", "large")[int(rng.integers(3))],
            speed=("slowly", "", "quickly")[int(rng.integers(3))],
            background=("solid", "gradient", "blobs", "stripes")[int(rng.integers(4))],
            striped=bool(rng.random() < 0.5),
        )
        yield caption(a, rng)


# --- captioned windows ---------------------------------------------------------------------------


@dataclass
class CaptionedClips:
    """Windows rendered as `GeneratedClips` renders them, each with its attributes.

    `exclude` combinations are redrawn (training never sees them); `only` draws nothing else
    (the zero-shot check's fresh clips). Batch i of a seed is always the same batch.
    """

    seed: tuple[int, ...]
    num_frames: int = 16
    image_size: int = 64
    fps_range: tuple[float, float] = (4.0, 8.0)
    none_share: float = 0.2
    exclude: tuple[tuple[str, str, str], ...] = HELD_OUT_COMBOS
    only: tuple[tuple[str, str, str], ...] = ()
    augment: bool = True

    def params(self, rng: np.random.Generator, label: str, span: tuple[float, float]) -> clips.ClipParams:
        for _ in range(5000):
            p = clips.sample_params(label, rng, span=span)
            if label == clips.NONE:
                return p
            combo = attributes(p).combo
            if self.only and combo in self.only:
                return p
            if not self.only and combo not in self.exclude:
                return p
        raise ValueError(f"no clip of {label} fits only={self.only} after 5000 draws")

    def window(self, rng: np.random.Generator, label: str) -> tuple[np.ndarray, Attributes]:
        fps = float(rng.uniform(*self.fps_range))
        source = float(rng.choice([25.0, 25.0, 30.0, 0.0]))
        times = analysis_times(rng, self.num_frames, fps, source or None)
        aspect = float(rng.choice(ASPECTS))
        times = times + rng.uniform(0, 30)
        p = self.params(rng, label, (float(times[0]), float(times[-1])))
        s = self.image_size
        frames = clips.render_frames(p, s, s, times, aspect=aspect)
        if self.augment:
            frames = augment_window(frames, rng)
        return frames, attributes(p)

    def batch(self, index: int, batch_size: int) -> tuple[np.ndarray, list[Attributes]]:
        """(uint8 [B, T, S, S, 3], attributes per window)."""
        rng = np.random.default_rng([*self.seed, index])
        if self.only:
            labels = [self.only[i % len(self.only)][0] for i in range(batch_size)]
        else:
            n_none = round(batch_size * self.none_share)
            labels = [clips.LABELS[i % len(clips.LABELS)] for i in range(batch_size - n_none)]
            labels += [clips.NONE] * n_none
        rng.shuffle(labels)
        out = [self.window(rng, lb) for lb in labels]
        return np.stack([f for f, _ in out]), [a for _, a in out]
