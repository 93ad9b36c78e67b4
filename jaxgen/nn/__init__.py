"""Pure layers over plain-dict parameters (images are NHWC, batch-major).

Recurrent cells live in :mod:`jaxgen.rnn`, which builds on these layers (``nn`` does not
import ``rnn``).
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
    dropout_keep,
    layer_norm,
    layer_norm_init,
    leaky_relu,
)

__all__ = [
    "batch_norm",
    "batch_norm_init",
    "conv",
    "conv_init",
    "conv_transpose",
    "conv_transpose_init",
    "dense",
    "dense_init",
    "dropout",
    "dropout_keep",
    "layer_norm",
    "layer_norm_init",
    "leaky_relu",
]
