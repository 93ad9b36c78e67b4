"""How fast ‖∂L/∂h_t‖ decays with the lag T − t: the vanishing gradient, measured.

The gradient of a loss on the *last* step with respect to *every* hidden state
comes from one backward pass: a zero "probe" ``p_t`` is added to each step's
hidden state (``h_t <- h_t + p_t``), and ``∂L/∂p_t = ∂L/∂h_t`` (the total
derivative, through every later step). Differentiating the loss with respect
to the stacked probes ``[T, B, H]`` gives all ``T`` gradients at once.

Pascanu, Mikolov & Bengio (2013): for ``h_t = act(W h_{t-1} + U x_t + b)``,
``‖∂h_t/∂h_{t-1}‖ ≤ σ_max(W) γ`` with ``γ`` a bound on ``|act'|`` (1 for tanh and
ReLU, 1/4 for the sigmoid), so the gradient must vanish when
``σ_max(W) < 1/γ``. The bound is for the simple RNN only; LSTM and GRU states
also pass through gates and the LSTM's additive cell path.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import models

Array = jax.Array

# Largest |act'(z)|: the gamma of Pascanu et al. (2013).
ACTIVATION_GAMMA = {"tanh": 1.0, "sigmoid": 0.25, "relu": 1.0, "identity": 1.0}
UNDERFLOW_LOG10 = -30.0  # float32: points below 1e-30 of the last step's norm are not fitted


def hidden_state_grads(
    cell: Callable,
    params: Any,
    carry: Any,
    xs: Array,
    loss_fn: Callable[[Array], Array],
    *,
    get_h: Callable = models.get_h,
    set_h: Callable = models.set_h,
) -> Array:
    """``∂L/∂h_t`` for every step, in one backward pass: ``[T, *h.shape]``.

    Args:
      cell: ``cell(params, carry, x) -> (carry, y)``.
      carry: initial carry (``h`` ``[B, H]`` or the LSTM's ``(h, c)``).
      xs: time-major inputs ``[T, B, F]`` (or ids ``[T, B]``).
      loss_fn: ``loss_fn(h_T) -> scalar``, a loss on the last step's hidden state.
      get_h, set_h: read / replace ``h`` inside a carry.

    Row ``t`` is the gradient with respect to ``h_t``, the state after input
    ``xs[t]``; row ``T-1`` is ``∂L/∂h_T`` itself (lag 0).
    """
    h0 = get_h(carry)
    probes = jnp.zeros((xs.shape[0], *h0.shape), h0.dtype)

    def probed_loss(probes):
        def body(c, inp):
            x, p = inp
            c, _ = cell(params, c, x)
            return set_h(c, get_h(c) + p), None

        final, _ = jax.lax.scan(body, carry, (xs, probes))
        return loss_fn(get_h(final))

    return jax.grad(probed_loss)(probes)


def grad_norms_by_lag(grads: Array) -> Array:
    """Frobenius norm of each step's gradient ``[T, ...]``, reordered by lag: ``[T]``, lag 0
    first."""
    flat = grads.reshape(grads.shape[0], -1)
    return jnp.sqrt(jnp.sum(flat * flat, axis=1))[::-1]


def decay_fit(norms_by_lag, *, ratio: float = 1e-3, floor_log10: float = UNDERFLOW_LOG10) -> dict:
    """Summarise a curve ``‖∂L/∂h‖`` against lag (lag 0 = the last step).

    Returns:
      ``slope``: least-squares slope of ``log10(norm / norm[0])`` against lag
        (decades per step), over the lags whose relative norm is above
        ``10**floor_log10`` (float32 underflow); ``factor`` = ``10**slope``, the
        mean per-step multiplier.
      ``horizon``: the first lag at which the norm is below ``ratio`` times the
        norm at lag 0, or ``None`` when it never is within the sequence
        (``censored`` is then True).
      ``horizon_extrapolated``: ``log10(ratio) / slope`` (inf for slope >= 0).
      ``min_rel_log10``: the smallest relative norm reached, log10.
    """
    n = np.asarray(norms_by_lag, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.log10(n / n[0])
    lags = np.arange(len(n))
    ok = np.isfinite(rel) & (rel > floor_log10)
    if ok.sum() >= 2:
        slope = float(np.polyfit(lags[ok], rel[ok], 1)[0])
    else:
        slope = float("nan")
    below = np.nonzero(~(rel >= np.log10(ratio)))[0]  # NaN / -inf count as below
    horizon = int(below[0]) if below.size else None
    extrap = float(np.log10(ratio) / slope) if np.isfinite(slope) and slope < 0 else float("inf")
    finite = rel[np.isfinite(rel)]
    return {
        "slope": slope,
        "factor": float(10.0**slope) if np.isfinite(slope) else float("nan"),
        "horizon": horizon,
        "censored": horizon is None,
        "horizon_extrapolated": extrap,
        "min_rel_log10": float(finite.min()) if finite.size else float("nan"),
    }


def pascanu_check(w_hh, activation: str = "tanh") -> dict:
    """Largest singular value of ``w_hh [H, H]`` against the bound ``1/γ`` of Pascanu et al.
    (2013)."""
    s = float(np.linalg.svd(np.asarray(w_hh, np.float64), compute_uv=False)[0])
    bound = 1.0 / ACTIVATION_GAMMA[activation]
    return {"sigma_max": s, "bound": bound, "vanishing_guaranteed": s < bound}


def gate_sigma_max(w_hh, gates: int) -> list[float]:
    """Largest singular value of each ``[H, H]`` gate block of ``w_hh [H, G*H]``."""
    w = np.asarray(w_hh, np.float64)
    h = w.shape[0]
    return [
        float(np.linalg.svd(w[:, g * h : (g + 1) * h], compute_uv=False)[0]) for g in range(gates)
    ]


def model_grad_norms(
    kind: str, params: dict, xs: Array, y: Array, *, activation: str = "tanh", loss: str = "mse"
) -> Array:
    """``‖∂L/∂h_t‖`` by lag ``[T]`` for a :mod:`models` model on a batch.

    ``L`` is the batch-mean loss of the last step's readout against ``y``:
    squared error (``loss="mse"``, output width 1) or softmax cross-entropy
    (``loss="xent"``, ``y`` integer classes).
    """
    cell = models.cell_fn(kind, activation)
    carry = models.zero_carry(kind, params["cell"], y.shape)

    def loss_fn(h):
        out = h @ params["w_out"] + params["b_out"]
        if loss == "mse":
            return jnp.mean((out[:, 0] - y) ** 2)
        logp = jax.nn.log_softmax(out)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    grads = hidden_state_grads(cell, params["cell"], carry, xs, loss_fn)
    return grad_norms_by_lag(grads)
