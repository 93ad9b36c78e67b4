"""Fused recurrent sequence kernels (Pallas), forward and backward.

Public entry points (called by :func:`jaxgen.rnn.lstm` and :func:`jaxgen.rnn.rnn`
for ``mode="pallas"`` and ``mode="auto"``):

* :func:`lstm_sequence` ``(params, zx, (h0, c0)) -> ((h_T, c_T), ys)``
* :func:`rnn_sequence` ``(params, zx, h0) -> (h_T, ys)``

with ``zx`` the already-projected input ``x @ w_ih + b``, time-major
``[T, B, G*H]``; each has a plain-jnp reference of the same signature in
:mod:`jaxgen.kernels.reference`. See ``docs/kernels.md`` for the design.

Which implementation runs is decided by the platform the program is *lowered
for* (``jax.lax.platform_dependent``), not by the machine tracing it, so
``jax.export`` for TPU or CUDA from a CPU-only machine holds the real kernel:

==========  ===================================  ==========================
platform    ``mode="pallas"``                    ``mode="auto"``
==========  ===================================  ==========================
cpu         kernel in Pallas interpret mode      ``lax.scan`` path
            (correct, slow: for tests)
tpu         Mosaic TPU kernel                    kernel
cuda/rocm   Triton kernel                        kernel
==========  ===================================  ==========================

``AUTO`` records what ``mode="auto"`` picks: a fixed table, not a measurement
made at run time. On CPU it is the scan path, because interpret mode was
measured orders of magnitude slower (``benchmarks/results/kernels.md``). The
GPU and TPU entries are the *intended* choice and are not backed by any
measurement on that hardware: run ``benchmarks/gpu_check.sh`` on a GPU and set
``AUTO["cuda"]`` from its result.

Where a shape does not fit a backend's kernel (TPU: the resident weights and
blocks exceed the VMEM budget; GPU: padded hidden size above 1024) that
backend's branch runs the same computation as a ``lax.scan`` instead. With
``mode="pallas"`` this issues a ``UserWarning`` (once per reason and process,
at trace time) when the default backend is that platform; ``mode="auto"``
falls back silently (that is its contract). Neither mode takes ``unroll=`` or
``backward=`` (:func:`jaxgen.rnn.lstm` warns when they are set).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _common, lstm as _lstm, tanh_rnn as _tanh_rnn
from .reference import lstm_sequence_reference, rnn_sequence_reference

AUTO = {"cpu": "scan", "tpu": "pallas", "cuda": "pallas", "rocm": "pallas"}
_ACTIVATIONS = ("tanh", "sigmoid", "relu", "identity")


def _auto(kernel_fn, reference_fn, *args):
    """``mode="auto"``: per lowering platform, the kernel or the scan reference (see ``AUTO``)."""
    branches = {p: (kernel_fn if AUTO[p] == "pallas" else reference_fn) for p in AUTO}
    return jax.lax.platform_dependent(*args, **branches)


def _check_common(zx, h0, w, gates, name):
    if w.ndim != 2 or w.shape[1] != gates * w.shape[0]:
        raise ValueError(f"{name}: w_hh must be [H, {gates}*H], got {tuple(w.shape)}")
    H = w.shape[0]
    if zx.ndim not in (2, 3) or zx.shape[-1] != gates * H:
        raise ValueError(
            f"{name}: zx must be time-major [T, B, {gates}*H] (or [T, {gates}*H]) with H={H}, "
            f"got {tuple(zx.shape)}")
    if zx.shape[0] == 0:
        raise ValueError(f"{name}: empty sequence (T = 0)")
    if h0.shape != zx.shape[1:-1] + (H,):
        raise ValueError(f"{name}: carry must be {zx.shape[1:-1] + (H,)}, got {tuple(h0.shape)}")


def _warn_fallback(name, lay, tpu_fits, gpu_fits, gates, res_cols):
    """``mode="pallas"``: warn once per reason where the default backend's branch runs ``lax.scan``."""
    plat = _common.target_platform()
    shape = f"T={lay.T}, B={lay.B}, H={lay.H}"
    budget = _common.TPU_VMEM_BUDGET / 2**20
    if plat == "tpu":
        cfg = _common.tpu_config(lay)
        if not tpu_fits(lay, False):
            est = _common.tpu_vmem_estimate(lay, cfg, gates, 4, 0) / 2**20
            _common.warn_once(f"{name}:tpu-vmem", (
                f"{name}: mode='pallas' runs lax.scan, not the kernel, on TPU for {shape}: its estimated VMEM "
                f"({est:.0f} MiB) exceeds the {budget:.0f} MiB budget (warned once)"))
        elif not tpu_fits(lay, True):
            est = _common.tpu_vmem_estimate(lay, cfg, gates, 4, res_cols) / 2**20
            _common.warn_once(f"{name}:tpu-vmem-grad", (
                f"{name}: mode='pallas' on TPU for {shape} runs lax.scan, not the kernel, when differentiated: "
                f"with its saved residuals the estimated VMEM ({est:.0f} MiB) exceeds the {budget:.0f} MiB "
                "budget (warned once)"))
    elif plat == "gpu" and not gpu_fits(lay):
        _common.warn_once(f"{name}:gpu-hidden", (
            f"{name}: mode='pallas' runs lax.scan, not the kernel, on GPU for {shape}: the Triton kernel takes "
            f"padded hidden sizes up to {_common.GPU_MAX_HIDDEN}, this one is {lay.Hp} (warned once)"))


