"""Smoke test: the FC GAN end to end in seconds on the built-in digits (CI uses it).

    jaxgen train --config configs/gan_mnist_smoke.py --workdir /tmp/gan_smoke

Expected run time: well under a minute on 2 CPU cores. Expected result: grids of noise turning into
blobs; nothing readable yet.
"""

from jaxgen.gan.config import default_config


def get_config():
    c = default_config()
    c.data.source = "builtin"
    c.train.steps = 60
    c.train.batch = 32
    c.train.log_every = 10
    c.train.sample_every = 30
    c.train.checkpoint_every = 30
    c.train.grid = 16
    return c
