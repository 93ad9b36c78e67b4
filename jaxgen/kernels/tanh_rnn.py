"""Fused simple-RNN sequence kernel (Pallas): ``h' = act(zx[t] + h @ W_hh)``.

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

from . import _common as cm
from .lstm import _by_platform, _chunked_dot, _forced, _gpu_fits, _scratch

F32 = jnp.float32
_ACT = {
    "tanh": (jnp.tanh, lambda y: 1.0 - y * y),
    "sigmoid": (jax.nn.sigmoid, lambda y: y * (1.0 - y)),
    "relu": (lambda z: jnp.maximum(z, 0.0), lambda y: jnp.where(y > 0, 1.0, 0.0)),
    "identity": (lambda z: z, lambda y: jnp.ones_like(y)),
}


def _fwd_kernel(lens_ref, zx_ref, w_ref, h0_ref, ys_ref, hT_ref, *rest,
                cfg, n, reverse, save, activation, wdtype):
    from jax.experimental import pallas as pl

    if save:
        hp_ref, hn_ref, *scratch = rest
    else:
        scratch = rest
    act = _ACT[activation][0]
    col = functools.partial(cm.col, cfg)
    j = cm.time_block_id(cfg)
    if cfg.kind == "tpu":
        (h_s,) = scratch

        @pl.when(j == 0)
        def _():
            h_s[...] = h0_ref[...].astype(F32)

        h = (h_s[...],)
    else:
        h = tuple(h0_ref[:, col(q)].astype(F32) for q in range(n))
    lens = lens_ref[...]

    def step(s, h):
        t, ls = cm.time_index(cfg, reverse, j, s)
        m = t < lens
        z = [zx_ref[ls, :, col(q)].astype(F32) + _chunked_dot(h, w_ref, col, q, n, wdtype)
             for q in range(n)]
        out = []
        for q in range(n):
            h_new = act(z[q])
            if save:
                hp_ref[ls, :, col(q)] = h[q]
                hn_ref[ls, :, col(q)] = h_new
            ys_ref[ls, :, col(q)] = jnp.where(m, h_new, 0.0).astype(ys_ref.dtype)
            out.append(jnp.where(m, h_new, h[q]))
        return tuple(out)

    h = jax.lax.fori_loop(0, cfg.tt, step, h)
    if cfg.kind == "tpu":
        h_s[...] = h[0]

        @pl.when(j == cfg.nt - 1)
        def _():
            hT_ref[...] = h[0].astype(hT_ref.dtype)
    else:
        for q in range(n):
            hT_ref[:, col(q)] = h[q].astype(hT_ref.dtype)


def _bwd_kernel(lens_ref, dys_ref, hn_ref, wt_ref, dhT_ref, dz_ref, dh0_ref, *scratch,
                cfg, n, reverse, activation, wdtype):
    from jax.experimental import pallas as pl

    dact = _ACT[activation][1]
    col = functools.partial(cm.col, cfg)
    j = cm.time_block_id(cfg)
    if cfg.kind == "tpu":
        (dh_s,) = scratch

        @pl.when(j == 0)
        def _():
            dh_s[...] = dhT_ref[...].astype(F32)

        dh = (dh_s[...],)
    else:
        dh = tuple(dhT_ref[:, col(q)].astype(F32) for q in range(n))
    lens = lens_ref[...]

    def step(s, dh):
        t, ls = cm.time_index(cfg, not reverse, j, s)
        m = t < lens
        dz = []
        for q in range(n):
            dh_new = jnp.where(m, dh[q] + dys_ref[ls, :, col(q)].astype(F32), 0.0)
            d = dh_new * dact(hn_ref[ls, :, col(q)])
            dz_ref[ls, :, col(q)] = d
            dz.append(d)
        return tuple(jnp.where(m, _chunked_dot(dz, wt_ref, col, p, n, wdtype), dh[p])
                     for p in range(n))

    dh = jax.lax.fori_loop(0, cfg.tt, step, dh)
    if cfg.kind == "tpu":
        dh_s[...] = dh[0]

        @pl.when(j == cfg.nt - 1)
        def _():
            dh0_ref[...] = dh[0]
    else:
        for q in range(n):
            dh0_ref[:, col(q)] = dh[q]


def _params(cfg, lay, nbytes, save):
    if cfg.kind == "tpu":
        est = cm.tpu_vmem_estimate(lay, cfg, 1, nbytes, 2 * lay.Hp if save else 0)
        return cm.tpu_compiler_params(est)
    return cm.gpu_compiler_params()


def fwd_call(cfg, lay, *, reverse, save, activation, interpret, lens, zx, w, h0):
    from jax.experimental import pallas as pl

    seq, rows, full = cm.specs(cfg, lay, reverse)
    Tp, Bp, Hp = lay.Tp, lay.Bp, lay.Hp
    dt = w.dtype
    out_shape = [jax.ShapeDtypeStruct((Tp, Bp, Hp), dt), jax.ShapeDtypeStruct((Bp, Hp), dt)]
    out_specs = [seq(Hp), rows(Hp)]
    if save:
        out_shape += [jax.ShapeDtypeStruct((Tp, Bp, Hp), F32)] * 2
        out_specs += [seq(Hp), seq(Hp)]
    kernel = functools.partial(_fwd_kernel, cfg=cfg, n=Hp // cfg.hc, reverse=reverse, save=save,
                               activation=activation, wdtype=dt)
    return pl.pallas_call(
        kernel, out_shape=out_shape, grid=cfg.grid,
        in_specs=[rows(1), seq(Hp), full((Hp, Hp)), rows(Hp)], out_specs=out_specs,
        scratch_shapes=_scratch(cfg, lay)[:1], compiler_params=_params(cfg, lay, dt.itemsize, save),
        interpret=interpret, name="jaxgen_rnn_fwd",
    )(lens, zx, w, h0)


def bwd_call(cfg, lay, *, reverse, activation, interpret, lens, dys, hn, wt, dhT):
    from jax.experimental import pallas as pl

    seq, rows, full = cm.specs(cfg, lay, not reverse)
    Tp, Bp, Hp = lay.Tp, lay.Bp, lay.Hp
    kernel = functools.partial(_bwd_kernel, cfg=cfg, n=Hp // cfg.hc, reverse=reverse,
                               activation=activation, wdtype=wt.dtype)
    return pl.pallas_call(
        kernel,
        out_shape=[jax.ShapeDtypeStruct((Tp, Bp, Hp), F32), jax.ShapeDtypeStruct((Bp, Hp), F32)],
        grid=cfg.grid, in_specs=[rows(1), seq(Hp), seq(Hp), full((Hp, Hp)), rows(Hp)],
        out_specs=[seq(Hp), rows(Hp)], scratch_shapes=_scratch(cfg, lay)[:1],
        compiler_params=_params(cfg, lay, 4, True), interpret=interpret, name="jaxgen_rnn_bwd",
    )(lens, dys, hn, wt, dhT)


def fwd_scan(lay, *, reverse, save, activation, lens, zx, w, h0):
    act = _ACT[activation][0]

    def step(h, inp):
        zx_t, t = inp
        m = t < lens
        h_new = act(zx_t.astype(F32) + cm.dot(h, w, w.dtype))
        res = (h, h_new) if save else ()
        return jnp.where(m, h_new, h), (jnp.where(m, h_new, 0.0).astype(w.dtype), res)

    h, (ys, res) = jax.lax.scan(step, h0.astype(F32), (zx, jnp.arange(lay.Tp)), reverse=reverse)
    return (ys, h.astype(w.dtype), *res)


def bwd_scan(lay, *, reverse, activation, lens, dys, hn, wt, dhT):
    dact = _ACT[activation][1]

    def step(dh, inp):
        dy, hn_t, t = inp
        m = t < lens
        dz = jnp.where(m, dh + dy.astype(F32), 0.0) * dact(hn_t)
        return jnp.where(m, cm.dot(dz, wt, wt.dtype), dh), dz

    dh, dz = jax.lax.scan(step, dhT.astype(F32), (dys, hn, jnp.arange(lay.Tp)), reverse=not reverse)
    return dz, dh


def _tpu_fits(lay, save):
    cfg = cm.tpu_config(lay)
    return cm.tpu_vmem_estimate(lay, cfg, 1, 4, 2 * lay.Hp if save else 0) <= cm.TPU_VMEM_BUDGET


def forward(lay, reverse, save, activation, lens, zx, w, h0, *, force=None):
    def kern(cfg, interpret, lens, zx, w, h0):
        return tuple(fwd_call(cfg, lay, reverse=reverse, save=save, activation=activation,
                              interpret=interpret, lens=lens, zx=zx, w=w, h0=h0))

    def scan(lens, zx, w, h0):
        return fwd_scan(lay, reverse=reverse, save=save, activation=activation, lens=lens, zx=zx,
                        w=w, h0=h0)

    args = (lens, zx, w, h0)
    if force is not None:
        return _forced(force, lay, kern, scan, args)
    return _by_platform(kern, scan, lay, _tpu_fits(lay, save), _gpu_fits(lay), *args)


def backward(lay, reverse, activation, lens, dys, hn, wt, dhT, *, force=None):
    def kern(cfg, interpret, lens, dys, hn, wt, dhT):
        return tuple(bwd_call(cfg, lay, reverse=reverse, activation=activation, interpret=interpret,
                              lens=lens, dys=dys, hn=hn, wt=wt, dhT=dhT))

    def scan(lens, dys, hn, wt, dhT):
        return bwd_scan(lay, reverse=reverse, activation=activation, lens=lens, dys=dys, hn=hn,
                        wt=wt, dhT=dhT)

    args = (lens, dys, hn, wt, dhT)
    if force is not None:
        return _forced(force, lay, kern, scan, args)
    return _by_platform(kern, scan, lay, _tpu_fits(lay, True), _gpu_fits(lay), *args)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def rnn_padded(lay, reverse, activation, force, lens, zx, w, h0):
    """``(ys, hT)`` on the padded layout; ``zx, w, h0`` share one dtype."""
    ys, hT = forward(lay, reverse, False, activation, lens, zx, w, h0, force=force)
    return ys, hT


def _rnn_padded_fwd(lay, reverse, activation, force, lens, zx, w, h0):
    ys, hT, hp, hn = forward(lay, reverse, True, activation, lens, zx, w, h0, force=force)
    return (ys, hT), (lens, w, hp, hn)


def _rnn_padded_bwd(lay, reverse, activation, force, res, cts):
    lens, w, hp, hn = res
    dys, dhT = cts
    dz, dh0 = backward(lay, reverse, activation, lens, dys, hn, w.T, dhT, force=force)
    dw = jnp.einsum("tbh,tbg->hg", hp, dz, precision=jax.lax.Precision.HIGHEST,
                    preferred_element_type=F32)
    dt = w.dtype
    return None, dz.astype(dt), dw.astype(dt), dh0.astype(dt)


rnn_padded.defvjp(_rnn_padded_fwd, _rnn_padded_bwd)
