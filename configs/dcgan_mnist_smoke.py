"""Smoke test: the DCGAN end to end on the built-in digits (28x28 padded to 32), in seconds.

    jaxgen train --config configs/dcgan_mnist_smoke.py --workdir /tmp/dcgan_smoke

Small filters (8, 16, 32) so it runs in well under a minute on 2 CPU cores; nothing readable yet.
"""

from jaxgen.gan.config import dcgan_config


def get_config():
    c = dcgan_config(image_size=28, channels=1)
    c.data.source = "builtin"
    c.model.features = (8, 16, 32)  # small filters: seconds, not minutes
    c.train.ema_decay = 0.99
    c.train.steps = 20
    c.train.batch = 16
    c.train.log_every = 5
    c.train.sample_every = 10
    c.train.checkpoint_every = 10
    c.train.grid = 16
    return c
