"""GAN building blocks, train step and end-to-end runs, against independent references."""

import functools
import json
import os
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from jaxgen import gan, losses
from jaxgen.data import images as imdata
from jaxgen.errors import UserError
from jaxgen.nn import layers as nn

ROOT = Path(__file__).resolve().parents[1]


def _sigmoid64(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


# ----------------------------------------------------------------------------- losses


def test_bce_matches_hand_values_and_naive_formula():
    # by hand: x=0 gives log 2 whatever the label; x=2, z=1 gives log(1 + e^-2)
    assert float(losses.sigmoid_bce_with_logits(0.0, 0.9)) == pytest.approx(np.log(2), rel=1e-6)
    assert float(losses.sigmoid_bce_with_logits(2.0, 1.0)) == pytest.approx(
        np.log1p(np.exp(-2.0)), rel=1e-6
    )
    assert float(losses.sigmoid_bce_with_logits(-3.0, 0.0)) == pytest.approx(
        np.log1p(np.exp(-3.0)), rel=1e-6
    )
    x = np.linspace(-15, 15, 61)
    for z in (0.0, 0.9, 1.0):
        p = _sigmoid64(x)
        naive = -(z * np.log(p) + (1 - z) * np.log(1 - p))
        got = np.asarray(losses.sigmoid_bce_with_logits(jnp.asarray(x, jnp.float32), z))
        np.testing.assert_allclose(got, naive, rtol=2e-5, atol=2e-6)


def test_bce_finite_with_exact_gradient_at_huge_logits():
    x = jnp.array([-1e4, -50.0, 0.0, 50.0, 1e4])
    for z in (0.0, 0.9, 1.0):
        val = losses.sigmoid_bce_with_logits(x, z)
        grad = jax.grad(lambda v, z=z: losses.sigmoid_bce_with_logits(v, z).sum())(x)
        assert np.isfinite(np.asarray(val)).all() and np.isfinite(np.asarray(grad)).all()
        # d/dx = sigmoid(x) - z, exactly
        np.testing.assert_allclose(np.asarray(grad), _sigmoid64(np.asarray(x)) - z, atol=1e-6)
    # loss at x = 1e4 with label 0.9 is 0.1 * 1e4 (the -log(1 - sigmoid) term), not inf
    assert float(losses.sigmoid_bce_with_logits(1e4, 0.9)) == pytest.approx(1000.0, rel=1e-6)
    # the naive form fails where this one does not
    with np.errstate(divide="ignore"):
        assert not np.isfinite(-np.log(1 - np.float32(_sigmoid64(1e4))))


def test_bce_gradients_by_finite_differences():
    with jax.enable_x64(True):
        x = jnp.array([-3.0, -0.5, 0.2, 4.0], jnp.float64)
        check_grads(lambda v: losses.sigmoid_bce_with_logits(v, 0.9), (x,), order=2, modes=("rev",))


def test_discriminator_loss_label_smoothing_and_generator_loss_by_hand():
    r = np.array([1.5, -0.3, 2.0])
    f = np.array([-1.0, 0.4])
    pr, pf = _sigmoid64(r), _sigmoid64(f)
    real = np.mean(-(0.9 * np.log(pr) + 0.1 * np.log(1 - pr)))
    fake = np.mean(-np.log(1 - pf))
    loss, parts = losses.discriminator_loss(
        jnp.asarray(r, jnp.float32), jnp.asarray(f, jnp.float32)
    )
    assert float(loss) == pytest.approx(real + fake, rel=1e-5)
    assert float(parts["d_loss_real"]) == pytest.approx(real, rel=1e-5)
    # unsmoothed real labels give a different real part: -log p
    loss1, parts1 = losses.discriminator_loss(
        jnp.asarray(r, jnp.float32), jnp.asarray(f, jnp.float32), real_label=1.0
    )
    assert float(parts1["d_loss_real"]) == pytest.approx(np.mean(-np.log(pr)), rel=1e-5)
    assert float(losses.generator_loss(jnp.asarray(f, jnp.float32))) == pytest.approx(
        np.mean(-np.log(pf)), rel=1e-5
    )


# ----------------------------------------------------------------------------- layers


def _conv_ref(x, w, stride, pad):
    """float64 direct convolution (cross-correlation), NHWC / HWIO, symmetric padding."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    w = np.asarray(w, np.float64)
    k = w.shape[0]
    b, h, wd, _ = x.shape
    oh, ow = (h - k) // stride + 1, (wd - k) // stride + 1
    out = np.zeros((b, oh, ow, w.shape[-1]))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
            out[:, i, j] = np.einsum("bhwc,hwco->bo", patch, w)
    return out


def test_dense_and_conv_against_numpy():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    p = nn.dense_init(k1, 5, 3)
    x = jax.random.normal(k2, (4, 5))
    np.testing.assert_allclose(
        np.asarray(nn.dense(p, x)),
        np.asarray(x, np.float64) @ np.asarray(p["w"]) + 0.0,
        rtol=1e-5,
        atol=1e-6,
    )
    pc = nn.conv_init(k1, 4, 3, 2, std=0.5)
    pc["b"] = jnp.array([0.1, -0.2])
    xc = jax.random.normal(k3, (2, 8, 8, 3))
    got = nn.conv(pc, xc, stride=2, padding=1)
    assert got.shape == (2, 4, 4, 2)
    np.testing.assert_allclose(
        np.asarray(got), _conv_ref(xc, pc["w"], 2, 1) + np.array([0.1, -0.2]), rtol=1e-4, atol=1e-5
    )


def _conv_transpose_ref(x, w, stride, pad):
    """float64 scatter form of PyTorch's ConvTranspose2d (weight [k, k, in, out], padding
    ``pad``)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    b, h, wd, _ = x.shape
    k = w.shape[0]
    full = np.zeros((b, (h - 1) * stride + k, (wd - 1) * stride + k, w.shape[-1]))
    for i in range(h):
        for j in range(wd):
            full[:, i * stride : i * stride + k, j * stride : j * stride + k] += np.einsum(
                "bc,hwco->bhwo", x[:, i, j], w
            )
    return full[:, pad : pad + h * stride, pad : pad + wd * stride]


