"""Projecting an image or a sketch onto a trained generator's images (iGAN, Zhu et al. 2016).

Given a target ``x`` (and optionally a ``mask`` of the pixels that were drawn), find latents ``z``
whose images ``G(z)`` are close to it: the nearest image the generator can make, a realistic
completion of a partial sketch. As in iGAN:

* an **encoder** ``E`` (a small CNN, :func:`encoder_init` / :func:`encode`) trained on the
  generator's own samples to predict ``z`` from ``G(z)`` (:func:`train_encoder`) gives a first
  guess;
* then many **restarts** (the encoder's guess plus random latents) are optimised at once with
  optax Adam on ``mean(mask * (G(z) - x)^2) + prior * |z|^2 / latent`` (plus, optionally, a
  feature distance ``|f(G(z)) - f(x)|^2`` for any feature function ``f``, such as the
  discriminator's), and the best ``k`` are returned (:func:`project`);
* :func:`interpolate` walks between two projections, as iGAN's editing does.

The generator runs in sampling mode (running batch-norm statistics), so each restart's image
depends on its own latent only and the restarts form one batch.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen.errors import UserError
from jaxgen.gan import models
from jaxgen.gan.models import GanModel
from jaxgen.nn import layers as nn

Array = jax.Array


def encoder_init(key, size: int, channels: int, latent: int, features=(16, 32, 64)) -> dict:
    """A CNN ``[B, size, size, channels] -> [B, latent]``: 4x4 stride-2 convolutions with leaky
    ReLU, then a dense layer."""
    keys = jax.random.split(key, len(features) + 1)
    p, c, s = {}, channels, size
    for i, f in enumerate(features):
        p[f"conv{i}"] = nn.conv_init(keys[i], 4, c, f)
        c, s = f, s // 2
    p["out"] = nn.dense_init(keys[-1], s * s * c, latent)
    return p


def encode(params: dict, images: Array) -> Array:
    """Latents ``[B, latent]`` predicted for ``images [B, S, S, C]`` in [-1, 1]."""
    x = images
    i = 0
    while f"conv{i}" in params:
        x = nn.leaky_relu(nn.conv(params[f"conv{i}"], x, stride=2, padding=1), 0.2)
        i += 1
    return nn.dense(params["out"], x.reshape(x.shape[0], -1))


def _generate(model: GanModel, g_params, g_stats, z, labels):
    return model.generate(g_params, g_stats, z, labels=labels, train=False)[0]


def train_encoder(
    model: GanModel,
    g_params,
    g_stats,
    key,
    *,
    steps: int = 2000,
    batch: int = 64,
    lr: float = 1e-3,
    dist: str = "normal",
    progress: Callable[[int, float], None] | None = None,
) -> tuple[dict, list[float]]:
    """An encoder trained on fresh generator samples: ``min |E(G(z)) - z|^2`` over ``z ~ p(z)``
    (and random classes for a conditional generator). Returns its parameters and the loss every
    100 steps."""
    k_init, k_data = jax.random.split(key)
    params = encoder_init(k_init, model.size, model.channels, model.latent)
    tx = optax.adam(lr)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, k):
        kz, ky = jax.random.split(k)
        z = models.sample_latent(kz, batch, model.latent, dist)
        y = jax.random.randint(ky, (batch,), 0, model.num_classes) if model.num_classes else None
        x = _generate(model, g_params, g_stats, z, y)
        loss, g = jax.value_and_grad(lambda p: jnp.mean((encode(p, x) - z) ** 2))(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    history = []
    for s in range(steps):
        params, opt, loss = step(params, opt, jax.random.fold_in(k_data, s))
        if (s + 1) % 100 == 0 or s + 1 == steps:
            history.append(float(loss))
            if progress is not None:
                progress(s + 1, history[-1])
    return params, history


class Projection(NamedTuple):
    z: Array  # [k, latent] the best latents, best first
    images: Array  # [k, S, S, C] their images (the model's size: crop for the data's)
    loss: Array  # [k] their final losses
    history: Array  # [steps, restarts] every restart's loss at every step


def _check_target(model: GanModel, target, mask):
    x = jnp.asarray(target, jnp.float32)
    want = (model.size, model.size, model.channels)
    if x.shape != want:
        raise UserError(
            f"the sketch must be one image {list(want)} in [-1, 1] for this generator "
            f"(pad 28x28 digits with jaxgen.gan.models.pad), got {list(x.shape)}"
        )
    m = jnp.ones(want[:2] + (1,), jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    if m.shape not in (want[:2] + (1,), want):
        raise UserError(
            f"the mask must be [{want[0]}, {want[1]}, 1] (1 where the sketch was drawn), got "
            f"{list(m.shape)}"
        )
    if not float(m.sum()) > 0:
        raise UserError("the mask selects no pixel; mark the drawn pixels with 1")
    return x, m


@functools.partial(
    jax.jit, static_argnames=("model", "steps", "lr", "feature_fn", "feature_weight", "prior")
)
def _optimise(model, g_params, g_stats, x, m, z0, labels, *, steps, lr, prior, feature_fn,
              feature_weight):  # fmt: skip
    tx = optax.adam(lr)
    target_f = None if feature_fn is None else feature_fn(x[None])

    def losses(z):
        img = _generate(model, g_params, g_stats, z, labels)
        drawn = jnp.sum(jnp.broadcast_to(m, x.shape))  # pixel values that count
        pix = jnp.sum(m * (img - x) ** 2, axis=(1, 2, 3)) / drawn
        total = pix + prior * jnp.mean(z**2, axis=-1)
        if feature_fn is not None:
            total = total + feature_weight * jnp.mean((feature_fn(img) - target_f) ** 2, axis=-1)
        return total

    def body(carry, _):
        z, opt = carry

        # the restarts are independent: the gradient of the sum is each one's own gradient
        def summed(z):
            per = losses(z)
            return jnp.sum(per), per

        (_, per), grad = jax.value_and_grad(summed, has_aux=True)(z)
        upd, opt = tx.update(grad, opt, z)
        return (optax.apply_updates(z, upd), opt), per

    (z, _), hist = jax.lax.scan(body, (z0, tx.init(z0)), None, length=steps)
    return z, losses(z), hist


def project(
    model: GanModel,
    g_params,
    g_stats,
    target,
    *,
    key,
    mask=None,
    restarts: int = 32,
    k: int = 4,
    steps: int = 300,
    lr: float = 0.05,
    prior: float = 1e-3,
    encoder: dict | None = None,
    label: int | None = None,
    dist: str = "normal",
    feature_fn: Callable[[Array], Array] | None = None,
    feature_weight: float = 0.0,
) -> Projection:
    """The ``k`` best of ``restarts`` latents optimised at once to reproduce ``target``
    (``[S, S, C]`` in [-1, 1], the model's size) where ``mask`` (``[S, S, 1]``, 1 = drawn; default
    everywhere) says. Restart 0 starts at the ``encoder``'s guess when one is given, the rest at
    draws from ``p(z)``. A conditional generator needs ``label``."""
    x, m = _check_target(model, target, mask)
    if not 1 <= k <= restarts:
        raise UserError(f"k must be between 1 and restarts ({restarts}), got {k}")
    if model.num_classes and label is None:
        raise UserError("this generator is class-conditional: say which class to project onto")
    labels = None if not model.num_classes else jnp.full((restarts,), int(label), jnp.int32)
    z0 = models.sample_latent(key, restarts, model.latent, dist)
    if encoder is not None:
        z0 = z0.at[0].set(encode(encoder, x[None])[0])
    z, final, hist = _optimise(
        model, g_params, g_stats, x, m, z0, labels, steps=steps, lr=lr, prior=prior,
        feature_fn=feature_fn, feature_weight=feature_weight,
    )  # fmt: skip
    best = jnp.argsort(final)[:k]
    images = _generate(model, g_params, g_stats, z[best], None if labels is None else labels[:k])
    return Projection(z[best], images, final[best], hist)


def interpolate(model: GanModel, g_params, g_stats, z_a, z_b, steps: int = 8, label=None):
    """``steps`` images along the straight line from ``z_a`` to ``z_b`` (both ends included)."""
    if steps < 2:
        raise UserError(f"an interpolation needs at least 2 steps, got {steps}")
    t = jnp.linspace(0.0, 1.0, steps)[:, None]
    z = (1 - t) * jnp.asarray(z_a)[None] + t * jnp.asarray(z_b)[None]
    labels = None if not model.num_classes else jnp.full((steps,), int(label), jnp.int32)
    return _generate(model, g_params, g_stats, z, labels)


def read_image(path, shape: tuple[int, int, int], what: str = "--image") -> np.ndarray:
    """One image ``shape`` (``[H, W, C]``) in [-1, 1] from a PNG/JPEG (grey or RGB, 0..255 mapped
    to [-1, 1]) or a ``.npy`` (``[H, W, C]`` or ``[1, H, W, C]`` already in [-1, 1])."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} {str(p)!r} does not exist")
    if p.suffix.lower() == ".npy":
        try:
            x = np.load(p, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read {what} {str(p)!r} as a .npy array ({e})") from None
        x = x[0] if x.ndim == 4 and len(x) == 1 else x
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(p) as im:
                im = im.convert("L" if shape[-1] == 1 else "RGB")
                x = np.asarray(im, np.float32) / 127.5 - 1.0
        except (OSError, UnidentifiedImageError) as e:
            raise UserError(f"{what} {str(p)!r} is not an image PIL can read ({e})") from None
        x = x[..., None] if x.ndim == 2 else x
    if x.shape != tuple(shape):
        raise UserError(
            f"{what} {str(p)!r} is {list(x.shape)}, but this generator's images are "
            f"{list(shape)}; resize it to {shape[0]}x{shape[1]}"
        )
    if not (np.isfinite(x).all() and x.min() >= -1.0001 and x.max() <= 1.0001):
        raise UserError(f"{what} {str(p)!r} has values outside [-1, 1]")
    return x


def cached_encoder(workdir, model, g_params, g_stats, *, steps: int, dist: str, log=print):
    """The workdir's projection encoder for this generator, trained and saved on first use
    (``project/encoder_<steps>_<digest>.npz``). The digest is of the generator's parameters and
    statistics, so the best and the latest checkpoint, or a run trained further, each get their
    own encoder instead of one fitted to another generator."""
    import hashlib

    from jaxgen.training.io import write_atomic

    digest = hashlib.sha1()
    for leaf in jax.tree.leaves((g_params, g_stats)):
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    path = Path(workdir) / "project" / f"encoder_{steps}_{digest.hexdigest()[:12]}.npz"
    if path.exists():
        with np.load(path) as f:
            flat = dict(f)
        return _unflatten(flat)
    log(f"training the projection encoder ({steps} steps on the generator's samples)")
    params, hist = train_encoder(
        model, g_params, g_stats, jax.random.key(0), steps=steps, dist=dist,
        progress=lambda s, loss: log(f"  encoder step {s}: |E(G(z)) - z|^2 {loss:.4f}"),
    )  # fmt: skip
    path.parent.mkdir(exist_ok=True)
    flat = {f"{k}/{n}": np.asarray(v) for k, layer in params.items() for n, v in layer.items()}
    write_atomic(path, lambda f: np.savez(f, **flat))
    return params


def _unflatten(flat: dict) -> dict:
    out: dict = {}
    for k, v in flat.items():
        layer, name = k.split("/")
        out.setdefault(layer, {})[name] = jnp.asarray(v)
    return out
