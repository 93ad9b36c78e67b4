"""The public kernel entry points: input checks, padding, the platform dispatch and the
custom-VJP wiring of the kernel bodies in :mod:`jaxgen.kernels.lstm` and
:mod:`jaxgen.kernels.simple_rnn`.

Tests reach one tiling directly, on any machine, through the private
``_lstm_sequence(..., force=(kind, interpret))`` and ``_rnn_sequence``: ``kind`` is ``"tpu"``,
``"gpu"`` (that tiling's kernel, interpreted when ``interpret``) or ``"scan"`` (the jnp mirror).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxgen import recurrence
from jaxgen.kernels import common, lstm, simple_rnn
from jaxgen.kernels.common import F32, BlockSizes

# What mode="auto" runs, per lowering platform. cpu: the compiled C++ loops of jaxgen.native
# (mode="native") for the LSTM, 1.35x the scan path's train step at 2 x 256, batch 32, seq 64
# (benchmarks/results/rnn_step.md), the scan for the simple RNN (Pallas interpret mode is far
# slower than both). cuda: measured on an H200 (benchmarks/results/gpu/gpu_check.md): the Triton
# kernel's forward at T 500, B 64, H 128 took 205 ms against the scan's 4.2 ms (one program steps
# through time, so the kernel is latency-bound); rocm runs the same Triton kernel. tpu: not
# measured.
AUTO = {"cpu": "native", "tpu": "pallas", "cuda": "scan", "rocm": "scan"}


# --------------------------------------------------------------------------- public entry points


def lstm_sequence(params, zx, carry, *, mode="pallas", reverse=False, lengths=None):
    """Fused LSTM over the projected input ``zx`` ``[T, B, 4H]`` (gate order i, f, g, o).

    Same semantics as ``rnn.lstm(..., mode="scan")`` on the same ``zx``:
    ``reverse`` runs from ``t = T-1`` down to 0; ``lengths`` ``[B]`` masks
    right-padded steps (the carry does not change, the output is zero).

    Args:
      params: ``{"w_hh": [H, 4H], ...}`` (other entries are ignored).
      zx: ``[T, B, 4H]`` (or ``[T, 4H]`` for one sequence).
      carry: ``(h0, c0)``, each ``[B, H]`` (or ``[H]``).
      mode: ``"pallas"`` or ``"auto"`` (see :mod:`jaxgen.kernels`). ``"pallas"`` warns once
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
    params = {"w_hh": jnp.asarray(params["w_hh"])}
    _check_shapes(zx, h0, params["w_hh"], lstm.GATES, "lstm_sequence")
    if c0.shape != h0.shape:
        raise ValueError(f"lstm_sequence: h0 and c0 shapes differ: {h0.shape} vs {c0.shape}")
    options = dict(reverse=reverse, lengths=lengths)
    if mode == "auto":
        from jaxgen import native

        return _auto(
            functools.partial(_lstm_sequence, warn=False, **options),
            functools.partial(recurrence.lstm_scan, **options),
            params,
            zx,
            (h0, c0),
            native_fn=functools.partial(native.lstm_sequence, warn=False, **options),
        )
    return _lstm_sequence(params, zx, (h0, c0), **options)


def rnn_sequence(
    params, zx, carry, *, mode="pallas", activation="tanh", reverse=False, lengths=None
):
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
    if activation not in simple_rnn.ACTIVATIONS:
        choices = tuple(simple_rnn.ACTIVATIONS)
        raise ValueError(f"unknown activation {activation!r}; choose one of {choices}")
    h0 = jnp.asarray(carry)
    zx = jnp.asarray(zx)
    params = {"w_hh": jnp.asarray(params["w_hh"])}
    _check_shapes(zx, h0, params["w_hh"], simple_rnn.GATES, "rnn_sequence")
    options = dict(activation=activation, reverse=reverse, lengths=lengths)
    if mode == "auto":
        return _auto(
            functools.partial(_rnn_sequence, warn=False, **options),
            functools.partial(recurrence.rnn_scan, **options),
            params,
            zx,
            h0,
        )
    return _rnn_sequence(params, zx, h0, **options)