@pytest.mark.parametrize("kernel,stride", [(4, 2), (8, 4), (3, 1)])
def test_conv_transpose_against_scatter_reference(kernel, stride):
    p = nn.conv_transpose_init(jax.random.key(1), kernel, 3, 2, std=1.0, bias=False)
    x = jax.random.normal(jax.random.key(2), (2, 5, 5, 3))
    got = nn.conv_transpose(p, x, stride=stride)
    assert got.shape == (2, 5 * stride, 5 * stride, 2)
    pad = (kernel - stride) // 2  # PyTorch padding that gives exactly stride * size
    np.testing.assert_allclose(
        np.asarray(got), _conv_transpose_ref(x, p["w"], stride, pad), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize(
    "kernel,stride,c_in,c_out", [(4, 2, 3, 2), (4, 2, 16, 8), (4, 2, 8, 1), (8, 4, 5, 3)]
)
def test_conv_transpose_col2im_and_its_gradients(kernel, stride, c_in, c_out):
    """The CPU col2im form (hand-written VJP) against the float64 scatter reference and autodiff of
    the zero-dilated form, plus finite differences to second order; and it is what CPU runs."""
    from jax.test_util import check_grads

    with jax.enable_x64(True):
        k1, k2, k3 = jax.random.split(jax.random.key(4), 3)
        w = jax.random.normal(k1, (kernel, kernel, c_in, c_out), jnp.float64)
        x = jax.random.normal(k2, (2, 3, 4, c_in), jnp.float64)
        r = jax.random.normal(k3, (2, 3 * stride, 4 * stride, c_out), jnp.float64)
        out = jax.ShapeDtypeStruct(r.shape, jnp.float64)

        def slow(x, w):  # transpose of the strided convolution: XLA convolves a zero-dilated input
            conv = lambda z: jax.lax.conv_general_dilated(
                z,
                jnp.swapaxes(w, 2, 3),
                (stride, stride),
                "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
            return jax.linear_transpose(conv, out)(x)[0]

        fast = jax.jit(lambda x, w: nn.conv_transpose({"w": w}, x, stride=stride))
        np.testing.assert_allclose(
            np.asarray(fast(x, w)),
            _conv_transpose_ref(x, w, stride, (kernel - stride) // 2),
            rtol=1e-10,
            atol=1e-10,
        )
        loss = lambda f: lambda x, w: jnp.sum(f(x, w) * r)
        g_fast = jax.jit(jax.grad(loss(fast), (0, 1)))(x, w)
        g_slow = jax.jit(jax.grad(loss(slow), (0, 1)))(x, w)
        for a, b in zip(g_fast, g_slow):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-10)
        check_grads(fast, (x, w), order=2, modes=["rev"])
        hlo = jax.jit(jax.grad(loss(fast), (0, 1))).lower(x, w).compile().as_text()
        assert "convolution(" not in hlo  # forward and both gradients are matrix products on CPU


@pytest.mark.parametrize(
    "size,stride,padding", [(8, 2, 1), (8, 2, "SAME"), (8, 4, 2), (7, 2, 1), (8, 2, "VALID")]
)
def test_conv_gradients_against_xla_autodiff(size, stride, padding):
    """``conv``'s CPU VJP (col2im input gradient for k = 2s, padding s/2, sizes divisible by s;
    XLA's own otherwise) equals autodiff of XLA's convolution in float64 and finite differences."""
    from jax.test_util import check_grads

    kernel = 2 * stride
    fast_path = padding in (stride // 2, "SAME") and size % stride == 0
    with jax.enable_x64(True):
        p = nn.conv_init(jax.random.key(5), kernel, 3, 4, std=1.0, dtype=jnp.float64)
        x = jax.random.normal(jax.random.key(6), (2, size, size, 3), jnp.float64)
        pad = padding if isinstance(padding, str) else [(padding, padding)] * 2
        ref = lambda p, x: (
            jax.lax.conv_general_dilated(
                x, p["w"], (stride, stride), pad, dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            + p["b"]
        )
        fast = jax.jit(lambda p, x: nn.conv(p, x, stride=stride, padding=padding))
        y = fast(p, x)
        np.testing.assert_allclose(np.asarray(y), np.asarray(ref(p, x)), rtol=1e-12, atol=1e-12)
        r = jax.random.normal(jax.random.key(7), y.shape, jnp.float64)
        loss = lambda f: lambda p, x: jnp.sum(f(p, x) * r)
        for a, b in zip(
            jax.tree.leaves(jax.jit(jax.grad(loss(fast), (0, 1)))(p, x)),
            jax.tree.leaves(jax.jit(jax.grad(loss(ref), (0, 1)))(p, x)),
        ):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-10)
        check_grads(fast, (p, x), order=2, modes=["rev"])
        hlo = jax.jit(jax.grad(loss(fast), 1)).lower(p, x).compile().as_text()
        assert (
            " convolution(" not in hlo
        ) == fast_path  # the input gradient: col2im, or XLA's convolution


def test_conv_layers_keep_xla_convolutions_on_gpu_and_tpu():
    """The col2im forms are CPU-only (``lax.platform_dependent``): a DCGAN-style layer pair's
    gradient lowers for CUDA and TPU with XLA's convolutions (forward and both gradients of
    each)."""
    from jax import export

    pc = nn.conv_init(jax.random.key(0), 4, 8, 16)
    pt = nn.conv_transpose_init(jax.random.key(1), 4, 16, 8)
    x = jnp.ones((2, 8, 8, 8))
    loss = lambda pc, pt, x: jnp.sum(
        nn.conv_transpose(pt, nn.conv(pc, x, stride=2, padding=1)) ** 2
    )
    grad = jax.jit(jax.grad(loss, (0, 1, 2)))
    for platform in ("cuda", "tpu"):
        mlir = export.export(grad, platforms=[platform])(pc, pt, x).mlir_module()
        assert mlir.count("stablehlo.convolution") == 6, platform
    cpu = grad.lower(pc, pt, x).compile().as_text()
    assert (
        cpu.count(" convolution(") == 2 and "lhs_dilate" not in cpu
    )  # CPU: conv's forward and weight grad


def test_batch_norm_train_and_eval_against_numpy_and_flax():
    import flax.linen as fnn

    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (16, 4, 4, 3))
    params, stats = nn.batch_norm_init(3)
    params = {"scale": jnp.array([1.0, 2.0, 0.5]), "bias": jnp.array([0.0, 1.0, -1.0])}
    stats = {"mean": jnp.array([0.5, -0.5, 0.0]), "var": jnp.array([1.0, 2.0, 3.0])}
    y, new = nn.batch_norm(params, stats, x, train=True, momentum=0.9)
    xn = np.asarray(x, np.float64)
    mean, var = xn.mean((0, 1, 2)), xn.var((0, 1, 2))
    ref = (xn - mean) / np.sqrt(var + 1e-5) * np.asarray(params["scale"]) + np.asarray(
        params["bias"]
    )
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        np.asarray(new["mean"]), 0.9 * np.asarray(stats["mean"]) + 0.1 * mean, rtol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(new["var"]), 0.9 * np.asarray(stats["var"]) + 0.1 * var, rtol=1e-4
    )
    # eval: running statistics, unchanged
    ye, same = nn.batch_norm(params, stats, x, train=False)
    ref_e = (xn - np.asarray(stats["mean"])) / np.sqrt(
        np.asarray(stats["var"]) + 1e-5
    ) * np.asarray(params["scale"]) + np.asarray(params["bias"])
    np.testing.assert_allclose(np.asarray(ye), ref_e, rtol=1e-4, atol=1e-4)
    assert same is stats
    # Flax's BatchNorm with the same momentum convention agrees on output and running statistics
    bn = fnn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    variables = {
        "params": {"scale": params["scale"], "bias": params["bias"]},
        "batch_stats": {"mean": stats["mean"], "var": stats["var"]},
    }
    yf, upd = bn.apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(y), np.asarray(yf), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        np.asarray(new["var"]), np.asarray(upd["batch_stats"]["var"]), rtol=1e-4
    )
    # momentum 0 returns the batch statistics themselves
    _, batch_stats = nn.batch_norm(params, stats, x, train=True, momentum=0.0)
    np.testing.assert_allclose(np.asarray(batch_stats["mean"]), mean, rtol=1e-5)


