r"""DCGAN on MNIST digits (28x28 padded to 32x32): the recipe of Radford et al., label smoothing.

default: tuned for quality on a fixed budget of 15 minutes on 2 CPU cores (batch 64, Adam 1e-3 for
G and 4e-4 for D, 8,500 steps with a linear decay from step 3,500, a generator EMA, the best
checkpoint by Frechet distance).

    jaxgen train --config configs/dcgan_mnist.py --workdir runs/dcgan_mnist \
        --config.data.path=/path/to/mnist_idx_dir          # or leave data at tfds 'mnist' (network)
    jaxgen eval --workdir runs/dcgan_mnist

  Expected run time: ~780 s for the 8,500 steps on 2 CPU cores (~800 images/s; train.time_budget_s
  =900 stops a slower machine early); on a GPU a minute or two. Expected result: classifier score
  about 8.5 out of 10, all ten classes at 8.5-12.6%, Frechet distance 20.0 (real vs real 4.4).

smoke: the DCGAN end to end on the built-in digits in seconds, with small filters (8, 16, 32).

    jaxgen train --config configs/dcgan_mnist.py:smoke --workdir /tmp/dcgan_smoke

  Expected run time: well under a minute on 2 CPU cores. Expected result: nothing readable yet.

Measured runs: benchmarks/results/gan_quality.md; the networks, why the default recipe is what
it is and the runs that chose it: benchmarks/results/config_notes.md.
"""

from jaxgen.gan.config import dcgan_config, dcgan_smoke_config

VARIANTS = ("default", "smoke")


def get_config(variant: str = "default"):
    if variant == "smoke":
        c = dcgan_smoke_config(image_size=28, channels=1)
        c.data.source = "builtin"
        return c
    if variant != "default":
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    c = dcgan_config(image_size=28, channels=1)
    c.data.source = "tfds"
    c.data.tfds_name = "mnist"
    c.train.lr_g = 1e-3  # a faster generator: at 2e-4 the discriminator wins (D(fake) ~ 0.1)
    c.train.lr_d = 4e-4
    c.train.batch = 64  # twice the updates of 128 in the same time (the budget is the limit)
    c.train.ema_decay = 0.999  # ~1,000-step average
    c.train.steps = 8500  # ~54 epochs of 10,000 images at batch 64
    c.train.lr_decay_start = 3500  # then both learning rates fall linearly to 0 by the last step
    c.train.lr_decay_steps = 5000
    c.train.lr_final = 0.0
    c.train.eval_every = 500
    c.train.eval_samples = 2000
    c.train.checkpoint_every = 1000
    c.train.log_every = 50
    c.train.sample_every = 0  # one grid per epoch
    c.train.time_budget_s = 900.0
    return c
