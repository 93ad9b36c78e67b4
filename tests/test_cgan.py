"""The class-conditional DCGAN: its networks against float64 references written from the
equations, what the label may and may not change, the labels in the train step, sampling a class
from the CLI, resume, and the refusals."""

import functools
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import gan
from jaxgen.data.images import load_images
from jaxgen.errors import UserError
from jaxgen.evaluation.during_training import SampleQuality, label_agreement
from tests.test_gan import _bce64, _bn64, _cli, _conv64, _deconv64, _leaky64

K = 10


def _model(cond_d="projection"):
    cfg = gan.config.cdcgan_config(num_classes=K)
    cfg.model.features = (8, 16, 32)
    cfg.model.cond_d = cond_d
    return gan.models.build(cfg.model), cfg


def _ref_generate(gp, gs, z, y):
    """[z, one_hot(y)] -> dense (no bias) -> BN -> ReLU -> 4x4, then transposed convs."""
    x, _ = _bn64(gp["in_bn"], gs["in_bn"], jnp.concatenate([z, jnp.eye(K)[y]], -1) @ gp["in"]["w"])
    x = jax.nn.relu(x).reshape(z.shape[0], 4, 4, -1)
    for i in (0, 1):
        x, _ = _bn64(gp[f"up{i}_bn"], gs[f"up{i}_bn"], _deconv64(gp[f"up{i}"]["w"], x))
        x = jax.nn.relu(x)
    return jnp.tanh(_deconv64(gp["up2"]["w"], x) + gp["up2"]["b"])


def _ref_discriminate(dp, ds, x, y, cond_d):
    """Projection: w . phi + b + e_y . phi; concat: K one-hot planes appended to the image."""
    if cond_d == "concat":
        planes = jnp.broadcast_to(jnp.eye(K)[y][:, None, None, :], (*x.shape[:3], K))
        x = jnp.concatenate([x, planes], -1)
    x = _leaky64(_conv64(dp["down0"]["w"], x) + dp["down0"]["b"])
    for i in (1, 2):
        x, _ = _bn64(dp[f"down{i}_bn"], ds[f"down{i}_bn"], _conv64(dp[f"down{i}"]["w"], x))
        x = _leaky64(x)
    phi = x.reshape(x.shape[0], -1)
    logit = (phi @ dp["out"]["w"] + dp["out"]["b"])[:, 0]
    if cond_d == "projection":
        logit = logit + jnp.sum(dp["embed"][y] * phi, -1)
    return logit


@pytest.mark.parametrize("cond_d", ["projection", "concat"])
def test_conditional_networks_match_float64_references(cond_d):
    m, _ = _model(cond_d)
    params, stats = m.init(jax.random.key(0))
    z = jax.random.normal(jax.random.key(1), (6, m.latent))
    y = jnp.array([0, 3, 9, 3, 5, 1])
    x = jax.random.uniform(jax.random.key(2), (6, 32, 32, 1), minval=-1, maxval=1)
    img, logit = jax.jit(
        lambda: (
            m.generate(params["g"], stats["g"], z, labels=y, train=True)[0],
            m.discriminate(params["d"], stats["d"], x, labels=y, train=True)[0],
        )
    )()  # one compilation, not one per operation
    with jax.enable_x64(True):
        to64 = lambda t: jax.tree.map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), t)
        p, s = to64(params), to64(stats)
        want_img, want_logit = jax.jit(
            lambda z, x, y: (
                _ref_generate(p["g"], s["g"], z, y),
                _ref_discriminate(p["d"], s["d"], x, y, cond_d),
            )
        )(to64(z), to64(x), np.asarray(y))
    np.testing.assert_allclose(img, want_img, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logit, want_logit, rtol=1e-4, atol=1e-5)
    # the projection embedding and the concat planes exist only where they are used
    assert ("embed" in params["d"]) == (cond_d == "projection")
    assert params["d"]["down0"]["w"].shape[2] == (1 + K if cond_d == "concat" else 1)


