"""The sample-quality evaluator a GAN trainer calls every ``train.eval_every`` steps.

It scores a batch of generated samples with the cached evaluation classifier
(:mod:`jaxgen.evaluation.cache`): the Frechet distance of their features against a fixed seeded
subset of the real images, the classifier score and the class coverage. These numbers pick the
``best/`` checkpoint and are logged in ``metrics.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from jaxgen.data.images import Images
from jaxgen.evaluation.cache import get_classifier
from jaxgen.evaluation.classifier import features_and_probs
from jaxgen.evaluation.scores import class_histogram, classifier_score, frechet_distance


class MessageLog(Protocol):
    """Where the evaluator reports what it does (a trainer's run log)."""

    def message(self, text: str) -> None: ...


def _mean_and_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[F]`` (float32, as logged since the first runs) and covariance ``[F, F]``
    (float64) of ``features [N, F]``."""
    return features.mean(0), np.cov(features, rowvar=False)


class SampleQuality:
    """Sample quality during training: the Frechet distance of classifier features (and the
    classifier score) of ``n`` samples against ``n`` real images, with the evaluation classifier
    trained once per dataset and cached in ``cache_dir``.

    ``SampleQuality(data, n, cache_dir, seed, log)(samples)`` returns ``{"fid",
    "classifier_score", "classes_covered", "top_class_fraction"}`` as floats. The real subset is
    the first ``n`` of a ``seed``-ed permutation, fixed for the whole run; ``samples`` beyond the
    first ``n`` are not used.
    """

    def __init__(self, data: Images, n: int, cache_dir: Path, seed: int, log: MessageLog):
        self.n = min(n, len(data))
        log.message(f"quality: evaluation classifier for {data.name} (cached in {cache_dir})")
        self.classifier_params, info = get_classifier(data, cache_dir, seed=seed)
        accuracy = info.get("holdout_accuracy") or float("nan")
        log.message(f"quality: classifier held-out accuracy {accuracy:.4f}")
        rng = np.random.default_rng(seed)
        real = data.images[rng.permutation(len(data))[: self.n]]
        real_features, _ = features_and_probs(self.classifier_params, real)
        self.real_mean, self.real_cov = _mean_and_cov(real_features)

    def __call__(self, samples: np.ndarray, labels: np.ndarray | None = None) -> dict:
        """The scores of ``samples``; with the ``labels`` a conditional generator was asked for,
        also ``label_accuracy`` (how often the classifier reads the asked class) and its lowest
        value over the classes, ``worst_class_accuracy``."""
        features, probs = features_and_probs(self.classifier_params, samples[: self.n])
        fid = frechet_distance(*_mean_and_cov(features), self.real_mean, self.real_cov)
        histogram = class_histogram(probs)
        out = {
            "fid": float(fid), "classifier_score": float(classifier_score(probs)),
            "classes_covered": float(histogram["covered"]),
            "top_class_fraction": float(histogram["max_fraction"]),
        }  # fmt: skip
        if labels is not None:  # the scalars only: metrics.jsonl rows hold numbers
            agree = label_agreement(probs, np.asarray(labels)[: len(probs)])
            out["label_accuracy"] = agree["label_accuracy"]
            out["worst_class_accuracy"] = agree["worst_class_accuracy"]
        return out


def label_agreement(probs: np.ndarray, labels: np.ndarray) -> dict:
    """How often the classifier's most likely class is the asked ``labels [N]``: overall
    (``label_accuracy``), per class (``per_class_accuracy``, a list over ``0 ... max label``) and
    the worst class's (``worst_class_accuracy``)."""
    hit = np.argmax(probs, -1) == labels
    per_class = [float(hit[labels == k].mean()) for k in range(int(labels.max()) + 1)]
    return {
        "label_accuracy": float(hit.mean()),
        "worst_class_accuracy": float(min(per_class)),
        "per_class_accuracy": per_class,
    }
