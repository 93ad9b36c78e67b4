"""Pure-function recurrent cells and time loops: tanh RNN, LSTM, GRU.

Everything here is a plain function over plain ``dict``-of-array parameters;
nothing holds state and nothing reads globals, so every function works under
``jax.jit``, ``jax.grad`` and ``jax.vmap``.

Conventions
-----------
* A *cell* is ``cell(params, carry, x) -> (carry, y)``. ``x`` is ``[B, F]`` (or
  ``[F]`` for a single example; batch with ``jax.vmap``). The RNN and GRU carry
  is ``h`` ``[B, H]``; the LSTM carry is the tuple ``(h, c)``, each ``[B, H]``.
* Sequences are **time-major** by default: ``xs`` is ``[T, B, F]``, outputs
  ``ys`` are ``[T, B, H]``.  An integer ``xs`` of shape ``[T, B]`` holds token ids
  and is treated exactly as its one-hot encoding ``[T, B, F]`` (the input
  projection becomes a row gather of ``w_ih``, which is much cheaper than a
  one-hot matmul).  ``time_major=False`` takes and returns batch-major sequences
  (``xs`` ``[B, T, F]`` or ids ``[B, T]``, ``ys`` ``[B, T, H]``); the loop itself
  runs time-major, so the numbers are those of the transposed time-major call.
* Sequence functions (``rnn``, ``lstm``, ``gru``) compute the input projection
  ``xs @ w_ih + b`` for all steps at once, as one large matrix product, outside
  the time loop; only the recurrent product ``h @ w_hh`` stays inside.
* Parameters, per layer: ``w_ih [F, G*H]``, ``w_hh [H, G*H]``, bias ``b [G*H]``
  (G = 1 for the RNN, 4 for the LSTM).  The GRU keeps PyTorch's two biases,
  ``b_ih`` and ``b_hh`` ``[3H]``, because its candidate gate multiplies the
  recurrent bias by the reset gate.

Equations (``σ`` is the logistic sigmoid; gate order as in PyTorch)::

    RNN:   h' = act(x W_ih + h W_hh + b)                       act = tanh by default
    LSTM:  [i, f, g, o] = x W_ih + h W_hh + b                   (gate order i, f, g, o)
           i, f, o = σ(i), σ(f), σ(o);  g = tanh(g)
           c' = f * c + i * g;  h' = o * tanh(c');  y = h'
    GRU:   [r_x, z_x, n_x] = x W_ih + b_ih;  [r_h, z_h, n_h] = h W_hh + b_hh
           r = σ(r_x + r_h);  z = σ(z_x + z_h);  n = tanh(n_x + r * n_h)
           h' = (1 - z) * n + z * h

The LSTM's ``lstm(..., mode="scan")`` uses a hand-written backward pass through
time (``backward="fused"``, the default): the backward scan computes only the
gate gradients and ``dh @ W_hh^T`` per step; the weight gradient
``sum_t h_{t-1}^T dz_t`` is then one large matrix product over all steps instead
of ``T`` small ones, as cuDNN and oneDNN do.  ``backward="autodiff"`` lets JAX
differentiate the scan instead; both give the same numbers (tests check this).
The step equations and that backward pass live in :mod:`jaxgen.recurrence`, shared with the
fused kernels of :mod:`jaxgen.kernels`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import nn, recurrence
from jaxgen.linear_rnn import (  # noqa: F401  (minGRU, minLSTM, LRU: part of this API)
    LRU_LONG_RANGE,
    linear_scan,
    lru,
    lru_cell,
    lru_init,
    lru_zero_carry,
    mingru,
    mingru_cell,
    mingru_init,
    minlstm,
    minlstm_cell,
    minlstm_init,
)
from jaxgen.recurrence import (  # noqa: F401  (input_projection is public here too)
    _bias,
    _check_seq,
    _check_sizes,
    _from_batch_major,
    _input_matrix,
    input_projection,
)

Array = jax.Array
Params = dict[str, Array]
Cell = Callable[[Params, Any, Array], tuple[Any, Array]]

MODES = ("scan", "python", "pallas", "auto", "native")
RECURRENT_INITS = ("orthogonal", "uniform", "identity", "normal")


# --------------------------------------------------------------------------- init


def _recurrent_matrix(key, hidden_size, gates, kind, scale, dtype):
    """``[H, G*H]``: one ``[H, H]`` block per gate, each drawn independently."""
    if kind not in RECURRENT_INITS:
        raise ValueError(f"unknown recurrent_init {kind!r}; choose one of {RECURRENT_INITS}")
    keys = jax.random.split(key, gates)
    blocks = []
    for k in keys:
        if kind == "orthogonal":
            w = jax.nn.initializers.orthogonal(scale)(k, (hidden_size, hidden_size), dtype)
        elif kind == "identity":
            w = scale * jnp.eye(hidden_size, dtype=dtype)
        elif kind == "normal":
            w = (
                scale
                * jax.random.normal(k, (hidden_size, hidden_size), dtype)
                / np.sqrt(hidden_size)
            )
        else:  # PyTorch's default: U(-1/sqrt(H), 1/sqrt(H)), times scale
            bound = scale / np.sqrt(hidden_size)
            w = jax.random.uniform(k, (hidden_size, hidden_size), dtype, -bound, bound)
        blocks.append(w)
    return jnp.concatenate(blocks, axis=1)


def rnn_init(
    key: Array,
    input_size: int,
    hidden_size: int,
    *,
    recurrent_init: str = "orthogonal",
    recurrent_scale: float = 1.0,
    dtype=jnp.float32,
) -> Params:
    """Parameters of a simple RNN: ``w_ih [F, H]``, ``w_hh [H, H]``, ``b [H]``.

    ``recurrent_init`` is one of ``"orthogonal"`` (default), ``"uniform"``
    (PyTorch's U(-1/sqrt(H), 1/sqrt(H))), ``"identity"`` (Le et al. 2015, for ReLU
    RNNs) or ``"normal"`` (N(0, 1/H)); each is multiplied by ``recurrent_scale``.
    """
    _check_sizes(input_size, hidden_size)
    k1, k2 = jax.random.split(key)
    return {
        "w_ih": _input_matrix(k1, input_size, hidden_size, dtype),
        "w_hh": _recurrent_matrix(k2, hidden_size, 1, recurrent_init, recurrent_scale, dtype),
        "b": jnp.zeros((hidden_size,), dtype),
    }


def chrono_bias(key: Array, hidden_size: int, max_lag: int, dtype=jnp.float32) -> Array:
    """Chrono initialisation (Tallec & Ollivier 2018): ``log(U(1, max_lag - 1))`` per unit, ``[H]``.

    A gate bias ``b`` makes a unit forget at a rate of about ``sigmoid(-b)`` a step at
    initialisation, so its memory lasts about ``1 + exp(b)`` steps; drawing ``exp(b)`` uniformly
    in ``[1, max_lag - 1]`` spreads the units' time scales over every lag up to ``max_lag``."""
    if not isinstance(max_lag, (int, np.integer)) or isinstance(max_lag, bool) or max_lag < 3:
        raise ValueError(
            f"chrono needs the longest lag to remember, an integer >= 3; got {max_lag!r}"
        )
    return jnp.log(jax.random.uniform(key, (hidden_size,), jnp.float32, 1.0, max_lag - 1.0)).astype(
        dtype
    )


