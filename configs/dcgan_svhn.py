r"""DCGAN on SVHN house numbers (32x32x3), from tensorflow-datasets' svhn_cropped (needs network).

default: the DCGAN of configs/dcgan_mnist.py with 3 channels and 32x32 inputs: 4x4 stride-2
convolutions (32, 64, 128), batch norm everywhere but the generator output and discriminator
input, N(0, 0.02) weights, Adam 2e-4 with beta1 0.5, batch 128, label smoothing 0.9, generator
EMA for sampling.

    jaxgen train --config configs/dcgan_svhn.py --workdir runs/dcgan_svhn

  Expected run time: about 20 epochs of the 73,257 training images, ~11,000 steps; on an
  accelerator minutes, on 2 CPU cores several hours. Expected result: not measured on SVHN yet
  (the development machines are offline).

smoke: the colour DCGAN end to end on a few SVHN-shaped images, with small filters (8, 16, 32).

    jaxgen train --config configs/dcgan_svhn.py:smoke --workdir /tmp/dcgan_svhn_smoke \
        --config.data.path=IMAGES.npy

  Needs tensorflow-datasets' svhn_cropped (network) unless data.path names a .npy of 32x32x3
  images. Expected run time: under a minute on 2 CPU cores; nothing readable yet.

Measured runs of the same networks on MNIST: benchmarks/results/gan_quality.md.
"""

from jaxgen.gan.config import dcgan_config, dcgan_smoke_config

VARIANTS = ("default", "smoke")


def get_config(variant: str = "default"):
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    if variant == "smoke":
        c = dcgan_smoke_config(image_size=32, channels=3)
        c.data.limit = 512
    else:
        c = dcgan_config(image_size=32, channels=3)
        c.train.epochs = 20
        c.train.checkpoint_every = 1000
        c.train.log_every = 50
    c.data.source = "tfds"
    c.data.tfds_name = "svhn_cropped"
    return c
