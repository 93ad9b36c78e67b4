r"""Unpaired image-to-image translation, CycleGAN: MNIST digits (A) <-> the UCI digits that ship
with scikit-learn (B; 8x8 scans upsampled to 28x28: another scanner, resolution and stroke).

default: two ResNet generators, two PatchGANs, least-squares GAN loss, cycle loss (10) and
identity loss (0.5 x 10), a history of 50 generated images per discriminator kept in the train
state, Adam 2e-4 with beta1 0.5, constant then a linear decay to 0 over the second half. Two
choices measured in benchmarks/results/translation*.md: the UCI scans upsampled to 20x20 and
centred in 28x28 (MNIST's own framing; 28 fills the frame), class-conditional discriminators
(model.num_classes=10: both sets are labelled, still unpaired; each PatchGAN judges an image
together with its class, so an MNIST 7 must become what UCI's 7s look like), and a cycle weight
of 1 instead of 10 (the identity weight stays half of it), so the generators may redraw.

    jaxgen train --config configs/cyclegan_mnist_uci.py --workdir runs/cyclegan \
        --config.data.a_path=/path/to/mnist_idx_dir     # or leave A at tfds 'mnist' (network)
    jaxgen translate --workdir runs/cyclegan --input mnist.npy --out as_uci.npy --direction a2b

  Online, the paper's sets (unlabelled: unconditional discriminators):
  --config.data.tfds_pair=cycle_gan/horse2zebra --config.data.image_size=128
  --config.model.num_classes=0 (and --config.model.g_features=32 --config.model.g_blocks=6).

  Expected run time: ~15 minutes on 2 CPU cores (train.time_budget_s=900; the decay is fitted
  to the steps that fit). Measured: benchmarks/results/translation_hold1000*.md (MNIST -> UCI
  0.925 / 0.941 in two seeds on the last 1,000 MNIST digits, held out with
  --config.data.holdout_a=1000).

unconditional: the recipe before class-conditional discriminators: plain PatchGANs and CyCADA's
semantic consistency (Hoffman et al. 2018; a frozen classifier trained on domain A's labels asks
each translation for the class it reads in the input), weight 1. Needs labels for A only.

smoke: end to end on the built-in digits in seconds (both domains the same set).

    jaxgen train --config configs/cyclegan_mnist_uci.py:smoke --workdir /tmp/cyclegan_smoke
"""

from jaxgen.gan.translation_train import cyclegan_config, cyclegan_smoke_config

VARIANTS = ("default", "unconditional", "smoke")


def get_config(variant: str = "default"):
    if variant == "smoke":
        return cyclegan_smoke_config()
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    c = cyclegan_config()
    c.train.steps = 9000
    c.train.lr_decay_start = 4500  # the paper: constant for the first half, then linear to 0
    c.train.lr_decay_steps = 4500
    c.train.time_budget_s = 900.0
    c.data.builtin_box = 20  # the UCI scans framed as MNIST frames its digits (20x20 in 28x28)
    if variant == "unconditional":
        c.model.semantic_weight = 1.0  # CyCADA's semantic consistency (0: plain CycleGAN)
        return c
    c.model.num_classes = 10  # class-conditional discriminators (0: unconditional)
    c.model.cycle_weight = 1.0  # the paper's 10 keeps the source's strokes; measured 10/5/2.5/1
    return c