def test_batch_norm_gradient_against_finite_differences_flax_and_split_batches():
    """Training mode's written-out VJP: against central differences in float64 (input, scale,
    bias); against autodiff through Flax's BatchNorm in float32; and with the batch split in two
    halves averaged over ``axis_name`` (``vmap``'s named axis, as under ``shard_map``), equal to
    the whole batch's gradient."""
    import flax.linen as fnn
    from jax.test_util import check_grads

    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, (6, 3, 2, 3))
    p = {"scale": np.asarray([1.0, -2.0, 0.5]), "bias": np.asarray([0.5, -1.0, 3.0])}
    stats = {"mean": np.zeros(3), "var": np.ones(3)}
    w = rng.normal(size=x.shape)

    def loss(p, x, axis_name=None):  # non-linear, so every part of the gradient counts
        y, _ = nn.batch_norm(p, stats, x, train=True, axis_name=axis_name)
        return jnp.sum(jnp.sin(y) * w[: len(x)] if axis_name is None else jnp.sin(y))

    with jax.enable_x64():  # the statistics are float32 whatever the input: hence 1e-3
        check_grads(loss, (p, x), order=1, modes=("rev",), atol=1e-3, rtol=1e-3)
    p32, x32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), (p, x))
    bn = fnn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)

    def flax_loss(p, x):
        y, _ = bn.apply({"params": p, "batch_stats": jax.tree.map(jnp.asarray, stats)}, x,
                        mutable=["batch_stats"])  # fmt: skip
        return jnp.sum(jnp.sin(y) * w)

    for got, want in zip(jax.grad(loss, (0, 1))(p32, x32), jax.grad(flax_loss, (0, 1))(p32, x32)):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    def halves_loss(p, x):  # each half a "device": statistics and gradients averaged over both
        per_half = jax.vmap(lambda h: loss(p, h, axis_name="d"), axis_name="d")
        return jnp.sum(per_half(x.reshape(2, 3, *x.shape[1:])))

    def whole_loss(p, x):
        y, _ = nn.batch_norm(p, stats, x, train=True)
        return jnp.sum(jnp.sin(y))

    for got, want in zip(
        jax.grad(halves_loss, (0, 1))(p32, x32), jax.grad(whole_loss, (0, 1))(p32, x32)
    ):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_leaky_relu_and_dropout():
    x = jnp.array([-2.0, -0.5, 0.0, 3.0])
    np.testing.assert_allclose(np.asarray(nn.leaky_relu(x, 0.2)), [-0.4, -0.1, 0.0, 3.0], rtol=1e-6)
    y = nn.dropout(jax.random.key(0), jnp.ones((20000,)), 0.3)
    kept = np.asarray(y) > 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.7, rtol=1e-6)


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize(
    "arch,size,channels,out", [("fc", 28, 1, 28), ("dcgan", 28, 1, 28), ("dcgan", 32, 3, 32)]
)
def test_model_shapes_and_ranges(arch, size, channels, out):
    cfg = gan.config.default_config()
    cfg.model.arch, cfg.model.image_size, cfg.model.channels = arch, size, channels
    cfg.model.features = (8, 16, 32)
    m = gan.models.build(cfg.model)

    @jax.jit
    def run(key):
        k0, k1, k2, k3 = jax.random.split(key, 4)
        params, stats = m.init(k0)
        z = gan.models.sample_latent(k1, 6, m.latent, "uniform")
        x, _ = m.generate(params["g"], stats["g"], z, train=True, key=k2)
        logits, _ = m.discriminate(params["d"], stats["d"], x, train=True, key=k3)
        return z, x, logits

    z, x, logits = run(jax.random.key(0))
    assert float(jnp.abs(z).max()) <= 1.0
    assert x.shape == (6, m.size, m.size, channels) and float(jnp.abs(x).max()) <= 1.0
    assert gan.models.crop(m, x).shape == (6, out, out, channels)
    assert logits.shape == (6,)


def test_fc_gan_sizes_and_dcgan_batch_norm_placement():
    m = gan.models.fc_gan()
    params, _ = jax.jit(m.init)(jax.random.key(0))
    assert [p["w"].shape for p in params["d"]] == [(784, 128), (128, 64), (64, 32), (32, 1)]
    assert [p["w"].shape for p in params["g"]] == [(100, 32), (32, 64), (64, 128), (128, 784)]
    d = gan.models.dcgan(image_size=28)
    params, stats = jax.jit(d.init)(jax.random.key(0))
    # no batch norm on the discriminator's input layer or the generator's output layer
    assert set(stats["d"]) == {"down1_bn", "down2_bn"}
    assert set(stats["g"]) == {"in_bn", "up0_bn", "up1_bn"}
    assert params["g"]["up2"]["w"].shape == (4, 4, 32, 1) and "up2_bn" not in params["g"]
    assert [params["d"][f"down{i}"]["w"].shape[-1] for i in range(3)] == [32, 64, 128]
    w = np.asarray(params["d"]["down1"]["w"]).ravel()
    assert abs(w.std() - 0.02) < 0.002  # N(0, 0.02)


# ----------------------------------------------------------------------------- train step


def _setup(arch, batch=8, real_label=0.9, ema=0.0):
    cfg = gan.config.default_config()
    cfg.model.arch = arch
    cfg.model.features = (8, 16, 32)
    cfg.model.latent_dist = "normal"
    m = gan.models.build(cfg.model)
    tx_g, tx_d = gan.step.make_optimizers(cfg)
    state = gan.step.init_state(m, 0, tx_g, tx_d, ema=ema > 0)
    real = jax.random.uniform(jax.random.key(5), (batch, m.size, m.size, 1), minval=-1, maxval=1)
    step = functools.partial(
        gan.step.train_step,
        model=m,
        tx_g=tx_g,
        tx_d=tx_d,
        real_label=real_label,
        latent_dist="normal",
        ema_decay=ema,
    )
    return m, tx_g, tx_d, state, real, step


