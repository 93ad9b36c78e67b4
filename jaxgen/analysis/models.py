"""Small sequence models for the analyses: one recurrent layer and a linear readout.

A *kind* is ``"rnn"``, ``"lstm"``, ``"gru"``, ``"mingru"``, ``"minlstm"`` or ``"lru"`` (the
parallel-in-time cells of :mod:`jaxgen.linear_rnn`; the LRU's readout sees its state, real parts
then imaginary parts, and token ids enter it one-hot); the simple RNN also takes an
``activation`` (``"tanh"``, ``"sigmoid"``, ``"relu"``, ``"identity"``).
Parameters are ``{"cell": <layer dict from jaxgen.rnn>, "w_out": [H, O], "b_out": [O]}``.
The readout sees only the last step's output ``h_T``. Inputs are time-major:
``xs [T, B, F]`` floats or ``[T, B]`` token ids.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import rnn

Array = jax.Array
KINDS = ("rnn", "lstm", "gru", "mingru", "minlstm", "lru")

_INITS = {
    "rnn": rnn.rnn_init,
    "lstm": rnn.lstm_init,
    "gru": rnn.gru_init,
    "mingru": rnn.mingru_init,
    "minlstm": rnn.minlstm_init,
    "lru": rnn.lru_init,
}


def _linear_zero(gates):
    def zero(params, batch_shape=()):
        hidden = params["w_ih"].shape[1] // gates
        return jnp.zeros((*batch_shape, hidden), params["w_ih"].dtype)

    return zero


_ZERO = {
    "rnn": rnn.rnn_zero_carry,
    "lstm": rnn.lstm_zero_carry,
    "gru": rnn.gru_zero_carry,
    "mingru": _linear_zero(2),
    "minlstm": _linear_zero(3),
    "lru": rnn.lru_zero_carry,
}


def _input_size(params):
    """Width of the inputs a layer takes (the LRU has no ``w_ih``; its ``d`` is per input)."""
    return params["w_ih"].shape[0] if "w_ih" in params else params["d"].shape[0]


def _check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"unknown cell kind {kind!r}; choose one of {KINDS}")


def init_cell(kind: str, key: Array, input_size: int, hidden_size: int, **init_kwargs) -> dict:
    """Layer parameters from ``jaxgen.rnn`` (``recurrent_init``, ``recurrent_scale`` pass
    through)."""
    _check_kind(kind)
    return _INITS[kind](key, input_size, hidden_size, **init_kwargs)


def init_model(
    kind: str, key: Array, input_size: int, hidden_size: int, output_size: int, **init_kwargs
) -> dict:
    """Recurrent layer plus a LeCun-normal linear readout ``[H, O]``."""
    k1, k2 = jax.random.split(key)
    return {
        "cell": init_cell(kind, k1, input_size, hidden_size, **init_kwargs),
        "w_out": jax.random.normal(k2, (hidden_size, output_size)) / np.sqrt(hidden_size),
        "b_out": jnp.zeros((output_size,)),
    }


def cell_fn(kind: str, activation: str = "tanh") -> Callable:
    """The single-step cell ``cell(params, carry, x) -> (carry, y)`` of a kind.

    ``x`` is ``[B, F]`` floats or ``[B]`` token ids (one-hot semantics).
    """
    _check_kind(kind)
    base = {
        "rnn": functools.partial(rnn.rnn_cell, activation=activation),
        "lstm": rnn.lstm_cell,
        "gru": rnn.gru_cell,
        "mingru": rnn.mingru_cell,
        "minlstm": rnn.minlstm_cell,
        "lru": rnn.lru_cell,
    }[kind]

    def cell(params, carry, x):
        if jnp.issubdtype(x.dtype, jnp.integer):
            # token ids: the cell takes their one-hot encoding (tiny vocabularies here).
            x = jax.nn.one_hot(x, _input_size(params), dtype=jnp.float32)
        return base(params, carry, x)

    return cell


def zero_carry(kind: str, params: dict, batch_shape=()) -> Any:
    _check_kind(kind)
    return _ZERO[kind](params, batch_shape)


def get_h(carry):
    """The hidden state ``h`` of a carry (the LSTM carry is ``(h, c)``)."""
    return carry[0] if isinstance(carry, tuple) else carry


def set_h(carry, h):
    """The carry with its hidden state replaced by ``h``."""
    return (h, *carry[1:]) if isinstance(carry, tuple) else h


def last_hidden(
    kind: str, cell_params: dict, xs: Array, activation: str = "tanh", unroll: int = 1
) -> Array:
    """``h_T`` ``[B, H]`` from the library's sequence functions (``lax.scan``, partial
    ``unroll``)."""
    _check_kind(kind)
    if kind == "rnn":
        carry, _ = rnn.rnn(cell_params, xs, activation=activation, unroll=unroll)
    elif kind == "lstm":
        carry, _ = rnn.lstm(cell_params, xs, unroll=unroll)
        carry = carry[0]
    elif kind == "gru":
        carry, _ = rnn.gru(cell_params, xs, unroll=unroll)
    else:  # the sequential scan: the analyses compare cells, not the two ways to run them
        if kind == "lru" and jnp.issubdtype(xs.dtype, jnp.integer):
            xs = jax.nn.one_hot(xs, _input_size(cell_params), dtype=jnp.float32)
        carry, _ = getattr(rnn, kind)(cell_params, xs, mode="scan", unroll=unroll)
    return carry


def apply_model(
    kind: str, params: dict, xs: Array, activation: str = "tanh", unroll: int = 1
) -> Array:
    """Readout of the last step: ``[B, O]``."""
    return (
        last_hidden(kind, params["cell"], xs, activation, unroll) @ params["w_out"]
        + params["b_out"]
    )
