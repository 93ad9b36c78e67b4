"""Character-level LSTM language model, readable top to bottom.

    ids [T, B] --(one-hot, as a row gather)--> stacked LSTM --dropout--> dense --> logits [T, B, V]

Parameters are a plain dict: ``{"lstm": [layer dicts], "w_out": [H, V], "b_out": [V]}``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxgen import nn, rnn


def init(
    key: jax.Array, vocab_size: int, hidden: int, layers: int, *, forget_bias: float = 1.0
) -> dict:
    k_lstm, k_out = jax.random.split(key)
    return {
        # Layer 0 takes token ids, i.e. one-hot vectors of size vocab_size.
        "lstm": rnn.lstm_stack_init(k_lstm, vocab_size, hidden, layers, forget_bias=forget_bias),
        "w_out": jax.random.normal(k_out, (hidden, vocab_size)) / jnp.sqrt(hidden),
        "b_out": jnp.zeros((vocab_size,)),
    }


def zero_carries(params: dict, batch: int) -> list[tuple[jax.Array, jax.Array]]:
    return [rnn.lstm_zero_carry(p, (batch,)) for p in params["lstm"]]


def apply(
    params: dict,
    ids: jax.Array,
    carries,
    *,
    dropout_rate: float = 0.0,
    key: jax.Array | None = None,
    mode: str = "scan",
):
    """``ids`` ``[T, B]`` -> ``(carries, logits [T, B, V])``. Dropout only when ``key`` is given."""
    k_stack = k_out = None
    if key is not None:
        k_stack, k_out = jax.random.split(key)
    carries, ys = rnn.lstm_stack(
        params["lstm"], ids, carries, dropout_rate=dropout_rate, key=k_stack, mode=mode
    )
    ys = nn.dropout(k_out, ys, dropout_rate)
    return carries, ys @ params["w_out"] + params["b_out"]


def loss(params, ids, targets, carries, *, dropout_rate=0.0, key=None):
    """Mean softmax cross-entropy in nats per character, and the new carries."""
    carries, logits = apply(params, ids, carries, dropout_rate=dropout_rate, key=key)
    xent = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return xent.mean(), carries
