"""Pure layers over plain-dict parameters (images are NHWC, batch-major).

Recurrent cells live in :mod:`jaxgen.rnn`; they are re-exported here so that
``jaxgen.nn`` is the one place to import building blocks from.
"""

from jaxgen.nn.layers import (
    batch_norm,
    batch_norm_init,
    conv,
    conv_init,
    conv_transpose,
    conv_transpose_init,
    dense,
    dense_init,
    dropout,
    leaky_relu,
)
from jaxgen.rnn import gru_cell, lstm_cell, rnn_cell, unroll

__all__ = [
    "batch_norm", "batch_norm_init", "conv", "conv_init", "conv_transpose", "conv_transpose_init", "dense",
    "dense_init", "dropout", "leaky_relu", "gru_cell", "lstm_cell", "rnn_cell", "unroll",
]
