r"""Paired image-to-image translation, Pix2Pix: a digit's outline -> the digit (MNIST, 28x28
padded to 32x32).

default: pairs built from the digits (jaxgen.data.pairs.edges_to_digits), the last 1,000 held out;
a 5-level U-Net (dropout its only noise) against a PatchGAN on (outline, digit) pairs, conditional
GAN loss + 100 x L1, Adam 2e-4 with beta1 0.5, a linear decay over the second half.

    jaxgen train --config configs/pix2pix_edges2digits.py --workdir runs/pix2pix \
        --config.data.path=/path/to/mnist_idx_dir       # or leave data at tfds 'mnist' (network)
    jaxgen translate --workdir runs/pix2pix --input outlines.npy --out digits.npy --grid g.png

  Other data: --config.data.task=lowres (7x7 -> 28x28), or --config.data.pairs=DIR for a folder
  of pairs (A/ and B/ with the same file names, or side-by-side A|B images as the published
  Pix2Pix sets ship). --config.model.gan_weight=0 trains the U-Net on L1 alone (the baseline).

  Expected run time: ~5 minutes on 2 CPU cores (train.time_budget_s=300; the decay is fitted to
  the steps that fit). Measured: benchmarks/results/translation.md.

smoke: end to end on the built-in digits in seconds, with small networks.

    jaxgen train --config configs/pix2pix_edges2digits.py:smoke --workdir /tmp/pix2pix_smoke
"""

from jaxgen.gan.translation_train import pix2pix_config, pix2pix_smoke_config

VARIANTS = ("default", "smoke")


def get_config(variant: str = "default"):
    if variant == "smoke":
        return pix2pix_smoke_config()
    if variant != "default":
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    c = pix2pix_config()
    c.train.steps = 8000
    c.train.lr_decay_start = 4000  # then both rates fall linearly to 0 by the last step
    c.train.lr_decay_steps = 4000
    c.train.time_budget_s = 300.0
    return c
