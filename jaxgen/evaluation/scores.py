"""The numbers computed from the evaluation classifier's features and probabilities (float64 NumPy).

* **Frechet distance** (FID's formula on the classifier's features): the distance between the
  Gaussians fitted to real and generated features,
  ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``.
  Lower is better. It is a *biased* estimator: above zero even for two samples of the same
  distribution, the bias shrinking with the sample size, so numbers are only comparable at the
  same sample size (see :func:`jaxgen.evaluation.report.evaluate_samples`).
* **Classifier score** (the Inception Score on this classifier): ``exp(mean_x KL(p(y|x) || p(y)))``,
  between 1 and the number of classes; high when each sample is confidently one class and the
  classes are used evenly.
* **Class histogram**: how many samples the classifier puts in each class, how many classes get at
  least a given fraction (mode coverage; a collapsed GAN covers few), and the largest fraction.
"""

from __future__ import annotations

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[F]`` and unbiased covariance ``[F, F]`` of ``features [N, F]``, in float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need features [N >= 2, F], got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative rounding eigenvalues clipped to
    0)."""
    w, v = np.linalg.eigh((s + s.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Frechet (2-Wasserstein) distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)``, in float64:

        ``|mu1 - mu2|^2 + tr(cov1) + tr(cov2) - 2 tr((cov1^(1/2) cov2 cov1^(1/2))^(1/2))``.

    The cross term equals ``tr((cov1 cov2)^(1/2))`` (FID's form) but is computed from two
    symmetric eigendecompositions instead of ``scipy.linalg.sqrtm`` of a non-symmetric product, so
    it stays real and finite for singular covariances (fewer samples than features). Tiny negative
    eigenvalues from rounding are clipped to 0, and so is the result.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if mu1.shape != (d,) or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(
            f"need mu [D] and cov [D, D] for both; got {mu1.shape}, {cov1.shape}, {mu2.shape}, "
            f"{cov2.shape}"
        )
    if not all(np.isfinite(a).all() for a in (mu1, mu2, cov1, cov2)):
        raise ValueError("frechet_distance got non-finite means or covariances")
    sqrt_cov1 = _psd_sqrt(cov1)
    m = sqrt_cov1 @ cov2 @ sqrt_cov1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2.0), 0.0, None)).sum()
    diff = mu1 - mu2
    fd = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * cross
    return float(max(fd, 0.0))


def classifier_score(probs: np.ndarray) -> float:
    """``exp(mean_x KL(p(y|x) || p(y)))`` for ``probs [N, K]`` (rows are p(y|x); p(y) is their
    mean).

    1 when every row is the same distribution; ``K`` when each row is one-hot and the classes are
    equally used. Terms with ``p(y|x) = 0`` contribute 0.
    """
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError(f"need probs [N, K], got shape {p.shape}")
    py = p.mean(0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(py)), 0.0)
    return float(np.exp(terms.sum(1).mean()))


def class_histogram(
    probs_or_labels: np.ndarray, *, num_classes: int | None = None, min_fraction: float = 0.01
) -> dict:
    """Predicted-class histogram of ``probs [N, K]`` (argmax) or integer labels ``[N]``.

    Returns plain Python values: ``counts`` and ``fractions`` (per class), ``covered`` (how many
    classes hold at least ``min_fraction`` of the samples), ``max_fraction`` (the largest class's
    share: 1/K for a perfectly even generator, 1 for a fully collapsed one), ``num_classes`` and
    ``min_fraction``.
    """
    a = np.asarray(probs_or_labels)
    if a.ndim == 2:
        k = a.shape[1] if num_classes is None else num_classes
        labels = a.argmax(1)
    elif a.ndim == 1:
        labels = a.astype(np.int64)
        k = int(labels.max()) + 1 if num_classes is None else num_classes
    else:
        raise ValueError(f"need probs [N, K] or labels [N], got shape {a.shape}")
    if len(labels) == 0:
        raise ValueError("class_histogram needs at least one sample")
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must lie in 0..{k - 1}")
    counts = np.bincount(labels, minlength=k)
    fractions = counts / counts.sum()
    return {
        "counts": counts.tolist(), "fractions": fractions.tolist(),
        "covered": int((fractions >= min_fraction).sum()), "max_fraction": float(fractions.max()),
        "num_classes": int(k), "min_fraction": float(min_fraction),
    }  # fmt: skip
