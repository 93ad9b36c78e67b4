"""Thin Flax (linen) modules over the pure functions in :mod:`jaxgen.rnn`.

The modules hold the *same* parameter dicts as the pure functions (under one
Flax parameter per layer), so weights move freely between a Flax model and
plain jaxgen code::

    layer = LSTM(features=256)
    variables = layer.init(key, xs)                  # xs [T, B, F], time-major
    (h, c), ys = layer.apply(variables, xs)
    rnn.lstm(variables["params"]["cell"], xs)        # the same numbers
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxgen import rnn


def _input_size(xs, num_embeddings):
    if jnp.issubdtype(xs.dtype, jnp.integer):
        if num_embeddings is None:
            raise ValueError("integer token ids need num_embeddings (the vocabulary size)")
        return num_embeddings
    return xs.shape[-1]


class _RecurrentLayer(nn.Module):
    """One recurrent layer over a time-major sequence ``[T, B, F]`` (or ids ``[T, B]``): the pure
    functions' parameter dict is one Flax parameter, ``"cell"``."""

    features: int
    num_embeddings: int | None = None  # vocabulary size, when the input is token ids
    mode: str = "scan"
    unroll: int = 1

    def _init_cell(self, key, fan_in):
        raise NotImplementedError

    def _run(self, params, xs, carry, **loop):
        raise NotImplementedError

    @nn.compact
    def __call__(self, xs, carry=None, *, reverse: bool = False, lengths=None) -> Any:
        fan_in = _input_size(xs, self.num_embeddings)
        params = self.param("cell", lambda k: self._init_cell(k, fan_in))
        return self._run(
            params, xs, carry, mode=self.mode, unroll=self.unroll, reverse=reverse, lengths=lengths
        )


class LSTM(_RecurrentLayer):
    """One LSTM layer over a time-major sequence ``[T, B, F]`` (or ids ``[T, B]``).

    Returns ``((h, c), ys)`` with ``ys`` ``[T, B, features]``.
    """

    forget_bias: float = 1.0

    def _init_cell(self, key, fan_in):
        return rnn.lstm_init(key, fan_in, self.features, forget_bias=self.forget_bias)

    def _run(self, params, xs, carry, **loop):
        return rnn.lstm(params, xs, carry, **loop)


class SimpleRNN(_RecurrentLayer):
    """One tanh (or ``activation``) RNN layer over ``[T, B, F]``; returns ``(h, ys)``."""

    activation: str = "tanh"

    def _init_cell(self, key, fan_in):
        return rnn.rnn_init(key, fan_in, self.features)

    def _run(self, params, xs, carry, **loop):
        return rnn.rnn(params, xs, carry, activation=self.activation, **loop)


class GRU(_RecurrentLayer):
    """One GRU layer over ``[T, B, F]``; returns ``(h, ys)``."""

    def _init_cell(self, key, fan_in):
        return rnn.gru_init(key, fan_in, self.features)

    def _run(self, params, xs, carry, **loop):
        return rnn.gru(params, xs, carry, **loop)