def lstm_init(
    key: Array,
    input_size: int,
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    chrono: int | None = None,
    recurrent_init: str = "orthogonal",
    recurrent_scale: float = 1.0,
    dtype=jnp.float32,
) -> Params:
    """Parameters of an LSTM layer: ``w_ih [F, 4H]``, ``w_hh [H, 4H]``, ``b [4H]``.

    Gate order along the last axis is (i, f, g, o), as in PyTorch. The forget gate's bias starts
    at ``forget_bias`` (1.0: Gers et al. 2000; Jozefowicz et al. 2015); other biases start at 0.
    The bias sets how long the cell remembers at initialisation: the cell state keeps about
    ``sigmoid(forget_bias)`` of itself a step (0.73 at 1, so 0.73^100 ~ 1e-14 of a gradient crosses
    100 steps; 0.95 at 3; 0.993 at 5). ``chrono=T`` instead draws the forget biases with chrono
    initialisation for lags up to ``T`` (:func:`chrono_bias`) and sets the input-gate biases to
    their negatives (Tallec & Ollivier 2018).
    """
    _check_sizes(input_size, hidden_size)
    k1, k2 = jax.random.split(key)
    H = hidden_size
    b = jnp.zeros((4 * H,), dtype)
    if chrono is None:
        b = b.at[H : 2 * H].set(forget_bias)
    else:
        if forget_bias != 1.0:
            raise ValueError("give forget_bias or chrono, not both (chrono sets the forget biases)")
        bf = chrono_bias(jax.random.fold_in(key, 2), H, chrono, dtype)
        b = b.at[:H].set(-bf).at[H : 2 * H].set(bf)
    return {
        "w_ih": _input_matrix(k1, input_size, 4 * H, dtype),
        "w_hh": _recurrent_matrix(k2, H, 4, recurrent_init, recurrent_scale, dtype),
        "b": b,
    }


def gru_init(
    key: Array,
    input_size: int,
    hidden_size: int,
    *,
    update_bias: float = 0.0,
    chrono: int | None = None,
    recurrent_init: str = "orthogonal",
    recurrent_scale: float = 1.0,
    dtype=jnp.float32,
) -> Params:
    """Parameters of a GRU layer: ``w_ih [F, 3H]``, ``w_hh [H, 3H]``, ``b_ih``, ``b_hh [3H]``.

    Gate order (r, z, n), as in PyTorch: ``h' = (1 - z) n + z h``, so the update gate ``z`` plays
    the LSTM forget gate's part. Its bias (in ``b_ih``) starts at ``update_bias`` (0: PyTorch's
    mean), or, with ``chrono=T``, at chrono initialisation's draws for lags up to ``T``
    (:func:`chrono_bias`).
    """
    _check_sizes(input_size, hidden_size)
    k1, k2 = jax.random.split(key)
    H = hidden_size
    if chrono is None:
        bz = jnp.full((H,), update_bias, dtype)
    else:
        if update_bias != 0.0:
            raise ValueError("give update_bias or chrono, not both (chrono sets the update biases)")
        bz = chrono_bias(jax.random.fold_in(key, 2), H, chrono, dtype)
    return {
        "w_ih": _input_matrix(k1, input_size, 3 * H, dtype),
        "w_hh": _recurrent_matrix(k2, H, 3, recurrent_init, recurrent_scale, dtype),
        "b_ih": jnp.zeros((3 * H,), dtype).at[H : 2 * H].set(bz),
        "b_hh": jnp.zeros((3 * H,), dtype),
    }


def hidden_size_of(params: Params) -> int:
    """Hidden size ``H`` of a layer's parameters (from ``w_hh [H, G*H]``)."""
    return params["w_hh"].shape[0]


def rnn_zero_carry(params: Params, batch_shape: Sequence[int] = ()) -> Array:
    """Zero carry ``h`` of shape ``[*batch_shape, H]``."""
    return jnp.zeros((*batch_shape, hidden_size_of(params)), params["w_hh"].dtype)


