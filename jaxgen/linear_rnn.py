"""Recurrences that run in parallel over time: minGRU, minLSTM and the LRU.

Their state update is *linear* in the state, ``h_t = a_t * h_{t-1} + b_t`` (elementwise), with
``a_t`` and ``b_t`` computed from the input alone. Two such steps compose into one,
``(a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2)``, and that composition is associative, so
``jax.lax.associative_scan`` computes every ``h_t`` in ``O(log T)`` sequential levels instead of
``T`` (Blelloch 1990; Martin & Cundy 2018). Each cell here has two modes with the same numbers:

* ``mode="parallel"`` (the default): the associative scan;
* ``mode="scan"``: ``lax.scan`` over the same step, for checking and for step-by-step
  generation (``*_cell`` is one step);
* ``mode="native"``: the same sequential loop as one compiled CPU kernel
  (:mod:`jaxgen.native`; the fastest on CPU, where the associative scan's extra work does not
  pay; ``lax.scan`` on other platforms and for the LRU's complex state).

The cells, all with the conventions of :mod:`jaxgen.rnn` (time-major ``[T, B, F]`` or token ids
``[T, B]``, ``time_major=False``, ``reverse``, right-padded ``lengths``, input projection hoisted
out of the loop):

* **minGRU** (Feng et al. 2024, "Were RNNs All We Needed?")::

      z = σ(x W_z + b_z);  h~ = g(x W_h + b_h);  h' = (1 - z) * h + z * h~
      g(v) = v + 1/2 for v >= 0, σ(v) below (positive, so the scan can run in log space)

* **minLSTM** (same paper)::

      f = σ(x W_f + b_f);  i = σ(x W_i + b_i);  h~ = g(x W_h + b_h)
      h' = f / (f + i) * h + i / (f + i) * h~

* **LRU** (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long Sequences"): a
  complex diagonal recurrence, ``λ = exp(-exp(ν) + i exp(θ))`` (so ``|λ| < 1`` always),
  normalised input ``γ = sqrt(1 - |λ|²)`` (trained from its initial value)::

      h' = λ ⊙ h + γ ⊙ (x B);   y = Re(h C) + D ⊙ x

  The state is ``N = H / 2`` complex numbers, carried as one real ``[B, H]`` array (real parts,
  then imaginary parts): ``H`` must be even. The output has the input's width.

``log_space=True`` (minGRU, minLSTM) runs the associative scan on ``(log a, log b)`` with
``logaddexp``, as the paper recommends for stability; the default linear form multiplies
numbers in (0, 1) and never divides, so it does not overflow either (measured side by side in
``benchmarks/results/parallel_cells.md``). At padded steps ``a = 1`` and ``b = 0``: the state
does not change and the output is zero, as in :mod:`jaxgen.rnn`.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import recurrence
from jaxgen.recurrence import _check_seq, _check_sizes, _from_batch_major

Array = jax.Array
Params = dict[str, Array]

MODES = ("parallel", "scan", "native")
# Stands for log(0) in log space: finite, so logaddexp's gradient stays finite where both of its
# arguments are "zero" (two padded steps), and far below any real log-value.
_LOG_ZERO = -1e30


# --------------------------------------------------------------------------- the scan


def _compose(first, second):
    a1, b1 = first
    a2, b2 = second
    return a1 * a2, a2 * b1 + b2


def _compose_log(first, second):
    a1, b1 = first
    a2, b2 = second
    return a1 + a2, jnp.logaddexp(a2 + b1, b2)


# Jitted (it inlines under an outer jit): eagerly, the associative scan's many small slices would
# each dispatch and compile on their own.
@functools.partial(jax.jit, static_argnames=("mode", "reverse", "log_space", "unroll"))
def linear_scan(
    a: Array,
    b: Array,
    h0: Array | None = None,
    *,
    mode: str = "parallel",
    reverse: bool = False,
    log_space: bool = False,
    unroll: int = 1,
) -> Array:
    """Every state of ``h_t = a_t * h_{t-1} + b_t`` over axis 0: ``[T, ...] -> [T, ...]``.

    ``a`` broadcasts against ``b``; real or complex. ``h0`` (default zero) is the state before the
    first step (before ``t = T-1`` with ``reverse=True``, which runs from the end).
    ``log_space=True`` takes ``log a`` and ``log b`` (real; ``b > 0``) instead; ``h0`` stays
    linear and may have any sign. ``mode="scan"`` runs ``lax.scan`` (``unroll`` as there),
    ``mode="native"`` the compiled CPU loop (float32; ``lax.scan`` elsewhere).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} for a linear recurrence; choose one of {MODES}")
    a = jnp.broadcast_to(a, jnp.shape(b))
    if mode in ("scan", "native"):
        if log_space:
            a, b = jnp.exp(a), jnp.exp(b)
        h = jnp.zeros(b.shape[1:], b.dtype) if h0 is None else jnp.asarray(h0, b.dtype)
        h = jnp.broadcast_to(h, b.shape[1:])
        scan = functools.partial(_sequential, reverse=reverse, unroll=unroll)
        if mode == "native":
            from jaxgen import native  # deferred: builds the kernel on first use

            return native.linear_sequence(a, b, h, reverse=reverse, scan=scan)
        return scan(a, b, h)
    op = _compose_log if log_space else _compose
    prod, hs = jax.lax.associative_scan(op, (a, b), reverse=reverse, axis=0)
    if log_space:
        prod, hs = jnp.exp(prod), jnp.exp(hs)
    return hs if h0 is None else hs + prod * h0


