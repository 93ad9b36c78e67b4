"""The classic char-RNN recipe: 2 x 512 LSTM, seq 100, batch 128, Adam 1e-3, clip 5, dropout 0.5, 20 epochs.

Launch (on tiny-shakespeare, the built-in corpus; --config.data.path=FILE trains on your own UTF-8 text):

    jaxgen train --config configs/charrnn.py --workdir runs/shakespeare

Expected run time: on this project's 2-core CPU ~3.4k tokens/s, about 20 epochs x 78 steps x 3.7 s,
i.e. ~1.6 hours; on one GPU a few minutes. Expected result: validation loss about 1.40-1.45 nats/char on
tiny-shakespeare after 20 epochs (the same recipe reaches ~1.29 on the larger Anna Karenina text).
"""

from jaxgen.charrnn.config import default_config


def get_config():
    return default_config()