gru_zero_carry = rnn_zero_carry


def lstm_zero_carry(params: Params, batch_shape: Sequence[int] = ()) -> tuple[Array, Array]:
    """Zero carry ``(h, c)``, each of shape ``[*batch_shape, H]``."""
    # Two separate buffers, so a donated train state never holds one buffer twice.
    return (rnn_zero_carry(params, batch_shape), rnn_zero_carry(params, batch_shape))


# --------------------------------------------------------------------------- cells
# The ``*_step`` functions take the already-projected input ``zx = x W_ih + b``
# (hoisted out of the time loop); the public ``*_cell`` functions take raw ``x``.
# The RNN and LSTM steps live in jaxgen.recurrence, shared with the kernels.


def _gru_step(params, h, zx, mask=None):
    # ``mask``: variational recurrent dropout on the state that enters the recurrent product.
    zh = (h if mask is None else h * mask) @ params["w_hh"] + params["b_hh"]
    rx, zx_, nx = jnp.split(zx, 3, axis=-1)
    rh, zh_, nh = jnp.split(zh, 3, axis=-1)
    r = jax.nn.sigmoid(rx + rh)
    z = jax.nn.sigmoid(zx_ + zh_)
    n = jnp.tanh(nx + r * nh)
    h = (1.0 - z) * n + z * h
    return h, h


def _check_activation(activation):
    if activation not in recurrence.ACTIVATIONS:
        choices = tuple(recurrence.ACTIVATIONS)
        raise ValueError(f"unknown activation {activation!r}; choose one of {choices}")


def rnn_cell(params: Params, carry: Array, x: Array, *, activation: str = "tanh"):
    """One simple-RNN step. ``carry`` h ``[B, H]``, ``x`` ``[B, F]`` -> ``(h', h')``."""
    _check_activation(activation)
    return recurrence.rnn_step(params, carry, x @ params["w_ih"] + params["b"], activation)


def lstm_cell(params: Params, carry: tuple[Array, Array], x: Array):
    """One LSTM step. ``carry = (h, c)`` each ``[B, H]``, ``x`` ``[B, F]`` -> ``((h', c'), h')``."""
    return recurrence.lstm_step(params, carry, x @ params["w_ih"] + params["b"])


def gru_cell(params: Params, carry: Array, x: Array):
    """One GRU step. ``carry`` h ``[B, H]``, ``x`` ``[B, F]`` -> ``(h', h')``."""
    return _gru_step(params, carry, x @ params["w_ih"] + params["b_ih"])


# --------------------------------------------------------------------------- time loop


def _check_mode(mode, unroll, fn=None):
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    if mode == "native" and fn != "lstm":
        raise ValueError(
            f"mode='native' (the compiled CPU time loop, jaxgen.native) exists for the LSTM only, "
            f"not for {fn or 'unroll'}; use mode='scan'"
        )
    if not isinstance(unroll, (int, np.integer)) or isinstance(unroll, bool) or unroll < 1:
        raise ValueError(f"unroll must be a positive integer, got {unroll!r}")


def _check_remat_mode(mode, unroll, remat):
    if remat is not None and (mode != "scan" or unroll != 1):
        raise ValueError(
            f"remat works with mode='scan' and unroll=1 (got mode={mode!r}, unroll={unroll})"
        )


def _kernels(fn, mode, unroll, backward="fused"):
    """The kernel package, for ``mode="pallas"``/``"auto"``. They run their own time loop and
    backward pass: say once (per reason) that a non-default ``unroll`` or ``backward`` has no
    effect there."""
    from jaxgen import kernels  # deferred: importing Pallas takes time, only these modes need it

    if unroll != 1:
        kernels.common.warn_once(
            f"{fn}:{mode}:unroll",
            (
                f"rnn.{fn}: unroll={unroll} is ignored with mode={mode!r} "
                "(the fused kernel and its "
                "scan fallback run their own time loop); use mode='scan' for a partial unroll "
                "(warned once)"
            ),
        )
    if backward != "fused":
        kernels.common.warn_once(
            f"{fn}:{mode}:backward",
            (
                f"rnn.{fn}: backward={backward!r} is ignored with mode={mode!r} "
                "(the kernel has its "
                "own backward pass, and 'auto' on CPU differentiates its scan reference); use "
                "mode='scan' to choose the backward pass (warned once)"
            ),
        )
    return kernels