# Float64 reference GAN step, written from the equations with jax.numpy and XLA's plain
# convolutions: it shares no layer, model, loss or optimiser code with the library (its gradients
# are autodiff of these functions), so a wrong momentum, loss term or Adam state in either shows.


def _bce64(x, z):
    """BCE(sigmoid(x), z) = softplus(x) - z * x, elementwise."""
    return jnp.logaddexp(0.0, x) - z * x


def _bn64(p, s, x, momentum=0.9, eps=1e-5):
    """Train-mode batch norm over all but the channel axis (biased batch variance); running
    statistics move as ``momentum * old + (1 - momentum) * batch``."""
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axes)
    var = ((x - mean) ** 2).mean(axes)
    y = (x - mean) / jnp.sqrt(var + eps) * p["scale"] + p["bias"]
    mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
    return y, {
        "mean": momentum * s["mean"] + (1 - momentum) * mean,
        "var": momentum * s["var"] + (1 - momentum) * var,
    }


def _leaky64(x):
    return jnp.where(x >= 0, x, 0.2 * x)


_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv64(w, x):
    """4x4 convolution, stride 2, padding 1 (PyTorch's Conv2d(k=4, stride=2, padding=1))."""
    return jax.lax.conv_general_dilated(x, w, (2, 2), [(1, 1), (1, 1)], dimension_numbers=_NHWC)


def _deconv64(w, x):
    """PyTorch's ConvTranspose2d(k=4, stride=2, padding=1), weight [k, k, in, out]: the input
    zero-dilated by 2, padded by k - 1 - 1 = 2, convolved with the spatially flipped kernel."""
    return jax.lax.conv_general_dilated(
        x, w[::-1, ::-1], (1, 1), [(2, 2), (2, 2)], lhs_dilation=(2, 2), dimension_numbers=_NHWC
    )


def _ref_generate(arch, gp, gs, z):
    if arch == "fc":  # latent -> 32 -> 64 -> 128 (leaky ReLU) -> 784 (tanh); no generator dropout
        x = z
        for p in gp[:-1]:
            x = _leaky64(x @ p["w"] + p["b"])
        return jnp.tanh(x @ gp[-1]["w"] + gp[-1]["b"]).reshape(z.shape[0], 28, 28, 1), gs
    # dense (no bias) -> BN -> ReLU -> 4x4x32, then 3 transposed convs (BN + ReLU but the last)
    new = {}
    x, new["in_bn"] = _bn64(gp["in_bn"], gs["in_bn"], z @ gp["in"]["w"])
    x = jax.nn.relu(x).reshape(z.shape[0], 4, 4, -1)
    for i in (0, 1):
        x, new[f"up{i}_bn"] = _bn64(
            gp[f"up{i}_bn"], gs[f"up{i}_bn"], _deconv64(gp[f"up{i}"]["w"], x)
        )
        x = jax.nn.relu(x)
    return jnp.tanh(_deconv64(gp["up2"]["w"], x) + gp["up2"]["b"]), new


def _ref_discriminate(arch, dp, ds, x, masks):
    """``masks``: the FC discriminator's dropout, keep / (1 - rate) per hidden unit."""
    if arch == "fc":
        x = x.reshape(x.shape[0], -1)
        for p, mask in zip(dp[:-1], masks):
            x = _leaky64(x @ p["w"] + p["b"]) * mask
        return (x @ dp[-1]["w"] + dp[-1]["b"])[:, 0], ds
    new = {}  # conv (bias, no BN) -> leaky, then 2 x (conv -> BN -> leaky), then a dense logit
    x = _leaky64(_conv64(dp["down0"]["w"], x) + dp["down0"]["b"])
    for i in (1, 2):
        x, new[f"down{i}_bn"] = _bn64(
            dp[f"down{i}_bn"], ds[f"down{i}_bn"], _conv64(dp[f"down{i}"]["w"], x)
        )
        x = _leaky64(x)
    return (x.reshape(x.shape[0], -1) @ dp["out"]["w"] + dp["out"]["b"])[:, 0], new


def _adam64(p, g, st, t, lr, b1, b2, eps=1e-8):
    """Adam (Kingma & Ba, optax's eps placement) at 1-based step ``t``."""
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, st["mu"], g)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, st["nu"], g)
    new = jax.tree.map(
        lambda p, m, v: p - lr * (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t)) + eps), p, mu, nu
    )
    return new, {"mu": mu, "nu": nu}


def _ref_step(arch, lr, b1, b2, params, stats, adam, real, z, masks, t):
    """One GAN step: D on real and fake passed separately (label 0.9 / 0) with Adam, then G's
    non-saturating loss against the updated D (batch statistics, running ones untouched), two
    generator forwards. Returns the new params, stats, Adam states, and losses and gradient
    norms."""
    gp, dp, gs, ds = params["g"], params["d"], stats["g"], stats["d"]
    fake, gs_new = _ref_generate(arch, gp, gs, z)

    def d_loss(p):
        rl, ds1 = _ref_discriminate(arch, p, ds, real, masks["dr"])
        fl, ds2 = _ref_discriminate(arch, p, ds1, fake, masks["df"])
        lr_, lf_ = _bce64(rl, 0.9).mean(), _bce64(fl, 0.0).mean()
        return lr_ + lf_, (ds2, lr_, lf_)

    (dl, (ds_new, dl_real, dl_fake)), dg = jax.value_and_grad(d_loss, has_aux=True)(dp)
    dp_new, adam_d = _adam64(dp, dg, adam["d"], t, lr, b1, b2)

    def g_loss(p):
        f, _ = _ref_generate(arch, p, gs, z)
        logits, _ = _ref_discriminate(arch, dp_new, ds_new, f, masks["dg"])
        return _bce64(logits, 1.0).mean()

    gl, gg = jax.value_and_grad(g_loss)(gp)
    gp_new, adam_g = _adam64(gp, gg, adam["g"], t, lr, b1, b2)
    norm = lambda tree: jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(tree)))
    out = {
        "d_loss": dl,
        "g_loss": gl,
        "d_loss_real": dl_real,
        "d_loss_fake": dl_fake,
        "d_grad_norm": norm(dg),
        "g_grad_norm": norm(gg),
    }
    return {"g": gp_new, "d": dp_new}, {"g": gs_new, "d": ds_new}, {"g": adam_g, "d": adam_d}, out


