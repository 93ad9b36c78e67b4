"""Paired images for image-to-image translation (Pix2Pix): built offline from digit images, or
read from a folder.

* :func:`edges_to_digits`: domain A is each digit's outline (the pixels of its stroke that touch
  the background), domain B the digit itself.
* :func:`low_res_to_digits`: A is the digit averaged over ``factor x factor`` blocks (28x28 to
  7x7) and scaled back up by repeating pixels, B the digit.
* :func:`load_paired_folder`: ``DIR/A/`` and ``DIR/B/`` holding files with the same names, or
  ``DIR/`` holding side-by-side images (A on the left half, B on the right), as the published
  Pix2Pix sets ship.

Every function returns a :class:`Pairs`: float32 ``[N, H, W, C]`` arrays in ``[-1, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxgen.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class Pairs:
    """``a``, ``b`` float32 ``[N, H, W, C_a]``, ``[N, H, W, C_b]`` in [-1, 1], pair ``i`` is
    ``(a[i], b[i])``; ``labels`` int32 ``[N]`` where the source has them; ``names`` per pair."""

    a: np.ndarray
    b: np.ndarray
    labels: np.ndarray | None
    names: tuple[str, ...]
    name: str

    def __len__(self) -> int:
        return len(self.a)


# --------------------------------------------------------------------------- built from digits


def _binary(images: np.ndarray) -> np.ndarray:
    return images[..., 0] > 0.0  # ink where brighter than mid-grey


def _shift_or(mask: np.ndarray, invert: bool) -> np.ndarray:
    """Dilation (or, with ``invert``, erosion) by the 3x3 cross, with the border as background."""
    m = ~mask if invert else mask
    p = np.pad(m, ((0, 0), (1, 1), (1, 1)))
    out = m | p[:, :-2, 1:-1] | p[:, 2:, 1:-1] | p[:, 1:-1, :-2] | p[:, 1:-1, 2:]
    return ~out if invert else out


def edges_to_digits(images: np.ndarray, labels=None, name: str = "digits") -> Pairs:
    """A: the digit's outline, ink pixels with a background neighbour in the 3x3 cross (+1 on
    -1); B: ``images`` ``[N, H, W, 1]`` in [-1, 1]."""
    images = np.asarray(images, np.float32)
    ink = _binary(images)
    outline = ink & ~_shift_or(ink, invert=True)
    a = np.where(outline, 1.0, -1.0).astype(np.float32)[..., None]
    names = tuple(f"{name}_{i}" for i in range(len(images)))
    return Pairs(a, images, None if labels is None else np.asarray(labels), names, "edges2" + name)


def low_res_to_digits(images: np.ndarray, labels=None, factor: int = 4, name="digits") -> Pairs:
    """A: ``images`` averaged over ``factor x factor`` blocks, then each block's mean repeated
    back to full size (28x28 -> 7x7 -> 28x28 for ``factor=4``); B: ``images``."""
    images = np.asarray(images, np.float32)
    n, h, w, c = images.shape
    if h % factor or w % factor:
        raise UserError(f"images {h}x{w} cannot be cut into {factor}x{factor} blocks")
    small = images.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))
    a = small.repeat(factor, axis=1).repeat(factor, axis=2)
    names = tuple(f"{name}_{i}" for i in range(n))
    tag = f"{h // factor}x{w // factor}to{h}x{w}_"
    return Pairs(a, images, None if labels is None else np.asarray(labels), names, tag + name)


# --------------------------------------------------------------------------- from a folder


def images_in(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB" if im.mode in ("RGBA", "P", "CMYK") else "L")
            x = np.asarray(im, np.float32) / 127.5 - 1.0
    except (OSError, UnidentifiedImageError) as e:
        raise UserError(f"{str(path)!r} is not an image PIL can read ({e})") from None
    return x[..., None] if x.ndim == 2 else x


def stack_images(arrays: list[np.ndarray], paths: list[Path], channels, what: str) -> np.ndarray:
    first = arrays[0]
    want_c = first.shape[-1] if channels is None else channels
    for x, p in zip(arrays, paths):
        if x.shape[-1] != want_c:
            kind = {1: "grey", 3: "RGB"}
            raise UserError(
                f"{str(p)!r} is {kind.get(x.shape[-1], x.shape[-1])} ({x.shape[-1]} channels) "
                f"but the {what} images are {want_c}-channel; convert it, or give images of "
                "one kind"
            )
        if x.shape != (*first.shape[:2], want_c):
            raise UserError(
                f"{str(p)!r} is {x.shape[1]}x{x.shape[0]} but {str(paths[0])!r} is "
                f"{first.shape[1]}x{first.shape[0]}; the {what} images must all be one size"
            )
    return np.stack(arrays).astype(np.float32)


def load_paired_folder(path, channels_a=None, channels_b=None) -> Pairs:
    """Pairs from ``path``: ``path/A/NAME`` with ``path/B/NAME`` (same file names), or
    side-by-side images directly in ``path`` (``[H, 2W]``: A left, B right). ``channels_a`` /
    ``channels_b`` (1 or 3) require that many channels; ``None`` takes the first image's.
    Anything that does not pair up is refused with one :class:`UserError` naming the file."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{str(root)!r} is not a folder of image pairs")
    a_dir, b_dir = root / "A", root / "B"
    if a_dir.is_dir() or b_dir.is_dir():
        if not (a_dir.is_dir() and b_dir.is_dir()):
            missing, present = ("B", "A") if a_dir.is_dir() else ("A", "B")
            raise UserError(f"{str(root)!r} has no {missing}/ beside its {present}/")
        a_files, b_files = images_in(a_dir), images_in(b_dir)
        if not a_files:
            raise UserError(f"{str(a_dir)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        a_names, b_names = {p.name for p in a_files}, {p.name for p in b_files}
        if a_names != b_names:
            only_a = sorted(a_names - b_names)[:3]
            only_b = sorted(b_names - a_names)[:3]
            raise UserError(
                f"A/ and B/ in {str(root)!r} must hold the same file names: "
                + "; ".join(
                    s
                    for s in (
                        f"only in A/: {', '.join(only_a)}" if only_a else "",
                        f"only in B/: {', '.join(only_b)}" if only_b else "",
                    )
                    if s
                )
            )
        b_files = [b_dir / p.name for p in a_files]
        a = stack_images([read_image(p) for p in a_files], a_files, channels_a, "A")
        b = stack_images([read_image(p) for p in b_files], b_files, channels_b, "B")
        if a.shape[1:3] != b.shape[1:3]:
            raise UserError(
                f"A/ images are {a.shape[2]}x{a.shape[1]} but B/ images are "
                f"{b.shape[2]}x{b.shape[1]}; a pair must be one size"
            )
        names = tuple(p.stem for p in a_files)
    else:
        files = images_in(root)
        if not files:
            raise UserError(
                f"{str(root)!r} holds no images: give A/ and B/ folders with the same file "
                "names, or side-by-side A|B images"
            )
        wide = stack_images([read_image(p) for p in files], files, None, "side-by-side")
        if wide.shape[2] % 2:
            raise UserError(
                f"side-by-side images in {str(root)!r} are {wide.shape[2]} pixels wide, an odd "
                "number: each must be A and B of equal width joined left to right"
            )
        half = wide.shape[2] // 2
        a, b = wide[:, :, :half], wide[:, :, half:]
        for want, got, what in ((channels_a, a, "A"), (channels_b, b, "B")):
            if want is not None and got.shape[-1] != want:
                raise UserError(
                    f"the {what} halves in {str(root)!r} have {got.shape[-1]} channels, not {want}"
                )
        names = tuple(p.stem for p in files)
    return Pairs(a, b, None, names, root.name)
