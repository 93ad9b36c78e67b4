"""Projection onto a generator's images (iGAN) on a tiny generator with a known answer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.errors import UserError
from jaxgen.gan import models, project


def _tiny(num_classes=0):
    m = models.dcgan(latent=4, image_size=8, channels=1, features=(8,), num_classes=num_classes)
    params, stats = m.init(jax.random.key(0))
    g = jax.tree.map(lambda a: a * 5.0 if a.ndim > 1 else a, params["g"])  # a less flat generator
    return m, g, stats["g"]


def test_projection_recovers_an_image_the_generator_made():
    """The target is G(z*): the best restart's image comes within 0.02 of it, the losses of all
    restarts fall, and the returned losses are the masked pixel loss plus the prior, recomputed
    here from the definition."""
    m, g, s = _tiny()
    z_star = jax.random.normal(jax.random.key(7), (1, 4))
    target = m.generate(g, s, z_star, train=False)[0][0]
    out = project.project(m, g, s, target, key=jax.random.key(1), restarts=8, k=3, steps=300,
                          prior=0.0)  # fmt: skip
    assert out.z.shape == (3, 4) and out.images.shape == (3, 8, 8, 1)
    assert float(jnp.abs(out.images[0] - target).max()) < 0.02
    assert list(np.asarray(out.loss)) == sorted(np.asarray(out.loss))
    assert (out.history[-1] < out.history[0]).all()
    # the mask: only the top half is drawn, the bottom half of the target is nonsense
    mask = jnp.zeros((8, 8, 1)).at[:4].set(1.0)
    sketch = target.at[4:].set(1.0)
    half = project.project(m, g, s, sketch, mask=mask, key=jax.random.key(2), restarts=8, k=1,
                           steps=300, prior=1e-3)  # fmt: skip
    img = m.generate(g, s, half.z, train=False)[0][0]
    want = float(jnp.mean((img[:4] - target[:4]) ** 2) + 1e-3 * jnp.mean(half.z[0] ** 2))
    assert float(half.loss[0]) == pytest.approx(want, rel=1e-4)
    assert float(jnp.abs(img[:4] - target[:4]).max()) < 0.05


def test_encoder_guess_beats_random_starts_and_interpolation_ends_at_both():
    m, g, s = _tiny()
    enc, hist = project.train_encoder(m, g, s, jax.random.key(3), steps=200, batch=32, lr=3e-3)
    assert len(hist) == 2 and hist[-1] < hist[0]  # the loss every 100 steps
    z = jax.random.normal(jax.random.key(8), (64, 4))

    @jax.jit  # one compilation for the checks below, not one per operation
    def check(enc, z):
        x = m.generate(g, s, z, train=False)[0]
        guess_err = jnp.mean((project.encode(enc, x) - z) ** 2)
        return x, guess_err, project.interpolate(m, g, s, z[0], z[1], steps=5)

    x, guess_err, walk = check(enc, z)
    assert float(guess_err) < 0.5 * float(jnp.mean(z**2))  # far better than guessing z = 0
    np.testing.assert_allclose(walk[0], x[0], atol=1e-5)
    np.testing.assert_allclose(walk[-1], x[1], atol=1e-5)
    assert walk.shape == (5, 8, 8, 1)


def test_projection_refuses_bad_input():
    m, g, s = _tiny()
    key = jax.random.key(0)
    with pytest.raises(UserError, match=r"one image \[8, 8, 1\]"):
        project.project(m, g, s, jnp.zeros((28, 28, 1)), key=key)
    with pytest.raises(UserError, match="selects no pixel"):
        project.project(m, g, s, jnp.zeros((8, 8, 1)), mask=jnp.zeros((8, 8, 1)), key=key)
    with pytest.raises(UserError, match="k must be between 1 and restarts"):
        project.project(m, g, s, jnp.zeros((8, 8, 1)), key=key, restarts=4, k=5)
    mc, gc, sc = _tiny(num_classes=3)
    with pytest.raises(UserError, match="say which class"):
        project.project(mc, gc, sc, jnp.zeros((8, 8, 1)), key=key)


def test_the_cached_encoder_belongs_to_its_generator(tmp_path):
    """The encoder is trained once per generator: the same weights load it from the workdir, other
    weights (another checkpoint, a run trained further) train their own."""
    m, g, s = _tiny()
    said = []
    a = project.cached_encoder(tmp_path, m, g, s, steps=2, dist="normal", log=said.append)
    b = project.cached_encoder(tmp_path, m, g, s, steps=2, dist="normal", log=said.append)
    assert len([x for x in said if x.startswith("training")]) == 1
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    g2 = jax.tree.map(lambda w: w * 1.01, g)
    project.cached_encoder(tmp_path, m, g2, s, steps=2, dist="normal", log=said.append)
    assert len([x for x in said if x.startswith("training")]) == 2
    assert len(list((tmp_path / "project").glob("encoder_2_*.npz"))) == 2