def test_the_label_changes_the_image_and_nothing_else_does():
    """In sampling mode (running statistics) each image depends on its own z and label only: a
    new label for image 0 changes image 0 and leaves the rest bit for bit; the same (z, label)
    gives the same image; every class draws a different image from one z. The discriminator's
    logit moves with the label too."""
    m, _ = _model()
    params, stats = m.init(jax.random.key(0))
    params = jax.tree.map(lambda a: a + 0.05 * jnp.sign(a), params)  # away from symmetric init
    z = jax.random.normal(jax.random.key(1), (K, m.latent))
    gen = jax.jit(lambda z, y: m.generate(params["g"], stats["g"], z, labels=y, train=False)[0])
    y = jnp.arange(K)
    a = np.asarray(gen(z, y))
    b = np.asarray(gen(z, y.at[0].set(7)))
    assert np.abs(a[0] - b[0]).max() > 1e-3
    np.testing.assert_array_equal(a[1:], b[1:])
    np.testing.assert_array_equal(a, np.asarray(gen(z, y)))
    one_z = np.asarray(gen(jnp.repeat(z[:1], K, 0), y))  # one z, every class
    gaps = [np.abs(one_z[i] - one_z[j]).max() for i in range(K) for j in range(i)]
    assert min(gaps) > 1e-3
    logit = lambda y: m.discriminate(params["d"], stats["d"], a, labels=y, train=False)[0]
    assert np.abs(np.asarray(logit(y)) - np.asarray(logit((y + 1) % K))).min() > 1e-6


def test_train_step_gives_the_real_labels_to_the_real_images():
    """The step's two discriminator losses equal BCE(D(real, labels), 0.9) and BCE(D(G(z, y_f),
    y_f), 0), with z and the fake labels y_f drawn as documented (``fold_in(key, 7)``); other real
    labels give another real loss and the same fake loss."""
    m, cfg = _model()
    tx_g, tx_d = gan.step.make_optimizers(cfg)
    state = gan.step.init_state(m, 0, tx_g, tx_d, ema=False)
    real = jax.random.uniform(jax.random.key(5), (8, 32, 32, 1), minval=-1, maxval=1)
    labels = jnp.arange(8) % K
    step = jax.jit(functools.partial(gan.step.train_step, model=m, tx_g=tx_g, tx_d=tx_d))
    _, got = step(state, real, labels)
    _, other = step(state, real, (labels + 3) % K)
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), 0)
    k_z = jax.random.split(key, 5)[0]
    y_f = jax.random.randint(jax.random.fold_in(key, 7), (8,), 0, K)
    z = gan.models.sample_latent(k_z, 8, m.latent, cfg.model.latent_dist)
    p, s = state.params, state.stats

    @jax.jit
    def logits():
        fake, _ = m.generate(p["g"], s["g"], z, labels=y_f, train=True)
        real_logit, ds1 = m.discriminate(p["d"], s["d"], real, labels=labels, train=True)
        return real_logit, m.discriminate(p["d"], ds1, fake, labels=y_f, train=True)[0]

    real_logit, fake_logit = logits()
    want_real = float(_bce64(np.asarray(real_logit, np.float64), 0.9).mean())
    want_fake = float(_bce64(np.asarray(fake_logit, np.float64), 0.0).mean())
    assert float(got["d_loss_real"]) == pytest.approx(want_real, rel=1e-5)
    assert float(got["d_loss_fake"]) == pytest.approx(want_fake, rel=1e-5)
    assert abs(float(other["d_loss_real"]) - want_real) > 1e-5
    assert float(other["d_loss_fake"]) == pytest.approx(want_fake, rel=1e-6)


