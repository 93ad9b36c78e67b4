"""Fused LSTM sequence kernel bodies (Pallas): forward and backward through time.

All arrays here are in the padded layout of :mod:`jaxgen.kernels.common`
(time-major ``[Tp, Bp, ...]``, gate blocks of width ``Hp``, order i, f, g, o).
The step equations are those of :mod:`jaxgen.recurrence`, shared with ``rnn.lstm``.

Forward, per step ``t`` (in processing order), for each batch tile::

    z = zx[t] + h @ W_hh                      # MXU / tl.dot, float32 accumulation
    i, f, o = sigmoid(z_i, z_f, z_o); g = tanh(z_g)
    c' = f*c + i*g;  h' = o*tanh(c')
    m = t < length[row]                       # lengths mask (padded rows: length 0)
    ys[t] = m ? h' : 0;  (h, c) = m ? (h', c') : (h, c)

The state ``(h, c)`` is float32 whatever the input dtype. For the backward pass
the forward kernel also writes, per step, the activated gates ``[i, f, g, o]``
and the carry entering the step ``(h_prev, c_prev)``, all float32.

Backward (time reversed), per step, with ``c' = f*c_prev + i*g`` recomputed::

    dh' = m ? dh + dys[t] : 0;  dc' = m ? dc : 0
    dc' += dh' * o * (1 - tanh(c')^2)
    dz = [dc'*g*i*(1-i), dc'*c_prev*f*(1-f), dc'*i*(1-g^2), dh'*tanh(c')*o*(1-o)]
    dh = m ? dz @ W_hh^T : dh;  dc = m ? dc'*f : dc

``dz`` (= the gradient of ``zx``) is written per step; the weight gradient
``sum_t h_prev[t]^T dz[t]`` is one large GEMM over all steps afterwards,
outside the kernel (as cuDNN does), not ``T`` small ones inside it
(:mod:`jaxgen.kernels.ops`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from jaxgen import recurrence
from jaxgen.kernels import common
from jaxgen.kernels.common import F32

GATES = 4
# Saved per step, row and padded hidden unit for the backward pass: four gates, h_prev, c_prev.
RESIDUALS = 6


# --------------------------------------------------------------------------- kernels


def _forward_kernel(
    lengths_ref,
    zx_ref,
    w_ref,
    h0_ref,
    c0_ref,
    ys_ref,
    h_final_ref,
    c_final_ref,
    *rest,
    block_sizes,
    reverse,
    save_residuals,
    wdtype,
):
    if save_residuals:
        gates_ref, h_prev_ref, c_prev_ref, *scratch_refs = rest
    else:
        scratch_refs = rest
    num_chunks, cols, time_block, carry = common.begin_kernel(
        block_sizes, w_ref.shape[0], (h0_ref, c0_ref), scratch_refs
    )
    lengths = lengths_ref[...]  # [bb, 1]

    def step(s, carry):
        h, c = carry
        t, local = common.time_index(block_sizes, reverse, time_block, s)
        real = t < lengths  # [bb, 1]: a real step of this row, not padding
        z = [
            [
                zx_ref[local, :, cols(k * num_chunks + q)].astype(F32)  # [bb, hc]
                + common.chunked_dot(h, w_ref, cols, k * num_chunks + q, wdtype)
                for q in range(num_chunks)
            ]
            for k in range(GATES)
        ]
        h_out, c_out = [], []
        for q in range(num_chunks):
            gates = recurrence.lstm_activate(z[0][q], z[1][q], z[2][q], z[3][q])
            h_new, c_new = recurrence.lstm_update(gates, c[q])
            if save_residuals:
                for k, gate in enumerate(gates):
                    gates_ref[local, :, cols(k * num_chunks + q)] = gate
                h_prev_ref[local, :, cols(q)] = h[q]
                c_prev_ref[local, :, cols(q)] = c[q]
            ys_ref[local, :, cols(q)] = jnp.where(real, h_new, 0.0).astype(ys_ref.dtype)
            h_out.append(jnp.where(real, h_new, h[q]))
            c_out.append(jnp.where(real, c_new, c[q]))
        return tuple(h_out), tuple(c_out)

    carry = jax.lax.fori_loop(0, block_sizes.time_block, step, carry)
    common.store_carry(block_sizes, time_block, carry, scratch_refs, (h_final_ref, c_final_ref))


def _backward_kernel(
    lengths_ref,
    dys_ref,
    gates_ref,
    c_prev_ref,
    w_t_ref,
    dh_final_ref,
    dc_final_ref,
    dz_ref,
    dh0_ref,
    dc0_ref,
    *scratch_refs,
    block_sizes,
    reverse,
    wdtype,
):
    num_chunks, cols, time_block, carry = common.begin_kernel(
        block_sizes, w_t_ref.shape[1], (dh_final_ref, dc_final_ref), scratch_refs
    )
    lengths = lengths_ref[...]  # [bb, 1]

    def step(s, carry):
        dh, dc = carry
        t, local = common.time_index(block_sizes, not reverse, time_block, s)
        real = t < lengths  # [bb, 1]
        dz = [[None] * num_chunks for _ in range(GATES)]
        dc_out = []
        for q in range(num_chunks):
            gates = tuple(
                gates_ref[local, :, cols(k * num_chunks + q)]  # [bb, hc] each
                for k in range(GATES)
            )
            c_prev = c_prev_ref[local, :, cols(q)]  # [bb, hc]
            tanh_c = jnp.tanh(recurrence.lstm_new_cell(gates, c_prev))
            dy = dys_ref[local, :, cols(q)].astype(F32)  # [bb, hc]
            dh_new = jnp.where(real, dh[q] + dy, 0.0)
            dz_q, dc_prev = recurrence.lstm_gate_grads(
                gates, c_prev, tanh_c, dh_new, jnp.where(real, dc[q], 0.0)
            )
            for k in range(GATES):
                dz[k][q] = dz_q[k]
                dz_ref[local, :, cols(k * num_chunks + q)] = dz_q[k]
            dc_out.append(jnp.where(real, dc_prev, dc[q]))
        dz_chunks = [chunk for gate in dz for chunk in gate]  # chunk k * num_chunks + q
        dh_out = tuple(
            jnp.where(real, common.chunked_dot(dz_chunks, w_t_ref, cols, p, wdtype), dh[p])
            for p in range(num_chunks)
        )
        return dh_out, tuple(dc_out)

    carry = jax.lax.fori_loop(0, block_sizes.time_block, step, carry)
    common.store_carry(block_sizes, time_block, carry, scratch_refs, (dh0_ref, dc0_ref))


# --------------------------------------------------------------------------- pallas_call wrappers


def forward_call(
    block_sizes, interpret, lengths, zx, w, h0, c0, *, layout, reverse, save_residuals
):
    """The forward ``pallas_call``: ``(ys, h_final, c_final[, gates, h_prev, c_prev])``."""
    sequence, rows, whole = common.block_specs(block_sizes, reverse)
    Tp, Bp, Hp = layout.Tp, layout.Bp, layout.Hp
    out_dtype = w.dtype
    out_shape = [
        jax.ShapeDtypeStruct((Tp, Bp, Hp), out_dtype),
        jax.ShapeDtypeStruct((Bp, Hp), out_dtype),
        jax.ShapeDtypeStruct((Bp, Hp), out_dtype),
    ]
    out_specs = [sequence(Hp), rows(Hp), rows(Hp)]
    if save_residuals:
        out_shape += [
            jax.ShapeDtypeStruct((Tp, Bp, GATES * Hp), F32),
            jax.ShapeDtypeStruct((Tp, Bp, Hp), F32),
            jax.ShapeDtypeStruct((Tp, Bp, Hp), F32),
        ]
        out_specs += [sequence(GATES * Hp), sequence(Hp), sequence(Hp)]
    kernel = functools.partial(
        _forward_kernel,
        block_sizes=block_sizes,
        reverse=reverse,
        save_residuals=save_residuals,
        wdtype=w.dtype,
    )
    residual_cols = RESIDUALS * Hp if save_residuals else 0
    item_bytes = max(jnp.dtype(out_dtype).itemsize, zx.dtype.itemsize)
    return tuple(
        pl.pallas_call(
            kernel,
            out_shape=out_shape,
            grid=block_sizes.grid,
            in_specs=[rows(1), sequence(GATES * Hp), whole((Hp, GATES * Hp)), rows(Hp), rows(Hp)],
            out_specs=out_specs,
            scratch_shapes=common.scratch_shapes(block_sizes, layout, 2),
            compiler_params=common.compiler_params(
                block_sizes, layout, GATES, item_bytes, residual_cols
            ),
            interpret=interpret,
            name="jaxgen_lstm_fwd",
        )(lengths, zx, w, h0, c0)
    )


def backward_call(
    block_sizes, interpret, lengths, dys, gates, c_prev, w_t, dh_final, dc_final, *, layout, reverse
):
    """The backward ``pallas_call``: ``(dz, dh0, dc0)``, all float32."""
    sequence, rows, whole = common.block_specs(block_sizes, not reverse)
    Tp, Bp, Hp = layout.Tp, layout.Bp, layout.Hp
    kernel = functools.partial(
        _backward_kernel, block_sizes=block_sizes, reverse=reverse, wdtype=w_t.dtype
    )
    return tuple(
        pl.pallas_call(
            kernel,
            out_shape=[
                jax.ShapeDtypeStruct((Tp, Bp, GATES * Hp), F32),
                jax.ShapeDtypeStruct((Bp, Hp), F32),
                jax.ShapeDtypeStruct((Bp, Hp), F32),
            ],
            grid=block_sizes.grid,
            in_specs=[
                rows(1),
                sequence(Hp),
                sequence(GATES * Hp),
                sequence(Hp),
                whole((GATES * Hp, Hp)),
                rows(Hp),
                rows(Hp),
            ],
            out_specs=[sequence(GATES * Hp), rows(Hp), rows(Hp)],
            scratch_shapes=common.scratch_shapes(block_sizes, layout, 2),
            compiler_params=common.compiler_params(block_sizes, layout, GATES, 4, RESIDUALS * Hp),
            interpret=interpret,
            name="jaxgen_lstm_bwd",
        )(lengths, dys, gates, c_prev, w_t, dh_final, dc_final)
    )


# --------------------------------------------------------------------------- jnp mirrors
# The same computation in plain jnp on the padded layout (lax.scan). Used where a
# backend cannot take the kernel (weights too large for VMEM, hidden too large
# for the Triton unrolling) and in tests as a second reference.


def forward_scan(lengths, zx, w, h0, c0, *, layout, reverse, save_residuals):
    out_dtype = w.dtype

    def step(carry, inputs):
        h, c = carry
        zx_t, t = inputs
        real = t < lengths
        gates = recurrence.lstm_gates(zx_t.astype(F32) + common.dot(h, w, w.dtype))
        h_new, c_new = recurrence.lstm_update(gates, c)
        y = jnp.where(real, h_new, 0.0).astype(out_dtype)
        residuals = (jnp.concatenate(gates, -1), h, c) if save_residuals else ()
        return (jnp.where(real, h_new, h), jnp.where(real, c_new, c)), (y, residuals)

    (h, c), (ys, residuals) = jax.lax.scan(
        step, (h0.astype(F32), c0.astype(F32)), (zx, jnp.arange(layout.Tp)), reverse=reverse
    )
    return (ys, h.astype(out_dtype), c.astype(out_dtype), *residuals)


def backward_scan(lengths, dys, gates, c_prev, w_t, dh_final, dc_final, *, layout, reverse):
    def step(carry, inputs):
        dh, dc = carry
        dy, gates_t, c_prev_t, t = inputs
        real = t < lengths
        gates_t = jnp.split(gates_t, GATES, axis=-1)
        tanh_c = jnp.tanh(recurrence.lstm_new_cell(gates_t, c_prev_t))
        dh_new = jnp.where(real, dh + dy.astype(F32), 0.0)
        dz, dc_prev = recurrence.lstm_gate_grads(
            gates_t, c_prev_t, tanh_c, dh_new, jnp.where(real, dc, 0.0)
        )
        dz = jnp.concatenate(dz, -1)
        dh_prev = common.dot(dz, w_t, w_t.dtype)
        return (jnp.where(real, dh_prev, dh), jnp.where(real, dc_prev, dc)), dz

    (dh, dc), dz = jax.lax.scan(
        step,
        (dh_final.astype(F32), dc_final.astype(F32)),
        (dys, gates, c_prev, jnp.arange(layout.Tp)),
        reverse=not reverse,
    )
    return dz, dh, dc
