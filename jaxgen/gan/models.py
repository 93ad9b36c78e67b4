"""The two GANs: a fully connected GAN for 28x28 digits and a DCGAN, as pure functions.

Each architecture is a :class:`GanModel`, a named tuple of pure functions::

    params, stats = model.init(key)                       # {"g": ..., "d": ...} each
    images, g_stats = model.generate(params["g"], stats["g"], z, train=..., key=...)
    logits, d_stats = model.discriminate(params["d"], stats["d"], images, train=..., key=...)

``z`` is ``[B, latent]``; images are ``[B, S, S, C]`` in [-1, 1] (tanh) with ``S = model.size``;
logits are ``[B]`` (probability of "real" through a sigmoid). ``stats`` are batch-norm running
statistics (empty dicts for the FC GAN); ``train=True`` normalises with batch statistics and returns
updated running statistics, ``train=False`` uses the running ones. ``key`` drives dropout (``None``:
no dropout). ``bn_momentum=0`` makes the returned statistics exactly this batch's (used to
recalibrate the statistics of an averaged generator).

Both functions check their input's shape and refuse a wrong one with a one-line
:class:`UserError` naming the fix (not an XLA error from deep inside). :func:`pad` and :func:`crop`
convert between the data's shape and the model's (28x28 MNIST <-> the 32x32 DCGAN).

The class-conditional DCGAN (``num_classes > 0``) takes ``labels=`` (int ``[B]``) in both
functions: the generator reads ``[z, one_hot(label)]``; the discriminator either projects its
features onto a learned class embedding (``cond_d="projection"``, Miyato & Koyama 2018: logit =
``w . phi(x) + b + e_y . phi(x)``) or reads the label as ``num_classes`` constant one-hot planes
concatenated to the image (``cond_d="concat"``, the classic conditional DCGAN).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxgen.errors import UserError
from jaxgen.nn import layers as nn

Array = jax.Array


class GanModel(NamedTuple):
    init: Callable[[Array], tuple[dict, dict]]
    generate: Callable[..., tuple[Array, dict]]
    discriminate: Callable[..., tuple[Array, dict]]
    latent: int  # size of z
    size: int  # side of the images the networks make and take
    channels: int
    crop: (
        int  # pixels to crop from each side of generated images for the data's shape (28 in 32: 2)
    )
    num_classes: int = 0  # > 0: a class-conditional GAN (generate and discriminate take labels)


def sample_latent(key: Array, batch: int, latent: int, dist: str = "normal") -> Array:
    """``[batch, latent]`` draws from N(0, 1) (``"normal"``) or U[-1, 1] (``"uniform"``)."""
    if dist == "normal":
        return jax.random.normal(key, (batch, latent))
    if dist == "uniform":
        return jax.random.uniform(key, (batch, latent), minval=-1.0, maxval=1.0)
    raise UserError(f"unknown model.latent_dist {dist!r}; choose 'normal' or 'uniform'")


def _check_latent(z, latent: int, arch: str) -> None:
    """``z`` must be ``[B, latent]``: a wrong shape would otherwise fail deep inside XLA."""
    shape = tuple(jnp.shape(z))
    if len(shape) != 2 or shape[1] != latent:
        raise UserError(
            f"the {arch} generator takes z of shape [B, {latent}] (batch, latent), "
            f"got {list(shape)}; "
            f"draw it with jaxgen.gan.models.sample_latent(key, B, {latent})"
        )


def _check_labels(labels, batch: int, num_classes: int, arch: str) -> None:
    """A conditional model needs int ``labels [B]``; an unconditional one refuses them."""
    if num_classes == 0:
        if labels is not None:
            raise UserError(
                f"this {arch} is unconditional and takes no labels; train a class-conditional "
                "one (config.model.num_classes > 0, e.g. configs/cdcgan_mnist.py) to choose classes"
            )
        return
    if labels is None:
        raise UserError(
            f"this {arch} is class-conditional ({num_classes} classes): pass labels=int [B] "
            f"in [0, {num_classes})"
        )
    shape = tuple(jnp.shape(labels))
    if shape != (batch,) or not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise UserError(
            f"the {arch} takes labels of shape [{batch}] (one int class per image), got "
            f"{list(shape)} {jnp.result_type(labels)}"
        )


def _check_images(images, size: int, channels: int, crop: int, arch: str) -> None:
    """``images`` must be ``[B, size, size, channels]``; the message names the fix for the usual
    mistakes."""
    shape = tuple(jnp.shape(images))
    if len(shape) == 4 and shape[1:] == (size, size, channels):
        return
    want = f"[B, {size}, {size}, {channels}]"
    msg = (
        f"the {arch} discriminator takes images {want} in [-1, 1] "
        f"(batch, height, width, channels), got {list(shape)}"
    )
    data = size - 2 * crop
    if len(shape) == 4 and shape[1:] == (data, data, channels) and crop:
        msg += (
            f"; pad the {data}x{data} images to {size}x{size} "
            "with jaxgen.gan.models.pad(model, images) "
            f"(background -1, as training does), or give it {size}x{size} images"
        )
    elif len(shape) == 4 and shape[1] == shape[2] and shape[3] == channels:
        msg += (
            f"; build the model with image_size={shape[1]}, or resize the images to {size}x{size}"
        )
    elif len(shape) == 4 and shape[1:3] == (size, size):
        msg += f"; build the model with channels={shape[3]}"
    elif len(shape) == 4 and shape[1] == channels and shape[2] == shape[3]:
        msg += "; the images are channels-first [B, C, H, W]: transpose them to [B, H, W, C]"
    elif len(shape) == 3:
        msg += "; add the channel axis: images[..., None]"
    raise UserError(msg)


# ----------------------------------------------------------------------------- fully connected GAN


def fc_gan(
    *,
    latent: int = 100,
    image_size: int = 28,
    channels: int = 1,
    g_hidden=(32, 64, 128),
    d_hidden=(128, 64, 32),
    slope: float = 0.2,
    g_dropout: float = 0.0,
    d_dropout: float = 0.3,
    init_std: float | None = None,
) -> GanModel:
    """Generator ``latent -> g_hidden... -> S*S*C`` (tanh), discriminator
    ``S*S*C -> d_hidden... -> 1``.

    Leaky ReLU (``slope``) after every hidden layer, then dropout. The defaults are the classic
    784-128-64-32-1 / 100-32-64-128-784 networks. ``init_std=None`` is PyTorch's default init.
    """
    pixels = image_size * image_size * channels
    g_sizes = [latent, *g_hidden, pixels]
    d_sizes = [pixels, *d_hidden, 1]

    def init(key):
        kg, kd = jax.random.split(key)
        g = [
            nn.dense_init(k, a, b, std=init_std)
            for k, a, b in zip(jax.random.split(kg, len(g_sizes) - 1), g_sizes[:-1], g_sizes[1:])
        ]
        d = [
            nn.dense_init(k, a, b, std=init_std)
            for k, a, b in zip(jax.random.split(kd, len(d_sizes) - 1), d_sizes[:-1], d_sizes[1:])
        ]
        return {"g": g, "d": d}, {"g": {}, "d": {}}

    def mlp(layers, x, key, rate):
        keys = jax.random.split(key, len(layers)) if key is not None else [None] * len(layers)
        for p, k in zip(layers[:-1], keys):
            x = nn.dropout(k, nn.leaky_relu(nn.dense(p, x), slope), rate)
        return nn.dense(layers[-1], x)

    def generate(params, stats, z, *, labels=None, train=True, key=None, bn_momentum=0.9):
        _check_latent(z, latent, "FC GAN")
        _check_labels(labels, z.shape[0], 0, "FC GAN")
        x = jnp.tanh(mlp(params, z, key if train else None, g_dropout))
        return x.reshape(z.shape[0], image_size, image_size, channels), stats

    def discriminate(params, stats, images, *, labels=None, train=True, key=None, bn_momentum=0.9):
        _check_images(images, image_size, channels, 0, "FC GAN")
        _check_labels(labels, images.shape[0], 0, "FC GAN")
        x = images.reshape(images.shape[0], -1)
        return mlp(params, x, key if train else None, d_dropout)[:, 0], stats

    # init compiled whole: op by op, every layer's draw would compile on its own
    return GanModel(jax.jit(init), generate, discriminate, latent, image_size, channels, 0)


# ----------------------------------------------------------------------------- DCGAN


def dcgan(
    *,
    latent: int = 100,
    image_size: int = 32,
    channels: int = 1,
    features=(32, 64, 128),
    slope: float = 0.2,
    init_std: float = 0.02,
    num_classes: int = 0,
    cond_d: str = "projection",
) -> GanModel:
    """DCGAN (Radford et al. 2015) sized by ``features``; class-conditional with ``num_classes``.

    Discriminator: 4x4 convolutions with stride 2 and ``features`` filters (size halves each time
    down to 4x4), leaky ReLU, batch norm on every layer but the first (the input layer), then a
    dense logit. Generator: dense ``latent -> 4x4xfeatures[-1]``, then 4x4 transposed convolutions
    with stride 2 and the features in reverse up to ``channels``, ReLU, batch norm on every layer
    but the output, tanh. Weights N(0, ``init_std``); batch-norm scale 1. Layers followed by batch
    norm have no bias.

    ``image_size=28`` builds the 32x32 networks; 28x28 data is padded to 32 with the background
    value and generated images are cropped back to 28.

    ``num_classes > 0``: the generator's dense layer reads ``[z, one_hot(label)]``; the
    discriminator conditions by ``cond_d``: ``"projection"`` adds ``e_y . phi(x)`` to the logit
    (``phi``: the flattened last features; ``e``: a ``[num_classes, 16 * features[-1]]`` embedding,
    N(0, ``init_std``)), ``"concat"`` appends ``num_classes`` one-hot planes to the input image.
    """
    if num_classes < 0 or (num_classes and cond_d not in ("projection", "concat")):
        raise UserError(
            f"config.model.num_classes must be >= 0 (got {num_classes}) and config.model.cond_d "
            f"'projection' or 'concat' (got {cond_d!r})"
        )
    arch = "conditional DCGAN" if num_classes else "DCGAN"
    d_in = channels + (num_classes if num_classes and cond_d == "concat" else 0)
    size = 32 if image_size == 28 else image_size
    n_up = int(round(math.log2(size / 4))) if size >= 8 else 0
    if size < 8 or 4 * 2**n_up != size:
        raise UserError(
            "the DCGAN takes square images of 28 or 4*2^k pixels (8, 16, 32, 64, ...), "
            f"not {image_size}; "
            "set config.model.image_size accordingly"
        )
    features = tuple(features)
    if len(features) != n_up:
        raise UserError(
            f"a {size}x{size} DCGAN needs {n_up} feature sizes (one per stride-2 layer), got "
            f"model.features={features}"
        )
    top = features[-1]

    def init(key):
        kg, kd = jax.random.split(key)
        kgs = jax.random.split(kg, n_up + 1)
        kds = jax.random.split(kd, n_up + 1)
        g = {
            "in": nn.dense_init(kgs[0], latent + num_classes, 4 * 4 * top, std=init_std, bias=False)
        }
        g_stats = {}
        g["in_bn"], g_stats["in_bn"] = nn.batch_norm_init(4 * 4 * top)
        chans = list(reversed(features)) + [channels]
        for i in range(n_up):
            last = i == n_up - 1
            g[f"up{i}"] = nn.conv_transpose_init(
                kgs[i + 1], 4, chans[i], chans[i + 1], std=init_std, bias=last
            )
            if not last:
                g[f"up{i}_bn"], g_stats[f"up{i}_bn"] = nn.batch_norm_init(chans[i + 1])
        d, d_stats = {}, {}
        cin = d_in
        for i, f in enumerate(features):
            d[f"down{i}"] = nn.conv_init(kds[i], 4, cin, f, std=init_std, bias=(i == 0))
            if i > 0:
                d[f"down{i}_bn"], d_stats[f"down{i}_bn"] = nn.batch_norm_init(f)
            cin = f
        d["out"] = nn.dense_init(kds[-1], 4 * 4 * top, 1, std=init_std)
        if num_classes and cond_d == "projection":
            k_e = jax.random.fold_in(kd, 1)
            d["embed"] = init_std * jax.random.normal(k_e, (num_classes, 4 * 4 * top))
        return {"g": g, "d": d}, {"g": g_stats, "d": d_stats}

    def generate(params, stats, z, *, labels=None, train=True, key=None, bn_momentum=0.9):
        _check_latent(z, latent, arch)
        _check_labels(labels, z.shape[0], num_classes, arch)
        new = {}
        if num_classes:
            z = jnp.concatenate([z, jax.nn.one_hot(labels, num_classes, dtype=z.dtype)], -1)
        x = nn.dense(params["in"], z)
        x, new["in_bn"] = nn.batch_norm(
            params["in_bn"], stats["in_bn"], x, train=train, momentum=bn_momentum
        )
        x = jax.nn.relu(x).reshape(z.shape[0], 4, 4, top)
        for i in range(n_up):
            x = nn.conv_transpose(params[f"up{i}"], x, stride=2)
            if i < n_up - 1:
                name = f"up{i}_bn"
                x, new[name] = nn.batch_norm(
                    params[name], stats[name], x, train=train, momentum=bn_momentum
                )
                x = jax.nn.relu(x)
        return jnp.tanh(x), new

    def discriminate(params, stats, images, *, labels=None, train=True, key=None, bn_momentum=0.9):
        _check_images(images, size, channels, (size - image_size) // 2, arch)
        _check_labels(labels, images.shape[0], num_classes, arch)
        new = {}
        x = images
        if num_classes and cond_d == "concat":
            planes = jax.nn.one_hot(labels, num_classes, dtype=x.dtype)[:, None, None, :]
            x = jnp.concatenate([x, jnp.broadcast_to(planes, (*x.shape[:3], num_classes))], -1)
        for i in range(n_up):
            x = nn.conv(params[f"down{i}"], x, stride=2, padding=1)
            if i > 0:
                name = f"down{i}_bn"
                x, new[name] = nn.batch_norm(
                    params[name], stats[name], x, train=train, momentum=bn_momentum
                )
            x = nn.leaky_relu(x, slope)
        phi = x.reshape(x.shape[0], -1)
        logits = nn.dense(params["out"], phi)[:, 0]
        if num_classes and cond_d == "projection":
            logits = logits + jnp.sum(params["embed"][labels] * phi, -1)
        return logits, new

    crop_px = (size - image_size) // 2
    # init compiled whole: op by op, every layer's draw would compile on its own
    return GanModel(
        jax.jit(init), generate, discriminate, latent, size, channels, crop_px, num_classes
    )


def build(model_cfg) -> GanModel:
    """The :class:`GanModel` a config's ``model`` group describes (``model.arch``: 'fc' or
    'dcgan').

    Equal settings give the same object (memoised), so functions jitted with the model as a
    static argument (sampling, recalibration, projection) compile once per process, not once
    per training run or loaded workdir."""
    m = model_cfg
    if m.arch == "fc":
        return _build(
            "fc",
            latent=m.latent,
            image_size=m.image_size,
            channels=m.channels,
            g_hidden=tuple(m.g_hidden),
            d_hidden=tuple(m.d_hidden),
            slope=m.slope,
            g_dropout=m.g_dropout,
            d_dropout=m.d_dropout,
            init_std=m.init_std if m.init_std > 0 else None,
        )
    if m.arch == "dcgan":
        return _build(
            "dcgan",
            latent=m.latent,
            image_size=m.image_size,
            channels=m.channels,
            features=tuple(m.features),
            slope=m.slope,
            init_std=m.init_std if m.init_std > 0 else 0.02,
            num_classes=m.get("num_classes", 0),
            cond_d=m.get("cond_d", "projection"),
        )
    raise UserError(f"unknown model.arch {m.arch!r}; choose 'fc' or 'dcgan'")


@functools.lru_cache(maxsize=64)
def _build(arch: str, **kw) -> GanModel:
    return fc_gan(**kw) if arch == "fc" else dcgan(**kw)


def crop(model: GanModel, images: Array) -> Array:
    """Generated images cut back to the data's shape (28x28 from a 32x32 DCGAN)."""
    c = model.crop
    return images if c == 0 else images[:, c:-c, c:-c, :]


def pad(model: GanModel, images: Array) -> Array:
    """Data-shaped images ``[B, S - 2*crop, S - 2*crop, C]`` padded to the model's ``[B, S, S, C]``
    with the background value -1 (28x28 MNIST into the 32x32 DCGAN); the inverse of
    :func:`crop`."""
    c = model.crop
    if c == 0:
        return images
    data = model.size - 2 * c
    shape = tuple(jnp.shape(images))
    if len(shape) != 4 or shape[1:3] != (data, data):
        raise UserError(
            f"pad takes images [B, {data}, {data}, C] for this {model.size}x{model.size} model, "
            f"got {list(shape)}"
        )
    return jnp.pad(jnp.asarray(images), ((0, 0), (c, c), (c, c), (0, 0)), constant_values=-1.0)