def _step_inputs(m, arch, state, step, batch):
    """The latents and FC dropout masks the library's step ``step`` draws (its documented key use:
    ``fold_in(key, step)`` split into z, G dropout, D real, D fake, D in G's update; each FC layer's
    dropout from ``split(layer key, 4)``), as float64 NumPy."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), step)
    k_z, _, k_dr, k_df, k_dg = jax.random.split(key, 5)
    z = np.asarray(gan.models.sample_latent(k_z, batch, m.latent, "normal"), np.float64)
    masks = {}
    for name, k in (("dr", k_dr), ("df", k_df), ("dg", k_dg)):
        keys = jax.random.split(k, 4)
        masks[name] = (
            [
                np.asarray(nn.dropout_keep(kk, (batch, n), 0.3), np.float64) / 0.7
                for kk, n in zip(keys, (128, 64, 32))
            ]
            if arch == "fc"
            else []
        )
    return z, masks


def _assert_close(got, want, name, rtol, rel_atol=0.0, atol=0.0):
    """Leafwise ``|got - want| <= rtol * |want| + rel_atol * max|want| + atol``."""
    for i, (a, b) in enumerate(zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)):
        b = np.asarray(b, np.float64)
        np.testing.assert_allclose(
            np.asarray(a, np.float64),
            b,
            rtol=rtol,
            atol=rel_atol * np.abs(b).max() + atol + 1e-12,
            err_msg=f"{name} leaf {i}",
        )


@pytest.mark.parametrize("arch", ["fc", "dcgan"])
def test_train_step_equals_reference_updates(arch):
    """Three library steps (float32) against three float64 reference steps carrying their own
    batch-norm statistics and Adam states: losses, raw gradient norms, Adam's first and second
    moments (``mu_1 = 0.1 g`` makes gradient magnitudes count, not only their signs), parameters
    and running statistics at every step. The reference differentiates G's loss with respect to
    G's parameters directly (two generator forwards), so it also checks the step's reuse of the
    first forward's VJP."""
    m, _, _, state, _, step = _setup(arch)
    cfg = gan.config.default_config()
    lr, b1, b2 = cfg.train.lr_g, cfg.train.beta1, cfg.train.beta2
    assert cfg.train.lr_d == lr and cfg.train.lr_decay_steps == 0
    batch, steps = 8, 3
    reals = jax.random.uniform(
        jax.random.key(6), (steps, batch, m.size, m.size, 1), minval=-1, maxval=1
    )
    f = jax.jit(step)  # no donation: the initial state stays readable for the reference
    st0, lib, inputs = state, [], []
    for s in range(steps):
        inputs.append(_step_inputs(m, arch, state, s, batch))
        state, metrics = f(state, reals[s])
        lib.append(jax.tree.map(np.asarray, (state, metrics)))
    with jax.enable_x64(True):
        to64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), tree)
        params, stats = to64(st0.params), to64(st0.stats)
        adam = {
            k: {
                "mu": jax.tree.map(jnp.zeros_like, params[k]),
                "nu": jax.tree.map(jnp.zeros_like, params[k]),
            }
            for k in "gd"
        }
        ref = jax.jit(functools.partial(_ref_step, arch, lr, b1, b2))
        for s in range(steps):
            z, masks = inputs[s]
            params, stats, adam, out = ref(
                params, stats, adam, to64(reals[s]), z, masks, jnp.float64(s + 1)
            )
            got, metrics = lib[s]
            for k, v in out.items():
                assert float(metrics[k]) == pytest.approx(float(v), rel=1e-4), (s, k)
            for k in "gd":
                opt = got.opt_state[k][0]
                assert int(opt.count) == s + 1
                _assert_close(opt.mu, adam[k]["mu"], f"step {s + 1} {k} Adam mu", 1e-3, 1e-4)
                _assert_close(opt.nu, adam[k]["nu"], f"step {s + 1} {k} Adam nu", 1e-3, 1e-4)
                # float32 against float64: an element whose gradient is near zero may move by a few
                # percent of lr differently (Adam divides by |g|); measured worst 2% of lr
                _assert_close(
                    got.params[k], params[k], f"step {s + 1} {k} params", 1e-5, atol=0.05 * lr
                )
            _assert_close(got.stats, stats, f"step {s + 1} running statistics", 1e-4, 1e-5)
            assert int(got.step) == s + 1


def test_real_and_fake_batch_statistics_are_separate():
    m, tx_g, tx_d, state, real, step = _setup("dcgan")
    new, metrics = jax.jit(step)(state, real)
    sep, mixed, mr, mf = _separate_vs_mixed(m, state, real)
    assert float(metrics["d_loss"]) == pytest.approx(float(sep), rel=1e-5)
    assert abs(float(sep) - float(mixed)) > 1e-3
    # the discriminator's first batch-norm layer saw the real batch, then the fake batch
    np.testing.assert_allclose(
        np.asarray(new.stats["d"]["down1_bn"]["mean"]),
        0.9 * 0.1 * np.asarray(mr) + 0.1 * np.asarray(mf),
        rtol=1e-3,
        atol=1e-6,
    )


@functools.partial(jax.jit, static_argnums=0)
def _separate_vs_mixed(m, state, real):
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), 0)
    k_z, k_g, *_ = jax.random.split(key, 5)
    z = gan.models.sample_latent(k_z, real.shape[0], m.latent, "normal")
    fake, _ = m.generate(state.params["g"], state.stats["g"], z, train=True, key=k_g)
    dp, ds = state.params["d"], state.stats["d"]
    # separately: what the step did
    rl, _ = m.discriminate(dp, ds, real, train=True)
    fl, _ = m.discriminate(dp, ds, fake, train=True)
    sep, _ = losses.discriminator_loss(rl, fl)
    # one mixed batch: what it must not do
    both, _ = m.discriminate(dp, ds, jnp.concatenate([real, fake]), train=True)
    mixed, _ = losses.discriminator_loss(both[: len(real)], both[len(real) :])
    x_real = nn.leaky_relu(nn.conv(dp["down0"], real, stride=2, padding=1))
    x_real = nn.conv(dp["down1"], x_real, stride=2, padding=1)
    x_fake = nn.conv(
        dp["down1"],
        nn.leaky_relu(nn.conv(dp["down0"], fake, stride=2, padding=1)),
        stride=2,
        padding=1,
    )
    return sep, mixed, x_real.mean((0, 1, 2)), x_fake.mean((0, 1, 2))