def test_models_refuse_missing_or_unwanted_labels():
    m, _ = _model()
    params, stats = m.init(jax.random.key(0))
    z = jnp.zeros((2, m.latent))
    with pytest.raises(UserError, match="class-conditional .*pass labels"):
        m.generate(params["g"], stats["g"], z)
    with pytest.raises(UserError, match=r"labels of shape \[2\]"):
        m.generate(params["g"], stats["g"], z, labels=jnp.zeros((3,), jnp.int32))
    with pytest.raises(UserError, match=r"labels of shape \[2\]"):
        m.generate(params["g"], stats["g"], z, labels=jnp.zeros((2,)))  # floats
    u = gan.models.dcgan(features=(8, 16, 32))
    pu, su = u.init(jax.random.key(0))
    with pytest.raises(UserError, match="unconditional and takes no labels"):
        u.generate(pu["g"], su["g"], z, labels=jnp.zeros((2,), jnp.int32))
    with pytest.raises(UserError, match="labels must be classes 0 ... 9"):
        gan.sampling.check_labels(m, 10, 4)
    with pytest.raises(UserError, match="unconditional and cannot be asked"):
        gan.sampling.check_labels(u, 3, 4)
    np.testing.assert_array_equal(gan.sampling.check_labels(m, None, 12), np.arange(12) % K)
    cfg = gan.config.default_config()
    cfg.model.num_classes = 10
    with pytest.raises(UserError, match="needs config.model.arch='dcgan'"):
        gan.config.validate_config(cfg)
    cfg = gan.config.cdcgan_config()
    cfg.model.cond_d = "add"
    with pytest.raises(UserError, match="cond_d must be 'projection' or 'concat'"):
        gan.config.validate_config(cfg)


def test_label_agreement_on_hand_made_probabilities():
    probs = np.eye(3)[[0, 1, 2, 2, 1, 0]]  # the classifier reads 0 1 2 2 1 0
    asked = np.array([0, 1, 2, 1, 1, 2])
    got = label_agreement(probs, asked)
    assert got["label_accuracy"] == pytest.approx(4 / 6)
    assert got["per_class_accuracy"] == [1.0, pytest.approx(2 / 3), 0.5]
    assert got["worst_class_accuracy"] == 0.5


