"""The recurrence math that the cells (:mod:`jaxgen.rnn`) and the fused kernels
(:mod:`jaxgen.kernels`) share: one copy of each equation, over plain arrays.

* :func:`length_mask`, :func:`masked_scan`: the time loop over right-padded sequences (at a
  padded step the carry does not change and the output is zero);
* :func:`rnn_step`, :func:`lstm_activate`, :func:`lstm_new_cell`, :func:`lstm_update`: the
  forward equations of a step;
* :func:`lstm_gate_grads`: the LSTM's backward pass through one step's gates, used by the
  hand-written BPTT below, by the kernels and by their jnp mirrors;
* :func:`lstm_scan`, :func:`rnn_scan`: the ``lax.scan`` paths over an already-projected input
  ``zx`` ``[T, B, G*H]``; ``rnn.lstm``/``rnn.rnn`` run them for ``mode="scan"`` and the kernels
  are tested against them (``jaxgen.kernels.*_sequence_reference``);
* :func:`input_projection` and the sequence-layout checks, shared by :mod:`jaxgen.rnn` and
  the parallel-in-time cells of :mod:`jaxgen.linear_rnn`.

It imports no other jaxgen module, so both the cells and the kernels can import it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Params = dict[str, Array]

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "identity": lambda x: x,
}


# --------------------------------------------------------------------------- masked time loop


def length_mask(lengths, num_steps):
    """``[T, *batch]`` boolean mask: step ``t`` is real when ``t < lengths``."""
    if lengths is None:
        return None
    lengths = jnp.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths must be integers, got dtype {lengths.dtype}")
    steps = jnp.arange(num_steps).reshape((num_steps,) + (1,) * lengths.ndim)
    return steps < lengths[None]


def _broadcast_mask(mask, leaf):
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - mask.ndim))


def masked_step(cell, params):
    """``step(carry, (x, mask)) -> (carry, y)``: ``cell`` where ``mask`` is true, else the
    carry unchanged and a zero output (``mask=None``: every step is real)."""

    def step(carry, inputs):
        x, mask = inputs
        new_carry, y = cell(params, carry, x)
        if mask is not None:
            new_carry = jax.tree.map(
                lambda new, old: jnp.where(_broadcast_mask(mask, new), new, old), new_carry, carry
            )
            y = jnp.where(_broadcast_mask(mask, y), y, jnp.zeros_like(y))
        return new_carry, y

    return step


def masked_scan(cell, params, carry, xs, *, reverse=False, unroll=1, lengths=None):
    """``lax.scan`` of ``cell(params, carry, x)`` over time-major ``xs`` ``[T, ...]``."""
    xs = jnp.asarray(xs)
    mask = length_mask(lengths, xs.shape[0])
    step = masked_step(cell, params)
    return jax.lax.scan(step, carry, (xs, mask), reverse=reverse, unroll=unroll)


# --------------------------------------------------------------------------- one step


def rnn_step(params, h, zx, activation="tanh"):
    """``h' = act(zx + h @ w_hh)`` for the projected input ``zx``; returns ``(h', h')``."""
    h = ACTIVATIONS[activation](zx + h @ params["w_hh"])
    return h, h


def lstm_activate(z_i, z_f, z_g, z_o):
    """The activated gates ``(i, f, g, o)``: sigmoid, sigmoid, tanh, sigmoid."""
    return jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f), jnp.tanh(z_g), jax.nn.sigmoid(z_o)


def lstm_gates(z):
    """Activated gates ``(i, f, g, o)`` of the pre-activations ``z`` ``[..., 4H]``.

    All four through one ``tanh`` over the whole width, ``sigmoid(x) = (1 + tanh(x / 2)) / 2``
    with per-column constants: inside a scan, XLA's CPU backend runs this 5x faster than a
    sigmoid or tanh on each quarter (benchmarks/results/lstm_micro.md). The values equal
    :func:`lstm_activate`'s to float32 rounding in absolute terms (about 6e-8): a sigmoid
    smaller than that comes out as 0 rather than as a tiny positive number.
    """
    hidden = z.shape[-1] // 4
    half = np.full((4, hidden), 0.5, np.float32)
    half[2] = 1.0  # the g gate is a plain tanh
    half = half.reshape(-1).astype(z.dtype)
    t = jnp.tanh(z * half)
    return tuple(jnp.split(t * half + (1 - half), 4, axis=-1))