def test_label_smoothing_reaches_the_step():
    m, _, _, state, real, step09 = _setup("fc", real_label=0.9)
    _, _, _, _, _, step10 = _setup("fc", real_label=1.0)
    # logits near 1.5 rather than the initial ~0, so the gap is large against float32 rounding
    state.params["d"][-1]["b"] = state.params["d"][-1]["b"] + 1.5
    _, m09 = jax.jit(step09)(state, real)
    _, m10 = jax.jit(step10)(state, real)
    # same logits, so the smoothed real loss exceeds the unsmoothed one by a worked amount:
    # BCE(x, 0.9) - BCE(x, 1) = (softplus(x) - 0.9 x) - (softplus(x) - x) = 0.1 x (elementwise), so
    # the gap is 0.1 * mean(real logits), the logits taken from the float64 reference discriminator
    # (same dropout masks)
    _, masks = _step_inputs(m, "fc", state, 0, real.shape[0])
    with jax.enable_x64(True):
        dp = jax.tree.map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), state.params["d"])
        logits, _ = _ref_discriminate(
            "fc", dp, {}, jnp.asarray(np.asarray(real), jnp.float64), masks["dr"]
        )
        want = 0.1 * float(logits.mean())
    gap = float(m09["d_loss_real"]) - float(m10["d_loss_real"])
    assert abs(want) > 0.1  # not a vanishing gap
    assert gap == pytest.approx(want, rel=1e-4)
    assert float(m09["d_loss_fake"]) == pytest.approx(float(m10["d_loss_fake"]), rel=1e-6)


def test_each_optimiser_changes_only_its_network():
    m, _, _, _, real, _ = _setup("fc")
    cfg = gan.config.default_config()
    # the learning rates live in the optimiser states (inject_hyperparams), so one compiled step
    # serves both cases
    adam = optax.inject_hyperparams(optax.adam)
    txg, txd = adam(learning_rate=cfg.train.lr_g), adam(learning_rate=cfg.train.lr_d)
    step = jax.jit(functools.partial(gan.step.train_step, model=m, tx_g=txg, tx_d=txd))
    for frozen in ("g", "d"):
        st = gan.step.init_state(m, 0, txg, txd, ema=False)
        st.opt_state[frozen].hyperparams["learning_rate"] = jnp.zeros(())
        new, _ = step(st, real)
        other = "d" if frozen == "g" else "g"
        same = jax.tree.map(np.array_equal, st.params[frozen], new.params[frozen])
        moved = jax.tree.map(np.array_equal, st.params[other], new.params[other])
        assert all(jax.tree.leaves(same)), f"{frozen} changed though its learning rate is 0"
        assert not any(jax.tree.leaves(moved)), f"{other} did not change"
    assert step._cache_size() == 1


def test_ema_and_one_compilation_per_shape():
    m, tx_g, tx_d, state, real, step = _setup("fc", ema=0.99)
    f = jax.jit(step, donate_argnums=0)
    g0 = jax.tree.map(np.asarray, state.params["g"])
    s1, _ = f(state, real)
    # warm-up decay at step 0: min(0.99, 1/10) = 0.1 -> ema = 0.1 * g0 + 0.9 * g1
    ref = jax.tree.map(lambda a, b: 0.1 * a + 0.9 * np.asarray(b), g0, s1.params["g"])
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=1e-7), s1.ema, ref
    )
    before = f._cache_size()
    s2, _ = f(s1, real)
    assert f._cache_size() == before == 1


# ----------------------------------------------------------------------------- data


def test_idx_loader_reads_committed_mnist_slice(test_data):
    """The IDX loader on the 500 MNIST test digits in tests/data, against a raw parse of the
    bytes."""
    import gzip

    d = imdata.load_images(path=str(test_data / "mnist"))
    raw_x = gzip.open(test_data / "mnist" / "t10k-images-idx3-ubyte.gz", "rb").read()
    raw_y = gzip.open(test_data / "mnist" / "t10k-labels-idx1-ubyte.gz", "rb").read()
    assert raw_x[:4] == bytes([0, 0, 8, 3]) and raw_y[:4] == bytes(
        [0, 0, 8, 1]
    )  # ubyte, 3 and 1 dims
    dims = [int.from_bytes(raw_x[4 + 4 * i : 8 + 4 * i], "big") for i in range(3)]
    assert dims == [500, 28, 28] and int.from_bytes(raw_y[4:8], "big") == 500
    assert len(raw_x) == 16 + 500 * 28 * 28 and len(raw_y) == 8 + 500
    pixels = np.frombuffer(raw_x[16:], np.uint8).reshape(500, 28, 28, 1)
    labels = np.frombuffer(raw_y[8:], np.uint8).astype(np.int64)
    assert d.images.shape == (500, 28, 28, 1) and d.images.dtype == np.float32
    np.testing.assert_array_equal(np.round((d.images.astype(np.float64) + 1.0) * 127.5), pixels)
    np.testing.assert_allclose(d.images, pixels / 127.5 - 1.0, rtol=0, atol=1e-6)
    assert d.images.min() == -1.0 and d.images.max() == 1.0
    np.testing.assert_array_equal(d.labels, labels)
    assert d.labels[:5].tolist() == [7, 2, 1, 0, 4]  # the first MNIST test labels
    assert set(d.labels.tolist()) == set(range(10))


def test_builtin_digits_and_fit_to_model():
    d = imdata.load_images()
    assert d.images.shape == (1797, 28, 28, 1) and set(np.unique(d.labels)) == set(range(10))
    # loaded once per process: the next caller gets the same, unchangeable arrays
    again = imdata.load_images()
    assert again.images is d.images and again.labels is d.labels
    with pytest.raises(ValueError, match="read-only"):
        d.images[0, 0, 0, 0] = 0.0
    with pytest.raises(ValueError, match="read-only"):
        d.labels[0] = 0
    # read from scikit-learn's bundled CSV without importing sklearn.datasets: the same data
    from sklearn.datasets import load_digits

    raw, labels = imdata._uci_digits()
    want = load_digits()
    np.testing.assert_array_equal(raw, want.images)
    np.testing.assert_array_equal(labels, want.target)
    np.testing.assert_array_equal(d.labels, want.target)
    padded = imdata.fit_to_model(d, 32, 1)
    assert padded.images.shape == (1797, 32, 32, 1)
    assert (padded.images[:, :2] == -1).all() and np.array_equal(
        padded.images[:, 2:30, 2:30], d.images
    )
    with pytest.raises(UserError, match="channel"):
        imdata.fit_to_model(d, 32, 3)
    with pytest.raises(UserError, match="image_size"):
        imdata.fit_to_model(d, 16, 1)


def test_batches_are_reproducible_by_step():
    x = np.arange(50, dtype=np.float32)[:, None, None, None]
    b1, b2 = imdata.ImageBatches(x, 8, seed=3), imdata.ImageBatches(x, 8, seed=3)
    assert len(b1) == 6
    seen = np.concatenate([b1.for_step(s) for s in range(6)]).ravel()
    assert (
        len(set(seen.tolist())) == 48
    )  # an epoch is a permutation (the last partial batch dropped)
    # random access gives the same batch
    np.testing.assert_array_equal(b1.for_step(13), b2.for_step(13))
    assert not np.array_equal(b1.for_step(0), b1.for_step(6))  # a new epoch is reshuffled