def _sequential(a, b, h, reverse, unroll):
    def step(h, ab):
        h = ab[0] * h + ab[1]
        return h, h

    return jax.lax.scan(step, h, (a, b), reverse=reverse, unroll=unroll)[1]


def _masked(a, b, lengths, log_space):
    """``a = 1``, ``b = 0`` (in log space ``0`` and ``_LOG_ZERO``) at padded steps."""
    mask = recurrence.length_mask(lengths, b.shape[0])
    if mask is None:
        return a, b, None
    m = mask[..., None]
    one, zero = (0.0, _LOG_ZERO) if log_space else (1.0, 0.0)
    a = jnp.where(m, jnp.broadcast_to(a, b.shape), jnp.asarray(one, b.dtype))
    return a, jnp.where(m, b, jnp.asarray(zero, b.dtype)), m


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(
            f"unknown mode {mode!r}; the parallel-in-time cells take {MODES} "
            "('parallel' is lax.associative_scan, 'scan' the sequential lax.scan, 'native' "
            "the sequential loop as a compiled CPU kernel)"
        )


def _final(hs, reverse):
    return hs[0] if reverse else hs[-1]


# --------------------------------------------------------------------------- minGRU / minLSTM


def g(v: Array) -> Array:
    """The paper's positive candidate activation: ``v + 1/2`` for ``v >= 0``, ``σ(v)`` below."""
    return jnp.where(v >= 0, v + 0.5, jax.nn.sigmoid(v))


def log_g(v: Array) -> Array:
    """``log g(v)``, computed without forming ``g`` (both branches finite everywhere)."""
    return jnp.where(v >= 0, jnp.log(jnp.maximum(v, 0.0) + 0.5), -jax.nn.softplus(-v))


def _linear_init(key, input_size, hidden_size, gates, dtype):
    """PyTorch ``nn.Linear``'s U(-1/sqrt(F), 1/sqrt(F)) for ``w_ih [F, G*H]`` and ``b``."""
    _check_sizes(input_size, hidden_size)
    bound = 1.0 / np.sqrt(input_size)
    k1, k2 = jax.random.split(key)
    shape = (input_size, gates * hidden_size)
    return {
        "w_ih": jax.random.uniform(k1, shape, dtype, -bound, bound),
        "b": jax.random.uniform(k2, (gates * hidden_size,), dtype, -bound, bound),
    }


def mingru_init(key: Array, input_size: int, hidden_size: int, dtype=jnp.float32) -> Params:
    """minGRU parameters: ``w_ih [F, 2H]`` (update gate ``z``, then candidate), ``b [2H]``."""
    return _linear_init(key, input_size, hidden_size, 2, dtype)


def minlstm_init(key: Array, input_size: int, hidden_size: int, dtype=jnp.float32) -> Params:
    """minLSTM parameters: ``w_ih [F, 3H]`` (forget ``f``, input ``i``, candidate), ``b [3H]``."""
    return _linear_init(key, input_size, hidden_size, 3, dtype)


def _mingru_coeffs(zx, log_space):
    k, v = jnp.split(zx, 2, axis=-1)
    if log_space:  # log(1 - z) = -softplus(k), log z = -softplus(-k)
        return -jax.nn.softplus(k), -jax.nn.softplus(-k) + log_g(v)
    z = jax.nn.sigmoid(k)
    return 1.0 - z, z * g(v)


def _minlstm_coeffs(zx, log_space):
    kf, ki, v = jnp.split(zx, 3, axis=-1)
    # f / (f + i) = σ(-d) and i / (f + i) = σ(d) with d = log i - log f.
    d = jax.nn.softplus(-kf) - jax.nn.softplus(-ki)
    if log_space:
        return -jax.nn.softplus(d), -jax.nn.softplus(-d) + log_g(v)
    return jax.nn.sigmoid(-d), jax.nn.sigmoid(d) * g(v)


