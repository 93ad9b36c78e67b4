"""Pure layers: ``init(key, ...) -> params`` (plain dicts) and ``apply(params, x, ...)``.

Images are batch-major NHWC (``[B, H, W, C]``), kernels HWIO (``[kh, kw, in, out]``):
the layouts XLA's CPU, GPU and TPU convolutions take without a transpose.

Batch norm keeps its running statistics outside the parameters ("stats in,
stats out"), so an optimiser never touches them and a train step returns them
beside the new parameters.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
Params = dict[str, Any]

__all__ = [
    "dense_init",
    "dense",
    "conv_init",
    "conv",
    "conv_transpose_init",
    "conv_transpose",
    "batch_norm_init",
    "batch_norm",
    "layer_norm_init",
    "layer_norm",
    "leaky_relu",
    "dropout",
]


def _init_weight(key, shape, fan_in, std, dtype):
    """``std=None``: LeCun-uniform-like default (uniform in +-1/sqrt(fan_in), PyTorch's choice);
    a number: N(0, std**2) (DCGAN uses 0.02)."""
    # Drawn flat, then reshaped: XLA's CPU compiler takes seconds on threefry over small 4-D shapes
    # (e.g. [4, 4, 8, 16]) and a fraction of a second on the same numbers in one dimension.
    n = math.prod(shape)
    if std is None:
        bound = 1.0 / math.sqrt(fan_in)
        return jax.random.uniform(key, (n,), dtype, -bound, bound).reshape(shape)
    return (std * jax.random.normal(key, (n,), dtype)).reshape(shape)


def dense_init(
    key: Array,
    d_in: int,
    d_out: int,
    *,
    std: float | None = None,
    bias: bool = True,
    dtype=jnp.float32,
) -> Params:
    """Weights ``w [d_in, d_out]`` and bias ``b [d_out]`` (zeros; omitted with ``bias=False``)."""
    if d_in <= 0 or d_out <= 0:
        raise ValueError(f"dense sizes must be positive, got {d_in} -> {d_out}")
    p = {"w": _init_weight(key, (d_in, d_out), d_in, std, dtype)}
    if bias:
        p["b"] = jnp.zeros((d_out,), dtype)
    return p


def dense(params: Params, x: Array) -> Array:
    """``x [..., d_in] -> [..., d_out]``."""
    y = x @ params["w"]
    return y + params["b"] if "b" in params else y


def conv_init(
    key: Array,
    kernel: int,
    c_in: int,
    c_out: int,
    *,
    std: float | None = None,
    bias: bool = True,
    dtype=jnp.float32,
) -> Params:
    """A square ``kernel x kernel`` convolution: ``w [k, k, c_in, c_out]``, ``b [c_out]``."""
    p = {"w": _init_weight(key, (kernel, kernel, c_in, c_out), kernel * kernel * c_in, std, dtype)}
    if bias:
        p["b"] = jnp.zeros((c_out,), dtype)
    return p


def _pad(padding, kernel: int, stride: int):
    if isinstance(padding, int):  # PyTorch-style symmetric padding
        return [(padding, padding)] * 2
    return padding


def conv(params: Params, x: Array, *, stride: int = 1, padding: str | int = "SAME") -> Array:
    """2-D convolution ``x [B, H, W, C_in] -> [B, H', W', C_out]``.

    ``padding`` is ``"SAME"``, ``"VALID"`` or an int (PyTorch's symmetric padding). A 4x4 kernel
    with stride 2 and ``padding=1`` halves the size exactly (the DCGAN discriminator layer).

    The forward pass and the weight gradient are XLA's convolutions. On CPU, for ``kernel == 2 *
    stride`` (even stride) with padding ``stride / 2`` (``"SAME"`` or the int) on sizes divisible by
    the stride, the input gradient is :func:`conv_transpose`'s col2im product instead of XLA's
    convolution over a zero-dilated gradient (3/4 zeros; 1.2-4.4x slower per DCGAN layer). Other
    platforms keep XLA's own gradient (``lax.platform_dependent`` picks at lowering time). The CPU
    form has a ``custom_vjp``: reverse mode (``grad``, ``vjp``, grad of grad) works, forward mode
    (``jvp``, ``jacfwd``) through it does not.
    """
    w = params["w"].astype(x.dtype)
    k = w.shape[0]
    pad = _pad(padding, k, stride)
    if (
        k == 2 * stride
        and stride % 2 == 0
        and pad in ("SAME", [(stride // 2, stride // 2)] * 2)
        and x.shape[1] % stride == 0
        and x.shape[2] % stride == 0
    ):
        y = jax.lax.platform_dependent(
            x,
            w,
            cpu=lambda x, w: _conv_k2s(x, w, stride),
            default=lambda x, w: _xla_conv(x, w, stride),
        )
    else:
        y = jax.lax.conv_general_dilated(
            x, w, (stride, stride), pad, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    return y + params["b"] if "b" in params else y


def _xla_conv(x, w, s):
    return jax.lax.conv_general_dilated(
        x, w, (s, s), [(s // 2, s // 2)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_k2s(x, w, s):
    """Strided convolution with ``k = 2s`` and padding ``s/2``; its VJP takes the input gradient
    from the col2im transposed convolution, the exact transpose of this map."""
    return _xla_conv(x, w, s)


def _conv_k2s_fwd(x, w, s):
    return _xla_conv(x, w, s), (x, w)


def _conv_k2s_bwd(s, res, dy):
    x, w = res
    (dw,) = jax.vjp(lambda w_: _xla_conv(x, w_, s), w)[1](dy)
    dx = _conv_transpose_col2im(dy, jnp.swapaxes(w, 2, 3), s)
    return dx, dw


_conv_k2s.defvjp(_conv_k2s_fwd, _conv_k2s_bwd)


def conv_transpose_init(
    key: Array,
    kernel: int,
    c_in: int,
    c_out: int,
    *,
    std: float | None = None,
    bias: bool = True,
    dtype=jnp.float32,
) -> Params:
    """A transposed convolution: ``w [k, k, c_in, c_out]``, ``b [c_out]`` (the same parameters,
    and the same draws, as :func:`conv_init`)."""
    return conv_init(key, kernel, c_in, c_out, std=std, bias=bias, dtype=dtype)


def conv_transpose(params: Params, x: Array, *, stride: int = 2) -> Array:
    """Transposed convolution: the exact transpose of ``conv(., stride=stride, padding="SAME")``.

    ``x [B, H, W, C_in] -> [B, stride*H, stride*W, C_out]``; for 4x4 kernels and stride 2 this is
    PyTorch's ``ConvTranspose2d(k=4, stride=2, padding=1)`` (the DCGAN generator layer), with the
    kernel stored ``[k, k, C_in, C_out]``.

    It is ``jax.linear_transpose`` of the strided convolution (on GPU and TPU, XLA's own transposed
    convolution). On CPU, for ``kernel == 2 * stride`` (even stride), it is "col2im" instead
    (:func:`_conv_transpose_col2im`): one matrix product ``x @ w[C_in, k*k*C_out]`` gives every
    input pixel's ``k x k x C_out`` contribution, and each output phase sums four shifted slices of
    it. XLA's CPU backend convolves a zero-dilated input (3/4 of the products are with zeros) and
    runs it slowly; col2im does exactly the transposed convolution's arithmetic, and its
    hand-written VJP is two more matrix products. Measured per layer on CPU (`README.md`, "Where
    the DCGAN time went"), it beat XLA's convolution and a sub-pixel form (one product over the
    input's 2x2 windows for all phases) for every DCGAN layer shape. As for :func:`conv`, the CPU
    form is reverse-mode differentiable only.
    """
    w = params["w"].astype(x.dtype)
    k = w.shape[0]
    if k == 2 * stride and stride % 2 == 0:
        y = jax.lax.platform_dependent(
            x,
            w,
            cpu=lambda x, w: _conv_transpose_col2im(x, w, stride),
            default=lambda x, w: _conv_transpose_xla(x, w, stride),
        )
    else:
        y = _conv_transpose_xla(x, w, stride)
    return y + params["b"] if "b" in params else y


def _conv_transpose_xla(x, w, s):
    b, h, wd, _ = x.shape
    wt = jnp.swapaxes(w, 2, 3)  # the forward conv maps C_out -> C_in

    def forward(z):
        return jax.lax.conv_general_dilated(
            z, wt, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    zero = jax.ShapeDtypeStruct((b, h * s, wd * s, w.shape[-1]), x.dtype)
    (y,) = jax.linear_transpose(forward, zero)(x)
    return y


# col2im rests on one fact about k = 2s, padding s/2: output row ``s*m + a`` (phase a) receives
# input rows ``m - d`` through kernel row ``s*d + a + s/2`` for the d in {-1, 0, 1} that keep that
# row inside [0, k): two taps per phase and axis.


def _taps(a: int, s: int) -> list[tuple[int, int]]:
    """``(kernel row, d)`` pairs feeding output phase ``a``: input row ``m - d`` for output row
    ``s*m + a``."""
    pad, k = s // 2, 2 * s
    return [(s * d + a + pad, d) for d in (-1, 0, 1) if 0 <= s * d + a + pad < k]


def _interleave(phases: list[list[Array]], s: int) -> Array:
    """``phases[a][b]`` ``[B, H, W, C]`` -> ``[B, s*H, s*W, C]`` with output pixel
    ``(s*i + a, s*j + b)``."""
    out = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # [B, H, a, W, b, C]
    b, h, _, wd, _, c = out.shape
    return out.reshape(b, h * s, wd * s, c)


def _shift(z: Array, dy: int, dx: int) -> Array:
    """``out[:, m, n] = z[:, m - dy, n - dx]``, zero where that falls outside ``z`` (one ``lax.pad``
    with a negative edge, which XLA fuses into its consumer instead of writing a padded copy)."""
    zero = jnp.zeros((), z.dtype)
    return jax.lax.pad(z, zero, [(0, 0, 0), (dy, -dy, 0), (dx, -dx, 0), (0, 0, 0)])


def _col2im_weights(w: Array) -> Array:
    """``w [k, k, C_in, C_out] -> [C_in, k*k*C_out]``."""
    k, _, c_in, c_out = w.shape
    return w.transpose(2, 0, 1, 3).reshape(c_in, k * k * c_out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_transpose_col2im(x, w, s):
    """Transposed conv with ``k = 2s``: ``cols = x @ w`` (every input pixel's ``k x k x C_out``
    contribution), then each output phase sums its 2x2 taps' shifted slices of ``cols``.

    The VJP is written out: ``d cols`` is each tap's shifted slice of its phase's output gradient,
    stacked (one pass), then ``dx = d cols @ w^T`` and ``dw = x^T @ d cols``. Autodiff's transpose
    of the slices is a sum of ``k*k`` zero-padded copies of the whole of ``d cols``, which XLA's CPU
    backend ran 2-5x slower than the matrix products inside a DCGAN step.
    """
    k = w.shape[0]
    b, h, wd, c_in = x.shape
    c_out = w.shape[-1]
    cols = (x.reshape(-1, c_in) @ _col2im_weights(w)).reshape(b, h, wd, k, k, c_out)
    phases = []
    for a in range(s):
        row = []
        for bb in range(s):
            terms = [
                _shift(cols[:, :, :, ky, kx], dy, dx)
                for ky, dy in _taps(a, s)
                for kx, dx in _taps(bb, s)
            ]
            row.append(sum(terms[1:], terms[0]))
        phases.append(row)
    return _interleave(phases, s)


def _col2im_fwd(x, w, s):
    return _conv_transpose_col2im(x, w, s), (x, w)


def _col2im_bwd(s, res, g):
    x, w = res
    k, _, c_in, c_out = w.shape
    # kernel row ky feeds exactly one phase (ky - s/2) mod s, from input row m - d
    tap = {ky: (a, d) for a in range(s) for ky, d in _taps(a, s)}
    dcols = jnp.stack(
        [
            jnp.stack(
                [
                    _shift(g[:, tap[ky][0] :: s, tap[kx][0] :: s], -tap[ky][1], -tap[kx][1])
                    for kx in range(k)
                ],
                axis=3,
            )
            for ky in range(k)
        ],
        axis=3,
    )
    dcols = dcols.reshape(-1, k * k * c_out)
    dx = (dcols @ _col2im_weights(w).T).reshape(x.shape)
    dw = (x.reshape(-1, c_in).T @ dcols).reshape(c_in, k, k, c_out).transpose(1, 2, 0, 3)
    return dx, dw


_conv_transpose_col2im.defvjp(_col2im_fwd, _col2im_bwd)


def batch_norm_init(channels: int, dtype=jnp.float32) -> tuple[Params, Params]:
    """``(params, stats)``: scale ones, bias zeros; running mean zeros, running variance ones."""
    return (
        {"scale": jnp.ones((channels,), dtype), "bias": jnp.zeros((channels,), dtype)},
        {"mean": jnp.zeros((channels,), jnp.float32), "var": jnp.ones((channels,), jnp.float32)},
    )


def batch_norm(
    params: Params,
    stats: Params,
    x: Array,
    *,
    train: bool,
    momentum: float = 0.9,
    eps: float = 1e-5,
    axis_name: str | None = None,
) -> tuple[Array, Params]:
    """Batch norm over every axis but the last (``[B, C]`` or ``[B, H, W, C]``); returns
    ``(y, new_stats)``.

    * ``train=True``: normalise with this batch's mean and (biased) variance, and return running
      statistics moved towards them: ``new = momentum * old + (1 - momentum) * batch`` (Flax's
      convention; PyTorch's ``momentum=0.1`` is ``momentum=0.9`` here). ``momentum=0`` returns the
      batch statistics themselves.
    * ``train=False``: normalise with the running statistics, which are returned unchanged.

    Under ``jit`` with the batch sharded over devices, the means are over the global batch (XLA
    inserts the reduction). Inside ``shard_map``/``pmap`` pass ``axis_name`` to average over that
    axis. Statistics are computed in float32 whatever the input dtype.

    In training the gradient is written out (``custom_vjp``): with ``x^`` the normalised input
    and ``g`` the output gradient times the scale, ``dx = (g - mean(g) - x^ mean(g x^)) / std``
    (means over the batch): fewer operations than autodiff's transpose of the statistics (the
    StackGAN step ran 1.06x faster, ``benchmarks/results/step_before_after.md``). Reverse mode
    only (``grad``, ``vjp``), as for the CPU convolutions above. With ``axis_name`` the gradient
    is autodiff's (a custom VJP's backward pass cannot see ``vmap``'s named axis).
    """
    if not train:
        y = _bn_apply(params["scale"], params["bias"], x, stats["mean"], stats["var"], eps)
        return y, stats
    axes = tuple(range(x.ndim - 1))
    if axis_name is None:  # the written-out gradient
        xf = jax.lax.stop_gradient(x).astype(jnp.float32)
        mean = xf.mean(axes)
        var = jnp.maximum(jnp.square(xf).mean(axes) - jnp.square(mean), 0.0)
        y = _bn_train(x, params["scale"], params["bias"], mean, var, eps)
    else:  # autodiff through the averaged statistics
        xf = x.astype(jnp.float32)
        mean, mean_sq = jax.lax.pmean((xf.mean(axes), jnp.square(xf).mean(axes)), axis_name)
        var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
        y = _bn_apply(params["scale"], params["bias"], x, mean, var, eps)
    mean, var = jax.lax.stop_gradient((mean, var))
    new_stats = {
        "mean": momentum * stats["mean"] + (1.0 - momentum) * mean,
        "var": momentum * stats["var"] + (1.0 - momentum) * var,
    }
    return y, new_stats


def _bn_apply(scale, bias, x, mean, var, eps):
    inv = jax.lax.rsqrt(var + eps) * scale
    return (x - mean.astype(x.dtype)) * inv.astype(x.dtype) + bias.astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _bn_train(x, scale, bias, mean, var, eps):
    """Batch norm of ``x`` with ``mean`` and ``var``, which must be ``x``'s own batch statistics:
    the VJP gives ``x`` the whole gradient, through the statistics too, and them none."""
    return _bn_apply(scale, bias, x, mean, var, eps)


def _bn_train_fwd(x, scale, bias, mean, var, eps):
    return _bn_apply(scale, bias, x, mean, var, eps), (x, scale, mean, var)


def _bn_train_bwd(eps, res, g):
    x, scale, mean, var = res
    axes = tuple(range(x.ndim - 1))
    inv_std = jax.lax.rsqrt(var + eps)
    xhat = (x.astype(jnp.float32) - mean) * inv_std
    g = g.astype(jnp.float32)
    d_bias, d_scale = g.sum(axes), (g * xhat).sum(axes)
    n = g.size // g.shape[-1]
    dx = (scale * inv_std) * (g - d_bias / n - xhat * (d_scale / n))
    return (dx.astype(x.dtype), d_scale.astype(scale.dtype), d_bias.astype(scale.dtype),
            jnp.zeros_like(mean), jnp.zeros_like(var))  # fmt: skip


_bn_train.defvjp(_bn_train_fwd, _bn_train_bwd)


def layer_norm_init(features: int, dtype=jnp.float32) -> Params:
    """LayerNorm parameters over ``features``: ``scale`` ones, ``bias`` zeros."""
    return {"scale": jnp.ones((features,), dtype), "bias": jnp.zeros((features,), dtype)}


def layer_norm(params: Params, x: Array, eps: float = 1e-5) -> Array:
    """``(x - mean) / sqrt(var + eps) * scale + bias`` over the last axis of ``x``.

    The backward is written out from the saved normalised input (two row means and one pass)
    instead of autodiff's chain back through the variance and the mean, which XLA's CPU backend
    ran as many more passes (``benchmarks/results/charrnn_step_parts.md``). Reverse mode only,
    like every ``custom_vjp``."""
    return _ln(x, params["scale"], params["bias"], eps)


def _ln_forward(x, scale, bias, eps):
    mean = x.mean(-1, keepdims=True)
    xc = x - mean
    rstd = jax.lax.rsqrt(jnp.square(xc).mean(-1, keepdims=True) + eps)
    xhat = xc * rstd
    return xhat * scale + bias, (xhat, rstd, scale)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _ln(x, scale, bias, eps):
    return _ln_forward(x, scale, bias, eps)[0]


def _ln_bwd(eps, res, g):
    # y = xhat s + b, xhat = (x - mean) r: dx = r (gs - mean(gs) - xhat mean(gs xhat)), gs = g s.
    xhat, rstd, scale = res
    gs = g * scale
    dx = rstd * (gs - gs.mean(-1, keepdims=True) - xhat * (gs * xhat).mean(-1, keepdims=True))
    axes = tuple(range(g.ndim - 1))
    return dx, (g * xhat).sum(axes), g.sum(axes)


_ln.defvjp(_ln_forward, _ln_bwd)


def leaky_relu(x: Array, slope: float = 0.2) -> Array:
    """``x`` where positive, ``slope * x`` elsewhere."""
    return jnp.where(x >= 0, x, slope * x)


def dropout_keep(key: Array, shape, rate: float) -> Array:
    """The boolean keep mask :func:`dropout` draws: ``True`` with probability ``1 - rate``.

    The cost of dropout on a CPU is the PRNG (threefry: a few dozen integer operations per 32-bit
    word), so each 32-bit draw decides four elements, one byte each, where ``rate`` is a multiple
    of 1/256 (0.25, 0.5, ...), and two, 16 bits each, otherwise (``rate`` then rounded to a
    multiple of 2^-16, within 7.7e-6). One mask is 3.4x (bytes) or 1.6x (16 bits) as fast as
    one draw per element (``jax.random.bernoulli``), and the char-RNN's CPU train step 1.17x
    (``benchmarks/results/charrnn_step_parts.md``). A ``rate`` that is a traced value falls back
    to ``jax.random.bernoulli``.
    """
    shape = tuple(shape)
    if not isinstance(rate, (int, float)):
        return jax.random.bernoulli(key, 1.0 - rate, shape)
    width = 8 if float(rate * 256).is_integer() else 16
    per_word, n = 32 // width, math.prod(shape)
    words = jax.random.bits(key, (-(-n // per_word),), jnp.uint32)
    parts = jax.lax.bitcast_convert_type(words, jnp.uint8 if width == 8 else jnp.uint16)
    return parts.reshape(-1)[:n].reshape(shape) >= round(rate * 2**width)


def dropout(key: Array | None, x: Array, rate: float) -> Array:
    """Inverted dropout: zero with probability ``rate``, scale the rest by ``1/(1-rate)``.

    ``key=None`` or ``rate=0`` returns ``x`` unchanged (evaluation). The mask is
    :func:`dropout_keep`'s (four or two elements per 32-bit random draw).
    """
    if key is None or rate == 0.0:
        return x
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    keep = dropout_keep(key, x.shape, rate)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))
