"""Plain-jnp references of the fused kernels, with the same signatures.

They are the ``lax.scan`` paths of :mod:`jaxgen.rnn` (the LSTM's hand-written
fused BPTT; the RNN's autodiff of the scan): the kernels must match them.
``mode`` is accepted and ignored, so a reference can stand in for a kernel.
"""

from __future__ import annotations

import functools

from jaxgen import rnn as _rnn


def lstm_sequence_reference(params, zx, carry, *, mode=None, reverse=False, lengths=None):
    """``((h_T, c_T), ys)`` for pre-projected ``zx`` ``[T, B, 4H]``, carry ``(h0, c0)`` ``[B, H]``."""
    del mode
    h0, c0 = carry
    mask = _rnn._length_mask(lengths, zx.shape[0])
    if mask is not None:
        mask = mask.astype(zx.dtype)
    h, c, ys = _rnn._lstm_fused(params["w_hh"], zx, h0, c0, mask, reverse, 1)
    return (h, c), ys


def rnn_sequence_reference(params, zx, carry, *, mode=None, activation="tanh", reverse=False,
                           lengths=None):
    """``(h_T, ys)`` for pre-projected ``zx`` ``[T, B, H]`` and carry ``h0`` ``[B, H]``."""
    del mode
    step = functools.partial(_rnn._rnn_step, activation=activation)
    return _rnn.unroll(step, params, carry, zx, mode="scan", reverse=reverse, lengths=lengths)
