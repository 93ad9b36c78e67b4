"""Paired images for Pix2Pix: built from digits (outlines, low resolution) and read from folders
(A/ and B/, or side by side), with one clear error for anything that does not pair up."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from jaxgen.data import pairs
from jaxgen.errors import UserError


def test_edges_of_a_square_are_its_ring():
    img = -np.ones((1, 8, 8, 1), np.float32)
    img[0, 2:6, 2:6] = 1.0  # a 4x4 block of ink
    p = pairs.edges_to_digits(img, labels=[3])
    ring = np.zeros((8, 8), bool)
    ring[2:6, 2:6] = True
    ring[3:5, 3:5] = False  # the inner 2x2 has no background neighbour
    np.testing.assert_array_equal(p.a[0, ..., 0] > 0, ring)
    np.testing.assert_array_equal(p.b, img)
    assert p.a.shape == img.shape and p.labels.tolist() == [3] and len(p) == 1


def test_low_resolution_is_block_means_repeated():
    img = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8, 1) / 128.0 - 1.0
    p = pairs.low_res_to_digits(img, factor=4)
    want = img[0, 0:4, 4:8, 0].mean()
    np.testing.assert_allclose(p.a[0, 1:3, 5:7, 0], want, rtol=1e-6)  # inside block (0, 1)
    assert p.a.shape == img.shape
    np.testing.assert_allclose(p.a.mean(axis=(1, 2)), img.mean(axis=(1, 2)), rtol=1e-5)
    with pytest.raises(UserError, match="4x4 blocks"):
        pairs.low_res_to_digits(np.zeros((1, 6, 6, 1)), factor=4)


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _grey(seed, h=8, w=8):
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def test_a_b_folders_pair_by_name(tmp_path):
    for i, n in enumerate(["x", "y", "z"]):
        _png(tmp_path / "A" / f"{n}.png", _grey(i))
        _png(tmp_path / "B" / f"{n}.png", np.stack([_grey(10 + i)] * 3, -1))  # RGB targets
    p = pairs.load_paired_folder(tmp_path)
    assert p.names == ("x", "y", "z")
    assert p.a.shape == (3, 8, 8, 1) and p.b.shape == (3, 8, 8, 3)
    np.testing.assert_allclose(p.a[1, ..., 0], _grey(1) / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_allclose(p.b[2, ..., 0], _grey(12) / 127.5 - 1.0, atol=1e-6)


def test_side_by_side_images_split_in_halves(tmp_path):
    for i in range(2):
        _png(tmp_path / f"{i}.png", np.concatenate([_grey(i), _grey(20 + i)], axis=1))
    p = pairs.load_paired_folder(tmp_path)
    assert p.a.shape == p.b.shape == (2, 8, 8, 1)
    np.testing.assert_allclose(p.b[1, ..., 0], _grey(21) / 127.5 - 1.0, atol=1e-6)


def _digest(root):
    h = hashlib.sha1()
    for f in sorted(root.rglob("*")):
        h.update(str(f.relative_to(root)).encode())
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize(
    "layout,match",
    [
        ("names", "only in A/: b.png; only in B/: c.png"),
        ("sizes", "must all be one size"),
        ("pair_sizes", "a pair must be one size"),
        ("channels", "3 channels"),
        ("empty", "holds no images"),
        ("empty_a", "holds no images"),
        ("no_b", "has no B/ beside its A/"),
        ("odd", "an odd number"),
        ("not_image", "not an image PIL can read"),
    ],
)
def test_bad_folders_are_refused_and_left_alone(tmp_path, layout, match):
    root = tmp_path / "pairs"
    root.mkdir()
    if layout == "names":
        _png(root / "A" / "a.png", _grey(0))
        _png(root / "A" / "b.png", _grey(1))
        _png(root / "B" / "a.png", _grey(2))
        _png(root / "B" / "c.png", _grey(3))
    elif layout == "sizes":
        _png(root / "A" / "a.png", _grey(0))
        _png(root / "A" / "b.png", _grey(1, 8, 9))
        _png(root / "B" / "a.png", _grey(2))
        _png(root / "B" / "b.png", _grey(3))
    elif layout == "pair_sizes":
        _png(root / "A" / "a.png", _grey(0))
        _png(root / "B" / "a.png", _grey(1, 16, 16))
    elif layout == "channels":
        _png(root / "A" / "a.png", _grey(0))
        _png(root / "A" / "b.png", np.stack([_grey(1)] * 3, -1))
        _png(root / "B" / "a.png", _grey(2))
        _png(root / "B" / "b.png", _grey(3))
    elif layout == "empty_a":
        (root / "A").mkdir()
        (root / "B").mkdir()
    elif layout == "no_b":
        _png(root / "A" / "a.png", _grey(0))
    elif layout == "odd":
        _png(root / "a.png", _grey(0, 8, 15))
    elif layout == "not_image":
        (root / "a.png").write_text("not a png")
    before = _digest(root)
    with pytest.raises(UserError, match=match):
        pairs.load_paired_folder(root)
    assert _digest(root) == before
