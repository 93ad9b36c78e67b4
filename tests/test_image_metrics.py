"""jaxgen.evaluation: Frechet distance, classifier score, class histogram, the evaluation classifier
and its cache, evaluate_samples and its input checks, the evaluator run during GAN training."""

import json
import warnings

import jax
import numpy as np
import pytest

from jaxgen import evaluation
from jaxgen.data.images import Images
from jaxgen.errors import UserError
from jaxgen.evaluation import classifier


def _random_cov(rng, d, n=None):
    a = rng.normal(size=(n or 2 * d, d))
    return a.T @ a / len(a)


# ----------------------------------------------------------------------------- Frechet distance


def test_frechet_distance_of_equal_gaussians_is_zero_even_when_singular():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=64)
    for cov in (_random_cov(rng, 64), _random_cov(rng, 64, n=20)):  # full rank, rank 20
        assert evaluation.frechet_distance(mu, cov, mu, cov) == pytest.approx(
            0.0, abs=1e-8 * np.trace(cov)
        )
    # from features with fewer samples than dimensions (the small-n case evaluate_samples meets)
    mu1, cov1 = evaluation.gaussian_stats(rng.normal(size=(50, 128)))
    assert evaluation.frechet_distance(mu1, cov1, mu1, cov1) == pytest.approx(0.0, abs=1e-7)


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=10), rng.normal(size=10)
    a, b = rng.uniform(0.1, 3.0, 10), rng.uniform(0.0, 3.0, 10)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert evaluation.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(
        expected, rel=1e-12
    )
    # same covariance: only the means count
    cov = _random_cov(rng, 10)
    assert evaluation.frechet_distance(mu1, cov, mu2, cov) == pytest.approx(
        np.sum((mu1 - mu2) ** 2), rel=1e-8
    )


def _fd_reference(mu1, cov1, mu2, cov2):
    """Independent computation: FID's tr sqrtm(cov1 @ cov2) via scipy, else eigenvalues of
    cov1 @ cov2."""
    try:
        from scipy import linalg

        cross = np.trace(linalg.sqrtm(cov1 @ cov2)).real
    except ImportError:
        cross = np.sqrt(np.clip(np.linalg.eigvals(cov1 @ cov2).real, 0, None)).sum()
    return np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * cross


def test_frechet_distance_random_psd_matches_reference_and_is_symmetric():
    rng = np.random.default_rng(2)
    d = 20
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    cov1, cov2 = _random_cov(rng, d), _random_cov(rng, d) * 2.0
    fd = evaluation.frechet_distance(mu1, cov1, mu2, cov2)
    assert fd == pytest.approx(_fd_reference(mu1, cov1, mu2, cov2), rel=1e-8)
    assert evaluation.frechet_distance(mu2, cov2, mu1, cov1) == pytest.approx(fd, rel=1e-10)
    assert fd > 1.0


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="mu"):
        evaluation.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_gaussian_stats_is_float64_mean_and_unbiased_cov():
    x = np.random.default_rng(3).normal(size=(30, 4)).astype(np.float32)
    mu, cov = evaluation.gaussian_stats(x)
    assert mu.dtype == np.float64 and cov.shape == (4, 4)
    xc = x.astype(np.float64) - x.astype(np.float64).mean(0)
    np.testing.assert_allclose(cov, xc.T @ xc / 29, rtol=1e-12)


# ---------------------------------------------------------------------- classifier score, histogram


def test_classifier_score_limits():
    k = 7
    one_hot_spread = np.eye(k)[np.arange(70) % k]
    assert evaluation.classifier_score(one_hot_spread) == pytest.approx(k, rel=1e-12)
    assert evaluation.classifier_score(np.eye(k)[np.zeros(50, int)]) == pytest.approx(
        1.0, rel=1e-12
    )
    assert evaluation.classifier_score(np.full((40, k), 1.0 / k)) == pytest.approx(1.0, rel=1e-12)
    # two equally used classes, each predicted with confidence 0.9: exp(KL) = exp(log 2 - H(0.9))
    p = np.array([[0.9, 0.1], [0.1, 0.9]] * 10)
    h = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))
    assert evaluation.classifier_score(p) == pytest.approx(np.exp(np.log(2) - h), rel=1e-12)


def test_class_histogram_counts_coverage_and_threshold():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 15 + [3] * 4 + [4] * 1)  # 100 samples, 6 classes
    h = evaluation.class_histogram(labels, num_classes=6)
    assert h["counts"] == [50, 30, 15, 4, 1, 0]
    np.testing.assert_allclose(h["fractions"], [0.5, 0.3, 0.15, 0.04, 0.01, 0.0])
    assert h["covered"] == 5  # 1% counts as covered
    assert h["max_fraction"] == pytest.approx(0.5)
    assert evaluation.class_histogram(labels, num_classes=6, min_fraction=0.05)["covered"] == 3
    # probabilities: the argmax is the predicted class; K comes from the width
    probs = np.eye(4)[[3, 3, 1]] * 0.7 + 0.075
    h = evaluation.class_histogram(probs)
    assert h["counts"] == [0, 1, 0, 2] and h["covered"] == 2 and h["num_classes"] == 4
    json.dumps(h)  # plain Python values