def _lstm_sequence(params, zx, carry, *, reverse=False, lengths=None, warn=True, force=None):
    """:func:`lstm_sequence` on the kernel path (no ``mode="auto"`` table)."""
    w = params["w_hh"]
    layout, arrays, unpad = _padded_call(
        "lstm_sequence", lstm, zx, w, carry, lengths, warn and force is None
    )
    ys, h_final, c_final = _lstm_padded(layout, bool(reverse), force, *arrays)
    ys, (h_final, c_final) = unpad(ys, h_final, c_final)
    return (h_final, c_final), ys


def _rnn_sequence(
    params, zx, carry, *, activation="tanh", reverse=False, lengths=None, warn=True, force=None
):
    """:func:`rnn_sequence` on the kernel path (no ``mode="auto"`` table)."""
    w = params["w_hh"]
    layout, arrays, unpad = _padded_call(
        "rnn_sequence", simple_rnn, zx, w, (carry,), lengths, warn and force is None
    )
    ys, h_final = _rnn_padded(layout, bool(reverse), activation, force, *arrays)
    ys, (h_final,) = unpad(ys, h_final)
    return h_final, ys


# --------------------------------------------------------------------------- checks and padding


def _check_mode(mode):
    if mode not in ("pallas", "auto"):
        raise ValueError(f"mode must be 'pallas' or 'auto' for the fused kernels, got {mode!r}")


def _check_shapes(zx, h0, w, gates, name):
    if w.ndim != 2 or w.shape[1] != gates * w.shape[0]:
        raise ValueError(f"{name}: w_hh must be [H, {gates}*H], got {tuple(w.shape)}")
    H = w.shape[0]
    if zx.ndim not in (2, 3) or zx.shape[-1] != gates * H:
        raise ValueError(
            f"{name}: zx must be time-major [T, B, {gates}*H] (or [T, {gates}*H]) with H={H}, "
            f"got {tuple(zx.shape)}"
        )
    if zx.shape[0] == 0:
        raise ValueError(f"{name}: empty sequence (T = 0)")
    if h0.shape != zx.shape[1:-1] + (H,):
        raise ValueError(f"{name}: carry must be {zx.shape[1:-1] + (H,)}, got {tuple(h0.shape)}")


def _padded_call(name, kernel, zx, w, carry, lengths, warn):
    """Pad one call to the kernels' layout (an unbatched call becomes a batch of one).

    Returns the padded layout, the padded arrays ``(lengths, zx, w, *carry)`` and
    ``unpad(ys, *finals) -> (ys, finals)``, which cuts the padding (and the added batch axis)
    off the outputs.
    """
    single = zx.ndim == 2
    if single:
        zx, carry = zx[:, None], tuple(c[None] for c in carry)
        if lengths is not None:
            lengths = jnp.reshape(jnp.asarray(lengths), (1,))
    dtype = jnp.result_type(zx.dtype, w.dtype, *(c.dtype for c in carry))
    T, B, _ = zx.shape
    H = w.shape[0]
    layout = common.padded_layout(T, B, H)
    if warn:
        _warn_fallback(name, layout, kernel.GATES, kernel.RESIDUALS * layout.Hp)
    gates, Tp, Bp, Hp = kernel.GATES, layout.Tp, layout.Bp, layout.Hp
    arrays = (
        common.padded_lengths(lengths, layout),
        common.pad_to(common.pad_gates(zx.astype(dtype), gates, H, Hp), (Tp, Bp, gates * Hp)),
        common.pad_to(common.pad_gates(w.astype(dtype), gates, H, Hp), (Hp, gates * Hp)),
        *(common.pad_to(c.astype(dtype), (Bp, Hp)) for c in carry),
    )

    def unpad(ys, *finals):
        ys, finals = ys[:T, :B, :H], [final[:B, :H] for final in finals]
        if single:
            ys, finals = ys[:, 0], [final[0] for final in finals]
        return ys, finals

    return layout, arrays, unpad


