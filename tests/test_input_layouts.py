"""Input layouts users get wrong: batch-major sequences (``time_major=False``) and GAN image
shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import rnn
from jaxgen.errors import UserError
from jaxgen.gan import models

T, B, F, H = 5, 3, 4, 6


def _np(tree):
    return jax.tree.map(np.asarray, tree)


def _random_like(init, *args, seed=0):
    """Random float32 NumPy parameters shaped like ``init(key, *args)`` (no init compiled)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda k: init(k, *args), jax.random.key(0))
    return jax.tree.map(lambda a: (0.5 * rng.normal(size=a.shape)).astype(np.float32), shapes)


def _zeros_like_init(model):
    """Parameters and statistics of ``model`` as NumPy zeros: the right shapes without compiling
    an init."""
    return jax.tree.map(
        lambda a: np.zeros(a.shape, a.dtype), jax.eval_shape(model.init, jax.random.key(0))
    )


def _close(a, b):
    jax.tree.map(
        lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), _np(a), _np(b)
    )


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_batch_major_equals_transposed_time_major(kind):
    """``time_major=False`` on ``[B, T, F]`` (and ids ``[B, T]``) gives the time-major result
    transposed; the batch-major call is also checked against the cell stepped over ``xs[:, t]`` in
    a Python loop, so a swapped axis anywhere shows up. One compilation: every variant runs inside
    one jitted function."""
    init, seq, cell = {
        "rnn": (rnn.rnn_init, rnn.rnn, rnn.rnn_cell),
        "gru": (rnn.gru_init, rnn.gru, rnn.gru_cell),
        "lstm": (rnn.lstm_init, rnn.lstm, rnn.lstm_cell),
    }[kind]
    p = _random_like(init, F, H)
    rng = np.random.default_rng(0)
    xs_bt = jnp.asarray(
        rng.normal(size=(B, T, F)), jnp.float32
    )  # T != B != F: a mix-up changes a shape
    ids_bt = jnp.asarray(rng.integers(0, F, (B, T)), jnp.int32)  # token ids [B, T]
    lengths = jnp.array([5, 2, 4])

    @jax.jit
    def run(xs_bt, xs_tb, ids_bt, ids_tb):
        carry = (jnp.zeros((B, H)), jnp.zeros((B, H))) if kind == "lstm" else jnp.zeros((B, H))
        ref = []
        for t in range(T):
            carry, y = cell(p, carry, xs_bt[:, t])
            ref.append(y)
        out = {"loop": (carry, jnp.stack(ref, axis=1)), "bm": seq(p, xs_bt, time_major=False)}
        kw = {"reverse": True, "lengths": lengths}
        out["tm_masked"] = seq(p, xs_tb, **kw)
        out["bm_masked"] = seq(p, xs_bt, time_major=False, **kw)
        out["tm_ids"] = seq(p, ids_tb)
        out["bm_ids"] = seq(p, ids_bt, time_major=False)
        return out

    out = run(xs_bt, jnp.swapaxes(xs_bt, 0, 1), ids_bt, ids_bt.T)
    assert out["bm"][1].shape == out["bm_masked"][1].shape == out["bm_ids"][1].shape == (B, T, H)
    _close(out["bm"], out["loop"])
    for tm, bm in (("tm_masked", "bm_masked"), ("tm_ids", "bm_ids")):
        _close(out[bm][0], out[tm][0])
        _close(out[bm][1], np.swapaxes(out[tm][1], 0, 1))
    # a batch-major input read as time-major: the lengths cannot fit, and the message names the
    # layout
    with pytest.raises(
        ValueError, match=r"read as time-major .*batch-major\? pass time_major=False"
    ):
        seq(p, xs_bt, lengths=lengths)


def test_unroll_and_lstm_stack_batch_major():
    p = _random_like(rnn.lstm_init, F, H, seed=2)
    layers = _random_like(lambda k: rnn.lstm_stack_init(k, F, H, num_layers=2), seed=4)
    key = jax.random.key(5)  # dropout: the masks are drawn on the time-major shape in both layouts
    xs_bt = jnp.asarray(np.random.default_rng(3).normal(size=(B, T, F)), jnp.float32)

    @jax.jit
    def run(xs_bt, xs_tb):
        c0 = rnn.lstm_zero_carry(p, (B,))
        return {
            "tm": rnn.unroll(rnn.lstm_cell, p, c0, xs_tb, reverse=True),
            "bm": rnn.unroll(rnn.lstm_cell, p, c0, xs_bt, reverse=True, time_major=False),
            "stack_tm": rnn.lstm_stack(layers, xs_tb, dropout_rate=0.5, key=key),
            "stack_bm": rnn.lstm_stack(layers, xs_bt, dropout_rate=0.5, key=key, time_major=False),
        }

    out = run(xs_bt, jnp.swapaxes(xs_bt, 0, 1))
    for tm, bm in (("tm", "bm"), ("stack_tm", "stack_bm")):
        assert out[bm][1].shape == (B, T, H)
        _close(out[bm][0], out[tm][0])
        _close(out[bm][1], np.swapaxes(out[tm][1], 0, 1))


def test_gan_models_refuse_wrong_image_and_latent_shapes():
    """dcgan(image_size=28) is a 32x32 network: 28x28 images get a message naming models.pad, not
    an XLA error."""
    m = models.dcgan(image_size=28, features=(4, 8, 8))
    params, stats = _zeros_like_init(m)
    x28 = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 28, 28, 1)), jnp.float32)
    with pytest.raises(
        UserError,
        match=r"takes images \[B, 32, 32, 1\].*got \[2, 28, 28, 1\].*"
        r"jaxgen\.gan\.models\.pad\(model, images\)",
    ):
        m.discriminate(params["d"], stats["d"], x28, train=False)
    with pytest.raises(UserError, match=r"channels-first"):
        m.discriminate(params["d"], stats["d"], jnp.zeros((2, 1, 32, 32)), train=False)
    with pytest.raises(UserError, match=r"model with channels=3"):
        m.discriminate(params["d"], stats["d"], jnp.zeros((2, 32, 32, 3)), train=False)
    with pytest.raises(UserError, match=r"generator takes z of shape \[B, 100\].*got \[2, 10\]"):
        m.generate(params["g"], stats["g"], jnp.zeros((2, 10)), train=False)
    # the named fix works: pad gives the 32x32 input (background -1) the network takes, crop
    # undoes it
    x32 = models.pad(m, x28)
    assert x32.shape == (2, 32, 32, 1)
    np.testing.assert_array_equal(np.asarray(x32)[:, 2:30, 2:30], x28)
    assert (np.asarray(x32)[:, :2] == -1).all() and (np.asarray(x32)[:, :, 30:] == -1).all()
    np.testing.assert_array_equal(models.crop(m, x32), x28)
    logits, _ = jax.jit(lambda x: m.discriminate(params["d"], stats["d"], x, train=False))(x32)
    assert logits.shape == (2,)
    fc = models.fc_gan(g_hidden=(8,), d_hidden=(8,))
    fp, fs = _zeros_like_init(fc)
    with pytest.raises(
        UserError, match=r"FC GAN discriminator takes images \[B, 28, 28, 1\].*got \[2, 32, 32, 1\]"
    ):
        fc.discriminate(fp["d"], fs["d"], jnp.zeros((2, 32, 32, 1)), train=False)
    with pytest.raises(UserError, match=r"add the channel axis"):
        fc.discriminate(fp["d"], fs["d"], jnp.zeros((2, 28, 28)), train=False)
