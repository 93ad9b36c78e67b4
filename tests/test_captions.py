"""The caption writer on hand-made images whose thickness and slant are known."""

import re

import numpy as np
import pytest

from jaxgen.errors import UserError
from jaxgen.gan import captions


def _line(width: int, shear: float = 0.0, size: int = 28) -> np.ndarray:
    """A 20-pixel stroke ``width`` pixels wide, its top moved right by ``shear`` px per row up,
    white (1) on black (-1), shaped [H, W, 1]."""
    img = -np.ones((size, size), np.float32)
    for y in range(4, 24):
        x0 = int(round(14 - shear * (y - 14))) - width // 2
        img[y, x0 : x0 + width] = 1.0
    return img[..., None]


def test_thickness_and_slant_of_known_strokes():
    bars = np.stack([_line(w) for w in (1, 2, 3, 4, 5)])
    a = captions.measure(bars)
    # 2 * area / boundary edges of a 20 x w bar is 2 * 20w / (40 + 2w) = w / (1 + w/20)
    want = [w / (1 + w / 20) for w in (1, 2, 3, 4, 5)]
    np.testing.assert_allclose(a.thickness, want, rtol=1e-5)
    np.testing.assert_allclose(a.slant, 0.0, atol=1e-6)
    thick, slant = captions.describe(a)
    assert thick == ["thin", None, "bold", "bold", "bold"] and set(slant) == {"upright"}
    sheared = np.stack([_line(3, s) for s in (-0.4, -0.2, 0.0, 0.2, 0.4)])
    a = captions.measure(sheared)
    np.testing.assert_allclose(a.slant, [-0.4, -0.2, 0.0, 0.2, 0.4], atol=0.01)
    _, slant = captions.describe(a)
    assert slant == ["leaning left", "leaning left", "upright", "leaning right", "leaning right"]
    # the same words as classes (thin 0 / neither 1 / bold 2, left 0 / upright 1 / right 2), as the
    # StackGAN's auxiliary heads read them
    both = np.concatenate([bars, sheared])
    thick, slant = captions.describe(captions.measure(both))
    cls = captions.classes(captions.measure(both))
    assert cls.dtype == np.int32 and cls.shape == (10, 2)
    assert [("thin", None, "bold")[k] for k in cls[:, 0]] == thick
    assert [("leaning left", "upright", "leaning right")[k] for k in cls[:, 1]] == slant
    assert cls[:, 1].tolist() == [1, 1, 1, 1, 1, 0, 0, 1, 2, 2]


def test_captions_name_the_digit_and_the_attributes():
    imgs = np.stack([_line(1, 0.3), _line(5, -0.3), _line(2, 0.0)])
    labels = np.array([7, 1, 8])
    caps = captions.write_captions(imgs, labels, per_image=20)
    forms = lambda d: (captions.DIGITS[d], str(d))
    words = lambda key: captions.SYNONYMS[key] + captions.ADJECTIVES.get(key, ())
    for cs, d, thick, slant in zip(
        caps, labels, ("thin", "bold", None), ("leaning right", "leaning left", "upright")
    ):
        for c in cs:
            tokens = re.findall(r"[\w-]+", c)
            assert any(f in tokens for f in forms(d)), c
            assert any(w in c for w in words(slant)), c
            for t in ("thin", "bold"):  # its own thickness word, never the other
                assert any(w in tokens for w in captions.SYNONYMS[t]) == (t == thick), c
    assert "an 8" in " ".join(caps[2]) or "an eight" in " ".join(caps[2])  # articles by sound
    assert not any(" a 8" in c or " a eight" in c or c.startswith("a 8") for c in caps[2])


def test_captions_are_deterministic_and_held_out_templates_are_separate():
    imgs = np.stack([_line(w, s) for w in (1, 3, 5) for s in (-0.3, 0, 0.3)])
    labels = np.arange(9)
    a = captions.write_captions(imgs, labels, per_image=10)
    assert a == captions.write_captions(imgs, labels, per_image=10)
    assert a != captions.write_captions(imgs, labels, per_image=10, seed=1)
    held = captions.write_captions(imgs, labels, per_image=10, held_out=True)
    marks = ("handwritten in", "handwritten, a", "written leaning", "written slanted",
             "written tilted", "written upright", "written standing",
             "written straight")  # fmt: skip
    assert not any(c.startswith(marks) for cs in a for c in cs)  # held-out openings only
    assert all(c.startswith(marks) for cs in held for c in cs)
    # every training template is used
    assert all(
        any(c.startswith(t[0].split("{")[0]) for cs in a for c in cs)
        for t in captions.TRAIN_TEMPLATES
    )


def test_bad_input_is_refused():
    with pytest.raises(UserError, match=r"grey images \[N, H, W, 1\]"):
        captions.measure(np.zeros((2, 28, 28)))
    with pytest.raises(UserError, match="digits 0-9"):
        captions.write_captions(np.stack([_line(2)]), np.array([10]))
    with pytest.raises(UserError, match=r"labels must be int \[1\]"):
        captions.write_captions(np.stack([_line(2)]), np.array([1.0]))
