"""Smoke test: a tiny char-RNN that trains end to end in seconds (CI uses it).

    jaxgen train --config configs/charrnn_smoke.py --workdir /tmp/smoke

Expected run time: under 30 s on 2 CPU cores. Expected result: the validation loss falls below the
uniform baseline ln(vocab) (ln 65 = 4.17 nats/char on the built-in tiny-shakespeare); the text is not yet
readable.
"""

from jaxgen.charrnn.config import default_config


def get_config():
    c = default_config()
    c.model.hidden = 32
    c.model.layers = 2
    c.model.dropout = 0.1
    c.train.batch = 8
    c.train.seq_len = 16
    c.train.steps = 40
    c.train.lr = 1e-2
    c.train.log_every = 5
    c.train.eval_every = 20
    c.train.checkpoint_every = 20
    return c