def _check_mode(mode):
    if mode not in ("pallas", "auto"):
        raise ValueError(f"mode must be 'pallas' or 'auto' for the fused kernels, got {mode!r}")


def lstm_sequence(params, zx, carry, *, mode="pallas", reverse=False, lengths=None, _force=None, _warn=True):
    """Fused LSTM over the projected input ``zx`` ``[T, B, 4H]`` (gate order i, f, g, o).

    Same semantics as ``rnn.lstm(..., mode="scan")`` on the same ``zx``:
    ``reverse`` runs from ``t = T-1`` down to 0; ``lengths`` ``[B]`` masks
    right-padded steps (the carry does not change, the output is zero).

    Args:
      params: ``{"w_hh": [H, 4H], ...}`` (other entries are ignored).
      zx: ``[T, B, 4H]`` (or ``[T, 4H]`` for one sequence).
      carry: ``(h0, c0)``, each ``[B, H]`` (or ``[H]``).
      mode: ``"pallas"`` or ``"auto"`` (see the module docstring). ``"pallas"`` warns once
        where the default backend would run ``lax.scan`` for this shape (TPU: VMEM estimate
        above the budget; GPU: padded H above 1024).

    Returns:
      ``((h_T, c_T), ys)`` with ``ys`` ``[T, B, H]``, in the promoted dtype of the inputs.

    Memory: the forward pass saves, per step and batch row, the four
    activated gates and the incoming ``(h, c)``: ``6 * H`` float32 values
    (24 H bytes) on the padded layout (``H`` rounded up to 128, ``B`` to 16),
    i.e. ``24 * Tp * Bp * Hp`` bytes, plus the output ``ys``. The backward
    pass adds ``dz`` ``[Tp, Bp, 4Hp]`` float32 (16 H bytes per step and row),
    live until the weight-gradient GEMM. Without differentiation nothing is saved.
    Compute is float32 for the state and accumulation; bfloat16 inputs feed the
    matrix units as bfloat16.
    """
    _check_mode(mode)
    h0, c0 = (jnp.asarray(a) for a in carry)
    zx = jnp.asarray(zx)
    w = jnp.asarray(params["w_hh"])
    _check_common(zx, h0, w, 4, "lstm_sequence")
    if c0.shape != h0.shape:
        raise ValueError(f"lstm_sequence: h0 and c0 shapes differ: {h0.shape} vs {c0.shape}")
    if mode == "auto" and _force is None:
        return _auto(lambda p, z, c: lstm_sequence(p, z, c, reverse=reverse, lengths=lengths, _warn=False),
                     lambda p, z, c: lstm_sequence_reference(p, z, c, reverse=reverse, lengths=lengths),
                     {"w_hh": w}, zx, (h0, c0))
    single = zx.ndim == 2
    if single:
        zx, h0, c0 = zx[:, None], h0[None], c0[None]
        if lengths is not None:
            lengths = jnp.reshape(jnp.asarray(lengths), (1,))
    dt = jnp.result_type(zx.dtype, w.dtype, h0.dtype, c0.dtype)
    T, B, _ = zx.shape
    H = w.shape[0]
    lay = _common.layout(T, B, H)
    if _warn and _force is None:
        _warn_fallback("lstm_sequence", lay, _lstm._tpu_fits, _lstm._gpu_fits, 4, 6 * lay.Hp)
    lens = _common.padded_lengths(lengths, lay)
    zx_p = _common.pad_to(_common.pad_gates(zx.astype(dt), 4, H, lay.Hp), (lay.Tp, lay.Bp, 4 * lay.Hp))
    w_p = _common.pad_to(_common.pad_gates(w.astype(dt), 4, H, lay.Hp), (lay.Hp, 4 * lay.Hp))
    h0_p = _common.pad_to(h0.astype(dt), (lay.Bp, lay.Hp))
    c0_p = _common.pad_to(c0.astype(dt), (lay.Bp, lay.Hp))
    ys, hT, cT = _lstm.lstm_padded(lay, bool(reverse), _force, lens, zx_p, w_p, h0_p, c0_p)
    ys, hT, cT = ys[:T, :B, :H], hT[:B, :H], cT[:B, :H]
    if single:
        ys, hT, cT = ys[:, 0], hT[0], cT[0]
    return (hT, cT), ys