def unroll(
    cell: Cell,
    params: Params,
    carry: Any,
    xs: Array,
    *,
    mode: str = "scan",
    unroll: int = 1,
    reverse: bool = False,
    lengths: Array | None = None,
    time_major: bool = True,
    remat: int | None = None,
):
    """Run ``cell`` over the time-major sequence ``xs`` ``[T, B, F]``.

    Returns ``(final_carry, ys)`` with ``ys`` ``[T, B, H]``; ``ys[t]`` is the
    output for input ``xs[t]`` whatever the direction. With ``time_major=False``
    ``xs`` is batch-major ``[B, T, ...]`` (time on axis 1) and every output is
    returned batch-major ``[B, T, ...]``; the carry is the same in both layouts.

    Args:
      cell: ``cell(params, carry, x) -> (carry, y)``.
      mode: ``"scan"`` runs ``lax.scan`` (compiles the step once);
        ``"python"`` is a fully unrolled Python loop (one copy of the step per
        time step in the compiled program: the comparison baseline).
      unroll: partial unroll factor of ``lax.scan`` (``mode="scan"`` only).
      reverse: run from ``t = T-1`` down to ``0``.
      lengths: ``[B]`` integer lengths of right-padded sequences. At padded
        steps (``t >= lengths[b]``) the carry does not change and the output is
        zero; so the final carry is the carry after each sequence's last real
        step (forward), and a reversed run starts at each sequence's last real
        step (backward direction of a bidirectional RNN).
      remat: bounded memory for long sequences (``mode="scan"``): keep only every
        ``remat``-th carry for the backward pass and recompute each segment of ``remat`` steps
        (``jax.checkpoint`` on segments); must divide ``T``.
    """
    _check_mode(mode, unroll)
    _check_remat_mode(mode, unroll, remat)
    if not time_major:
        xs = jnp.asarray(xs)
        if xs.ndim < 2:
            raise ValueError(
                f"time_major=False needs batch-major xs [B, T, ...]; got shape {xs.shape}"
            )
        carry, ys = _time_loop(
            cell,
            params,
            carry,
            jnp.swapaxes(xs, 0, 1),
            mode=mode,
            unroll=unroll,
            reverse=reverse,
            lengths=lengths,
            remat=remat,
        )
        return carry, jax.tree.map(lambda y: jnp.swapaxes(y, 0, 1), ys)
    if mode in ("pallas", "auto"):
        raise ValueError(
            f"mode={mode!r} needs a fused kernel and is available only for the "
            "sequence functions (rnn.lstm, rnn.rnn); use mode='scan' with unroll()"
        )
    if remat is not None:
        return recurrence.remat_scan(
            cell, params, carry, xs, remat=remat, reverse=reverse, lengths=lengths
        )
    if mode == "scan":
        return recurrence.masked_scan(
            cell, params, carry, xs, reverse=reverse, unroll=unroll, lengths=lengths
        )
    xs = jnp.asarray(xs)
    num_steps = xs.shape[0]
    mask = recurrence.length_mask(lengths, num_steps)
    step = recurrence.masked_step(cell, params)
    order = range(num_steps - 1, -1, -1) if reverse else range(num_steps)
    ys = [None] * num_steps
    for t in order:
        carry, ys[t] = step(carry, (xs[t], None if mask is None else mask[t]))
    return carry, jnp.stack(ys)


# The sequence functions below take a keyword argument named ``unroll``.
_time_loop = unroll


# --------------------------------------------------------------------------- projection


def _project(params, xs, carry, zero_fn):
    """``zx = input_projection(params, xs)`` and the carry (``zero_fn``'s zeros when ``None``)."""
    zx = input_projection(params, xs)
    if carry is None:
        carry = zero_fn(params, zx.shape[1:-1])
    return zx, carry


def rnn(
    params: Params,
    xs: Array,
    carry: Array | None = None,
    *,
    activation: str = "tanh",
    mode: str = "scan",
    unroll: int = 1,
    reverse: bool = False,
    lengths: Array | None = None,
    time_major: bool = True,
    remat: int | None = None,
):
    """Simple RNN over ``xs`` ``[T, B, F]`` (or ids ``[T, B]``) -> ``(h_T, ys [T, B, H])``.

    ``time_major=False``: ``xs`` ``[B, T, F]`` (or ids ``[B, T]``) -> ``ys`` ``[B, T, H]``.
    ``remat=k``: keep every ``k``-th carry for the backward pass (see :func:`unroll`).
    """
    _check_seq(xs, time_major, lengths)
    loop = dict(mode=mode, unroll=unroll, reverse=reverse, lengths=lengths, remat=remat)
    if not time_major:
        return _from_batch_major(rnn, params, xs, carry, activation=activation, **loop)
    _check_activation(activation)
    _check_mode(mode, unroll, "rnn")
    _check_remat_mode(mode, unroll, remat)
    zx, carry = _project(params, xs, carry, rnn_zero_carry)
    if mode in ("pallas", "auto"):
        return _kernels("rnn", mode, unroll).rnn_sequence(
            params, zx, carry, mode=mode, activation=activation, reverse=reverse, lengths=lengths
        )
    step = functools.partial(recurrence.rnn_step, activation=activation)
    return _time_loop(step, params, carry, zx, **loop)


def gru(
    params: Params,
    xs: Array,
    carry: Array | None = None,
    *,
    mode: str = "scan",
    unroll: int = 1,
    reverse: bool = False,
    lengths: Array | None = None,
    time_major: bool = True,
    remat: int | None = None,
):
    """GRU over ``xs`` ``[T, B, F]`` (or ids ``[T, B]``) -> ``(h_T, ys [T, B, H])``.

    ``time_major=False``: ``xs`` ``[B, T, F]`` (or ids ``[B, T]``) -> ``ys`` ``[B, T, H]``.
    ``remat=k``: keep every ``k``-th carry for the backward pass (see :func:`unroll`).
    """
    _check_seq(xs, time_major, lengths)
    loop = dict(mode=mode, unroll=unroll, reverse=reverse, lengths=lengths, remat=remat)
    if not time_major:
        return _from_batch_major(gru, params, xs, carry, **loop)
    _check_mode(mode, unroll, "gru")
    if mode in ("pallas", "auto"):
        raise ValueError("the GRU has no fused kernel; use mode='scan' or 'python'")
    zx, carry = _project(params, xs, carry, gru_zero_carry)
    return _time_loop(_gru_step, params, carry, zx, **loop)