# --------------------------------------------------------------------------- classifier, evaluation


@pytest.mark.xdist_group("digits")  # shares the trained digits_classifier (conftest)
def test_short_training_on_builtin_digits_beats_chance_with_one_compilation(digits_classifier):
    data, params, info, hold = digits_classifier
    assert info["n_holdout"] == len(hold) == 359 and info["n_train"] == 1438
    assert info["holdout_accuracy"] > 0.8, info
    assert info["compilations"] == 1  # 66 steps, one trace of the train step
    # the reported accuracy is that of the returned params on the held-out images
    _, probs = evaluation.features_and_probs(params, data.images[hold])
    assert np.mean(probs.argmax(1) == data.labels[hold]) == pytest.approx(info["holdout_accuracy"])


def test_holdout_split_is_seeded_and_disjoint():
    tr, ho = classifier._holdout_split(100, 0.2, 3)
    assert len(ho) == 20 and not set(tr) & set(ho) and len(set(tr) | set(ho)) == 100
    tr2, ho2 = classifier._holdout_split(100, 0.2, 3)
    assert (ho == ho2).all() and not (ho == classifier._holdout_split(100, 0.2, 4)[1]).all()


@pytest.mark.xdist_group("digits")  # shares the trained digits_classifier (conftest)
def test_evaluate_samples_real_scores_better_than_noise(digits_classifier):
    data, params, info, hold = digits_classifier
    res = evaluation.evaluate_samples(data.images[hold], data, params, seed=0, classifier_info=info)
    gen, real, noise = res["generated"], res["real"], res["noise"]
    assert res["n_fd"] == len(hold) and noise["n"] == len(hold)
    assert gen["fd"] < noise["fd"] / 10 and real["fd"] < noise["fd"] / 10
    assert gen["classifier_score"] > 5.0 > 2.0 > noise["classifier_score"]
    assert gen["covered"] == 10 and noise["covered"] < 10
    json.dumps(res)  # the CLI writes it as JSON
    report = evaluation.format_report(res)
    assert "real vs real" in report and "uniform noise" in report and f"{gen['fd']:.3f}" in report
    assert "held-out accuracy" in report
    # seeded: the same call gives the same numbers
    assert (
        evaluation.evaluate_samples(data.images[hold], data, params, seed=0)["noise"]["fd"]
        == noise["fd"]
    )


@pytest.mark.xdist_group("digits")  # shares the trained digits_classifier (conftest)
def test_features_and_probs_padding_matches_one_batch(digits_classifier):
    data, params, _, _ = digits_classifier
    x = data.images[:23]
    f1, p1 = evaluation.features_and_probs(params, x, batch=500)
    f2, p2 = evaluation.features_and_probs(params, x, batch=7)  # 4 batches, the last padded
    assert f1.shape == (23, 128) and p1.shape == (23, 10)
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p2.sum(1), 1.0, rtol=1e-5)


def test_random_shift_moves_each_image_by_at_most_shift_pixels():
    x = np.random.default_rng(4).uniform(-1, 1, (16, 9, 9, 2)).astype(np.float32)
    np.testing.assert_array_equal(classifier._random_shift(jax.random.key(0), x, 0), x)
    y = np.asarray(classifier._random_shift(jax.random.key(0), x, 2))
    xp = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    offsets = set()
    for i in range(len(x)):
        hits = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if np.array_equal(y[i], xp[i, dy : dy + 9, dx : dx + 9])
        ]
        assert hits, f"image {i} is not a translation of its input"
        offsets.add(hits[0])
    assert len(offsets) > 3  # different images get different offsets


def test_train_classifier_needs_labels():
    x = np.zeros((300, 8, 8, 1), np.float32)
    with pytest.raises(UserError, match="no labels"):
        evaluation.train_classifier(Images(x, None, "unlabelled"))
    with pytest.raises(UserError, match="num_classes=12"):
        evaluation.train_classifier(Images(x, np.full(300, 11, np.int32), "many classes"))


# ----------------------------------------------------------------------------- input checks


