r"""Unpaired image-to-image translation, CycleGAN: MNIST digits (A) <-> the UCI digits that ship
with scikit-learn (B; 8x8 scans upsampled to 28x28: another scanner, resolution and stroke).

default: two ResNet generators, two PatchGANs, least-squares GAN loss, cycle loss (10) and
identity loss (0.5 x 10), a history of 50 generated images per discriminator kept in the train
state, Adam 2e-4 with beta1 0.5, constant then a linear decay to 0 over the second half. Two
choices measured in benchmarks/results/translation*.md: the UCI scans upsampled to 20x20 and
centred in 28x28 (MNIST's own framing; 28 fills the frame), and CyCADA's semantic consistency
(Hoffman et al. 2018) through a classifier trained on MNIST's labels, weight 1
(--config.model.semantic_weight=0 is the plain CycleGAN).

    jaxgen train --config configs/cyclegan_mnist_uci.py --workdir runs/cyclegan \
        --config.data.a_path=/path/to/mnist_idx_dir     # or leave A at tfds 'mnist' (network)
    jaxgen translate --workdir runs/cyclegan --input mnist.npy --out as_uci.npy --direction a2b

  Online, the paper's sets: --config.data.tfds_pair=cycle_gan/horse2zebra
  --config.data.image_size=128 (and --config.model.g_features=32 --config.model.g_blocks=6).

  Expected run time: ~10 minutes on 2 CPU cores (train.time_budget_s=600; the decay is fitted
  to the steps that fit). Measured: benchmarks/results/translation.md.

smoke: end to end on the built-in digits in seconds (both domains the same set).

    jaxgen train --config configs/cyclegan_mnist_uci.py:smoke --workdir /tmp/cyclegan_smoke
"""

from jaxgen.gan.translation_train import cyclegan_config, cyclegan_smoke_config

VARIANTS = ("default", "smoke")


def get_config(variant: str = "default"):
    if variant == "smoke":
        return cyclegan_smoke_config()
    if variant != "default":
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    c = cyclegan_config()
    c.train.steps = 6000
    c.train.lr_decay_start = 3000  # the paper: constant for the first half, then linear to 0
    c.train.lr_decay_steps = 3000
    c.train.time_budget_s = 600.0
    c.data.builtin_box = 20  # the UCI scans framed as MNIST frames its digits (20x20 in 28x28)
    c.model.semantic_weight = 1.0  # CyCADA's semantic consistency (0: plain CycleGAN)
    return c
