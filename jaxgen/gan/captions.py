"""Captions for digit images, written from each image's label and attributes measured on the image.

The text-to-image GAN needs (image, caption) pairs, and the shared MNIST digits come with labels
only. This module writes captions offline and deterministically:

* :func:`measure` takes ``[N, H, W, 1]`` images in [-1, 1] (white ink on black, as MNIST) and
  returns the stroke **thickness** in pixels (``2 * ink area / ink boundary edges``: a long bar of
  width ``w`` measures about ``w``) and the **slant** (the ink's shear, ``-cov(x, y) / var(y)``
  with ``y`` down the image: positive when the top leans right).
* :func:`describe` turns those into words with fixed thresholds, set from the MNIST test set's
  terciles (thickness 1.67 / 2.07 px, slant -0.093 / +0.096): ``thin`` below
  :data:`THIN`, ``bold`` above :data:`BOLD`, nothing between; ``leaning left`` below
  ``-SLANT``, ``leaning right`` above ``SLANT``, ``upright`` between.
* :func:`write_captions` fills templates with those words, the digit (as a word or a numeral) and
  synonyms, chosen by a PRNG seeded with ``(seed, image index)``, so the same image always gets the
  same captions. Training captions use :data:`TRAIN_TEMPLATES`; :data:`HELD_OUT_TEMPLATES` are
  never seen in training and are kept for evaluation. They put the training templates' words in new
  orders: no word is new, so the text encoder has learnt every word it is asked to read.

Example captions: "a thin upright seven", "a handwritten 7 in bold strokes, leaning right".
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

from jaxgen.errors import UserError

THIN, BOLD = 1.67, 2.07  # stroke thickness thresholds in pixels (MNIST test-set terciles)
SLANT = 0.095  # |slant| beyond this leans (MNIST terciles: -0.093, +0.096)
INK = 0.0  # a pixel is ink when its value in [-1, 1] is above this

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SYNONYMS = {
    "thin": ("thin", "light", "fine"),
    "bold": ("bold", "thick", "heavy"),
    # after the noun ("a seven leaning left") ...
    "leaning left": ("leaning left", "slanted to the left", "tilted left"),
    "leaning right": ("leaning right", "slanted to the right", "tilted right"),
    "upright": ("upright", "standing straight", "straight up"),
}
ADJECTIVES = {  # ... and before it ("a left-leaning seven")
    "leaning left": ("left-leaning", "left-slanted"),
    "leaning right": ("right-leaning", "right-slanted"),
    "upright": ("upright", "straight"),
}
# (with a thickness word, without one): an image between THIN and BOLD gets the second form
TRAIN_TEMPLATES = (
    ("a {thick} {slant_adj} {digit}", "a {slant_adj} {digit}"),
    ("a {thick} {digit} {slant}", "a {digit} {slant}"),
    ("the digit {digit}, {thick}, {slant}", "the digit {digit}, {slant}"),
    ("a handwritten {digit} in {thick} strokes, {slant}", "a handwritten {digit}, {slant}"),
    ("{digit}, written {thick} and {slant}", "{digit}, written {slant}"),
)
# held out: new word orders of the training templates' own words (so the text encoder has seen
# every word, and a word it has never seen can be refused), never used in training
HELD_OUT_TEMPLATES = (
    ("handwritten in {thick} strokes, a {slant_adj} {digit}", "handwritten, a {slant_adj} {digit}"),
    ("written {slant}, the digit {digit} in {thick} strokes", "written {slant}, the digit {digit}"),
)


class Attributes(NamedTuple):
    thickness: np.ndarray  # float [N], pixels
    slant: np.ndarray  # float [N], shear (positive: the top leans right)


def _check_images(images) -> np.ndarray:
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[-1] != 1:
        raise UserError(
            f"captions are measured on grey images [N, H, W, 1] in [-1, 1], got shape "
            f"{list(x.shape)}"
        )
    return x[..., 0]


def measure(images) -> Attributes:
    """Stroke thickness and slant of each image ``[N, H, W, 1]`` in [-1, 1]; an image without ink
    measures 0 for both."""
    x = _check_images(images)
    ink = x > INK
    p = np.pad(ink, ((0, 0), (1, 1), (1, 1)))
    edges = (p[:, :, 1:] != p[:, :, :-1]).sum((1, 2)) + (p[:, 1:] != p[:, :-1]).sum((1, 2))
    area = ink.sum((1, 2))
    thickness = 2.0 * area / np.maximum(edges, 1)
    w = np.clip((x + 1.0) / 2.0, 0.0, 1.0)  # ink weight in [0, 1]
    h, wd = x.shape[1:]
    yy, xx = np.mgrid[0:h, 0:wd].astype(np.float64)
    mass = np.maximum(w.sum((1, 2)), 1e-9)
    cy = (w * yy).sum((1, 2)) / mass
    cx = (w * xx).sum((1, 2)) / mass
    dy, dx = yy[None] - cy[:, None, None], xx[None] - cx[:, None, None]
    cov = (w * dy * dx).sum((1, 2)) / mass
    var = (w * dy * dy).sum((1, 2)) / mass
    slant = np.where(var > 1e-9, -cov / np.maximum(var, 1e-9), 0.0)
    return Attributes(thickness.astype(np.float32), slant.astype(np.float32))


def describe(attrs: Attributes) -> tuple[list[str | None], list[str]]:
    """The thickness word (``"thin"``, ``"bold"`` or ``None``) and the slant words
    (``"leaning left"``, ``"leaning right"`` or ``"upright"``) of each image."""
    thick = [
        "thin" if t < THIN else "bold" if t > BOLD else None for t in np.asarray(attrs.thickness)
    ]
    slant = [
        "leaning left" if s < -SLANT else "leaning right" if s > SLANT else "upright"
        for s in np.asarray(attrs.slant)
    ]
    return thick, slant


def classes(attrs: Attributes) -> np.ndarray:
    """The words :func:`describe` gives, as classes int ``[N, 2]``: thickness (0 thin, 1 neither,
    2 bold) and slant (0 leaning left, 1 upright, 2 leaning right); what the StackGAN's
    auxiliary heads read."""
    t, s = np.asarray(attrs.thickness), np.asarray(attrs.slant)
    thick = np.where(t < THIN, 0, np.where(t > BOLD, 2, 1))
    slant = np.where(s < -SLANT, 0, np.where(s > SLANT, 2, 1))
    return np.stack([thick, slant], 1).astype(np.int32)


def _article(match) -> str:
    """``a`` or ``an`` before the next word, by its sound (``an eight``, ``an 8``, ``a one``)."""
    word = match.group(2)
    vowel = word[0] in "aeiou8" and not word.startswith("one")
    return f"{match.group(1)}{'n' if vowel else ''} {word}"


def _fill(template: tuple[str, str], digit: int, thick: str | None, slant: str, rng) -> str:
    text = template[0 if thick else 1].format(
        digit=DIGITS[digit] if rng.random() < 0.5 else str(digit),
        thick=rng.choice(SYNONYMS[thick]) if thick else "",
        slant=rng.choice(SYNONYMS[slant]),
        slant_adj=rng.choice(ADJECTIVES[slant]),
    )
    return re.sub(r"\b([Aa]) (\w+)", _article, text)


def write_captions(
    images, labels, *, per_image: int = 5, held_out: bool = False, seed: int = 0
) -> list[list[str]]:
    """``per_image`` captions for each image: its label and measured attributes in the
    training templates (or, with ``held_out``, in the held-out ones), the template, digit form and
    synonyms drawn from ``default_rng([seed, index])``: deterministic per image."""
    y = np.asarray(labels)
    x = _check_images(images)
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"labels must be int [{len(x)}], got {y.dtype} {list(y.shape)}")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise UserError(f"captions are written for digits 0-9, got labels {y.min()} ... {y.max()}")
    thick, slant = describe(measure(images))
    templates = HELD_OUT_TEMPLATES if held_out else TRAIN_TEMPLATES
    out = []
    for i in range(len(y)):
        rng = np.random.default_rng([seed, int(held_out), i])
        out.append(
            [
                _fill(templates[rng.integers(len(templates))], int(y[i]), thick[i], slant[i], rng)
                for _ in range(per_image)
            ]
        )
    return out
