"""Pure layers: ``init(key, ...) -> params`` (plain dicts) and ``apply(params, x, ...)``.

Images are batch-major NHWC (``[B, H, W, C]``), kernels HWIO (``[kh, kw, in, out]``):
the layouts XLA's CPU, GPU and TPU convolutions take without a transpose.

Batch norm keeps its running statistics outside the parameters ("stats in,
stats out"), so an optimiser never touches them and a train step returns them
beside the new parameters.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxgen.rnn import dropout

Array = jax.Array
Params = dict[str, Any]

__all__ = ["dense_init", "dense", "conv_init", "conv", "conv_transpose_init", "conv_transpose", "batch_norm_init",
           "batch_norm", "leaky_relu", "dropout"]


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


def dense_init(key: Array, d_in: int, d_out: int, *, std: float | None = None, bias: bool = True,
               dtype=jnp.float32) -> Params:
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


def conv_init(key: Array, kernel: int, c_in: int, c_out: int, *, std: float | None = None, bias: bool = True,
              dtype=jnp.float32) -> Params:
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

    ``padding`` is ``"SAME"``, ``"VALID"`` or an int (PyTorch's symmetric padding). A 4x4 kernel with
    stride 2 and ``padding=1`` halves the size exactly (the DCGAN discriminator layer).
    """
    w = params["w"].astype(x.dtype)
    k = w.shape[0]
    # XLA's own convolution. Measured on CPU for the DCGAN discriminator (batch 128): an im2col GEMM
    # form and a custom VJP with a GEMM input gradient were both slower end to end than this.
    y = jax.lax.conv_general_dilated(x, w, (stride, stride), _pad(padding, k, stride),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + params["b"] if "b" in params else y


def _patches2x2(z, rows, cols):
    """All 2x2 windows of ``z [B, H, W, C]`` starting in the first ``rows x cols`` positions, as channels
    ``[B, rows, cols, 4C]`` in (window row, window column, channel) order."""
    return jnp.concatenate([z[:, i:i + rows, j:j + cols] for i in (0, 1) for j in (0, 1)], axis=-1)


def conv_transpose_init(key: Array, kernel: int, c_in: int, c_out: int, *, std: float | None = None,
                        bias: bool = True, dtype=jnp.float32) -> Params:
    """A transposed convolution: ``w [k, k, c_in, c_out]``, ``b [c_out]``."""
    p = {"w": _init_weight(key, (kernel, kernel, c_in, c_out), kernel * kernel * c_in, std, dtype)}
    if bias:
        p["b"] = jnp.zeros((c_out,), dtype)
    return p


def conv_transpose(params: Params, x: Array, *, stride: int = 2) -> Array:
    """Transposed convolution: the exact transpose of ``conv(., stride=stride, padding="SAME")``.

    ``x [B, H, W, C_in] -> [B, stride*H, stride*W, C_out]``; for 4x4 kernels and stride 2 this is
    PyTorch's ``ConvTranspose2d(k=4, stride=2, padding=1)`` (the DCGAN generator layer), with the
    kernel stored ``[k, k, C_in, C_out]``.

    For ``kernel == 2 * stride`` it is computed as ``stride**2`` small dense convolutions whose
    outputs are interleaved (the "sub-pixel" form): the same arithmetic, but XLA's CPU backend runs
    it much faster than a convolution over a zero-dilated input, which multiplies by zeros 3/4 of
    the time. Other kernels use ``jax.linear_transpose`` of the strided convolution.
    """
    w = params["w"].astype(x.dtype)
    k = w.shape[0]
    if k == 2 * stride and stride % 2 == 0:
        y = _conv_transpose_subpixel(x, w, stride)
    else:
        b, h, wd, _ = x.shape
        wt = jnp.swapaxes(w, 2, 3)  # the forward conv maps C_out -> C_in

        def forward(z):
            return jax.lax.conv_general_dilated(z, wt, (stride, stride), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))

        zero = jax.ShapeDtypeStruct((b, h * stride, wd * stride, w.shape[-1]), x.dtype)
        (y,) = jax.linear_transpose(forward, zero)(x)
    return y + params["b"] if "b" in params else y


