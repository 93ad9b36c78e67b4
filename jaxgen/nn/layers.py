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

    For ``kernel == 2 * stride`` (even stride) it never convolves a zero-dilated input, which
    multiplies by zeros 3/4 of the time and which XLA's CPU backend runs slowly. It takes one of two
    matrix-product forms with the same arithmetic, chosen by the channel counts (measured per layer
    on CPU, forward and backward, batch 128; `README.md`, "Where the DCGAN time went"):

    * ``k*k*C_out <= 4*C_in`` (few output channels, e.g. the generator's image layer): "col2im", one
      product ``x @ w[C_in, k*k*C_out]`` then a sum of shifted slices (:func:`_conv_transpose_col2im`);
    * otherwise "sub-pixel": one product of the input's 2x2 windows with every output phase's 2x2
      kernel slice, then the phases interleaved, with a hand-written VJP whose weight gradient is one
      ``windows^T @ d_phases`` product (:func:`_conv_transpose_subpixel`).

    Other kernels use ``jax.linear_transpose`` of the strided convolution.
    """
    w = params["w"].astype(x.dtype)
    k = w.shape[0]
    if k == 2 * stride and stride % 2 == 0:
        if k * k * w.shape[-1] <= 4 * w.shape[2]:
            y = _conv_transpose_col2im(x, w, stride)
        else:
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


# Both fast forms below rest on one fact about k = 2s, padding s/2: output row ``s*m + a`` (phase a)
# receives input rows ``m - d`` through kernel row ``s*d + a + s/2`` for the d in {-1, 0, 1} that
# keep that row inside [0, k): two taps per phase and axis.


def _taps(a: int, s: int) -> list[tuple[int, int]]:
    """``(kernel row, d)`` pairs feeding output phase ``a``: input row ``m - d`` for output row ``s*m + a``."""
    pad, k = s // 2, 2 * s
    return [(s * d + a + pad, d) for d in (-1, 0, 1) if 0 <= s * d + a + pad < k]


def _interleave(phases: list[list[Array]], s: int) -> Array:
    """``phases[a][b]`` ``[B, H, W, C]`` -> ``[B, s*H, s*W, C]`` with output pixel ``(s*i + a, s*j + b)``."""
    out = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # [B, H, a, W, b, C]
    b, h, _, wd, _, c = out.shape
    return out.reshape(b, h * s, wd * s, c)


def _conv_transpose_col2im(x, w, s):
    """Transposed conv with ``k = 2s``: ``cols = x @ w`` (every input pixel's ``k x k x C_out``
    contribution), then each output phase sums its 2x2 taps' shifted slices of ``cols``."""
    k = w.shape[0]
    b, h, wd, c_in = x.shape
    c_out = w.shape[-1]
    cols = (x.reshape(-1, c_in) @ w.transpose(2, 0, 1, 3).reshape(c_in, k * k * c_out)).reshape(b, h, wd, k, k, c_out)
    cols = jnp.pad(cols, ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0), (0, 0)))  # input row m - d is padded row 1 + m - d
    phases = []
    for a in range(s):
        row = []
        for bb in range(s):
            terms = [cols[:, 1 - dy:1 - dy + h, 1 - dx:1 - dx + wd, ky, kx]
                     for ky, dy in _taps(a, s) for kx, dx in _taps(bb, s)]
            row.append(sum(terms[1:], terms[0]))
        phases.append(row)
    return _interleave(phases, s)


def _subpixel_weights(w: Array, s: int) -> tuple[Array, list[tuple[int, int, int, int]]]:
    """``([4*C_in, s*s*C_out], phases)``: every phase's 2x2 kernel slice, rows in (window row, window
    column, channel) order, side by side; ``phases`` lists ``(a, b, row shift, column shift)``: phase
    ``(a, b)`` reads the 2x2 windows starting at ``(i + row shift, j + column shift)`` of the input
    padded by one."""
    c_in, c_out = w.shape[2], w.shape[3]
    cols, phases = [], []
    for a in range(s):
        for bb in range(s):
            ta = {1 - d: ky for ky, d in _taps(a, s)}  # window row u (0: upper) -> kernel row
            tb = {1 - d: kx for kx, d in _taps(bb, s)}
            su, sv = min(ta), min(tb)
            kab = jnp.stack([jnp.stack([w[ta[su + u], tb[sv + v]] for v in range(2)]) for u in range(2)])
            cols.append(kab.reshape(4 * c_in, c_out))
            phases.append((a, bb, su, sv))
    return jnp.concatenate(cols, axis=-1), phases


def _subpixel_forward(x, w, s):
    b, h, wd, c_in = x.shape
    c_out = w.shape[-1]
    wcat, phases = _subpixel_weights(w, s)
    patches = _patches2x2(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), h + 1, wd + 1)  # [B, H+1, W+1, 4*C_in]
    y = (patches.reshape(-1, 4 * c_in) @ wcat).reshape(b, h + 1, wd + 1, s * s, c_out)
    by_phase = {(a, bb): y[:, su:su + h, sv:sv + wd, i] for i, (a, bb, su, sv) in enumerate(phases)}
    return _interleave([[by_phase[a, bb] for bb in range(s)] for a in range(s)], s), patches


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_transpose_subpixel(x, w, s):
    """Transposed conv with ``k = 2s`` and PyTorch padding ``s/2`` as one matrix product.

    Output pixel ``(s*i + a, s*j + b)`` (phase ``(a, b)``) is a 2x2 window of the input (padded by one)
    times a 2x2 slice of the kernel. All phases share the same windows, so one product
    ``windows [.., 4*C_in] @ [4*C_in, s*s*C_out]`` computes every phase; each phase then takes its
    shifted slice and the phases are interleaved. The VJP is written out: XLA's own transposes of
    the slicing and interleaving ran the weight gradient at a third of the speed of this form.
    """
    return _subpixel_forward(x, w, s)[0]


def _subpixel_fwd(x, w, s):
    y, patches = _subpixel_forward(x, w, s)
    return y, (patches, w)


def _subpixel_bwd(s, res, dy):
    patches, w = res
    b, hs, ws, c_out = dy.shape
    h, wd, c_in = hs // s, ws // s, w.shape[2]
    wcat, phases = _subpixel_weights(w, s)
    # d(product output) [B, H+1, W+1, phase, C_out]: each phase's output gradient at its shift
    dcols = jnp.stack([jnp.pad(dy[:, a::s, bb::s], ((0, 0), (su, 1 - su), (sv, 1 - sv), (0, 0)))
                       for a, bb, su, sv in phases], axis=3).reshape(-1, s * s * c_out)
    dwcat = patches.reshape(-1, 4 * c_in).T @ dcols  # [4*C_in, s*s*C_out]
    (dw,) = jax.vjp(lambda w_: _subpixel_weights(w_, s)[0], w)[1](dwcat)
    dpatch = (dcols @ wcat.T).reshape(b, h + 1, wd + 1, 2, 2, c_in)
    dxp = jnp.zeros((b, h + 2, wd + 2, c_in), dy.dtype)
    for u in (0, 1):
        for v in (0, 1):
            dxp = dxp.at[:, u:u + h + 1, v:v + wd + 1].add(dpatch[:, :, :, u, v])
    return dxp[:, 1:-1, 1:-1], dw


_conv_transpose_subpixel.defvjp(_subpixel_fwd, _subpixel_bwd)


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
