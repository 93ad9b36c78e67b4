"""Fused LSTM sequence kernel (Pallas): forward and backward through time.

All arrays here are in the padded layout of :mod:`jaxgen.kernels._common`
(time-major ``[Tp, Bp, ...]``, gate blocks of width ``Hp``, order i, f, g, o).

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
outside the kernel (as cuDNN does), not ``T`` small ones inside it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from . import _common as cm

F32 = jnp.float32


def _sigmoid(x):
    return jax.nn.sigmoid(x)


# --------------------------------------------------------------------------- kernels


def _chunked_dot(h, w_ref, col, out_chunk, n, wdtype):
    """Column chunk ``out_chunk`` of ``h @ W``, with ``h`` held as ``n`` column chunks."""
    acc = cm.dot(h[0], w_ref[col(0), col(out_chunk)], wdtype)
    for p in range(1, n):
        acc = acc + cm.dot(h[p], w_ref[col(p), col(out_chunk)], wdtype)
    return acc


def _fwd_kernel(lens_ref, zx_ref, w_ref, h0_ref, c0_ref, ys_ref, hT_ref, cT_ref, *rest,
                cfg: cm.Config, n: int, reverse: bool, save: bool, wdtype):
    from jax.experimental import pallas as pl

    if save:
        acts_ref, hp_ref, cp_ref, *scratch = rest
    else:
        scratch = rest
    col = functools.partial(cm.col, cfg)
    j = cm.time_block_id(cfg)

    if cfg.kind == "tpu":  # carry in VMEM scratch across the sequential time axis
        h_s, c_s = scratch

        @pl.when(j == 0)
        def _():
            h_s[...] = h0_ref[...].astype(F32)
            c_s[...] = c0_ref[...].astype(F32)

        h, c = (h_s[...],), (c_s[...],)
    else:  # the whole time loop runs in this program; carry in registers
        h = tuple(h0_ref[:, col(q)].astype(F32) for q in range(n))
        c = tuple(c0_ref[:, col(q)].astype(F32) for q in range(n))
    lens = lens_ref[...]

    def step(s, carry):
        h, c = carry
        t, ls = cm.time_index(cfg, reverse, j, s)
        m = t < lens  # [bt, 1]
        z = [[zx_ref[ls, :, col(k * n + q)].astype(F32)
              + _chunked_dot(h, w_ref, col, k * n + q, n, wdtype)
              for q in range(n)] for k in range(4)]
        h_out, c_out = [], []
        for q in range(n):
            i, f = _sigmoid(z[0][q]), _sigmoid(z[1][q])
            g, o = jnp.tanh(z[2][q]), _sigmoid(z[3][q])
            c_new = f * c[q] + i * g
            h_new = o * jnp.tanh(c_new)
            if save:
                for k, a in enumerate((i, f, g, o)):
                    acts_ref[ls, :, col(k * n + q)] = a
                hp_ref[ls, :, col(q)] = h[q]
                cp_ref[ls, :, col(q)] = c[q]
            ys_ref[ls, :, col(q)] = jnp.where(m, h_new, 0.0).astype(ys_ref.dtype)
            h_out.append(jnp.where(m, h_new, h[q]))
            c_out.append(jnp.where(m, c_new, c[q]))
        return tuple(h_out), tuple(c_out)

    h, c = jax.lax.fori_loop(0, cfg.tt, step, (h, c))

    if cfg.kind == "tpu":
        h_s[...] = h[0]
        c_s[...] = c[0]

        @pl.when(j == cfg.nt - 1)
        def _():
            hT_ref[...] = h[0].astype(hT_ref.dtype)
            cT_ref[...] = c[0].astype(cT_ref.dtype)
    else:
        for q in range(n):
            hT_ref[:, col(q)] = h[q].astype(hT_ref.dtype)
            cT_ref[:, col(q)] = c[q].astype(cT_ref.dtype)


def _bwd_kernel(lens_ref, dys_ref, acts_ref, cp_ref, wt_ref, dhT_ref, dcT_ref,
                dz_ref, dh0_ref, dc0_ref, *scratch, cfg: cm.Config, n: int, reverse: bool, wdtype):
    from jax.experimental import pallas as pl

    col = functools.partial(cm.col, cfg)
    j = cm.time_block_id(cfg)
    back = not reverse  # processing direction of the backward pass

    if cfg.kind == "tpu":
        dh_s, dc_s = scratch

        @pl.when(j == 0)
        def _():
            dh_s[...] = dhT_ref[...].astype(F32)
            dc_s[...] = dcT_ref[...].astype(F32)

        dh, dc = (dh_s[...],), (dc_s[...],)
    else:
        dh = tuple(dhT_ref[:, col(q)].astype(F32) for q in range(n))
        dc = tuple(dcT_ref[:, col(q)].astype(F32) for q in range(n))
    lens = lens_ref[...]

    def step(s, carry):
        dh, dc = carry
        t, ls = cm.time_index(cfg, back, j, s)
        m = t < lens
        dz = [[None] * n for _ in range(4)]
        dc_prev = []
        for q in range(n):
            i, f, g, o = (acts_ref[ls, :, col(k * n + q)] for k in range(4))
            cp = cp_ref[ls, :, col(q)]
            tc = jnp.tanh(f * cp + i * g)
            dh_new = jnp.where(m, dh[q] + dys_ref[ls, :, col(q)].astype(F32), 0.0)
            dc_new = jnp.where(m, dc[q], 0.0) + dh_new * o * (1.0 - tc * tc)
            dz[0][q] = dc_new * g * i * (1.0 - i)
            dz[1][q] = dc_new * cp * f * (1.0 - f)
            dz[2][q] = dc_new * i * (1.0 - g * g)
            dz[3][q] = dh_new * tc * o * (1.0 - o)
            for k in range(4):
                dz_ref[ls, :, col(k * n + q)] = dz[k][q]
            dc_prev.append(jnp.where(m, dc_new * f, dc[q]))
        dh_prev = []
        for p in range(n):
            acc = None
            for k in range(4):
                for q in range(n):
                    d = cm.dot(dz[k][q], wt_ref[col(k * n + q), col(p)], wdtype)
                    acc = d if acc is None else acc + d
            dh_prev.append(jnp.where(m, acc, dh[p]))
        return tuple(dh_prev), tuple(dc_prev)

    dh, dc = jax.lax.fori_loop(0, cfg.tt, step, (dh, dc))

    if cfg.kind == "tpu":
        dh_s[...] = dh[0]
        dc_s[...] = dc[0]

        @pl.when(j == cfg.nt - 1)
        def _():
            dh0_ref[...] = dh[0]
            dc0_ref[...] = dc[0]
    else:
        for q in range(n):
            dh0_ref[:, col(q)] = dh[q]
            dc0_ref[:, col(q)] = dc[q]


# --------------------------------------------------------------------------- pallas_call wrappers


def _params(cfg, lay, out_bytes, in_bytes, save):
    if cfg.kind == "tpu":
        res_cols = 6 * lay.Hp if save else 0
        return cm.tpu_compiler_params(cm.tpu_vmem_estimate(lay, cfg, 4, max(in_bytes, out_bytes), res_cols))
    return cm.gpu_compiler_params()


def _scratch(cfg, lay):
    if cfg.kind != "tpu":
        return ()
    from jax.experimental.pallas import tpu as pltpu

    return [pltpu.VMEM((cfg.bt, lay.Hp), F32), pltpu.VMEM((cfg.bt, lay.Hp), F32)]


def fwd_call(cfg, lay, *, reverse, save, interpret, lens, zx, w, h0, c0, out_dtype):
    """The forward ``pallas_call``: ``(ys, hT, cT[, acts, h_prev, c_prev])``."""
    from jax.experimental import pallas as pl

    seq, rows, full = cm.specs(cfg, lay, reverse)
    Tp, Bp, Hp = lay.Tp, lay.Bp, lay.Hp
    n = Hp // cfg.hc
    out_shape = [jax.ShapeDtypeStruct((Tp, Bp, Hp), out_dtype),
                 jax.ShapeDtypeStruct((Bp, Hp), out_dtype),
                 jax.ShapeDtypeStruct((Bp, Hp), out_dtype)]
    out_specs = [seq(Hp), rows(Hp), rows(Hp)]
    if save:
        out_shape += [jax.ShapeDtypeStruct((Tp, Bp, 4 * Hp), F32),
                      jax.ShapeDtypeStruct((Tp, Bp, Hp), F32),
                      jax.ShapeDtypeStruct((Tp, Bp, Hp), F32)]
        out_specs += [seq(4 * Hp), seq(Hp), seq(Hp)]
    kernel = functools.partial(_fwd_kernel, cfg=cfg, n=n, reverse=reverse, save=save, wdtype=w.dtype)
    return pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=cfg.grid,
        in_specs=[rows(1), seq(4 * Hp), full((Hp, 4 * Hp)), rows(Hp), rows(Hp)],
        out_specs=out_specs,
        scratch_shapes=_scratch(cfg, lay),
        compiler_params=_params(cfg, lay, jnp.dtype(out_dtype).itemsize, zx.dtype.itemsize, save),
        interpret=interpret,
        name="jaxgen_lstm_fwd",
    )(lens, zx, w, h0, c0)


def bwd_call(cfg, lay, *, reverse, interpret, lens, dys, acts, cp, wt, dhT, dcT):
    """The backward ``pallas_call``: ``(dz, dh0, dc0)``, all float32."""
    from jax.experimental import pallas as pl

    seq, rows, full = cm.specs(cfg, lay, not reverse)
    Tp, Bp, Hp = lay.Tp, lay.Bp, lay.Hp
    n = Hp // cfg.hc
    kernel = functools.partial(_bwd_kernel, cfg=cfg, n=n, reverse=reverse, wdtype=wt.dtype)
    return pl.pallas_call(
        kernel,
        out_shape=[jax.ShapeDtypeStruct((Tp, Bp, 4 * Hp), F32),
                   jax.ShapeDtypeStruct((Bp, Hp), F32),
                   jax.ShapeDtypeStruct((Bp, Hp), F32)],
        grid=cfg.grid,
        in_specs=[rows(1), seq(Hp), seq(4 * Hp), seq(Hp), full((4 * Hp, Hp)), rows(Hp), rows(Hp)],
        out_specs=[seq(4 * Hp), rows(Hp), rows(Hp)],
        scratch_shapes=_scratch(cfg, lay),
        compiler_params=_params(cfg, lay, 4, 4, True),
        interpret=interpret,
        name="jaxgen_lstm_bwd",
    )(lens, dys, acts, cp, wt, dhT, dcT)


# --------------------------------------------------------------------------- jnp mirrors
# The same computation in plain jnp on the padded layout (lax.scan). Used where a
# backend cannot take the kernel (weights too large for VMEM, hidden too large
# for the Triton unrolling) and in tests as a second reference.


def fwd_scan(lay, *, reverse, save, lens, zx, w, h0, c0, out_dtype):
    wdtype = w.dtype

    def step(carry, inp):
        h, c = carry
        zx_t, t = inp
        m = t < lens
        z = zx_t.astype(F32) + cm.dot(h, w, wdtype)
        zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
        i, f, g, o = _sigmoid(zi), _sigmoid(zf), jnp.tanh(zg), _sigmoid(zo)
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        y = jnp.where(m, h_new, 0.0).astype(out_dtype)
        res = (jnp.concatenate([i, f, g, o], -1), h, c) if save else ()
        return (jnp.where(m, h_new, h), jnp.where(m, c_new, c)), (y, res)

    (h, c), (ys, res) = jax.lax.scan(
        step, (h0.astype(F32), c0.astype(F32)), (zx, jnp.arange(lay.Tp)), reverse=reverse)
    return (ys, h.astype(out_dtype), c.astype(out_dtype), *res)


def bwd_scan(lay, *, reverse, lens, dys, acts, cp, wt, dhT, dcT):
    wdtype = wt.dtype

    def step(carry, inp):
        dh, dc = carry
        dy, a, cp_t, t = inp
        m = t < lens
        i, f, g, o = jnp.split(a, 4, axis=-1)
        tc = jnp.tanh(f * cp_t + i * g)
        dh_new = jnp.where(m, dh + dy.astype(F32), 0.0)
        dc_new = jnp.where(m, dc, 0.0) + dh_new * o * (1.0 - tc * tc)
        dz = jnp.concatenate([dc_new * g * i * (1 - i), dc_new * cp_t * f * (1 - f),
                              dc_new * i * (1 - g * g), dh_new * tc * o * (1 - o)], -1)
        return (jnp.where(m, cm.dot(dz, wt, wdtype), dh), jnp.where(m, dc_new * f, dc)), dz

    (dh, dc), dz = jax.lax.scan(step, (dhT.astype(F32), dcT.astype(F32)),
                                (dys, acts, cp, jnp.arange(lay.Tp)), reverse=not reverse)
    return dz, dh, dc


# --------------------------------------------------------------------------- dispatch by platform


def _tpu_fits(lay, save):
    cfg = cm.tpu_config(lay)
    return cm.tpu_vmem_estimate(lay, cfg, 4, 4, 6 * lay.Hp if save else 0) <= cm.TPU_VMEM_BUDGET


def _gpu_fits(lay):
    return lay.Hp <= cm.GPU_MAX_HIDDEN


def _by_platform(kernel_fn, scan_fn, lay, tpu_ok, gpu_ok, *args):
    """``lax.platform_dependent`` over the platform being *lowered for*:
    cpu -> interpreted kernel (TPU tiling), tpu -> Mosaic, cuda/rocm -> Triton."""
    tpu_cfg, gpu_cfg = cm.tpu_config(lay), cm.gpu_config(lay)
    return jax.lax.platform_dependent(
        *args,
        cpu=lambda *a: kernel_fn(tpu_cfg, True, *a),
        tpu=(lambda *a: kernel_fn(tpu_cfg, False, *a)) if tpu_ok else scan_fn,
        cuda=(lambda *a: kernel_fn(gpu_cfg, False, *a)) if gpu_ok else scan_fn,
        rocm=(lambda *a: kernel_fn(gpu_cfg, False, *a)) if gpu_ok else scan_fn,
    )


def forward(lay, reverse, save, lens, zx, w, h0, c0, out_dtype, *, force=None):
    """Forward on the padded layout. ``force=(kind, interpret)`` skips the platform switch (tests)."""
    def kern(cfg, interpret, lens, zx, w, h0, c0):
        return tuple(fwd_call(cfg, lay, reverse=reverse, save=save, interpret=interpret, lens=lens,
                              zx=zx, w=w, h0=h0, c0=c0, out_dtype=out_dtype))

    def scan(lens, zx, w, h0, c0):
        return fwd_scan(lay, reverse=reverse, save=save, lens=lens, zx=zx, w=w, h0=h0, c0=c0,
                        out_dtype=out_dtype)

    args = (lens, zx, w, h0, c0)
    if force is not None:
        return _forced(force, lay, kern, scan, args)
    return _by_platform(kern, scan, lay, _tpu_fits(lay, save), _gpu_fits(lay), *args)


def backward(lay, reverse, lens, dys, acts, cp, wt, dhT, dcT, *, force=None):
    def kern(cfg, interpret, *a):
        return tuple(bwd_call(cfg, lay, reverse=reverse, interpret=interpret,
                              **dict(zip(("lens", "dys", "acts", "cp", "wt", "dhT", "dcT"), a))))

    def scan(*a):
        return bwd_scan(lay, reverse=reverse,
                        **dict(zip(("lens", "dys", "acts", "cp", "wt", "dhT", "dcT"), a)))

    args = (lens, dys, acts, cp, wt, dhT, dcT)
    if force is not None:
        return _forced(force, lay, kern, scan, args)
    return _by_platform(kern, scan, lay, _tpu_fits(lay, True), _gpu_fits(lay), *args)


def _forced(force, lay, kern, scan, args):
    kind, interpret = force
    if kind == "scan":
        return scan(*args)
    cfg = cm.tpu_config(lay) if kind == "tpu" else cm.gpu_config(lay)
    return kern(cfg, interpret, *args)


# --------------------------------------------------------------------------- custom_vjp


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def lstm_padded(lay, reverse, force, lens, zx, w, h0, c0):
    """``(ys, hT, cT)`` on the padded layout, differentiable w.r.t. ``zx, w, h0, c0``.

    All four share one dtype (the caller casts), which is also the output dtype.
    """
    ys, hT, cT = forward(lay, reverse, False, lens, zx, w, h0, c0, w.dtype, force=force)
    return ys, hT, cT


def _lstm_padded_fwd(lay, reverse, force, lens, zx, w, h0, c0):
    ys, hT, cT, acts, hp, cp = forward(lay, reverse, True, lens, zx, w, h0, c0, w.dtype, force=force)
    res = (lens, w, acts, hp, cp)
    return (ys, hT, cT), res


def _lstm_padded_bwd(lay, reverse, force, res, cts):
    lens, w, acts, hp, cp = res
    dys, dhT, dcT = cts
    dz, dh0, dc0 = backward(lay, reverse, lens, dys, acts, cp, w.T, dhT, dcT, force=force)
    # One [Hp, Tp*Bp] x [Tp*Bp, 4Hp] GEMM for the recurrent weight gradient.
    dw = jnp.einsum("tbh,tbg->hg", hp, dz, precision=jax.lax.Precision.HIGHEST,
                    preferred_element_type=F32)
    dt = w.dtype
    return (None, dz.astype(dt), dw.astype(dt), dh0.astype(dt), dc0.astype(dt))


lstm_padded.defvjp(_lstm_padded_fwd, _lstm_padded_bwd)