def lstm(
    params: Params,
    xs: Array,
    carry: tuple[Array, Array] | None = None,
    *,
    mode: str = "scan",
    unroll: int = 1,
    reverse: bool = False,
    lengths: Array | None = None,
    backward: str = "fused",
    time_major: bool = True,
    remat: int | None = None,
):
    """LSTM over ``xs`` ``[T, B, F]`` (or ids ``[T, B]``) -> ``((h_T, c_T), ys [T, B, H])``.

    The input projection is one GEMM over all steps, outside the loop.

    Args:
      carry: ``(h, c)`` each ``[B, H]``; ``None`` means zeros.
      mode: ``"scan"`` (``lax.scan``), ``"python"`` (fully unrolled loop), ``"native"`` (both
        time loops, forward and the fused backward, in a compiled C++ kernel on CPU,
        :mod:`jaxgen.native`: 1.1x the scan path's char-RNN step; the scan path on other
        platforms, with ``lengths``, or for dtypes other than float32), ``"cudnn"``
        (cuDNN's LSTM on NVIDIA GPUs, :mod:`jaxgen.cudnn`; forwards only), ``"pallas"``
        (fused sequence kernel, see ``jaxgen.kernels``; it runs ``lax.scan``
        instead, with a one-time warning, where the shape does not fit the backend's kernel:
        TPU above the VMEM estimate, GPU above padded H = 1024) or ``"auto"`` (a fixed
        per-backend choice, ``jaxgen.kernels.AUTO``: ``"native"`` on CPU, measured fastest
        there; the scan path on GPU, where the Triton kernel was measured slower than the
        scan; the kernel, where it fits, on TPU, not yet measured there).
      backward: for ``mode="scan"``: ``"fused"`` (hand-written BPTT, one weight
        gradient GEMM over all steps, :func:`jaxgen.recurrence.lstm_scan`) or ``"autodiff"``
        (JAX differentiates the scan).
        ``"pallas"``/``"auto"`` ignore it (one-time warning if it is not ``"fused"``).
      lengths, reverse, unroll: as in :func:`unroll`; ``"pallas"``/``"auto"`` ignore
        ``unroll`` (one-time warning if it is not 1).
      time_major: ``False`` takes batch-major ``xs`` ``[B, T, F]`` (or ids
        ``[B, T]``) and returns ``ys`` ``[B, T, H]``; carries are ``[B, H]`` either way.
      remat: bounded memory on long sequences (``mode="scan"``; must divide ``T``): the
        hand-written backward keeps only every ``remat``-th carry and recomputes each segment's
        input projection and gates (:func:`jaxgen.recurrence.lstm_remat`); with
        ``backward="autodiff"``, ``jax.checkpoint`` on segments.
    """
    _check_seq(xs, time_major, lengths)
    if mode == "cudnn":  # cuDNN's LSTM on NVIDIA GPUs (jaxgen.cudnn)
        if reverse or remat is not None:
            raise ValueError("mode='cudnn' runs forwards, without remat; use lstm_stack("
                             "..., bidirectional=True, mode='cudnn') or mode='scan'")  # fmt: skip
        finals, ys = lstm_stack([params], xs, None if carry is None else [tuple(carry)],
                                lengths=lengths, time_major=time_major, mode="cudnn")  # fmt: skip
        return finals[0], ys
    loop = dict(mode=mode, unroll=unroll, reverse=reverse, lengths=lengths, remat=remat)
    if not time_major:
        return _from_batch_major(lstm, params, xs, carry, backward=backward, **loop)
    _check_mode(mode, unroll, "lstm")
    if backward not in ("fused", "autodiff"):
        raise ValueError(f"backward must be 'fused' or 'autodiff', got {backward!r}")
    if mode == "native" and backward != "fused":
        raise ValueError(
            "mode='native' runs the hand-written backward pass (backward='fused'); use "
            "mode='scan' for backward='autodiff'"
        )
    _check_remat_mode(mode, unroll, remat)
    if remat is not None and backward == "fused":
        xs = jnp.asarray(xs)
        recurrence.check_remat(remat, xs.shape[0])
        if carry is None:
            ids = jnp.issubdtype(xs.dtype, jnp.integer)
            carry = lstm_zero_carry(params, xs.shape[1:] if ids else xs.shape[1:-1])
        return recurrence.lstm_remat(
            params, xs, tuple(carry), remat=remat, reverse=reverse, lengths=lengths
        )
    zx, carry = _project(params, xs, carry, lstm_zero_carry)
    carry = tuple(carry)
    if mode == "native":
        from jaxgen import native  # deferred: builds the kernel on first use

        return native.lstm_sequence(
            params, zx, carry, reverse=reverse, lengths=lengths, unroll=unroll
        )
    if mode in ("pallas", "auto"):
        return _kernels("lstm", mode, unroll, backward).lstm_sequence(
            params, zx, carry, mode=mode, reverse=reverse, lengths=lengths
        )
    if mode == "scan" and backward == "fused":
        return recurrence.lstm_scan(
            params, zx, carry, reverse=reverse, lengths=lengths, unroll=unroll
        )
    return _time_loop(recurrence.lstm_step, params, carry, zx, **loop)


# --------------------------------------------------------------------------- stacks
# One generic stack over every cell. A unidirectional layer is the cell's parameter dict; a
# bidirectional one is ``{"fwd": dict, "bwd": dict}`` (the backward direction runs reversed, from
# each sequence's last real step, and its outputs are aligned with the inputs).

MERGES = ("concat", "sum")
_CELLS = {  # kind -> (init, sequence function, has a recurrent product W_hh)
    "rnn": (rnn_init, rnn, True),
    "lstm": (lstm_init, lstm, True),
    "gru": (gru_init, gru, True),
    "mingru": (mingru_init, mingru, False),
    "minlstm": (minlstm_init, minlstm, False),
    "lru": (lru_init, lru, False),
}


def _output_size(kind, input_size, hidden_size):
    return input_size if kind == "lru" else hidden_size  # the LRU keeps its input's width