def lstm_new_cell(gates, c):
    """``c' = f*c + i*g`` from the activated ``gates`` and the cell ``c``."""
    i, f, g, _ = gates
    return f * c + i * g


def lstm_update(gates, c):
    """``(h', c')`` from the activated ``gates`` and the cell ``c``: ``h' = o * tanh(c')``."""
    c_new = lstm_new_cell(gates, c)
    return gates[3] * jnp.tanh(c_new), c_new


def lstm_step(params, carry, zx):
    """One LSTM step on the projected input ``zx``: ``((h', c'), h')``."""
    h, c = carry
    h, c = lstm_update(lstm_gates(zx + h @ params["w_hh"]), c)
    return (h, c), h


def lstm_gate_grads(gates, c_prev, tanh_c, dh, dc):
    """Backward through one LSTM step's gates.

    ``gates``: the activated ``(i, f, g, o)``; ``c_prev``: the cell entering the step;
    ``tanh_c``: ``tanh(c')`` of the cell it left; ``dh``, ``dc``: the gradients arriving at
    ``h'`` and ``c'`` (``dc`` from the later steps only). Returns ``(dz, dc_prev)``: the
    gradients of the four gate pre-activations ``(dz_i, dz_f, dz_g, dz_o)`` and of ``c_prev``.
    """
    i, f, g, o = gates
    dc = dc + dh * o * (1 - tanh_c * tanh_c)
    dz = (
        dc * g * i * (1 - i),
        dc * c_prev * f * (1 - f),
        dc * i * (1 - g * g),
        dh * tanh_c * o * (1 - o),
    )
    return dz, dc * f


# --------------------------------------------------------------------------- sequence scans


def rnn_scan(params, zx, carry, *, activation="tanh", reverse=False, lengths=None, unroll=1):
    """``(h_T, ys)`` of the simple RNN over the projected ``zx`` ``[T, B, H]`` (autodiff of
    the scan for the gradient)."""
    step = functools.partial(rnn_step, activation=activation)
    return masked_scan(step, params, carry, zx, reverse=reverse, unroll=unroll, lengths=lengths)


def lstm_scan(params, zx, carry, *, reverse=False, lengths=None, unroll=1):
    """``((h_T, c_T), ys)`` of the LSTM over the projected ``zx`` ``[T, B, 4H]`` from
    ``carry = (h0, c0)``, with the hand-written BPTT.

    The backward scan computes only the gate gradients and ``dh @ W_hh^T`` per step; the
    weight gradient ``sum_t h_{t-1}^T dz_t`` is then one large matrix product over all steps
    instead of ``T`` small ones, as cuDNN and oneDNN do.
    """
    h0, c0 = carry
    mask = length_mask(lengths, zx.shape[0])
    if mask is not None:
        mask = mask.astype(zx.dtype)
    h, c, ys = _lstm_fused(params["w_hh"], zx, h0, c0, mask, reverse, unroll)
    return (h, c), ys


def _lstm_fused_forward(w_hh, zx, h0, c0, mask, reverse, unroll):
    """Forward scan; returns outputs and the residuals the backward pass needs."""

    def step(carry, inputs):
        h, c = carry
        zx_t, m = inputs
        gates = lstm_gates(zx_t + h @ w_hh)
        h_new, c_new = lstm_update(gates, c)
        acts = jnp.concatenate(gates, axis=-1)  # [B, 4H] activated gates
        if m is None:
            return (h_new, c_new), (h_new, acts, c_new)
        m = m[..., None]
        h_out = m * h_new + (1 - m) * h
        c_out = m * c_new + (1 - m) * c
        # Masked runs keep the previous state for the backward pass explicitly.
        return (h_out, c_out), (m * h_new, acts, c_new, h, c)

    (h, c), out = jax.lax.scan(step, (h0, c0), (zx, mask), reverse=reverse, unroll=unroll)
    return h, c, out


