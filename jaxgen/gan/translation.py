"""Image-to-image translation networks and losses: Pix2Pix (Isola et al. 2017) and CycleGAN
(Zhu et al. 2017), as pure functions over plain parameter dicts.

* :func:`unet_init` / :func:`unet`: Pix2Pix's generator, an encoder-decoder whose decoder
  layers also read the encoder layer of the same size (skip connections); dropout in the
  innermost decoder layers is its only noise.
* :func:`patchgan_init` / :func:`patchgan`: the PatchGAN discriminator, a stack of 4x4
  convolutions whose output is one real/fake logit per overlapping input patch;
  :func:`patchgan_receptive_field` is the patch size.
* :func:`resnet_generator_init` / :func:`resnet_generator`: CycleGAN's generator (two
  stride-2 convolutions down, residual blocks, two transposed convolutions up).
* Losses: :func:`lsgan_d_loss`, :func:`lsgan_g_loss` (least squares, CycleGAN),
  :func:`l1_loss` (Pix2Pix's reconstruction term, CycleGAN's cycle and identity terms).
* :func:`pool_init` / :func:`pool_query`: CycleGAN's history of generated images, kept as
  functional state (arrays in the train state) so a resumed run continues exactly.

Images are NHWC in ``[-1, 1]``; normalisation is instance norm (per image and channel, over
height and width), which both papers' released code uses for small batches.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxgen.nn import layers

Array = jax.Array
Params = dict

KERNEL = 4  # Pix2Pix and CycleGAN's 4x4 convolutions (stride 2 down, transposed up)


# --------------------------------------------------------------------------- instance norm


def instance_norm_init(channels: int, dtype=jnp.float32) -> Params:
    """Scale ones, bias zeros."""
    return {"scale": jnp.ones((channels,), dtype), "bias": jnp.zeros((channels,), dtype)}


def instance_norm(params: Params, x: Array, eps: float = 1e-5) -> Array:
    """Normalise each image's channels over height and width (``x [B, H, W, C]``), then scale
    and shift per channel. No running statistics: training and sampling compute the same.

    The gradient is written out (``custom_vjp``): with ``x^ = (x - mean) / std`` and ``g`` the
    output gradient times the scale, ``dx = (g - mean(g) - x^ mean(g x^)) / std``, means over
    height and width: fewer operations than autodiff's transpose of the two means and the square
    root. The shipped CycleGAN step runs 78 of these norms (13 a generator pass, six passes); its
    program shrank from 3,663 to 2,861 operations and the step ran 1.07x faster
    (``benchmarks/results/step_before_after.md``). Reverse mode only (``grad``, ``vjp``), as for
    the CPU convolutions of :mod:`jaxgen.nn.layers`."""
    return _instance_norm(x, params["scale"], params["bias"], eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _instance_norm(x, scale, bias, eps):
    return _instance_norm_fwd(x, scale, bias, eps)[0]


def _instance_norm_fwd(x, scale, bias, eps):
    centred = x - x.mean(axis=(1, 2), keepdims=True)
    inv_std = jax.lax.rsqrt(jnp.square(centred).mean(axis=(1, 2), keepdims=True) + eps)
    xhat = centred * inv_std
    return xhat * scale + bias, (xhat, inv_std, scale)


def _instance_norm_bwd(eps, res, g):
    xhat, inv_std, scale = res
    gs = g * scale
    dx = inv_std * (
        gs
        - gs.mean(axis=(1, 2), keepdims=True)
        - xhat * (gs * xhat).mean(axis=(1, 2), keepdims=True)
    )
    sums = (g * xhat).sum(axis=(0, 1, 2)), g.sum(axis=(0, 1, 2))
    return dx.astype(xhat.dtype), sums[0].astype(scale.dtype), sums[1].astype(scale.dtype)


_instance_norm.defvjp(_instance_norm_fwd, _instance_norm_bwd)


# --------------------------------------------------------------------------- U-Net (Pix2Pix)


def unet_init(
    key: Array, in_channels: int, out_channels: int, features=(64, 128, 256, 256, 256)
) -> Params:
    """A U-Net with ``len(features)`` stride-2 levels: encoder ``e_k`` (4x4 convolution,
    stride 2, to ``features[k]``), decoder ``d_k`` (4x4 transposed convolution, stride 2) from
    the innermost level out. Each decoder layer but the innermost reads its input joined with
    the encoder output of the same size; the last one gives ``out_channels``. Weights are
    N(0, 0.02) as in the paper. Input sizes must be divisible by ``2 ** len(features)``."""
    depth = len(features)
    if depth < 1 or min(features) < 1:
        raise ValueError(f"features must be positive channel counts, got {features!r}")
    keys = jax.random.split(key, 2 * depth)
    enc, dec = [], []
    c_in = in_channels
    for k, c in enumerate(features):
        p = {"conv": layers.conv_init(keys[k], KERNEL, c_in, c, std=0.02)}
        if 0 < k < depth - 1:  # no norm on the first layer nor on the 1x1 bottleneck
            p["norm"] = instance_norm_init(c)
        enc.append(p)
        c_in = c
    for k in reversed(range(depth)):
        c_out = out_channels if k == 0 else features[k - 1]
        c_in = features[k] if k == depth - 1 else 2 * features[k]  # joined with skip e_k
        p = {"conv": layers.conv_transpose_init(keys[depth + k], KERNEL, c_in, c_out, std=0.02)}
        if k > 0:
            p["norm"] = instance_norm_init(c_out)
        dec.append(p)
    return {"enc": enc, "dec": dec}


def unet(
    params: Params,
    x: Array,
    *,
    key: Array | None = None,
    dropout_rate: float = 0.5,
    dropout_layers: int = 3,
) -> Array:
    """``x [B, H, W, C_in]`` in ``[-1, 1]`` -> ``[B, H, W, C_out]`` in ``[-1, 1]`` (tanh).

    Dropout at ``dropout_rate`` after the ``dropout_layers`` innermost decoder layers, when a
    ``key`` is given. Pix2Pix keeps it when sampling too: it is the generator's only noise.
    """
    depth = len(params["enc"])
    h, w = x.shape[1:3]
    if h % 2**depth or w % 2**depth:
        raise ValueError(
            f"a {depth}-level U-Net needs image sides divisible by {2**depth}, got {h}x{w}; "
            "resize or pad the images, or use fewer levels"
        )
    skips = []
    for k, p in enumerate(params["enc"]):
        x = layers.conv(p["conv"], x if k == 0 else layers.leaky_relu(x), stride=2)
        if "norm" in p:
            x = instance_norm(p["norm"], x)
        skips.append(x)
    keys = [None] * depth if key is None else list(jax.random.split(key, depth))
    for n, p in enumerate(params["dec"]):
        k = depth - 1 - n  # the level this decoder layer comes out of
        if n > 0:
            x = jnp.concatenate([x, skips[k]], axis=-1)
        x = layers.conv_transpose(p["conv"], jax.nn.relu(x), stride=2)
        if "norm" in p:
            x = instance_norm(p["norm"], x)
        if n < dropout_layers and k > 0:
            x = layers.dropout(keys[n], x, dropout_rate)
    return jnp.tanh(x)


# --------------------------------------------------------------------------- PatchGAN


def patchgan_layers(num_down: int) -> list[tuple[int, int]]:
    """``(kernel, stride)`` of each convolution: ``num_down`` 4x4 stride-2 layers, then a 4x4
    stride-1 layer and the 4x4 stride-1 output layer (padding 1 each), as in Pix2Pix's
    discriminator (``num_down=3`` is its 70x70 PatchGAN)."""
    return [(KERNEL, 2)] * num_down + [(KERNEL, 1), (KERNEL, 1)]


def patchgan_receptive_field(num_down: int) -> int:
    """The side of the input patch each output logit sees: walking back from one output
    pixel, a layer of kernel ``k`` and stride ``s`` turns a field of ``r`` into
    ``(r - 1) * s + k``. 70 for ``num_down=3``."""
    r = 1
    for k, s in reversed(patchgan_layers(num_down)):
        r = (r - 1) * s + k
    return r


def patchgan_init(
    key: Array, in_channels: int, features=(64, 128, 256, 512), num_classes: int = 0
) -> Params:
    """``len(features) - 1`` stride-2 layers to ``features[:-1]``, a stride-1 layer to
    ``features[-1]``, and a stride-1 layer to one logit per patch. Instance norm after every
    layer but the first and the last; N(0, 0.02) weights. ``num_classes > 0`` adds the
    class-conditional output of :func:`patchgan` (``params["classes"]``, one 4x4 kernel per
    class)."""
    if len(features) < 2:
        raise ValueError(f"a PatchGAN needs at least 2 feature sizes, got {features!r}")
    keys = jax.random.split(key, len(features) + 2)
    out, c_in = [], in_channels
    for k, c in enumerate(features):
        p = {"conv": layers.conv_init(keys[k], KERNEL, c_in, c, std=0.02)}
        if k > 0:
            p["norm"] = instance_norm_init(c)
        out.append(p)
        c_in = c
    out.append({"conv": layers.conv_init(keys[-2], KERNEL, c_in, 1, std=0.02)})
    if num_classes:
        return {"layers": out, "classes": layers.conv_init(keys[-1], KERNEL, c_in, num_classes,
                                                           std=0.02, bias=False)}  # fmt: skip
    return {"layers": out}


def patchgan(params: Params, x: Array, labels: Array | None = None) -> Array:
    """``x [B, H, W, C]`` (for Pix2Pix, the input and the output image joined on channels) ->
    logits ``[B, H', W', 1]``, one per patch of :func:`patchgan_receptive_field` pixels.

    A class-conditional PatchGAN (``params["classes"]``) takes int ``labels [B]`` and adds, to
    each patch's logit, the projection of that patch's last features on the label's 4x4 kernel:
    the projection discriminator (Miyato & Koyama 2018) applied patch by patch, so each patch is
    judged as a part of an image *of that class*."""
    ps = params["layers"]
    conditional = "classes" in params
    if conditional != (labels is not None):
        raise ValueError(
            "a class-conditional PatchGAN needs labels, and an unconditional one takes none"
        )
    strides = [s for _, s in patchgan_layers(len(ps) - 2)]
    for n, (p, s) in enumerate(zip(ps, strides)):
        if n == len(ps) - 1 and conditional:  # one convolution: the logit and every class's
            w = jnp.concatenate([p["conv"]["w"], params["classes"]["w"]], axis=-1)
            y = layers.conv({"w": w}, x, stride=s, padding=1)
            own = jnp.take_along_axis(y[..., 1:], labels[:, None, None, None], axis=-1)
            return y[..., :1] + p["conv"]["b"] + own
        x = layers.conv(p["conv"], x, stride=s, padding=1)
        if "norm" in p:
            x = instance_norm(p["norm"], x)
        if n < len(ps) - 1:
            x = layers.leaky_relu(x, 0.2)
    return x


# --------------------------------------------------------------------------- ResNet generator


def resnet_generator_init(
    key: Array, in_channels: int, out_channels: int, features: int = 32, blocks: int = 6
) -> Params:
    """CycleGAN's generator: a 7x7 convolution to ``features``, two stride-2 4x4 convolutions
    (x2 channels each), ``blocks`` residual blocks of two 3x3 convolutions, two transposed
    convolutions back, and a 7x7 convolution to ``out_channels``."""
    keys = iter(jax.random.split(key, 6 + 2 * blocks))
    f = features

    def c(kernel, c_in, c_out):
        conv = layers.conv_init(next(keys), kernel, c_in, c_out, std=0.02)
        return {"conv": conv, "norm": instance_norm_init(c_out)}

    return {
        "stem": c(7, in_channels, f),
        "down": [c(KERNEL, f, 2 * f), c(KERNEL, 2 * f, 4 * f)],
        "blocks": [[c(3, 4 * f, 4 * f), c(3, 4 * f, 4 * f)] for _ in range(blocks)],
        "up": [
            {
                "conv": layers.conv_transpose_init(next(keys), KERNEL, 4 * f, 2 * f, std=0.02),
                "norm": instance_norm_init(2 * f),
            },
            {
                "conv": layers.conv_transpose_init(next(keys), KERNEL, 2 * f, f, std=0.02),
                "norm": instance_norm_init(f),
            },
        ],
        "head": {"conv": layers.conv_init(next(keys), 7, f, out_channels, std=0.02)},
    }


def resnet_generator(params: Params, x: Array) -> Array:
    """``x [B, H, W, C_in]`` -> ``[B, H, W, C_out]`` in ``[-1, 1]``; sides divisible by 4."""
    if x.shape[1] % 4 or x.shape[2] % 4:
        raise ValueError(f"the ResNet generator needs sides divisible by 4, got {x.shape[1:3]}")

    def block(p, x, stride=1):
        return jax.nn.relu(instance_norm(p["norm"], layers.conv(p["conv"], x, stride=stride)))

    x = block(params["stem"], x)
    for p in params["down"]:
        x = block(p, x, stride=2)
    for p1, p2 in params["blocks"]:
        y = block(p1, x)
        x = x + instance_norm(p2["norm"], layers.conv(p2["conv"], y))
    for p in params["up"]:
        x = jax.nn.relu(instance_norm(p["norm"], layers.conv_transpose(p["conv"], x, stride=2)))
    return jnp.tanh(layers.conv(params["head"]["conv"], x))


# --------------------------------------------------------------------------- losses


def lsgan_d_loss(real_logits: Array, fake_logits: Array) -> Array:
    """Least-squares discriminator loss, halved as CycleGAN does:
    ``(mean((D(real) - 1)^2) + mean(D(fake)^2)) / 2``."""
    return 0.5 * (jnp.mean(jnp.square(real_logits - 1.0)) + jnp.mean(jnp.square(fake_logits)))


def lsgan_g_loss(fake_logits: Array) -> Array:
    """Least-squares generator loss ``mean((D(G(x)) - 1)^2)``."""
    return jnp.mean(jnp.square(fake_logits - 1.0))


def l1_loss(a: Array, b: Array) -> Array:
    """``mean(|a - b|)``: Pix2Pix's L1 term, CycleGAN's cycle (``a = x``, ``b = F(G(x))``)
    and identity (``a = y``, ``b = G(y)``) terms; the lambdas multiply it outside."""
    return jnp.mean(jnp.abs(a - b))


def random_shift(x: Array, key: Array, max_shift: int, fill: float = -1.0) -> Array:
    """Each image of ``x`` ``[B, H, W, C]`` moved by its own random whole-pixel offset in
    ``[-max_shift, max_shift]`` along each axis, the uncovered border filled with ``fill`` (the
    background, -1 in [-1, 1]). DiffAugment's translation (Zhao et al. 2020): applied to every
    image a discriminator sees, real and generated alike, and differentiable in ``x``, so a
    discriminator fed few real images cannot memorise their exact positions. ``max_shift=0``
    returns ``x`` unchanged."""
    if max_shift == 0:
        return x
    s = max_shift
    n, h, w, _ = x.shape
    offsets = jax.random.randint(key, (n, 2), 0, 2 * s + 1)
    padded = jnp.pad(x, ((0, 0), (s, s), (s, s), (0, 0)), constant_values=fill)

    def one(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

    return jax.vmap(one)(padded, offsets)


# --------------------------------------------------------------------------- image history


def pool_init(size: int, image_shape, dtype=jnp.float32, *, labels: bool = False) -> dict:
    """An empty history of ``size`` images: ``{"images": zeros [size, *image_shape],
    "count": 0}`` (arrays only, so it lives in the train state and checkpoints with it).
    ``labels=True`` keeps each image's class beside it (``"labels"``: int32 ``[size]``), for a
    class-conditional discriminator."""
    if size < 0:
        raise ValueError(f"the history size must be >= 0, got {size}")
    pool = {
        "images": jnp.zeros((size, *image_shape), dtype),
        "count": jnp.zeros((), jnp.int32),
    }
    if labels:
        pool["labels"] = jnp.zeros((size,), jnp.int32)
    return pool


def pool_query(pool: dict, images: Array, key: Array, labels: Array | None = None) -> tuple:
    """CycleGAN's image pool, image by image: while fewer than ``size`` are stored, store the
    new image and return it; once full, with probability 0.5 return a uniformly chosen stored
    image and store the new one in its place, else return the new image and store nothing.
    Returns ``(new_pool, images_for_the_discriminator)``; a size-0 pool returns ``images``.
    A pool with labels takes the images' ``labels`` and returns ``(new_pool, images, labels)``:
    each label travels with its image. The batch is handled at once, not in a per-image loop
    (one gather, one scatter), with the loop's result: an image swapping out a slot that an
    earlier image of the same batch wrote gets that image."""
    if ("labels" in pool) != (labels is not None):
        raise ValueError("a pool with labels needs the images' labels, one without takes none")
    items = {"images": images} if labels is None else {"images": images, "labels": labels}
    size = pool["images"].shape[0]
    if size == 0:
        return (pool, *items.values())
    n = images.shape[0]
    keys = jax.random.split(key, n)
    # The draws the image-by-image loop makes, all at once: image i finds the history holding
    # min(count + i, size) images; once full, a coin and a slot of its own.
    k_coin, k_index = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
    coin = jax.vmap(lambda k: jax.random.bernoulli(k, 0.5))(k_coin)
    slot = jax.vmap(lambda k: jax.random.randint(k, (), 0, size))(k_index)
    position = pool["count"] + jnp.arange(n)
    full = position >= size
    swap = full & coin
    index = jnp.where(full, slot, jnp.minimum(position, size - 1))
    write = ~full | swap
    # Sequential semantics without the loop: image i, swapping, returns what its slot held just
    # before it: the last earlier image written to that slot, else what the history held.
    i, j = jnp.arange(n)[:, None], jnp.arange(n)[None, :]
    same = write[None, :] & (index[None, :] == index[:, None])
    earlier = jnp.max(jnp.where(same & (j < i), j, -1), axis=1)
    later = jnp.any(same & (j > i), axis=1)  # a later image overwrites the same slot
    last_writer = write & ~later

    def returned(stored, new):
        held = jnp.where(_bcast(earlier >= 0, new), new[jnp.maximum(earlier, 0)], stored[index])
        return jnp.where(_bcast(swap, new), held, new)

    def written(stored, new):  # each slot takes its last writer (indices unique: no order)
        target = jnp.where(last_writer, index, size)  # size: out of range, dropped
        return stored.at[target].set(new, mode="drop")

    out = {k: returned(pool[k], v) for k, v in items.items()}
    stored = {k: written(pool[k], v) for k, v in items.items()}
    count = jnp.minimum(pool["count"] + n, size)
    return ({**stored, "count": count}, *(out[k] for k in items))


def _bcast(mask: Array, like: Array) -> Array:
    """``mask`` ``[N]`` shaped to broadcast against ``like`` ``[N, ...]``."""
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1))