def _stack_init(kind, key, input_size, hidden_size, num_layers, bidirectional, merge, **kwargs):
    if (
        not isinstance(num_layers, (int, np.integer))
        or isinstance(num_layers, bool)
        or (num_layers < 1)
    ):
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
    init = _CELLS[kind][0]
    keys = jax.random.split(key, num_layers * (2 if bidirectional else 1))
    layers, size = [], input_size
    for n in range(num_layers):
        if bidirectional:
            layers.append(
                {
                    "fwd": init(keys[2 * n], size, hidden_size, **kwargs),
                    "bwd": init(keys[2 * n + 1], size, hidden_size, **kwargs),
                }
            )
        else:
            layers.append(init(keys[n], size, hidden_size, **kwargs))
        size = _output_size(kind, size, hidden_size) * (
            2 if bidirectional and merge == "concat" else 1
        )
    return layers


def _is_bidirectional(layer):
    return isinstance(layer, dict) and set(layer) == {"fwd", "bwd"}


def _check_layers(kind, layers, bidirectional):
    if isinstance(layers, dict) or not len(layers):
        raise ValueError(f"{kind}_stack takes a non-empty list of layers ({kind}_stack_init)")
    for n, layer in enumerate(layers):
        if _is_bidirectional(layer) != bool(bidirectional):
            have = "bidirectional ('fwd'/'bwd')" if _is_bidirectional(layer) else ("unidirectional")
            raise ValueError(
                f"layer {n} is {have} but bidirectional={bidirectional}; pass "
                f"bidirectional={not bidirectional}, or build the layers with "
                f"{kind}_stack_init(..., bidirectional={bidirectional})"
            )


def _recurrent_step(kind, mask, activation="tanh"):
    """The cell's step with variational dropout ``mask`` on the state entering ``h @ W_hh``."""
    if kind == "rnn":
        return lambda p, h, zx: recurrence.rnn_step(p, h * mask, zx, activation)
    if kind == "lstm":
        return lambda p, carry, zx: recurrence.lstm_step(p, (carry[0] * mask, carry[1]), zx)
    return lambda p, h, zx: _gru_step(p, h, zx, mask)


def _run_direction(kind, p, xs, carry, mask, *, reverse, lengths, **kwargs):
    seq = _CELLS[kind][1]
    if mask is None:
        return seq(p, xs, carry, reverse=reverse, lengths=lengths, **kwargs)
    # Recurrent dropout: the generic time loop with the masked step (the fused paths cannot mask).
    mode = kwargs.pop("mode", "scan")
    if mode not in ("scan", "python"):
        raise ValueError(f"recurrent_dropout runs mode='scan' or 'python', not {mode!r}")
    kwargs.pop("backward", None)
    activation = kwargs.pop("activation", "tanh")
    zero = {"rnn": rnn_zero_carry, "lstm": lstm_zero_carry, "gru": gru_zero_carry}[kind]
    zx, carry = _project(p, xs, carry, zero)
    if kind == "lstm":
        carry = tuple(carry)
    step = _recurrent_step(kind, mask, activation)
    return _time_loop(step, p, carry, zx, mode=mode, reverse=reverse, lengths=lengths, **kwargs)


def _stack(
    kind,
    layers,
    xs,
    carries,
    *,
    bidirectional,
    lengths,
    merge,
    dropout_rate,
    recurrent_dropout,
    key,
    time_major,
    **kwargs,
):
    _check_seq(xs, time_major, lengths)
    if kwargs.get("mode") == "cudnn":
        return _cudnn_stack(kind, layers, xs, carries, bidirectional=bidirectional,
                            lengths=lengths, merge=merge, dropout_rate=dropout_rate,
                            recurrent_dropout=recurrent_dropout, key=key, time_major=time_major,
                            **kwargs)  # fmt: skip
    if not time_major:
        xs = jnp.asarray(xs)
        if xs.ndim >= (2 if jnp.issubdtype(xs.dtype, jnp.integer) else 3):
            finals, ys = _stack(
                kind,
                layers,
                jnp.swapaxes(xs, 0, 1),
                carries,
                bidirectional=bidirectional,
                lengths=lengths,
                merge=merge,
                dropout_rate=dropout_rate,
                recurrent_dropout=recurrent_dropout,
                key=key,
                time_major=True,
                **kwargs,
            )
            return finals, jnp.swapaxes(ys, 0, 1)
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
    _check_layers(kind, layers, bidirectional)
    if recurrent_dropout and not _CELLS[kind][2]:
        raise ValueError(
            f"{kind} has no recurrent weights (its gates read only the input), so recurrent "
            "dropout does not apply; use dropout_rate between layers"
        )
    if not 0.0 <= recurrent_dropout < 1.0:
        raise ValueError(f"recurrent_dropout must be in [0, 1), got {recurrent_dropout!r}")
    if carries is None:
        carries = [None] * len(layers)
    if len(carries) != len(layers):
        raise ValueError(f"got {len(carries)} carries for {len(layers)} layers")
    keys = [None] * len(layers) if key is None else list(jax.random.split(key, len(layers)))
    directions = (("fwd", False), ("bwd", True)) if bidirectional else ((None, False),)
    finals, ys = [], xs
    for n, (layer, carry) in enumerate(zip(layers, carries)):
        outs, ends = [], []
        for d, (name, reverse) in enumerate(directions):
            p = layer[name] if name else layer
            c = carry if not bidirectional or carry is None else carry[d]
            mask = None
            if recurrent_dropout and keys[n] is not None:
                width = hidden_size_of(p)
                batch = (
                    jnp.shape(ys)[1:]
                    if jnp.issubdtype(jnp.asarray(ys).dtype, jnp.integer)
                    else jnp.shape(ys)[1:-1]
                )
                keep = jax.random.bernoulli(
                    jax.random.fold_in(keys[n], d + 1), 1.0 - recurrent_dropout, (*batch, width)
                )
                mask = keep.astype(p["w_hh"].dtype) / (1.0 - recurrent_dropout)
            c, y = _run_direction(kind, p, ys, c, mask, reverse=reverse, lengths=lengths, **kwargs)
            outs.append(y)
            ends.append(c)
        finals.append(tuple(ends) if bidirectional else ends[0])
        ys = (
            outs[0]
            if not bidirectional
            else (jnp.concatenate(outs, axis=-1) if merge == "concat" else outs[0] + outs[1])
        )
        if n < len(layers) - 1:
            ys = nn.dropout(keys[n], ys, dropout_rate)
    return finals, ys


