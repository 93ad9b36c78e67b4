"""Smoke test: the colour DCGAN (32x32x3) end to end on a few SVHN-shaped images.

    jaxgen train --config configs/dcgan_svhn_smoke.py --workdir /tmp/dcgan_svhn_smoke \
        --config.data.path=IMAGES.npy

Needs tensorflow-datasets' svhn_cropped (network) unless data.path names a .npy of 32x32x3 images.
"""

from jaxgen.gan.config import dcgan_config


def get_config():
    c = dcgan_config(image_size=32, channels=3)
    c.data.source = "tfds"
    c.data.tfds_name = "svhn_cropped"
    c.data.limit = 512
    c.model.features = (8, 16, 32)  # small filters: seconds, not minutes
    c.train.ema_decay = 0.99
    c.train.steps = 20
    c.train.batch = 16
    c.train.log_every = 5
    c.train.sample_every = 10
    c.train.checkpoint_every = 10
    c.train.grid = 16
    return c