@pytest.mark.slow
@pytest.mark.xdist_group("digits")  # shares the trained digits_classifier (conftest)
def test_cdcgan_cli_train_resume_sample_a_class_and_eval(tmp_path, monkeypatch, digits_classifier):
    """Smoke training in two parts (the second resumes). The evaluation during training scores
    how often the classifier reads the asked class, and `jaxgen eval` reports it per class (the
    shared short-trained classifier stands in for the recipe's). `jaxgen sample --label 7` draws
    class 7 from the same latents as the balanced draw; `jaxgen project` projects onto class 7.
    The refusals touch nothing."""
    from jaxgen.evaluation import classifier
    from jaxgen.gan.evaluate import run_eval

    _, params, info, _ = digits_classifier
    monkeypatch.setattr(classifier, "train_classifier", lambda images, **kw: (params, info))
    cache = tmp_path / "cache"
    common = ["--config", "configs/cdcgan_mnist.py:smoke", "--quiet"]
    opts = ["--config.train.log_every=1", "--config.train.checkpoint_every=3"]
    w = tmp_path / "split"
    _cli("train", *common, "--workdir", str(w), "--config.train.steps=3", *opts)
    r = _cli("train", *common, "--workdir", str(w), "--config.train.steps=6", *opts)
    assert "resumed from step 3" in r.stdout
    rows = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows if "d_loss" in x] == [1, 2, 3, 4, 5, 6]
    ref = w  # (resume exactness itself: the loop's tests, and the labelled batches below)
    # the evaluation during training: numbers only (metrics.jsonl rows hold numbers)
    data = load_images("builtin")
    quality = SampleQuality(data, 200, cache, 0, types.SimpleNamespace(message=lambda m: None))
    q = quality(data.images[:200], data.labels[:200])
    assert all(isinstance(v, float) for v in q.values())
    assert 0.5 < q["worst_class_accuracy"] <= q["label_accuracy"] <= 1
    e = run_eval(workdir=str(ref), num=200, cache_dir=str(cache), quiet=True, checkpoint="latest")
    c = e["conditional"]
    assert len(c["per_class_accuracy"]) == K
    assert c["worst_class_accuracy"] == min(c["per_class_accuracy"])
    assert c["label_accuracy"] == pytest.approx(np.mean(c["per_class_accuracy"]))  # 20 a class

    out7 = tmp_path / "sevens.npy"
    _cli("sample", "--workdir", str(w), "--label", "7", "--num", "10", "--out", str(out7))
    model, gp, gs, cfg = gan.sampling.load_generator(w)
    balanced = gan.sampling.generate(model, gp, gs, jax.random.key(0), 10, dist="normal")
    sevens = np.load(out7)
    assert sevens.shape == balanced.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(sevens[7], balanced[7])  # image 7 of the balanced draw is a 7
    assert np.abs(sevens[:7] - balanced[:7]).max() > 1e-3
    # projection onto class 7 (iGAN), from a .npy digit; the encoder is cached in the workdir
    np.save(tmp_path / "digit.npy", sevens[0])
    (tmp_path / "not.png").write_text("not an image")
    proj = ["project", "--workdir", str(w), "--num", "2", "--restarts", "4", "--encoder_steps"]
    proj.append("0")  # random restarts only: the encoder is tested in tests/test_project.py
    _cli(*proj, "--image", str(tmp_path / "digit.npy"), "--label", "7", "--out", str(out7))
    assert np.load(out7).shape == (2, 28, 28, 1)
    before = {p: p.read_bytes() for p in w.rglob("*") if p.is_file()}
    x = ["--out", str(tmp_path / "x.npy")]
    for argv, match in (
        (["sample", "--workdir", str(w), *x, "--label", "10"],
         "--label 10 is not a class of this GAN; its classes are 0 ... 9"),
        (["sample", "--workdir", str(w), *x, "--label", "seven"], "--label takes a class number"),
        ([*proj, *x, "--image", str(tmp_path / "digit.npy")], "say which class with --label"),
        ([*proj, *x, "--image", str(tmp_path / "not.png"), "--label", "1"], "is not an image"),
        ([*proj, *x, "--image", str(out7), "--label", "1"], "resize it to 28x28"),
    ):  # fmt: skip
        r = _cli(*argv, check=False)
        assert r.returncode == 2 and match in r.stderr, r.stderr
    r = _cli("train", *common, "--workdir", str(w), "--config.model.cond_d=concat", check=False)
    assert r.returncode == 2 and "config.model.cond_d=projection" in r.stderr, r.stderr
    assert {p: p.read_bytes() for p in w.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "x.npy").exists()


def test_labelled_batches_are_a_function_of_the_step():
    """A resumed run sees the batches an unbroken one would: each step's (images, labels) pair is
    the same rows of both arrays, whatever order the steps are asked in (so labels stay with
    their images across epochs and restarts)."""
    from jaxgen.data.images import ImageBatches

    images = np.arange(50, dtype=np.float32).reshape(50, 1, 1, 1)
    labels = np.arange(50, dtype=np.int32) % K
    b = ImageBatches(images, 8, seed=3, labels=labels)
    forward = [b.pair_for_step(s) for s in range(14)]  # two epochs and a bit
    again = ImageBatches(images, 8, seed=3, labels=labels)
    for s in (13, 2, 7, 0, 6, 12):
        x, y = again.pair_for_step(s)
        np.testing.assert_array_equal(x, forward[s][0])
        np.testing.assert_array_equal(y, forward[s][1])
        np.testing.assert_array_equal(y, x[:, 0, 0, 0].astype(np.int32) % K)
        np.testing.assert_array_equal(x, again.for_step(s))
    assert not np.array_equal(forward[0][0], forward[6][0])  # a new permutation each epoch