def _cudnn_stack(kind, layers, xs, carries, *, bidirectional, lengths, merge, dropout_rate,
                 recurrent_dropout, key, time_major, **kwargs):  # fmt: skip
    """``mode="cudnn"``: the LSTM stack on cuDNN (:mod:`jaxgen.cudnn`); what it cannot do is
    refused by name."""
    from jaxgen import cudnn  # deferred: only this mode needs jax.experimental.rnn

    kwargs.pop("mode")
    unsupported = [
        name
        for name, bad in (
            ("a cell other than the LSTM", kind != "lstm"),
            ("merge='sum'", merge != "concat"),
            ("dropout between layers", bool(dropout_rate) and key is not None),
            ("recurrent_dropout", bool(recurrent_dropout) and key is not None),
            *((f"{k}={v!r}", True) for k, v in kwargs.items() if v not in (None, False, 1)),
        )
        if bad
    ]
    if unsupported:
        raise ValueError(f"mode='cudnn' does not take {', '.join(unsupported)}; use mode='scan'")
    _check_layers(kind, layers, bidirectional)
    return cudnn.lstm_stack(layers, xs, carries, bidirectional=bidirectional, lengths=lengths,
                            time_major=time_major)  # fmt: skip


_STACK_DOC = """Stacked {name} over ``xs`` ``[T, B, F]`` (or ids ``[T, B]``; ``time_major=False``:
    ``[B, T, F]`` / ``[B, T]`` in, ``[B, T, ...]`` out) -> ``(finals, ys)``.

    ``layers`` from :func:`{kind}_stack_init`. ``bidirectional=True``: each layer runs forwards
    and backwards (from each sequence's last real step, given ``lengths``; padded outputs stay
    zero), and ``merge`` joins the two output sequences (``"concat"``, as PyTorch, or ``"sum"``).
    ``finals`` is every layer's final carry (``(forward, backward)`` pairs when bidirectional).
    ``dropout_rate``: dropout on every layer's output but the last (PyTorch's semantics).
    ``recurrent_dropout``: variational dropout (Gal & Ghahramani 2016): one mask per sequence and
    layer direction, the same at every step, on the state entering the recurrent product
    (runs the generic scan). Both only when ``key`` is given (``key=None`` evaluates). Other
    keyword arguments go to :func:`{kind}`.
    """

_INIT_DOC = """``num_layers`` {name} layers (layer 0 takes ``input_size``); ``bidirectional`` gives
    each layer ``{{"fwd": ..., "bwd": ...}}`` and, with ``merge="concat"``, the next layer twice the
    input width. Other keyword arguments go to :func:`{kind}_init`.
    """


def _make_stack(kind, name):
    def stack(
        layers: Sequence[Any],
        xs: Array,
        carries: Sequence[Any] | None = None,
        *,
        bidirectional: bool = False,
        lengths: Array | None = None,
        merge: str = "concat",
        dropout_rate: float = 0.0,
        recurrent_dropout: float = 0.0,
        key: Array | None = None,
        time_major: bool = True,
        **kwargs,
    ):
        return _stack(
            kind,
            layers,
            xs,
            carries,
            bidirectional=bidirectional,
            lengths=lengths,
            merge=merge,
            dropout_rate=dropout_rate,
            recurrent_dropout=recurrent_dropout,
            key=key,
            time_major=time_major,
            **kwargs,
        )

    def stack_init(
        key: Array,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        *,
        bidirectional: bool = False,
        merge: str = "concat",
        **kwargs,
    ) -> list[Any]:
        return _stack_init(
            kind, key, input_size, hidden_size, num_layers, bidirectional, merge, **kwargs
        )

    stack.__name__, stack.__qualname__ = f"{kind}_stack", f"{kind}_stack"
    stack_init.__name__, stack_init.__qualname__ = f"{kind}_stack_init", f"{kind}_stack_init"
    stack.__doc__ = _STACK_DOC.format(name=name, kind=kind)
    stack_init.__doc__ = _INIT_DOC.format(name=name, kind=kind)
    return stack, stack_init


rnn_stack, rnn_stack_init = _make_stack("rnn", "tanh RNN")
lstm_stack, lstm_stack_init = _make_stack("lstm", "LSTM")
gru_stack, gru_stack_init = _make_stack("gru", "GRU")
mingru_stack, mingru_stack_init = _make_stack("mingru", "minGRU")
minlstm_stack, minlstm_stack_init = _make_stack("minlstm", "minLSTM")
lru_stack, lru_stack_init = _make_stack("lru", "LRU")


# --------------------------------------------------------------------------- PyTorch layout
# nn.RNN / nn.LSTM / nn.GRU state dicts (as NumPy): ``weight_ih_l{k}[_reverse]`` ``[G*H, F]``,
# ``weight_hh_l{k}[_reverse]`` ``[G*H, H]``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` ``[G*H]``. The gate
# orders are jaxgen's (LSTM i, f, g, o; GRU r, z, n). The RNN and LSTM biases only ever appear as
# a sum, so they become one ``b``; the GRU keeps both (its candidate multiplies ``b_hh`` by r).

