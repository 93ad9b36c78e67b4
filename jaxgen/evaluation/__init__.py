"""Image-quality evaluation of generated samples by a small classifier trained on the real images.

* :mod:`~jaxgen.evaluation.classifier`: the CNN (init, apply, training) and its features and
  class probabilities for a set of images.
* :mod:`~jaxgen.evaluation.cache`: one trained classifier per dataset, kept on disk.
* :mod:`~jaxgen.evaluation.scores`: Frechet distance, classifier score, class histogram.
* :mod:`~jaxgen.evaluation.report`: ``jaxgen eval``'s columns (generated, real vs real, noise),
  the sample checks and the printed table.
* :mod:`~jaxgen.evaluation.during_training`: :class:`SampleQuality`, the evaluator a GAN trainer
  runs every ``train.eval_every`` steps.

To replace the classifier's training in a test, patch ``jaxgen.evaluation.classifier``'s
``train_classifier`` (the cache looks it up there).
"""

from jaxgen.evaluation.cache import CACHE_VERSION, get_classifier
from jaxgen.evaluation.classifier import (
    classifier_apply,
    classifier_init,
    classifier_num_classes,
    features_and_probs,
    train_classifier,
)
from jaxgen.evaluation.during_training import SampleQuality
from jaxgen.evaluation.report import MIN_SAMPLES, evaluate_samples, format_report
from jaxgen.evaluation.scores import (
    class_histogram,
    classifier_score,
    frechet_distance,
    gaussian_stats,
)

__all__ = [
    "CACHE_VERSION",
    "MIN_SAMPLES",
    "SampleQuality",
    "class_histogram",
    "classifier_apply",
    "classifier_init",
    "classifier_num_classes",
    "classifier_score",
    "evaluate_samples",
    "features_and_probs",
    "format_report",
    "frechet_distance",
    "gaussian_stats",
    "get_classifier",
    "train_classifier",
]