def rnn_sequence(params, zx, carry, *, mode="pallas", activation="tanh", reverse=False,
                 lengths=None, _force=None, _warn=True):
    """Fused simple RNN ``h' = act(zx[t] + h @ w_hh)`` over ``zx`` ``[T, B, H]``.

    Same semantics as ``rnn.rnn(..., mode="scan")``; returns ``(h_T, ys)``.
    ``activation`` is one of ``tanh`` (default), ``sigmoid``, ``relu``, ``identity``.
    ``mode="pallas"`` warns once where the default backend would run ``lax.scan`` (as
    :func:`lstm_sequence`).

    Memory: the forward pass saves, per step and row, the incoming ``h`` and
    the new ``h`` in float32 (8 H bytes on the padded layout); the backward pass
    adds ``dz`` ``[Tp, Bp, Hp]`` float32.
    """
    _check_mode(mode)
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {_ACTIVATIONS}")
    h0 = jnp.asarray(carry)
    zx = jnp.asarray(zx)
    w = jnp.asarray(params["w_hh"])
    _check_common(zx, h0, w, 1, "rnn_sequence")
    if mode == "auto" and _force is None:
        kw = dict(activation=activation, reverse=reverse, lengths=lengths)
        return _auto(lambda p, z, c: rnn_sequence(p, z, c, _warn=False, **kw),
                     lambda p, z, c: rnn_sequence_reference(p, z, c, **kw),
                     {"w_hh": w}, zx, h0)
    single = zx.ndim == 2
    if single:
        zx, h0 = zx[:, None], h0[None]
        if lengths is not None:
            lengths = jnp.reshape(jnp.asarray(lengths), (1,))
    dt = jnp.result_type(zx.dtype, w.dtype, h0.dtype)
    T, B, _ = zx.shape
    H = w.shape[0]
    lay = _common.layout(T, B, H)
    if _warn and _force is None:
        _warn_fallback("rnn_sequence", lay, _tanh_rnn._tpu_fits, _lstm._gpu_fits, 1, 2 * lay.Hp)
    lens = _common.padded_lengths(lengths, lay)
    zx_p = _common.pad_to(zx.astype(dt), (lay.Tp, lay.Bp, lay.Hp))
    w_p = _common.pad_to(w.astype(dt), (lay.Hp, lay.Hp))
    h0_p = _common.pad_to(h0.astype(dt), (lay.Bp, lay.Hp))
    ys, hT = _tanh_rnn.rnn_padded(lay, bool(reverse), activation, _force, lens, zx_p, w_p, h0_p)
    ys, hT = ys[:T, :B, :H], hT[:B, :H]
    if single:
        ys, hT = ys[:, 0], hT[0]
    return hT, ys


__all__ = ["lstm_sequence", "rnn_sequence", "lstm_sequence_reference", "rnn_sequence_reference", "AUTO"]