_TORCH_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
_TORCH_CLASS = {"rnn": "nn.RNN", "lstm": "nn.LSTM", "gru": "nn.GRU"}


def _from_torch(kind, arrays, num_layers, bidirectional):
    cls = _TORCH_CLASS[kind]
    reverse_keys = sorted(k for k in arrays if k.endswith("_reverse"))
    if bidirectional and not reverse_keys:
        raise ValueError(
            f"bidirectional=True, but these weights have no '*_reverse' entries: they are from a "
            f"unidirectional {cls}; pass bidirectional=False"
        )
    if not bidirectional and reverse_keys:
        raise ValueError(
            f"these weights hold a backward direction ({reverse_keys[0]}, ...): they are from a "
            f"bidirectional {cls}; pass bidirectional=True"
        )
    extra = f"weight_ih_l{num_layers}"
    if extra in arrays:
        raise ValueError(f"the weights have more than num_layers={num_layers} layers ({extra})")
    gates = _TORCH_GATES[kind]

    def one(k, suffix):
        names = [f"{w}_l{k}{suffix}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        missing = [n for n in names[:2] if n not in arrays]
        if missing:
            raise KeyError(f"missing PyTorch {cls} weights {missing} for layer {k} of {num_layers}")
        w_ih, w_hh = (np.asarray(arrays[n]) for n in names[:2])
        if w_hh.shape[0] != gates * w_hh.shape[1]:
            raise ValueError(
                f"{names[1]} has shape {w_hh.shape}; a {cls} has [{gates}H, H]"
                + (
                    " (is this another cell's state dict?)"
                    if w_hh.shape[0] % w_hh.shape[1] == 0
                    else ""
                )
            )
        zero = np.zeros(w_hh.shape[0], w_hh.dtype)
        b_ih, b_hh = (np.asarray(arrays[n]) if n in arrays else zero for n in names[2:])
        p = {"w_ih": jnp.asarray(w_ih.T), "w_hh": jnp.asarray(w_hh.T)}
        if kind == "gru":
            return {**p, "b_ih": jnp.asarray(b_ih), "b_hh": jnp.asarray(b_hh)}
        return {**p, "b": jnp.asarray(b_ih + b_hh)}

    if bidirectional:
        return [{"fwd": one(k, ""), "bwd": one(k, "_reverse")} for k in range(num_layers)]
    return [one(k, "") for k in range(num_layers)]


def _to_torch(kind, layers):
    out = {}
    for k, layer in enumerate(layers):
        parts = (
            [("", layer["fwd"]), ("_reverse", layer["bwd"])]
            if _is_bidirectional(layer)
            else [("", layer)]
        )
        for suffix, p in parts:
            out[f"weight_ih_l{k}{suffix}"] = np.asarray(p["w_ih"]).T.copy()
            out[f"weight_hh_l{k}{suffix}"] = np.asarray(p["w_hh"]).T.copy()
            if kind == "gru":
                out[f"bias_ih_l{k}{suffix}"] = np.asarray(p["b_ih"]).copy()
                out[f"bias_hh_l{k}{suffix}"] = np.asarray(p["b_hh"]).copy()
            else:
                out[f"bias_ih_l{k}{suffix}"] = np.asarray(p["b"]).copy()
                out[f"bias_hh_l{k}{suffix}"] = np.zeros_like(out[f"bias_ih_l{k}{suffix}"])
    return out


def lstm_from_torch(
    arrays: dict[str, np.ndarray], num_layers: int, bidirectional: bool = False
) -> list[Any]:
    """PyTorch ``nn.LSTM(..., num_layers, bidirectional)`` weights (``state_dict`` as NumPy) ->
    :func:`lstm_stack` layers. ``w_ih``, ``w_hh`` transposed; the two biases summed into ``b``."""
    return _from_torch("lstm", arrays, num_layers, bidirectional)


def gru_from_torch(
    arrays: dict[str, np.ndarray], num_layers: int, bidirectional: bool = False
) -> list[Any]:
    """PyTorch ``nn.GRU`` weights -> :func:`gru_stack` layers (both biases kept)."""
    return _from_torch("gru", arrays, num_layers, bidirectional)


def rnn_from_torch(
    arrays: dict[str, np.ndarray], num_layers: int, bidirectional: bool = False
) -> list[Any]:
    """PyTorch ``nn.RNN`` weights -> :func:`rnn_stack` layers (biases summed; pass the module's
    ``nonlinearity`` as ``activation=`` when running them)."""
    return _from_torch("rnn", arrays, num_layers, bidirectional)


def lstm_to_torch(layers: Sequence[Any]) -> dict[str, np.ndarray]:
    """:func:`lstm_stack` layers -> ``nn.LSTM`` ``state_dict`` arrays (NumPy); bidirectional
    layers give the ``*_reverse`` entries. The whole bias goes to ``bias_ih``, ``bias_hh`` is zero;
    ``module.load_state_dict({k: torch.from_numpy(v) ...})`` takes it."""
    return _to_torch("lstm", layers)


def gru_to_torch(layers: Sequence[Any]) -> dict[str, np.ndarray]:
    """:func:`gru_stack` layers -> ``nn.GRU`` ``state_dict`` arrays (NumPy)."""
    return _to_torch("gru", layers)


def rnn_to_torch(layers: Sequence[Any]) -> dict[str, np.ndarray]:
    """:func:`rnn_stack` layers -> ``nn.RNN`` ``state_dict`` arrays (NumPy)."""
    return _to_torch("rnn", layers)