def _gated(coeffs, params, xs, h0, mode, reverse, lengths, log_space, unroll):
    _check_mode(mode)
    zx = recurrence.input_projection(params, xs)
    a, b = coeffs(zx, log_space)
    a, b, m = _masked(a, b, lengths, log_space)
    hs = linear_scan(a, b, h0, mode=mode, reverse=reverse, log_space=log_space, unroll=unroll)
    # Padded steps leave the state alone, so the last (first, reversed) state is the one after
    # each sequence's last real step.
    return _final(hs, reverse), hs if m is None else jnp.where(m, hs, 0.0)


def _sequence(
    name, coeffs, params, xs, h0, *, mode, log_space, reverse, lengths, time_major, unroll
):
    _check_seq(xs, time_major, lengths)
    if not time_major:
        fn = _SEQUENCES[name]
        return _from_batch_major(
            fn,
            params,
            xs,
            h0,
            mode=mode,
            log_space=log_space,
            reverse=reverse,
            lengths=lengths,
            unroll=unroll,
        )
    return _gated(coeffs, params, xs, h0, mode, reverse, lengths, log_space, unroll)


def mingru(
    params: Params,
    xs: Array,
    h0: Array | None = None,
    *,
    mode: str = "parallel",
    log_space: bool = False,
    reverse: bool = False,
    lengths: Array | None = None,
    time_major: bool = True,
    unroll: int = 1,
):
    """minGRU over ``xs`` ``[T, B, F]`` (or ids ``[T, B]``) -> ``(h_T, hs [T, B, H])``.

    ``mode="parallel"`` (associative scan), ``"scan"`` or ``"native"`` (the sequential loop
    compiled for CPU); ``log_space`` picks the scan's number form (same values). ``h0``
    defaults to zeros. Other arguments as in :func:`jaxgen.rnn.gru`.
    """
    return _sequence(
        "mingru",
        _mingru_coeffs,
        params,
        xs,
        h0,
        mode=mode,
        log_space=log_space,
        reverse=reverse,
        lengths=lengths,
        time_major=time_major,
        unroll=unroll,
    )


def minlstm(
    params: Params,
    xs: Array,
    h0: Array | None = None,
    *,
    mode: str = "parallel",
    log_space: bool = False,
    reverse: bool = False,
    lengths: Array | None = None,
    time_major: bool = True,
    unroll: int = 1,
):
    """minLSTM over ``xs`` ``[T, B, F]`` (or ids ``[T, B]``) -> ``(h_T, hs [T, B, H])``.

    The carry is ``h`` alone (the paper drops the LSTM's separate cell state). Arguments as in
    :func:`mingru`.
    """
    return _sequence(
        "minlstm",
        _minlstm_coeffs,
        params,
        xs,
        h0,
        mode=mode,
        log_space=log_space,
        reverse=reverse,
        lengths=lengths,
        time_major=time_major,
        unroll=unroll,
    )


def _cell(coeffs, params, h, x):
    a, b = coeffs(recurrence.input_projection(params, x), False)
    h = a * h + b
    return h, h


def mingru_cell(params: Params, h: Array, x: Array):
    """One minGRU step: ``(h, x [B, F]) -> (h', h')``, for generation one token at a time."""
    return _cell(_mingru_coeffs, params, h, x)


def minlstm_cell(params: Params, h: Array, x: Array):
    """One minLSTM step: ``(h, x [B, F]) -> (h', h')``."""
    return _cell(_minlstm_coeffs, params, h, x)


# --------------------------------------------------------------------------- LRU


# The LRU paper's initialisation for long-range tasks (Orvieto et al. 2023, section 3.3):
# ``lru_init(key, F, H, **LRU_LONG_RANGE)``.
LRU_LONG_RANGE = {"r_min": 0.9, "r_max": 0.999, "max_phase": float(np.pi / 10)}


