"""Fused simple-RNN sequence kernel bodies (Pallas): ``h' = act(zx[t] + h @ W_hh)``.

Same structure and padded layout as :mod:`jaxgen.kernels.lstm` (read that
first). Forward per step: ``z = zx[t] + h @ W``, ``h' = act(z)``, masked by
``t < length``; it saves ``h_prev`` and ``h'`` (float32) for the backward pass,
which computes the activation's derivative from its output::

    dh' = m ? dh + dys[t] : 0;   dz = dh' * act'(h');   dh = m ? dz @ W^T : dh

act'(y): tanh 1 - y^2, sigmoid y(1 - y), relu [y > 0], identity 1.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from jaxgen.kernels import common
from jaxgen.kernels.common import F32

GATES = 1
# Saved per step, row and padded hidden unit for the backward pass: h_prev and h'.
RESIDUALS = 2
# Each activation and its derivative as a function of its output.
ACTIVATIONS = {
    "tanh": (jnp.tanh, lambda y: 1.0 - y * y),
    "sigmoid": (jax.nn.sigmoid, lambda y: y * (1.0 - y)),
    "relu": (lambda z: jnp.maximum(z, 0.0), lambda y: jnp.where(y > 0, 1.0, 0.0)),
    "identity": (lambda z: z, lambda y: jnp.ones_like(y)),
}


# --------------------------------------------------------------------------- kernels


def _forward_kernel(
    lengths_ref,
    zx_ref,
    w_ref,
    h0_ref,
    ys_ref,
    h_final_ref,
    *rest,
    block_sizes,
    reverse,
    save_residuals,
    activation,
    wdtype,
):
    if save_residuals:
        h_prev_ref, h_new_ref, *scratch_refs = rest
    else:
        scratch_refs = rest
    act = ACTIVATIONS[activation][0]
    num_chunks, cols, time_block, (h,) = common.begin_kernel(
        block_sizes, w_ref.shape[0], (h0_ref,), scratch_refs
    )
    lengths = lengths_ref[...]  # [bb, 1]

    def step(s, h):
        t, local = common.time_index(block_sizes, reverse, time_block, s)
        real = t < lengths  # [bb, 1]: a real step of this row, not padding
        z = [
            zx_ref[local, :, cols(q)].astype(F32)  # [bb, hc]
            + common.chunked_dot(h, w_ref, cols, q, wdtype)
            for q in range(num_chunks)
        ]
        h_out = []
        for q in range(num_chunks):
            h_new = act(z[q])
            if save_residuals:
                h_prev_ref[local, :, cols(q)] = h[q]
                h_new_ref[local, :, cols(q)] = h_new
            ys_ref[local, :, cols(q)] = jnp.where(real, h_new, 0.0).astype(ys_ref.dtype)
            h_out.append(jnp.where(real, h_new, h[q]))
        return tuple(h_out)

    h = jax.lax.fori_loop(0, block_sizes.time_block, step, h)
    common.store_carry(block_sizes, time_block, (h,), scratch_refs, (h_final_ref,))


def _backward_kernel(
    lengths_ref,
    dys_ref,
    h_new_ref,
    w_t_ref,
    dh_final_ref,
    dz_ref,
    dh0_ref,
    *scratch_refs,
    block_sizes,
    reverse,
    activation,
    wdtype,
):
    act_grad = ACTIVATIONS[activation][1]
    num_chunks, cols, time_block, (dh,) = common.begin_kernel(
        block_sizes, w_t_ref.shape[0], (dh_final_ref,), scratch_refs
    )
    lengths = lengths_ref[...]  # [bb, 1]

    def step(s, dh):
        t, local = common.time_index(block_sizes, not reverse, time_block, s)
        real = t < lengths  # [bb, 1]
        dz = []
        for q in range(num_chunks):
            dy = dys_ref[local, :, cols(q)].astype(F32)  # [bb, hc]
            dh_new = jnp.where(real, dh[q] + dy, 0.0)
            dz_q = dh_new * act_grad(h_new_ref[local, :, cols(q)])  # [bb, hc]
            dz_ref[local, :, cols(q)] = dz_q
            dz.append(dz_q)
        return tuple(
            jnp.where(real, common.chunked_dot(dz, w_t_ref, cols, p, wdtype), dh[p])
            for p in range(num_chunks)
        )

    dh = jax.lax.fori_loop(0, block_sizes.time_block, step, dh)
    common.store_carry(block_sizes, time_block, (dh,), scratch_refs, (dh0_ref,))


# --------------------------------------------------------------------------- pallas_call wrappers


def forward_call(
    block_sizes, interpret, lengths, zx, w, h0, *, layout, reverse, save_residuals, activation
):
    """The forward ``pallas_call``: ``(ys, h_final[, h_prev, h_new])``."""
    sequence, rows, whole = common.block_specs(block_sizes, reverse)
    Tp, Bp, Hp = layout.Tp, layout.Bp, layout.Hp
    dtype = w.dtype
    out_shape = [jax.ShapeDtypeStruct((Tp, Bp, Hp), dtype), jax.ShapeDtypeStruct((Bp, Hp), dtype)]
    out_specs = [sequence(Hp), rows(Hp)]
    if save_residuals:
        out_shape += [jax.ShapeDtypeStruct((Tp, Bp, Hp), F32)] * 2
        out_specs += [sequence(Hp), sequence(Hp)]
    kernel = functools.partial(
        _forward_kernel,
        block_sizes=block_sizes,
        reverse=reverse,
        save_residuals=save_residuals,
        activation=activation,
        wdtype=dtype,
    )
    residual_cols = RESIDUALS * Hp if save_residuals else 0
    return tuple(
        pl.pallas_call(
            kernel,
            out_shape=out_shape,
            grid=block_sizes.grid,
            in_specs=[rows(1), sequence(Hp), whole((Hp, Hp)), rows(Hp)],
            out_specs=out_specs,
            scratch_shapes=common.scratch_shapes(block_sizes, layout, 1),
            compiler_params=common.compiler_params(
                block_sizes, layout, GATES, dtype.itemsize, residual_cols
            ),
            interpret=interpret,
            name="jaxgen_rnn_fwd",
        )(lengths, zx, w, h0)
    )


def backward_call(
    block_sizes, interpret, lengths, dys, h_new, w_t, dh_final, *, layout, reverse, activation
):
    """The backward ``pallas_call``: ``(dz, dh0)``, float32."""
    sequence, rows, whole = common.block_specs(block_sizes, not reverse)
    Tp, Bp, Hp = layout.Tp, layout.Bp, layout.Hp
    kernel = functools.partial(
        _backward_kernel,
        block_sizes=block_sizes,
        reverse=reverse,
        activation=activation,
        wdtype=w_t.dtype,
    )
    return tuple(
        pl.pallas_call(
            kernel,
            out_shape=[
                jax.ShapeDtypeStruct((Tp, Bp, Hp), F32),
                jax.ShapeDtypeStruct((Bp, Hp), F32),
            ],
            grid=block_sizes.grid,
            in_specs=[rows(1), sequence(Hp), sequence(Hp), whole((Hp, Hp)), rows(Hp)],
            out_specs=[sequence(Hp), rows(Hp)],
            scratch_shapes=common.scratch_shapes(block_sizes, layout, 1),
            compiler_params=common.compiler_params(block_sizes, layout, GATES, 4, RESIDUALS * Hp),
            interpret=interpret,
            name="jaxgen_rnn_bwd",
        )(lengths, dys, h_new, w_t, dh_final)
    )


# --------------------------------------------------------------------------- jnp mirrors


def forward_scan(lengths, zx, w, h0, *, layout, reverse, save_residuals, activation):
    act = ACTIVATIONS[activation][0]

    def step(h, inputs):
        zx_t, t = inputs
        real = t < lengths
        h_new = act(zx_t.astype(F32) + common.dot(h, w, w.dtype))
        residuals = (h, h_new) if save_residuals else ()
        return jnp.where(real, h_new, h), (jnp.where(real, h_new, 0.0).astype(w.dtype), residuals)

    h, (ys, residuals) = jax.lax.scan(
        step, h0.astype(F32), (zx, jnp.arange(layout.Tp)), reverse=reverse
    )
    return (ys, h.astype(w.dtype), *residuals)


def backward_scan(lengths, dys, h_new, w_t, dh_final, *, layout, reverse, activation):
    act_grad = ACTIVATIONS[activation][1]

    def step(dh, inputs):
        dy, h_new_t, t = inputs
        real = t < lengths
        dz = jnp.where(real, dh + dy.astype(F32), 0.0) * act_grad(h_new_t)
        return jnp.where(real, common.dot(dz, w_t, w_t.dtype), dh), dz

    dh, dz = jax.lax.scan(
        step, dh_final.astype(F32), (dys, h_new, jnp.arange(layout.Tp)), reverse=not reverse
    )
    return dz, dh
