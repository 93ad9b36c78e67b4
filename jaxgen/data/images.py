"""Image datasets for the GANs: MNIST-format IDX files, tensorflow-datasets, and a built-in set.

Every loader returns an :class:`Images`: float32 ``[N, H, W, C]`` in ``[-1, 1]`` (the range of the
generator's tanh) and int32 labels ``[N]`` where the source has them (the evaluation classifier
needs them; GAN training does not).

The built-in dataset needs no network: scikit-learn's copy of the UCI handwritten digits (1,797
8x8 grey images, 10 classes, shipped inside the ``scikit-learn`` wheel), upsampled to 28x28.
It is small and blurry; it is there so the quickstart runs offline. Real MNIST comes from
``config.data.path=DIR`` (IDX files, e.g. ``../shared/data/mnist``) or tensorflow-datasets.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxgen.errors import UserError

BUILTIN_DESCRIPTION = (
    "scikit-learn's UCI handwritten digits (1,797 images, 8x8 upsampled to 28x28; "
    "offline, shipped in the scikit-learn package)"
)
TFDS_NAMES = ("mnist", "fashion_mnist", "kmnist", "emnist", "svhn_cropped", "cifar10", "celeb_a")


@dataclass(frozen=True)
class Images:
    """``images`` float32 ``[N, H, W, C]`` in [-1, 1]; ``labels`` int32 ``[N]`` or ``None``."""

    images: np.ndarray
    labels: np.ndarray | None
    name: str

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


def _to_unit_range(u8: np.ndarray, max_value: float = 255.0) -> np.ndarray:
    return (u8.astype(np.float32) / (max_value / 2.0) - 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- IDX files


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX array (the MNIST file format; ``.gz`` or raw) as a uint8 NumPy array."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read IDX file {str(p)!r} ({e}); re-download it") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(
            f"{str(p)!r} is not an unsigned-byte IDX file (bad magic number); "
            "expected MNIST-format files such as train-images-idx3-ubyte.gz"
        )
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise UserError(
            f"IDX file {str(p)!r} is truncated: header says {dims}, found {body.size} values; "
            "re-download it"
        )
    return body.reshape(dims)


def load_idx_dir(path: str | Path) -> Images:
    """Every ``*-images-idx3-ubyte[.gz]`` file in a directory (with its ``labels`` twin where
    present)."""
    d = Path(path).expanduser()
    if not d.exists():
        raise UserError(f"image directory {str(d)!r} does not exist; check config.data.path")
    if not d.is_dir():
        raise UserError(
            f"{str(d)!r} is not a directory; config.data.path must name a directory "
            "holding MNIST-format IDX files (e.g. t10k-images-idx3-ubyte.gz)"
        )
    image_files = sorted(d.glob("*-images-idx3-ubyte*"))
    if not image_files:
        raise UserError(
            f"no MNIST-format image files (*-images-idx3-ubyte[.gz]) in {str(d)!r}; "
            "point config.data.path at the folder holding them, "
            "or use config.data.source=builtin"
        )
    xs, ys = [], []
    for f in image_files:
        x = read_idx(f)
        if x.ndim != 3:
            raise UserError(f"{str(f)!r} holds an array of shape {x.shape}, not images [N, H, W]")
        xs.append(x)
        lab = f.with_name(f.name.replace("-images-idx3-", "-labels-idx1-"))
        ys.append(read_idx(lab).astype(np.int32) if lab.exists() else None)
    if len({x.shape[1:] for x in xs}) != 1:
        raise UserError(
            f"the IDX files in {str(d)!r} hold images of different sizes; "
            "keep one dataset per folder"
        )
    labels = np.concatenate(ys) if all(y is not None for y in ys) else None
    images = np.concatenate(xs)
    if labels is not None and len(labels) != len(images):
        raise UserError(
            f"{str(d)!r}: {len(images)} images but {len(labels)} labels; the files do not match"
        )
    if len(images) == 0:
        raise UserError(f"the IDX files in {str(d)!r} hold no images")
    return Images(_to_unit_range(images)[..., None], labels, f"idx:{d}")


# ----------------------------------------------------------------------------- built-in and tfds


def builtin_digits(size: int = 28, box: int = 0) -> Images:
    """scikit-learn's 8x8 digits (values 0..16), bilinearly upsampled to ``size x size``; with
    ``0 < box < size``, upsampled to ``box x box`` and centred on a ``size x size`` background
    instead (``box=20``: MNIST's own framing, digits in a 20x20 box in 28x28).

    Loaded once per process and size (reading the CSV and resizing take about a second); the arrays
    are read-only, so no caller can change what the next one gets."""
    if 0 < box < size:
        inner, labels = _builtin_digits(box)
        lo = (size - box) // 2
        images = np.pad(
            inner, ((0, 0), (lo, size - box - lo), (lo, size - box - lo), (0, 0)),
            constant_values=-1.0,
        )  # fmt: skip
        return Images(images, labels, f"builtin:sklearn_digits@{box}in{size}")
    images, labels = _builtin_digits(size)
    return Images(images, labels, "builtin:sklearn_digits")


def _uci_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled UCI digits as ``(images [1797, 8, 8] in 0..16, labels)``.

    Read straight from the CSV that scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``,
    the file ``load_digits`` parses) without importing ``sklearn.datasets``, whose import alone
    costs about 2 s; ``load_digits`` is the fallback if that file ever moves."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the built-in digits need scikit-learn (`pip install scikit-learn`); or point "
            "config.data.path at MNIST IDX files"
        )
    csv = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if csv.is_file():
        with gzip.open(csv, "rt") as f:
            table = np.loadtxt(f, delimiter=",")
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int32)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target.astype(np.int32)


@functools.lru_cache(maxsize=4)
def _builtin_digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    raw, labels = _uci_digits()
    small = (raw / 16.0 * 255.0).clip(0, 255).astype(np.uint8)
    big = np.stack(
        [np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in small]
    )
    images = _to_unit_range(big)[..., None]
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def tfds_images(
    name: str,
    split: str = "train",
    *,
    image_size: int = 0,
    data_dir: str | None = None,
    check_network: bool = True,
    limit: int = 0,
) -> Images:
    """A tensorflow-datasets image dataset via ``tfds.data_source`` (no TensorFlow needed)."""
    import tensorflow_datasets as tfds

    from jaxgen.charrnn.data import _reachable

    if check_network and not _reachable():
        raise UserError(
            f"cannot reach the tensorflow-datasets download host to fetch {name!r}; "
            "offline, use config.data.source=builtin or config.data.path=DIR with "
            "MNIST-format IDX files"
        )
    try:
        src = tfds.data_source(name, split=split, data_dir=data_dir, download=True)
    except Exception as e:
        raise UserError(
            f"tensorflow-datasets could not provide {name!r} split {split!r}: "
            f"{type(e).__name__}: {e}"
        ) from e
    n = len(src) if not limit else min(limit, len(src))
    xs, ys = [], []
    for i in range(n):
        ex = src[i]
        im = np.asarray(ex["image"])
        if image_size and im.shape[:2] != (image_size, image_size):
            from PIL import Image

            im = np.asarray(
                Image.fromarray(im.squeeze()).resize((image_size, image_size), Image.BILINEAR)
            )
            im = im.reshape(image_size, image_size, -1)
        xs.append(im)
        ys.append(int(ex["label"]) if "label" in ex else -1)
    if not xs:
        raise UserError(f"tensorflow-datasets {name!r} split {split!r} is empty")
    labels = np.asarray(ys, np.int32)
    return Images(
        _to_unit_range(np.stack(xs)), None if (labels < 0).any() else labels, f"tfds:{name}"
    )


def load_npy(path: str | Path) -> Images:
    """A ``.npy`` array of images ``[N, H, W, C]`` (uint8 0..255, or float in [-1, 1])."""
    p = Path(path)
    try:
        x = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {str(p)!r} as a .npy array ({e})") from None
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise UserError(
            f"{str(p)!r} holds an array of shape {x.shape}; expected images [N, H, W, C]"
        )
    if len(x) == 0:
        raise UserError(
            f"{str(p)!r} holds no images (shape {x.shape}); give a dataset with some images in it"
        )
    if x.dtype == np.uint8:
        x = _to_unit_range(x)
    else:
        x = x.astype(np.float32)
        if not np.isfinite(x).all() or x.min() < -1.0001 or x.max() > 1.0001:
            raise UserError(
                f"{str(p)!r}: float images must be finite and in [-1, 1] "
                f"(found [{np.nanmin(x):.3g}, {np.nanmax(x):.3g}])"
            )
    return Images(x, None, f"npy:{p}")


def load_images(
    source: str = "builtin",
    path: str = "",
    tfds_name: str = "mnist",
    *,
    image_size: int = 0,
    split: str = "train",
) -> Images:
    """The dataset named by a config's ``data`` group. ``path`` (a directory of IDX files, or a
    ``.npy`` file) wins over ``source``."""
    if path:
        p = Path(path).expanduser()
        data = load_npy(p) if p.suffix == ".npy" else load_idx_dir(p)
    elif source == "builtin":
        data = builtin_digits()
    elif source == "tfds":
        data = tfds_images(tfds_name, split, image_size=image_size)
    else:
        raise UserError(
            f"unknown data.source {source!r}; choose 'builtin', 'tfds', or set data.path"
        )
    if len(data) == 0:
        raise UserError(f"the dataset {data.name} is empty; give one with some images in it")
    return data


def fit_to_model(data: Images, size: int, channels: int) -> Images:
    """Images shaped for a model taking ``[size, size, channels]``.

    28x28 images go into a 32x32 model padded with the background value (-1), the DCGAN recipe for
    MNIST. Anything else that does not match is refused with a message naming both shapes.
    """
    n, h, w, c = data.images.shape
    if c != channels:
        raise UserError(
            f"the dataset {data.name} has {c} channel(s) but the model takes {channels}; set "
            f"config.model.channels={c} (or use a dataset with {channels} channels)"
        )
    if h != w:
        raise UserError(
            f"the dataset {data.name} has {h}x{w} images; the models take square images"
        )
    if h == size:
        return data
    if h < size and (size - h) % 2 == 0:
        p = (size - h) // 2
        x = np.pad(data.images, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-1.0)
        return Images(x, data.labels, data.name)
    raise UserError(
        f"the dataset {data.name} has {h}x{w} images but the model makes "
        f"{size}x{size}; set config.model.image_size={h} (the DCGAN takes 28 (padded "
        f"to 32) or 32; the FC GAN takes 28), or resize the data "
        f"(config.data.image_size={size} for tensorflow-datasets)"
    )


class ImageBatches:
    """Shuffled minibatches, reproducible by step: batch ``s`` is the ``s % n``-th slice of epoch
    ``s // n``'s permutation, drawn from ``fold_in(key(seed), epoch)``. The last partial batch of an
    epoch is dropped, so every step sees ``batch`` images and compiles once."""

    def __init__(self, images: np.ndarray, batch: int, seed: int, labels: np.ndarray | None = None):
        if batch <= 0:
            raise UserError(f"config.train.batch must be a positive integer, got {batch}")
        if len(images) < batch:
            raise UserError(
                f"the dataset has {len(images)} images, fewer than one batch of {batch}; lower "
                "config.train.batch or use more data"
            )
        self.images = images
        self.labels = labels
        self.batch = batch
        self.seed = seed
        self.per_epoch = len(images) // batch
        self._epoch, self._perm = None, None

    def __len__(self) -> int:
        return self.per_epoch

    def epoch_of(self, step: int) -> int:
        return step // self.per_epoch

    def for_step(self, step: int) -> np.ndarray:
        """The batch of global step ``step``: slice ``step % n`` of epoch ``step // n``'s
        permutation."""
        return self.images[self._rows(step)]

    def _rows(self, step: int) -> np.ndarray:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm, self._epoch = rng.permutation(len(self.images)), epoch
        return self._perm[k * self.batch : (k + 1) * self.batch]

    def pair_for_step(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """``(images, labels)`` of step ``step``'s batch (the same rows as :meth:`for_step`)."""
        rows = self._rows(step)
        return self.images[rows], self.labels[rows]