def lru_init(
    key: Array,
    input_size: int,
    hidden_size: int,
    *,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * np.pi,
    dtype=jnp.float32,
) -> Params:
    """LRU parameters for ``N = hidden_size / 2`` complex modes (``hidden_size`` must be even).

    The paper's initialisation: ``|λ|`` uniform on the ring ``[r_min, r_max]`` (by area),
    phase uniform in ``[0, max_phase]``; ``ν = log(-log|λ|)``, ``θ = log(phase)``,
    ``γ = log sqrt(1 - |λ|²)``; ``B ~ N(0, 1/(2F))`` and ``C ~ N(0, 1/N)`` (real and imaginary
    parts), ``D ~ N(0, 1)``. For long-range tasks the paper uses ``r_min=0.9, r_max=0.999`` and a
    smaller ``max_phase`` (``π/10``).
    """
    _check_sizes(input_size, hidden_size)
    if hidden_size % 2:
        raise ValueError(
            f"the LRU's hidden_size is twice its number of complex modes (real parts, then "
            f"imaginary parts), so it must be even; got {hidden_size}: use {hidden_size + 1}"
        )
    if not 0.0 <= r_min < r_max <= 1.0:
        raise ValueError(f"need 0 <= r_min < r_max <= 1 for a stable LRU; got {r_min}, {r_max}")
    return _lru_init_arrays(key, input_size, hidden_size // 2, r_min, r_max, max_phase, dtype)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6))
def _lru_init_arrays(key, input_size, n, r_min, r_max, max_phase, dtype):
    ks = jax.random.split(key, 7)
    u1 = jax.random.uniform(ks[0], (n,), jnp.float32)
    u2 = jax.random.uniform(ks[1], (n,), jnp.float32)
    nu_log = jnp.log(-0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2))
    theta_log = jnp.log(max_phase * u2 + 1e-12)
    modulus = jnp.exp(-jnp.exp(nu_log))
    gamma_log = jnp.log(jnp.sqrt(1.0 - modulus**2 + 1e-12))
    b_scale = 1.0 / np.sqrt(2 * input_size)
    c_scale = 1.0 / np.sqrt(n)
    params = {
        "nu_log": nu_log,
        "theta_log": theta_log,
        "gamma_log": gamma_log,
        "b_re": jax.random.normal(ks[2], (input_size, n)) * b_scale,
        "b_im": jax.random.normal(ks[3], (input_size, n)) * b_scale,
        "c_re": jax.random.normal(ks[4], (n, input_size)) * c_scale,
        "c_im": jax.random.normal(ks[5], (n, input_size)) * c_scale,
        "d": jax.random.normal(ks[6], (input_size,)),
    }
    return {k: v.astype(dtype) for k, v in params.items()}


def _lru_lambda(params):
    return jnp.exp(-jnp.exp(params["nu_log"]) + 1j * jnp.exp(params["theta_log"]))


def _complex(h):
    re, im = jnp.split(h, 2, axis=-1)
    return jax.lax.complex(re, im)


def _real(h):
    return jnp.concatenate([jnp.real(h), jnp.imag(h)], axis=-1)


def _lru_out(params, h, x):
    return jnp.real(h) @ params["c_re"] - jnp.imag(h) @ params["c_im"] + params["d"] * x


def _lru_drive(params, x):
    b = jax.lax.complex(params["b_re"], params["b_im"])
    return (x.astype(b.dtype) @ b) * jnp.exp(params["gamma_log"])


def lru_zero_carry(params: Params, batch_shape: Sequence[int] = ()) -> Array:
    """Zero LRU state ``[*batch_shape, H]`` (``H = 2N``: real parts, then imaginary parts)."""
    return jnp.zeros((*batch_shape, 2 * params["nu_log"].shape[0]), params["d"].dtype)


def lru_cell(params: Params, h: Array, x: Array):
    """One LRU step: ``(h [B, H], x [B, F]) -> (h', y [B, F])``."""
    hc = _lru_lambda(params) * _complex(h) + _lru_drive(params, x)
    return _real(hc).astype(h.dtype), _lru_out(params, hc, x)


def lru(
    params: Params,
    xs: Array,
    h0: Array | None = None,
    *,
    mode: str = "parallel",
    reverse: bool = False,
    lengths: Array | None = None,
    time_major: bool = True,
    unroll: int = 1,
):
    """LRU over float ``xs`` ``[T, B, F]`` -> ``(h_T [B, H], ys [T, B, F])``.

    ``ys`` are the layer's outputs ``Re(h C) + D x`` (the input's width), ``h_T`` the final state
    (real parts, then imaginary parts). Other arguments as in :func:`mingru`.
    """
    _check_seq(xs, time_major, lengths)
    if not time_major:
        return _from_batch_major(
            lru, params, xs, h0, mode=mode, reverse=reverse, lengths=lengths, unroll=unroll
        )
    _check_mode(mode)
    xs = jnp.asarray(xs)
    if jnp.issubdtype(xs.dtype, jnp.integer):
        raise TypeError(
            "the LRU takes float inputs [T, B, F] (its output has the input's width)"
            "; embed token ids first"
        )
    if xs.shape[-1] != params["d"].shape[0]:
        raise ValueError(
            f"input feature size {xs.shape[-1]} does not match the LRU's input "
            f"size {params['d'].shape[0]}"
        )
    b = _lru_drive(params, xs)
    a, b, m = _masked(_lru_lambda(params), b, lengths, False)
    hc0 = None if h0 is None else _complex(jnp.asarray(h0))
    hs = linear_scan(a, b, hc0, mode=mode, reverse=reverse, unroll=unroll)
    ys = _lru_out(params, hs, xs)
    last = _real(_final(hs, reverse)).astype(xs.dtype)
    return last, ys if m is None else jnp.where(m, ys, 0.0)


_SEQUENCES = {"mingru": mingru, "minlstm": minlstm}