def _shift_prev(seq, first, reverse):
    """The previous step's value in processing order: ``[first, seq[:-1]]`` (or reversed)."""
    if reverse:
        return jnp.concatenate([seq[1:], first[None]], axis=0)
    return jnp.concatenate([first[None], seq[:-1]], axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _lstm_fused(w_hh, zx, h0, c0, mask, reverse, unroll):
    h, c, out = _lstm_fused_forward(w_hh, zx, h0, c0, mask, reverse, unroll)
    return h, c, out[0]


def _lstm_fused_fwd(w_hh, zx, h0, c0, mask, reverse, unroll):
    h, c, out = _lstm_fused_forward(w_hh, zx, h0, c0, mask, reverse, unroll)
    if mask is None:
        ys, acts, cs = out
        h_prev = _shift_prev(ys, h0, reverse)
        c_prev = _shift_prev(cs, c0, reverse)
    else:
        ys, acts, cs, h_prev, c_prev = out
    return (h, c, ys), (w_hh, acts, cs, h_prev, c_prev, mask)


def _lstm_fused_bwd(reverse, unroll, residuals, cotangents):
    w_hh, acts, cs, h_prev, c_prev, mask = residuals
    dh_T, dc_T, dys = cotangents
    w_t = jnp.split(w_hh.T, 4, axis=0)  # [H, H] per gate

    def step(carry, inputs):
        dh, dc = carry
        dy, acts_t, c_new, c_prev_t, m = inputs
        gates = jnp.split(acts_t, 4, axis=-1)
        if m is None:
            dh_new, dc_new = dh + dy, dc
        else:
            m = m[..., None]
            dh_new, dc_new = m * (dh + dy), m * dc
        dz, dc_prev = lstm_gate_grads(gates, c_prev_t, jnp.tanh(c_new), dh_new, dc_new)
        # Four [B, H] x [H, H] products summed: on XLA's CPU backend a concatenate of the four
        # gate gradients runs as its own copy every step (benchmarks/results/lstm_micro.md).
        dh_prev = sum(d @ w for d, w in zip(dz, w_t))
        if m is not None:
            dh_prev = dh_prev + (1 - m) * dh
            dc_prev = dc_prev + (1 - m) * dc
        return (dh_prev, dc_prev), dz

    (dh0, dc0), dzs = jax.lax.scan(
        step, (dh_T, dc_T), (dys, acts, cs, c_prev, mask), reverse=not reverse, unroll=unroll
    )
    dzs = jnp.concatenate(dzs, axis=-1)
    hidden = h_prev.shape[-1]
    # One [H, T*B] x [T*B, 4H] product for the recurrent weight gradient.
    dw_hh = h_prev.reshape(-1, hidden).T @ dzs.reshape(-1, 4 * hidden)
    dmask = None if mask is None else jnp.zeros_like(mask)
    return dw_hh, dzs, dh0, dc0, dmask


_lstm_fused.defvjp(_lstm_fused_fwd, _lstm_fused_bwd)


# --------------------------------------------------------------------------- sequences


def _check_sizes(input_size, hidden_size):
    for name, v in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _input_matrix(key, input_size, width, dtype):
    # LeCun normal: unit-variance pre-activations for unit-variance inputs.
    return jax.random.normal(key, (input_size, width), dtype) / np.sqrt(input_size)


def _bias(params):
    return params["b_ih"] if "b_ih" in params else params["b"]


def input_projection(params: Params, xs: Array) -> Array:
    """``xs @ w_ih + b`` for every step at once: ``[T, B, F] -> [T, B, G*H]``.

    Integer ``xs`` ``[T, B]`` are token ids: the projection of their one-hot
    encoding is a row gather of ``w_ih`` (no one-hot matrix is built).
    """
    w, b = params["w_ih"], _bias(params)
    xs = jnp.asarray(xs)
    if jnp.issubdtype(xs.dtype, jnp.integer):
        return jnp.take(w, xs, axis=0) + b
    if xs.shape[-1] != w.shape[0]:
        raise ValueError(
            f"input feature size {xs.shape[-1]} does not match the layer's input size "
            f"{w.shape[0]} (w_ih is {tuple(w.shape)}); initialise with input_size={xs.shape[-1]}"
        )
    lead = xs.shape[:-1]
    z = xs.reshape(-1, xs.shape[-1]) @ w  # one large GEMM over all T*B rows
    return z.reshape(*lead, w.shape[1]) + b


def _check_seq(xs, time_major=True, lengths=None):
    """Shapes that cannot be right, with the layout named (a batch-major input is the usual
    cause)."""
    shape = tuple(jnp.shape(xs))
    if time_major:
        layout, hint = (
            "time-major [T, B, F] (or [T, F], or integer ids [T, B])",
            "; batch-major? pass time_major=False",
        )
    else:
        layout, hint = (
            "batch-major [B, T, F] (time_major=False; or [T, F], or integer ids [B, T])",
            "",
        )
    if len(shape) < 2:
        raise ValueError(f"xs must be {layout}; got shape {shape}{hint}")
    if lengths is None or jnp.ndim(lengths) == 0:
        return
    feat = shape if jnp.issubdtype(jnp.asarray(xs).dtype, jnp.integer) else shape[:-1]
    batch = feat[1:] if time_major or len(feat) < 2 else feat[:1] + feat[2:]
    if tuple(jnp.shape(lengths)) != batch:
        raise ValueError(
            f"lengths has shape {tuple(jnp.shape(lengths))} but xs {shape}, read as {layout}, has "
            f"batch shape {batch}{hint}"
        )


def _from_batch_major(fn, params, xs, carry, **kwargs):
    """``fn`` (time-major) on batch-major ``xs`` ``[B, T, ...]``: swap the first two axes in and
    out.

    An unbatched float sequence ``[T, F]`` reads the same in both layouts and is passed unchanged.
    """
    xs = jnp.asarray(xs)
    if xs.ndim < (2 if jnp.issubdtype(xs.dtype, jnp.integer) else 3):
        return fn(params, xs, carry, **kwargs)
    carry, ys = fn(params, jnp.swapaxes(xs, 0, 1), carry, **kwargs)
    return carry, jnp.swapaxes(ys, 0, 1)


# --------------------------------------------------------------------------- bounded memory


def check_remat(remat, num_steps):
    """``remat`` must be a positive integer that divides ``T``."""
    if not isinstance(remat, (int, np.integer)) or isinstance(remat, bool) or remat < 1:
        raise ValueError(f"remat must be a positive integer (a segment length), got {remat!r}")
    if num_steps % remat:
        divisors = [d for d in range(1, min(num_steps, 4096) + 1) if num_steps % d == 0]
        near = min(divisors, key=lambda d: abs(d - remat))
        raise ValueError(
            f"remat={remat} does not divide the sequence length T={num_steps}; pick a divisor "
            f"(the nearest is {near}), or pad the sequences and pass lengths"
        )


def _segments(tree, remat):
    """``[T, ...] -> [T / remat, remat, ...]`` for every leaf (``None`` stays ``None``)."""
    return jax.tree.map(lambda a: a.reshape(a.shape[0] // remat, remat, *a.shape[1:]), tree)


def remat_scan(cell, params, carry, xs, *, remat, reverse=False, lengths=None):
    """:func:`masked_scan` that keeps only every ``remat``-th carry for the backward pass
    (``jax.checkpoint`` on each segment of ``remat`` steps: the backward pass recomputes the
    segment's steps from its first carry)."""
    xs = jnp.asarray(xs)
    check_remat(remat, xs.shape[0])
    mask = length_mask(lengths, xs.shape[0])
    step = masked_step(cell, params)

    @jax.checkpoint
    def segment(carry, inputs):
        return jax.lax.scan(step, carry, inputs, reverse=reverse)

    carry, ys = jax.lax.scan(segment, carry, _segments((xs, mask), remat), reverse=reverse)
    return carry, jax.tree.map(lambda y: y.reshape(-1, *y.shape[2:]), ys)


def lstm_remat(params, xs, carry, *, remat, reverse=False, lengths=None):
    """The LSTM over raw inputs ``xs`` ``[T, B, F]`` (or ids ``[T, B]``) with the hand-written
    backward pass in segments of ``remat`` steps: the forward pass keeps only each segment's
    first carry; the backward pass recomputes one segment at a time (its input projection, its
    gates) and folds its weight gradients into running sums. Peak memory holds ``T / remat``
    carries and one segment's gates instead of every step's gates and the whole projection."""
    xs = jnp.asarray(xs)
    check_remat(remat, xs.shape[0])
    mask = length_mask(lengths, xs.shape[0])
    if mask is not None:
        mask = mask.astype(params["w_hh"].dtype)
    proj = {"w_ih": params["w_ih"], "b": _bias(params)}
    h0, c0 = carry
    h, c, ys = _lstm_remat(proj, params["w_hh"], xs, h0, c0, mask, reverse, remat)
    return (h, c), ys


def _remat_forward(proj, w_hh, xs, h0, c0, mask, reverse, remat):
    def segment(carry, inputs):
        x, m = inputs
        h, c, out = _lstm_fused_forward(w_hh, input_projection(proj, x), *carry, m, reverse, 1)
        return (h, c), (carry, out[0])

    (h, c), (starts, ys) = jax.lax.scan(
        segment, (h0, c0), _segments((xs, mask), remat), reverse=reverse
    )
    return h, c, ys.reshape(-1, *ys.shape[2:]), starts


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _lstm_remat(proj, w_hh, xs, h0, c0, mask, reverse, remat):
    return _remat_forward(proj, w_hh, xs, h0, c0, mask, reverse, remat)[:3]


def _lstm_remat_fwd(proj, w_hh, xs, h0, c0, mask, reverse, remat):
    h, c, ys, starts = _remat_forward(proj, w_hh, xs, h0, c0, mask, reverse, remat)
    return (h, c, ys), (proj, w_hh, xs, starts, mask)


def _lstm_remat_bwd(reverse, remat, residuals, cotangents):
    proj, w_hh, xs, starts, mask = residuals
    dh_T, dc_T, dys = cotangents
    ids = jnp.issubdtype(xs.dtype, jnp.integer)

    def segment(carry, inputs):
        dh, dc, g_proj, g_w = carry
        x, m, (h0, c0), dy = inputs
        if ids:
            zx, vjp = jax.vjp(lambda p: input_projection(p, x), proj)
        else:
            zx, vjp = jax.vjp(input_projection, proj, x)
        res = _lstm_fused_fwd(w_hh, zx, h0, c0, m, reverse, 1)[1]
        dw, dzx, dh0, dc0, _ = _lstm_fused_bwd(reverse, 1, res, (dh, dc, dy))
        grads = vjp(dzx)
        g_proj = jax.tree.map(jnp.add, g_proj, grads[0])
        return (dh0, dc0, g_proj, g_w + dw), (None if ids else grads[1])

    init = (dh_T, dc_T, jax.tree.map(jnp.zeros_like, proj), jnp.zeros_like(w_hh))
    inputs = (*_segments((xs, mask), remat), starts, _segments(dys, remat))
    (dh0, dc0, d_proj, dw_hh), dxs = jax.lax.scan(segment, init, inputs, reverse=not reverse)
    if ids:
        dxs = np.zeros(xs.shape, jax.dtypes.float0)
    else:
        dxs = dxs.reshape(xs.shape)
    dmask = None if mask is None else jnp.zeros_like(mask)
    return d_proj, dw_hh, dxs, dh0, dc0, dmask


_lstm_remat.defvjp(_lstm_remat_fwd, _lstm_remat_bwd)