def test_bad_image_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        imdata.load_images(path=str(tmp_path / "nope"))
    with pytest.raises(UserError, match="no MNIST-format"):
        imdata.load_images(path=str(tmp_path))
    (tmp_path / "x-images-idx3-ubyte").write_bytes(
        b"\x00\x00\x08\x03\x00\x00\x00\x05\x00\x00\x00\x02\x00\x00\x00\x02xx"
    )
    with pytest.raises(UserError, match="truncated"):
        imdata.load_images(path=str(tmp_path))
    (tmp_path / "x-images-idx3-ubyte").write_bytes(b"GIF89a....")
    with pytest.raises(UserError, match="magic"):
        imdata.load_images(path=str(tmp_path))
    np.save(tmp_path / "empty.npy", np.zeros((0, 28, 28, 1), np.float32))
    with pytest.raises(UserError, match="empty"):
        imdata.load_images(path=str(tmp_path / "empty.npy"))
    with pytest.raises(UserError, match="fewer than one batch"):
        imdata.ImageBatches(np.zeros((3, 28, 28, 1), np.float32), 8, 0)


# ----------------------------------------------------------------------------- end to end


def _cli(*args, cwd=ROOT, check=True):
    """`jaxgen ARGS` run in this process (no interpreter start-up or JAX import per call; the entry
    point `python -m jaxgen` itself is run as a subprocess in tests/test_cli.py)."""
    import contextlib
    import io
    import types

    from jaxgen import cli

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(list(args))
    finally:
        os.chdir(here)
    r = types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
    if check and r.returncode != 0:
        raise AssertionError(
            f"jaxgen {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        )
    return r


@pytest.mark.slow
@pytest.mark.plots
def test_fc_gan_cli_train_resume_sample(tmp_path):
    w = tmp_path / "run"
    _cli(
        "train",
        "--config",
        "configs/gan_mnist.py:smoke",
        "--workdir",
        str(w),
        "--config.train.steps=12",
        "--config.train.checkpoint_every=6",
        "--config.train.sample_every=6",
        "--config.train.log_every=6",
        "--quiet",
    )
    for f in (
        "jaxgen.json",
        "metrics.jsonl",
        "losses.png",
        "progress.png",
        "samples/latest.png",
        "samples/step_0000012.png",
    ):
        assert (w / f).exists(), f
    rows = [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
    assert {"d_loss", "g_loss", "d_grad_norm", "g_grad_norm", "images_per_s"} <= set(rows[-1])
    # resume to 16 steps
    r = _cli(
        "train",
        "--config",
        "configs/gan_mnist.py:smoke",
        "--workdir",
        str(w),
        "--config.train.steps=16",
        "--config.train.checkpoint_every=6",
        "--config.train.sample_every=6",
        "--config.train.log_every=6",
        "--quiet",
    )
    assert "resumed from step 12" in r.stdout
    r = _cli(
        "sample",
        "--workdir",
        str(w),
        "--num",
        "37",
        "--out",
        str(tmp_path / "s.npy"),
        "--grid",
        str(tmp_path / "g.png"),
        "--checkpoint",
        "latest",
    )
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (37, 28, 28, 1) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.std() > 0.01
    assert (tmp_path / "g.png").stat().st_size > 100


def _run_inprocess(cfg, workdir):
    return gan.train.train(cfg, workdir, quiet=True)


def _smoke_cfg(steps=12):
    cfg = gan.config.default_config()
    cfg.train.steps = steps
    cfg.train.batch = 16
    cfg.train.log_every = 2
    cfg.train.checkpoint_every = 6
    cfg.train.sample_every = 6
    cfg.train.grid = 4
    return cfg


@pytest.mark.slow
def test_non_finite_loss_stops_with_step_named_and_keeps_checkpoint(tmp_path):
    cfg = _smoke_cfg(6)
    _run_inprocess(cfg, tmp_path)
    bad = _smoke_cfg(30)
    bad.train.lr_g = bad.train.lr_d = 1e38  # parameters overflow within a few steps
    with pytest.raises(
        UserError, match=r"non-finite at step (\d+).*last good checkpoint \(step 6\)"
    ):
        _run_inprocess(bad, tmp_path)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 6
    _, gp, _, _ = gan.sampling.load_generator(tmp_path, which="latest")
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(gp))


def test_bad_configs_and_shapes(tmp_path):
    cfg = _smoke_cfg(2)
    cfg.model.arch = "dcgan"
    cfg.model.image_size = 48
    with pytest.raises(UserError, match="28 or 4\\*2\\^k"):
        gan.train.train(cfg, tmp_path / "a", quiet=True)
    np.save(tmp_path / "rgb.npy", np.zeros((40, 32, 32, 3), np.uint8))
    cfg = _smoke_cfg(2)
    cfg.data.path = str(tmp_path / "rgb.npy")
    with pytest.raises(UserError, match="FC GAN makes"):
        gan.train.train(cfg, tmp_path / "b", quiet=True)
    cfg.model.arch = "dcgan"
    cfg.model.image_size = 32
    with pytest.raises(UserError, match="3 channel"):
        gan.train.train(cfg, tmp_path / "c", quiet=True)
    cfg = _smoke_cfg(2)
    cfg.train.real_label = 1.5
    with pytest.raises(UserError, match="real_label"):
        gan.train.train(cfg, tmp_path / "d", quiet=True)
    r = _cli(
        "train",
        "--config",
        "configs/gan_mnist.py:smoke",
        "--workdir",
        str(tmp_path / "e"),
        "--config.train.lr=0.1",
        check=False,
    )
    assert (
        r.returncode == 2
        and "unknown config field 'train.lr'" in r.stderr
        and "train.lr_g" in r.stderr
    )
    assert "Traceback" not in r.stderr


def test_learning_rate_decay_schedule_reaches_adam(tmp_path):
    """Linear decay from lr_decay_start over lr_decay_steps to lr * lr_final, then flat. With a
    constant gradient every Adam update is exactly -lr_t * sign(g) (bias-corrected m = g, v = g^2),
    so the updates read the schedule back."""
    cfg = gan.config.default_config()
    cfg.train.lr_g, cfg.train.lr_d = 1e-3, 4e-4
    cfg.train.lr_decay_start, cfg.train.lr_decay_steps, cfg.train.lr_final = 3, 4, 0.25
    expect = lambda lr, t: lr * (1.0 if t <= 3 else max(0.25, 1.0 - 0.75 * (t - 3) / 4))
    tx_g, tx_d = gan.step.make_optimizers(cfg)
    for tx, lr in ((tx_g, 1e-3), (tx_d, 4e-4)):
        p = {"w": jnp.ones(3)}
        g = {"w": jnp.array([0.5, -2.0, 3.0])}
        opt = tx.init(p)
        for t in range(10):
            u, opt = tx.update(g, opt, p)
            np.testing.assert_allclose(
                np.asarray(u["w"]), -expect(lr, t) * np.sign(g["w"]), rtol=1e-4
            )
    cfg.train.lr_decay_steps = 0  # off: a plain float learning rate
    assert gan.step.lr_schedule(1e-3, cfg) == 1e-3
    for field, value, msg in (
        ("lr_decay_steps", -1, "lr_decay_steps"),
        ("lr_decay_start", -5, "lr_decay_start"),
        ("lr_final", 2.0, "lr_final"),
    ):
        bad = _smoke_cfg(2)
        bad.train[field] = value
        with pytest.raises(UserError, match=msg):
            gan.train.train(bad, tmp_path / field, quiet=True)


@pytest.mark.slow
@pytest.mark.xdist_group("digits")  # shares the trained digits_classifier (conftest)
def test_eval_cli_scores_real_above_noise(tmp_path, monkeypatch, digits_classifier):
    """`jaxgen eval --samples`: real held-out digits score far better than noise. The classifier
    is the shared two-epoch one (the recipe trains ten: the plumbing is under test here, not the
    classifier), handed over where `get_classifier` would train it, so the cache is still written
    and read."""
    from jaxgen.evaluation import classifier
    from jaxgen.gan.evaluate import run_eval

    data, params, info, _ = digits_classifier
    trained = []

    def trainer(images, **kwargs):
        assert images.images.shape == data.images.shape and images.name == data.name
        trained.append(images.name)
        return params, info

    monkeypatch.setattr(classifier, "train_classifier", trainer)

    d = imdata.load_images()
    real = d.images[:300]
    np.save(tmp_path / "real.npy", real)
    np.save(
        tmp_path / "noise.npy",
        np.random.default_rng(0).uniform(-1, 1, real.shape).astype(np.float32),
    )
    cache = tmp_path / "cache"
    r_real = run_eval(
        samples=str(tmp_path / "real.npy"),
        data_source="builtin",
        cache_dir=str(cache),
        quiet=True,
        out=str(tmp_path / "r.json"),
    )
    r_noise = run_eval(
        samples=str(tmp_path / "noise.npy"), data_source="builtin", cache_dir=str(cache), quiet=True
    )
    assert trained == [data.name]  # trained for the first call, read from the cache by the second
    assert r_real["generated"]["fd"] < r_noise["generated"]["fd"] / 10
    assert r_real["generated"]["classifier_score"] > 2 * r_noise["generated"]["classifier_score"]
    assert r_real["generated"]["covered"] == 10
    assert json.loads((tmp_path / "r.json").read_text())["generated"]["fd"] == pytest.approx(
        r_real["generated"]["fd"]
    )
    with pytest.raises(UserError, match="say which real images"):
        run_eval(samples=str(tmp_path / "real.npy"), cache_dir=str(cache), quiet=True)
    np.save(tmp_path / "rgb.npy", np.zeros((200, 32, 32, 3), np.float32))
    with pytest.raises(UserError):
        run_eval(
            samples=str(tmp_path / "rgb.npy"),
            data_source="builtin",
            cache_dir=str(cache),
            quiet=True,
        )


@pytest.mark.slow
def test_resume_with_another_architecture_is_refused(tmp_path):
    _run_inprocess(_smoke_cfg(2), tmp_path)
    cfg = _smoke_cfg(4)
    cfg.model.arch = "dcgan"
    with pytest.raises(UserError, match="model.arch=fc"):
        _run_inprocess(cfg, tmp_path)
    assert (tmp_path / "checkpoints" / "2").exists()  # nothing lost
    # switching the EMA or the learning-rate decay on or off changes the saved state's structure:
    # refused with the field named, instead of a silent restart that would overwrite the run
    for field, value in (("ema_decay", 0.9), ("lr_decay_steps", 10)):
        cfg = _smoke_cfg(4)
        cfg.train[field] = value
        with pytest.raises(UserError, match=f"train.{field}={value}"):
            _run_inprocess(cfg, tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]


def test_recalibrate_pools_chunk_statistics():
    """One chunk: exactly the train-mode batch statistics of the same latents. Several chunks: the
    first layer's pooled mean and (biased) variance equal the whole batch's (the law of total
    variance); deeper layers, normalised per chunk, stay close; a ragged ``num`` is refused."""
    m = gan.models.dcgan(image_size=16, features=(8, 16), latent=12)
    params, stats = m.init(jax.random.key(0))
    gp, gs = params["g"], stats["g"]
    key = jax.random.key(3)
    z = gan.models.sample_latent(key, 512, m.latent, "normal")
    generate = jax.jit(functools.partial(m.generate, train=True, key=None, bn_momentum=0.0))
    _, whole = generate(gp, gs, z)
    one = gan.sampling.recalibrate(m, gp, gs, key, num=512, chunk=512)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(whole)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    pooled = gan.sampling.recalibrate(m, gp, gs, key, num=512, chunk=128)
    assert jax.tree.structure(pooled) == jax.tree.structure(gs)
    for k in ("mean", "var"):
        np.testing.assert_allclose(
            np.asarray(pooled["in_bn"][k]), np.asarray(whole["in_bn"][k]), rtol=1e-4, atol=1e-5
        )
        for name in gs:
            np.testing.assert_allclose(
                np.asarray(pooled[name][k]), np.asarray(whole[name][k]), rtol=0.1, atol=0.05
            )
    with pytest.raises(ValueError, match="multiple of chunk"):
        gan.sampling.recalibrate(m, gp, gs, key, num=500, chunk=128)


def test_recalibrate_samples_reach_sampling_and_are_checked():
    """``train.recalibrate_samples`` sets how many latents re-measure an EMA generator's statistics
    (the smoke configs use 2,048 to sample fast); configs saved before the field existed keep
    16,384; a ragged count is refused by the config check."""
    from jaxgen.config import load_config

    m = gan.models.dcgan(image_size=16, features=(8, 16), latent=12)
    params, stats = m.init(jax.random.key(0))
    state = types.SimpleNamespace(params=params, stats=stats, ema=params["g"])
    key = jax.random.key(3)
    _, got = gan.sampling.sampling_generator(m, state, key, "normal", num=512)
    want = gan.sampling.recalibrate(m, params["g"], stats["g"], key, num=512, chunk=512)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    smoke = load_config(ROOT / "configs" / "dcgan_mnist.py:smoke")
    assert gan.sampling.recalibrate_samples(smoke) == 2048
    del smoke.train.recalibrate_samples  # a config saved before the field
    assert gan.sampling.recalibrate_samples(smoke) == 16384
    for bad in (3000, 0, -2048):
        cfg = gan.config.default_config()
        cfg.train.recalibrate_samples = bad
        with pytest.raises(UserError, match="recalibrate_samples must be a positive integer"):
            gan.config.validate_config(cfg)