def _conv_transpose_subpixel(x, w, s):
    """Transposed conv with ``k = 2s`` and PyTorch padding ``s/2`` as one matrix product.

    Output pixel ``(s*i + a, s*j + b)`` (phase ``(a, b)``) is a 2x2 window of the input (padded by one)
    starting at ``(i + sa, j + sb)`` times a 2x2 slice of the kernel, with ``sa = (a + pad) // s``.
    All phases share the same windows, so one product ``patches [.., 4*C_in] @ [4*C_in, s*s*C_out]``
    computes every phase; each phase then takes its shifted slice and the phases are interleaved.
    """
    k = 2 * s
    pad = (k - s) // 2
    b, h, wd, c_in = x.shape
    c_out = w.shape[-1]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = _patches2x2(xp, h + 1, wd + 1)  # [B, H+1, W+1, 4*C_in], (u, v, c) order
    cols, shifts = [], []
    for a in range(s):
        for bb in range(s):
            ta = [(a + pad) % s + s * d for d in range(2)]  # kernel rows for window rows u = 1, 0
            tb = [(bb + pad) % s + s * d for d in range(2)]
            kab = jnp.stack([jnp.stack([w[ta[1 - u], tb[1 - v]] for v in range(2)]) for u in range(2)])
            cols.append(kab.reshape(4 * c_in, c_out))
            shifts.append(((a + pad) // s, (bb + pad) // s))
    y = patches @ jnp.concatenate(cols, axis=-1)  # [B, H+1, W+1, s*s*C_out]
    y = y.reshape(b, h + 1, wd + 1, s * s, c_out)
    phases = [y[:, sa:sa + h, sb:sb + wd, i] for i, (sa, sb) in enumerate(shifts)]  # each [B, H, W, C_out]
    out = jnp.stack(phases, axis=3).reshape(b, h, wd, s, s, c_out)  # [B, H, W, a, b, C]
    return out.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * s, wd * s, c_out)


def batch_norm_init(channels: int, dtype=jnp.float32) -> tuple[Params, Params]:
    """``(params, stats)``: scale ones, bias zeros; running mean zeros, running variance ones."""
    return ({"scale": jnp.ones((channels,), dtype), "bias": jnp.zeros((channels,), dtype)},
            {"mean": jnp.zeros((channels,), jnp.float32), "var": jnp.ones((channels,), jnp.float32)})


def batch_norm(params: Params, stats: Params, x: Array, *, train: bool, momentum: float = 0.9, eps: float = 1e-5,
               axis_name: str | None = None) -> tuple[Array, Params]:
    """Batch norm over every axis but the last (``[B, C]`` or ``[B, H, W, C]``); returns ``(y, new_stats)``.

    * ``train=True``: normalise with this batch's mean and (biased) variance, and return running
      statistics moved towards them: ``new = momentum * old + (1 - momentum) * batch`` (Flax's
      convention; PyTorch's ``momentum=0.1`` is ``momentum=0.9`` here). ``momentum=0`` returns the batch
      statistics themselves.
    * ``train=False``: normalise with the running statistics, which are returned unchanged.

    Under ``jit`` with the batch sharded over devices, the means are over the global batch (XLA inserts
    the reduction). Inside ``shard_map``/``pmap`` pass ``axis_name`` to average over that axis.
    Statistics are computed in float32 whatever the input dtype.
    """
    axes = tuple(range(x.ndim - 1))
    if train:
        xf = x.astype(jnp.float32)
        mean = xf.mean(axes)
        mean_sq = jnp.square(xf).mean(axes)
        if axis_name is not None:
            mean, mean_sq = jax.lax.pmean((mean, mean_sq), axis_name)
        var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
        new_stats = {"mean": momentum * stats["mean"] + (1.0 - momentum) * jax.lax.stop_gradient(mean),
                     "var": momentum * stats["var"] + (1.0 - momentum) * jax.lax.stop_gradient(var)}
    else:
        mean, var = stats["mean"], stats["var"]
        new_stats = stats
    inv = jax.lax.rsqrt(var + eps) * params["scale"]
    y = (x - mean.astype(x.dtype)) * inv.astype(x.dtype) + params["bias"].astype(x.dtype)
    return y, new_stats


def leaky_relu(x: Array, slope: float = 0.2) -> Array:
    """``x`` where positive, ``slope * x`` elsewhere."""
    return jnp.where(x >= 0, x, slope * x)
