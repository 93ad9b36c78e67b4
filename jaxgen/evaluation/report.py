"""``jaxgen eval``'s numbers: generated samples scored beside real images and uniform noise.

The Frechet distance is biased (above zero even for two samples of one distribution, less so with
more images), so :func:`evaluate_samples` reports three distances, all with ``n`` images on each
side against the same real reference half ``B``: generated vs ``B``, real half ``A`` vs ``B``
(the floor a perfect generator would reach at this ``n``), and uniform noise vs ``B`` (what
"nothing learned" looks like). Every function is pure: randomness comes from an explicit ``seed``.
"""

from __future__ import annotations

import numpy as np

from jaxgen.data.images import Images
from jaxgen.errors import UserError
from jaxgen.evaluation.classifier import (
    Params,
    check_classifier_takes,
    classifier_num_classes,
    features_and_probs,
)
from jaxgen.evaluation.scores import (
    class_histogram,
    classifier_score,
    frechet_distance,
    gaussian_stats,
)

MIN_SAMPLES = 100
RANGE_TOLERANCE = 1e-3  # float32 tanh outputs may overshoot +-1 by rounding


def _check_samples(samples, image_shape: tuple[int, int, int], min_samples: int) -> np.ndarray:
    """``samples`` as float32 images in [-1, 1] of ``image_shape``; UserError naming the fix."""
    x = np.asarray(samples)
    h, w, c = image_shape
    if x.ndim == 3 and x.shape[1:] == (h, w) and c == 1:
        raise UserError(
            f"samples have shape {x.shape}, without a channel axis; pass samples[..., None] "
            f"(images [N, {h}, {w}, 1])"
        )
    if x.ndim != 4:
        raise UserError(f"samples must be images [N, H, W, C]; got an array of shape {x.shape}")
    if x.shape[3] != c:
        raise UserError(
            f"samples have {x.shape[3]} channel(s) but the real images (and the classifier) have "
            f"{c}; generate {c}-channel images or evaluate against a {x.shape[3]}-channel dataset"
        )
    if x.shape[1:3] != (h, w):
        raise UserError(
            f"samples are {x.shape[1]}x{x.shape[2]} but the real images are {h}x{w}; crop or "
            f"resize the samples to {h}x{w} (e.g. remove the DCGAN's 2-pixel padding of 28x28 "
            "digits) or evaluate against real images of the samples' size"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise UserError(
            f"samples have dtype {x.dtype}; pass floats in [-1, 1] (for uint8 0..255 use "
            "x / 127.5 - 1)"
        )
    if len(x) < min_samples:
        raise UserError(
            f"got {len(x)} samples; the statistics need at least {min_samples}, so generate more"
        )
    bad = ~np.isfinite(x)
    if bad.any():
        n_bad = int(bad.reshape(len(x), -1).any(1).sum())
        raise UserError(
            f"{n_bad} of {len(x)} samples contain NaN or infinite values; the generator diverged, "
            "so evaluate an earlier checkpoint"
        )
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.0 - RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        raise UserError(
            f"sample values lie in [{lo:.4g}, {hi:.4g}], outside [-1, 1] (the generator's tanh "
            "range); map [0, 1] images with 2 * x - 1 and 0..255 images with x / 127.5 - 1"
        )
    return np.clip(x.astype(np.float32), -1.0, 1.0)


def _column(
    fd_stats: tuple[np.ndarray, np.ndarray], ref_stats, probs: np.ndarray, n_images: int,
    min_fraction: float,
) -> dict:  # fmt: skip
    """One column of the report: FD of ``fd_stats`` against ``ref_stats``, score and histogram of
    ``probs``, and ``n_images``."""
    return {
        "fd": frechet_distance(*fd_stats, *ref_stats), "classifier_score": classifier_score(probs),
        "n": int(n_images), **class_histogram(probs, min_fraction=min_fraction),
    }  # fmt: skip


def _images_column(
    params: Params, x: np.ndarray, ref_stats, n: int, min_fraction: float, batch: int
) -> dict:
    """Metrics of images ``x``: FD of its first ``n`` against the reference, score and histogram
    on all."""
    features, probs = features_and_probs(params, x, batch)
    return _column(gaussian_stats(features[:n]), ref_stats, probs, len(x), min_fraction)


def evaluate_samples(
    samples: np.ndarray,
    real: Images,
    params: Params,
    *,
    seed: int = 0,
    min_samples: int = MIN_SAMPLES,
    min_fraction: float = 0.01,
    batch: int = 500,
    classifier_info: dict | None = None,
) -> dict:
    """Quality of generated ``samples [N, H, W, C]`` (floats in [-1, 1]) against ``real`` images.

    The real images are split (seeded) into disjoint halves ``A`` and ``B``; with
    ``n = min(N, len(B))``, three columns are computed, each FD with ``n`` images on both sides
    against the same reference ``B[:n]`` so the estimator's small-sample bias is the same in all:

    * ``generated``: FD(samples[:n], B[:n]); classifier score and histogram over all N samples.
    * ``real``: FD(A[:n], B[:n]), the floor at this sample size; score and histogram over all real
      images.
    * ``noise``: ``n`` images of uniform noise in [-1, 1] (seeded), FD against ``B[:n]``.

    Returns a JSON-serialisable dict (see :func:`format_report`). Raises :class:`UserError` for
    samples of the wrong shape or channels, non-finite or out-of-range values, fewer than
    ``min_samples`` samples, or a classifier that cannot take the images.
    """
    check_classifier_takes(params, real.shape, f"real images of {real.name}")
    x = _check_samples(samples, real.shape, min_samples)
    if len(real) < 2 * min_samples:
        raise UserError(
            f"the real dataset {real.name} has {len(real)} images; the real-vs-real baseline "
            f"needs at least {2 * min_samples} (two halves of {min_samples}), so use a larger "
            "dataset"
        )
    perm = np.random.default_rng([seed, 0xA5]).permutation(len(real))
    half = len(real) // 2
    a_idx, b_idx = perm[:half], perm[half : 2 * half]
    n = min(len(x), half)

    real_features, real_probs = features_and_probs(params, real.images, batch)
    ref_stats = gaussian_stats(real_features[b_idx[:n]])
    real_a_stats = gaussian_stats(real_features[a_idx[:n]])
    real_col = _column(real_a_stats, ref_stats, real_probs, len(real), min_fraction)
    gen_col = _images_column(params, x, ref_stats, n, min_fraction, batch)
    noise_shape = (n,) + real.shape
    noise = np.random.default_rng([seed, 0x4015E]).uniform(-1.0, 1.0, noise_shape)
    noise_col = _images_column(params, noise.astype(np.float32), ref_stats, n, min_fraction, batch)
    return {
        "n_samples": int(len(x)), "n_fd": int(n), "real_dataset": real.name,
        "n_real": int(len(real)), "image_shape": list(real.shape),
        "num_classes": classifier_num_classes(params), "seed": seed, "min_fraction": min_fraction,
        "generated": gen_col, "real": real_col, "noise": noise_col, "classifier": classifier_info,
    }  # fmt: skip


def format_report(result: dict) -> str:
    """A short table of :func:`evaluate_samples`'s result: generated / real-vs-real / noise."""
    cols = [result["generated"], result["real"], result["noise"]]
    k, n = result["num_classes"], result["n_fd"]
    pct = f"{100 * result['min_fraction']:g}%"
    rows = [
        ("", ["generated", "real vs real", "uniform noise"]),
        (f"Frechet distance (n={n}, lower=better)", [f"{c['fd']:.3f}" for c in cols]),
        (f"classifier score (1..{k}, higher=better)",
         [f"{c['classifier_score']:.3f}" for c in cols]),
        (f"classes covered (>= {pct} of images)", [f"{c['covered']}/{k}" for c in cols]),
        ("largest class fraction", [f"{c['max_fraction']:.3f}" for c in cols]),
        ("images", [str(c["n"]) for c in cols]),
    ]  # fmt: skip
    name_width = max(len(name) for name, _ in rows)
    widths = [max(len(values[i]) for _, values in rows) for i in range(3)]
    lines = [f"sample quality against {result['real_dataset']} ({result['n_real']} real images)"]
    clf = result.get("classifier") or {}
    if clf.get("holdout_accuracy") is not None:
        lines.append(
            f"classifier: {100 * clf['holdout_accuracy']:.2f}% held-out accuracy on "
            f"{clf.get('n_holdout')} images"
        )
    for name, values in rows:
        cells = "  ".join(f"{v:>{widths[i]}}" for i, v in enumerate(values))
        lines.append(f"{name:<{name_width}}  " + cells)
    lines.append(
        f"FD: every column uses n={n} images against the same real half B; 'real vs real' is the "
        "other half A, the floor at this n."
    )
    return "\n".join(lines)