def _warn_fallback(name, layout, gates, residual_cols):
    """``mode="pallas"``: warn once per reason where the default backend's branch runs
    ``lax.scan``."""
    platform = common.target_platform()
    shape = f"T={layout.T}, B={layout.B}, H={layout.H}"
    budget = common.TPU_VMEM_BUDGET / 2**20
    if platform == "tpu":
        block_sizes = BlockSizes.tpu(layout)
        if not common.tpu_fits(layout, gates, 0):
            estimate = common.tpu_vmem_estimate(layout, block_sizes, gates, 4, 0) / 2**20
            common.warn_once(
                f"{name}:tpu-vmem",
                (
                    f"{name}: mode='pallas' runs lax.scan, not the kernel, on TPU for {shape}: its "
                    f"estimated VMEM ({estimate:.0f} MiB) exceeds the {budget:.0f} MiB budget "
                    "(warned once)"
                ),
            )
        elif not common.tpu_fits(layout, gates, residual_cols):
            estimate = common.tpu_vmem_estimate(layout, block_sizes, gates, 4, residual_cols)
            common.warn_once(
                f"{name}:tpu-vmem-grad",
                (
                    f"{name}: mode='pallas' on TPU for {shape} runs lax.scan, not the kernel, when "
                    f"differentiated: with its saved residuals the estimated VMEM "
                    f"({estimate / 2**20:.0f} MiB) exceeds the {budget:.0f} MiB budget "
                    "(warned once)"
                ),
            )
    elif platform == "gpu" and not common.gpu_fits(layout):
        common.warn_once(
            f"{name}:gpu-hidden",
            (
                f"{name}: mode='pallas' runs lax.scan, not the kernel, on GPU for {shape}: "
                "the Triton "
                f"kernel takes padded hidden sizes up to {common.GPU_MAX_HIDDEN}, this one is "
                f"{layout.Hp} (warned once)"
            ),
        )


# --------------------------------------------------------------------------- dispatch


def _auto(kernel_fn, reference_fn, *args, native_fn=None):
    """``mode="auto"``: per lowering platform, the Pallas kernel, the native CPU kernel (where the
    function has one) or the scan reference (see ``AUTO``)."""

    def pick(platform):
        if AUTO[platform] == "pallas":
            return kernel_fn
        if AUTO[platform] == "native" and native_fn is not None:
            return native_fn
        return reference_fn

    return jax.lax.platform_dependent(*args, **{p: pick(p) for p in AUTO})


def _dispatch(kernel_call, scan, layout, gates, residual_cols, force, *args):
    """``kernel_call(block_sizes, interpret, *args)`` or ``scan(*args)``, by the platform being
    *lowered for* (``lax.platform_dependent``): cpu -> interpreted kernel (TPU tiling),
    tpu -> Mosaic, cuda/rocm -> Triton; the scan where the shape does not fit that kernel.
    ``force=(kind, interpret)`` skips the switch (tests)."""
    if force is not None:
        kind, interpret = force
        if kind == "scan":
            return scan(*args)
        return kernel_call(BlockSizes.of_kind(kind, layout), interpret, *args)
    tpu_blocks, gpu_blocks = BlockSizes.tpu(layout), BlockSizes.gpu(layout)
    tpu = scan
    if common.tpu_fits(layout, gates, residual_cols):
        tpu = functools.partial(kernel_call, tpu_blocks, False)
    gpu = functools.partial(kernel_call, gpu_blocks, False) if common.gpu_fits(layout) else scan
    return jax.lax.platform_dependent(
        *args, cpu=functools.partial(kernel_call, tpu_blocks, True), tpu=tpu, cuda=gpu, rocm=gpu
    )


def _weight_gradient(h_prev, dz):
    """``sum_t h_prev[t]^T dz[t]``: one ``[Hp, Tp*Bp] x [Tp*Bp, G*Hp]`` GEMM over all steps."""
    return jnp.einsum(
        "tbh,tbg->hg", h_prev, dz, precision=jax.lax.Precision.HIGHEST, preferred_element_type=F32
    )


# --------------------------------------------------------------------------- LSTM custom_vjp


