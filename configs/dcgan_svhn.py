"""DCGAN on SVHN house numbers (32x32x3), from tensorflow-datasets' svhn_cropped (needs network).

    jaxgen train --config configs/dcgan_svhn.py --workdir runs/dcgan_svhn

The DCGAN of configs/dcgan_mnist.py with 3 channels and 32x32 inputs: 4x4 stride-2 convolutions
(32, 64, 128), batch norm everywhere but the generator output and discriminator input, N(0, 0.02)
weights, Adam 2e-4 with beta1 0.5, batch 128, label smoothing 0.9, generator EMA for sampling.
Expected run time: about 20 epochs of the 73,257 training images, ~11,000 steps; on an accelerator
minutes, on 2 CPU cores several hours. Not measured on SVHN yet (the development machines are offline).
"""

from jaxgen.gan.config import dcgan_config


def get_config():
    c = dcgan_config(image_size=32, channels=3)
    c.data.source = "tfds"
    c.data.tfds_name = "svhn_cropped"
    c.train.epochs = 20
    c.train.checkpoint_every = 1000
    c.train.log_every = 50
    return c