@pytest.fixture(scope="module")
def small_setup():
    rng = np.random.default_rng(5)
    real = Images(
        rng.uniform(-1, 1, (240, 28, 28, 1)).astype(np.float32),
        rng.integers(0, 10, 240).astype(np.int32),
        "random",
    )
    params = evaluation.classifier_init(
        jax.random.key(0), (28, 28, 1), 10, widths=(4, 4, 4), feature_dim=8
    )
    return real, params, rng.uniform(-1, 1, (120, 28, 28, 1)).astype(np.float32)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda g: np.zeros((120, 32, 32, 1), np.float32), "32x32 but the real images are 28x28"),
        (lambda g: np.zeros((120, 28, 28, 3), np.float32), "3 channel"),
        (lambda g: g[..., 0], "without a channel axis"),
        (lambda g: g.reshape(120, -1), r"\[N, H, W, C\]"),
        (
            lambda g: np.where(np.arange(120)[:, None, None, None] < 2, np.nan, g),
            "2 of 120 samples contain NaN",
        ),
        (lambda g: (g + 1) * 127.5, r"outside \[-1, 1\]"),
        (lambda g: ((g + 1) * 127.5).astype(np.uint8), "dtype uint8"),
        (lambda g: g[:50], "at least 100"),
    ],
)
def test_evaluate_samples_rejects_bad_input(small_setup, make, match):
    real, params, good = small_setup
    with pytest.raises(UserError, match=match):
        evaluation.evaluate_samples(make(good), real, params)


def test_evaluate_samples_accepts_good_input_and_tanh_rounding(small_setup):
    real, params, good = small_setup
    x = good.copy()
    x[0, 0, 0, 0] = 1.0 + 1e-4  # float32 tanh rounding is tolerated
    res = evaluation.evaluate_samples(x, real, params)
    assert res["n_samples"] == 120 and res["n_fd"] == 120 and np.isfinite(res["generated"]["fd"])


def test_evaluate_samples_rejects_mismatched_classifier_and_small_real_set(small_setup):
    real, _, good = small_setup
    other = evaluation.classifier_init(
        jax.random.key(0), (32, 32, 3), 10, widths=(4, 4, 4), feature_dim=8
    )
    with pytest.raises(
        UserError, match="evaluation classifier was trained on images of another shape"
    ):
        evaluation.evaluate_samples(good, real, other)
    params = small_setup[1]
    tiny = Images(real.images[:150], real.labels[:150], "tiny")
    with pytest.raises(UserError, match="at least 200"):
        evaluation.evaluate_samples(good, tiny, params)


# ----------------------------------------------------------------------------- cache


def _fake_trainer(calls):
    def train(images, *, seed=0, log=None, **kw):
        calls.append(images.name)
        params = evaluation.classifier_init(
            jax.random.key(seed + len(calls)), images.shape, 10, widths=(4, 4, 4), feature_dim=8
        )
        return jax.device_get(params), {
            "holdout_accuracy": 0.5 + len(calls) / 100,
            "dataset": images.name,
            "image_shape": list(images.shape),
            "n": len(images),
            "num_classes": 10,
            "widths": [4, 4, 4],
            "feature_dim": 8,
        }

    return train


def _raise(*a, **k):
    raise AssertionError("train_classifier called although the cache holds the classifier")


@pytest.fixture
def tiny_real():
    rng = np.random.default_rng(6)
    return Images(
        rng.uniform(-1, 1, (40, 12, 12, 1)).astype(np.float32),
        rng.integers(0, 10, 40).astype(np.int32),
        "tiny",
    )


def _same_params(a, b):
    return jax.tree.all(
        jax.tree.map(lambda u, v: np.array_equal(np.asarray(u), np.asarray(v)), a, b)
    )


def test_get_classifier_trains_once_then_loads(tmp_path, monkeypatch, tiny_real):
    calls = []
    monkeypatch.setattr(classifier, "train_classifier", _fake_trainer(calls))
    p1, info1 = evaluation.get_classifier(tiny_real, tmp_path / "cache", quiet=True)
    assert calls == ["tiny"]
    files = sorted(f.name for f in (tmp_path / "cache").iterdir())
    assert (
        len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npz")
    )  # no temporaries left
    monkeypatch.setattr(classifier, "train_classifier", _raise)
    p2, info2 = evaluation.get_classifier(tiny_real, tmp_path / "cache", quiet=True)
    assert _same_params(p1, p2) and info2 == info1
    # other contents (or another seed) are another entry
    monkeypatch.setattr(classifier, "train_classifier", _fake_trainer(calls))
    other = Images(tiny_real.images[::-1].copy(), tiny_real.labels[::-1].copy(), "tiny")
    evaluation.get_classifier(other, tmp_path / "cache", quiet=True)
    evaluation.get_classifier(tiny_real, tmp_path / "cache", seed=1, quiet=True)
    assert len(calls) == 3 and len(list((tmp_path / "cache").iterdir())) == 6