def _lstm_forward(layout, reverse, save_residuals, force, *args):
    options = dict(layout=layout, reverse=reverse, save_residuals=save_residuals)
    residual_cols = lstm.RESIDUALS * layout.Hp if save_residuals else 0
    return _dispatch(
        functools.partial(lstm.forward_call, **options),
        functools.partial(lstm.forward_scan, **options),
        layout,
        lstm.GATES,
        residual_cols,
        force,
        *args,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _lstm_padded(layout, reverse, force, lengths, zx, w, h0, c0):
    """``(ys, h_final, c_final)`` on the padded layout, differentiable w.r.t. ``zx, w, h0, c0``.

    All four share one dtype (the caller casts), which is also the output dtype.
    """
    return _lstm_forward(layout, reverse, False, force, lengths, zx, w, h0, c0)


def _lstm_padded_fwd(layout, reverse, force, lengths, zx, w, h0, c0):
    ys, h_final, c_final, gates, h_prev, c_prev = _lstm_forward(
        layout, reverse, True, force, lengths, zx, w, h0, c0
    )
    return (ys, h_final, c_final), (lengths, w, gates, h_prev, c_prev)


def _lstm_padded_bwd(layout, reverse, force, residuals, cotangents):
    lengths, w, gates, h_prev, c_prev = residuals
    dys, dh_final, dc_final = cotangents
    options = dict(layout=layout, reverse=reverse)
    dz, dh0, dc0 = _dispatch(
        functools.partial(lstm.backward_call, **options),
        functools.partial(lstm.backward_scan, **options),
        layout,
        lstm.GATES,
        lstm.RESIDUALS * layout.Hp,
        force,
        lengths,
        dys,
        gates,
        c_prev,
        w.T,
        dh_final,
        dc_final,
    )
    dw = _weight_gradient(h_prev, dz)
    dtype = w.dtype
    return None, dz.astype(dtype), dw.astype(dtype), dh0.astype(dtype), dc0.astype(dtype)


_lstm_padded.defvjp(_lstm_padded_fwd, _lstm_padded_bwd)


# --------------------------------------------------------------------------- RNN custom_vjp


def _rnn_forward(layout, reverse, activation, save_residuals, force, *args):
    options = dict(
        layout=layout, reverse=reverse, save_residuals=save_residuals, activation=activation
    )
    residual_cols = simple_rnn.RESIDUALS * layout.Hp if save_residuals else 0
    return _dispatch(
        functools.partial(simple_rnn.forward_call, **options),
        functools.partial(simple_rnn.forward_scan, **options),
        layout,
        simple_rnn.GATES,
        residual_cols,
        force,
        *args,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _rnn_padded(layout, reverse, activation, force, lengths, zx, w, h0):
    """``(ys, h_final)`` on the padded layout; ``zx, w, h0`` share one dtype."""
    return _rnn_forward(layout, reverse, activation, False, force, lengths, zx, w, h0)


def _rnn_padded_fwd(layout, reverse, activation, force, lengths, zx, w, h0):
    ys, h_final, h_prev, h_new = _rnn_forward(
        layout, reverse, activation, True, force, lengths, zx, w, h0
    )
    return (ys, h_final), (lengths, w, h_prev, h_new)


def _rnn_padded_bwd(layout, reverse, activation, force, residuals, cotangents):
    lengths, w, h_prev, h_new = residuals
    dys, dh_final = cotangents
    options = dict(layout=layout, reverse=reverse, activation=activation)
    dz, dh0 = _dispatch(
        functools.partial(simple_rnn.backward_call, **options),
        functools.partial(simple_rnn.backward_scan, **options),
        layout,
        simple_rnn.GATES,
        simple_rnn.RESIDUALS * layout.Hp,
        force,
        lengths,
        dys,
        h_new,
        w.T,
        dh_final,
    )
    dw = _weight_gradient(h_prev, dz)
    dtype = w.dtype
    return None, dz.astype(dtype), dw.astype(dtype), dh0.astype(dtype)


_rnn_padded.defvjp(_rnn_padded_fwd, _rnn_padded_bwd)
