"""Flax NNX modules over jaxgen's recurrent functions.

Each module holds the same parameters as the pure functions (``module.layers`` is exactly what
``rnn.<cell>_stack`` takes) as ``nnx.Param`` s, and its ``__call__`` runs the stack. Sequences are
batch-major by default (``time_major=False``: ``[B, T, F]`` in, ``[B, T, H]`` out), as Flax users
expect from ``nnx.RNN``. Stacks and both directions come from the constructor::

    lstm = LSTM(8, 32, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    ys = lstm(xs, lengths=lens)                       # [B, T, 64]
    carries, ys = lstm(xs, return_carry=True)
    ys = lstm(xs, dropout_rngs=nnx.Rngs(dropout=1))   # dropout between layers while training

``from_layers(layers)`` wraps existing parameters (from ``rnn.lstm_from_torch``, a checkpoint, a
linen model) without copying their values.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from jaxgen import rnn

_CELLS = ("rnn", "lstm", "gru", "mingru", "minlstm", "lru")


def _name(path) -> str:
    return "p_" + "_".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


class _Stack(nnx.Module):
    _cell = "lstm"

    def __init__(
        self,
        in_features: int | None = None,
        hidden_features: int | None = None,
        *,
        num_layers: int = 1,
        bidirectional: bool = False,
        merge: str = "concat",
        time_major: bool = False,
        dropout_rate: float = 0.0,
        rngs: nnx.Rngs | None = None,
        layers: list[Any] | None = None,
        **init_kwargs,
    ):
        if layers is None:
            if rngs is None or in_features is None or hidden_features is None:
                raise ValueError(
                    f"{type(self).__name__} needs in_features, hidden_features and rngs (or "
                    "existing parameters: layers=...)"
                )
            init = getattr(rnn, f"{self._cell}_stack_init")
            layers = init(
                rngs.params(), in_features, hidden_features, num_layers,
                bidirectional=bidirectional, merge=merge, **init_kwargs,
            )  # fmt: skip
        else:
            bidirectional = rnn._is_bidirectional(layers[0])
        leaves, self._treedef = jax.tree_util.tree_flatten_with_path(list(layers))
        self._names = tuple(_name(path) for path, _ in leaves)
        for name, (_, leaf) in zip(self._names, leaves):
            setattr(self, name, nnx.Param(leaf))
        self.bidirectional = bidirectional
        self.merge = merge
        self.time_major = time_major
        self.dropout_rate = dropout_rate

    @classmethod
    def from_layers(cls, layers: list[Any], **kwargs):
        """A module holding ``layers`` (as ``rnn.<cell>_stack`` takes them); keyword arguments
        as the constructor's (``merge``, ``time_major``, ``dropout_rate``)."""
        return cls(layers=list(layers), **kwargs)

    @property
    def layers(self) -> list[Any]:
        """The parameters as ``rnn.<cell>_stack`` takes them (the ``nnx.Param`` values)."""
        values = [getattr(self, name)[...] for name in self._names]
        return jax.tree_util.tree_unflatten(self._treedef, values)

    def __call__(
        self,
        xs: jax.Array,
        carries=None,
        *,
        lengths: jax.Array | None = None,
        return_carry: bool = False,
        dropout_rngs: nnx.Rngs | None = None,
        **kwargs,
    ):
        """``xs`` ``[B, T, F]`` (``[T, B, F]`` with ``time_major=True``; or token ids) -> outputs,
        or ``(carries, outputs)`` with ``return_carry=True``. ``dropout_rngs`` (an ``nnx.Rngs``
        with a ``dropout`` stream) switches dropout between layers on; other keyword arguments
        (``mode``, ``remat``, ``recurrent_dropout``, ...) go to ``rnn.<cell>_stack``."""
        stack = getattr(rnn, f"{self._cell}_stack")
        key = None if dropout_rngs is None else dropout_rngs.dropout()
        finals, ys = stack(
            self.layers, xs, carries, bidirectional=self.bidirectional, lengths=lengths,
            merge=self.merge, dropout_rate=self.dropout_rate, key=key,
            time_major=self.time_major, **kwargs,
        )  # fmt: skip
        return (finals, ys) if return_carry else ys


class SimpleRNN(_Stack):
    """tanh RNN layers (``rnn.rnn_stack``); ``activation="relu"`` etc. at call time."""

    _cell = "rnn"


class LSTM(_Stack):
    """LSTM layers (``rnn.lstm_stack``; gate order i, f, g, o; carry ``(h, c)``)."""

    _cell = "lstm"


class GRU(_Stack):
    """GRU layers (``rnn.gru_stack``; gate order r, z, n)."""

    _cell = "gru"


class MinGRU(_Stack):
    """minGRU layers (``rnn.mingru_stack``; associative scan by default)."""

    _cell = "mingru"


class MinLSTM(_Stack):
    """minLSTM layers (``rnn.minlstm_stack``)."""

    _cell = "minlstm"


class LRU(_Stack):
    """LRU layers (``rnn.lru_stack``; ``hidden_features`` even; outputs keep the input width)."""

    _cell = "lru"