@pytest.mark.parametrize("which", ["npz", "json", "shape"])
def test_get_classifier_retrains_a_corrupt_cache_with_a_warning(
    tmp_path, monkeypatch, tiny_real, which
):
    calls = []
    monkeypatch.setattr(classifier, "train_classifier", _fake_trainer(calls))
    p1, _ = evaluation.get_classifier(tiny_real, tmp_path, quiet=True)
    target = next(tmp_path.glob(f"*.{'json' if which == 'json' else 'npz'}"))
    if which == "shape":  # a readable file whose arrays do not fit the classifier
        np.savez(target, **{"conv1/w": np.zeros((3, 3, 1, 4), np.float32)})
    else:
        target.write_bytes(b"\x00not a cache file")
    with pytest.warns(RuntimeWarning, match="retraining"):
        p2, info2 = evaluation.get_classifier(tiny_real, tmp_path, quiet=True)
    assert len(calls) == 2 and info2["holdout_accuracy"] == pytest.approx(0.52)
    # the retrained classifier replaced the bad entry: the next call loads it, silently
    monkeypatch.setattr(classifier, "train_classifier", _raise)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p3, _ = evaluation.get_classifier(tiny_real, tmp_path, quiet=True)
    assert _same_params(p2, p3) and not _same_params(p1, p3)


def test_get_classifier_leaves_no_partial_entry_when_writing_fails(
    tmp_path, monkeypatch, tiny_real
):
    """A crash while the parameters are written leaves nothing under the entry's name, so the next
    call trains again instead of loading half a file."""
    calls = []
    monkeypatch.setattr(classifier, "train_classifier", _fake_trainer(calls))

    def savez_then_crash(f, **arrays):
        f.write(b"PK\x03\x04 half an npz")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", savez_then_crash)
    with pytest.raises(OSError, match="disk full"):
        evaluation.get_classifier(tiny_real, tmp_path, quiet=True)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setattr(classifier, "train_classifier", _fake_trainer(calls))
    evaluation.get_classifier(tiny_real, tmp_path, quiet=True)
    assert len(calls) == 2 and len(list(tmp_path.iterdir())) == 2


# ----------------------------------------------------------------------------- during training


class _Messages:
    def __init__(self):
        self.lines = []

    def message(self, text):
        self.lines.append(text)


def _stats64(features):
    """Mean and unbiased covariance, in float64, written out."""
    f = np.asarray(features, np.float64)
    centred = f - f.mean(0)
    return f.mean(0), centred.T @ centred / (len(f) - 1)


def test_sample_quality_matches_the_formulas_and_uses_a_fixed_real_subset(
    tmp_path, monkeypatch, tiny_real
):
    calls = []
    monkeypatch.setattr(classifier, "train_classifier", _fake_trainer(calls))
    rng = np.random.default_rng(7)
    brightness = rng.uniform(-0.8, 0.8, (90, 1, 1, 1))  # images that differ, so subsets differ
    pixels = brightness + rng.uniform(-0.2, 0.2, (90, 12, 12, 1))
    real = Images(pixels.astype(np.float32), rng.integers(0, 10, 90).astype(np.int32), "tiny90")
    log = _Messages()
    quality = evaluation.SampleQuality(real, 60, tmp_path, 3, log)
    assert calls == ["tiny90"] and quality.n == 60
    assert "tiny90" in log.lines[0] and "held-out accuracy 0.5100" in log.lines[1]
    params, _ = evaluation.get_classifier(real, tmp_path, seed=3, quiet=True)

    # the real reference: the first n of the seed's permutation, so scoring exactly those gives 0
    # (the tiny untrained classifier's features are ~1e-2, so distances are ~1e-5)
    subset = real.images[np.random.default_rng(3).permutation(90)[:60]]
    other_subset = real.images[np.random.default_rng(4).permutation(90)[:60]]
    assert quality(subset)["fid"] < 1e-6 * quality(other_subset)["fid"]

    samples = rng.uniform(-1, 1, (70, 12, 12, 1)).astype(np.float32)  # only the first 60 count
    got = quality(samples)
    features, probs = evaluation.features_and_probs(params, samples[:60])
    real_features, _ = evaluation.features_and_probs(params, subset)
    fd = _fd_reference(*_stats64(features), *_stats64(real_features))
    p = probs.astype(np.float64)
    kl = (p * (np.log(p) - np.log(p.mean(0)))).sum(1).mean()
    counts = np.bincount(probs.argmax(1), minlength=10) / 60
    assert got["fid"] == pytest.approx(fd, rel=1e-4)
    assert got["classifier_score"] == pytest.approx(np.exp(kl), rel=1e-6)
    assert got["classes_covered"] == (counts >= 0.01).sum()
    assert got["top_class_fraction"] == pytest.approx(counts.max())
    assert all(type(v) is float for v in got.values())
