r"""The fully connected GAN on 28x28 digits: D 784-128-64-32-1, G 100-32-64-128-784.

default: the classic networks with a recipe that does not collapse (G learns 5x faster than D,
beta1 0.5, normal latents, a generator EMA, the best checkpoint by Frechet distance).

    jaxgen train --config configs/gan_mnist.py --workdir runs/gan_mnist \
        --config.data.path=/path/to/mnist_idx_dir          # or leave data at tfds 'mnist' (network)
    jaxgen eval --workdir runs/gan_mnist

  Expected: ~10,000 images/s on 2 CPU cores (quality checks included); train.time_budget_s stops
  it after 15 minutes (~140k steps): all ten classes, 7-13% each, classifier score 8.2 out of 10,
  Frechet distance 71 (real vs real 4.3).

classic: the classic recipe, kept for comparison (it mode-collapses): uniform latents, Adam lr
2e-3 (default betas) for both networks, batch 64, label smoothing 0.9, 100 epochs.

    jaxgen train --config configs/gan_mnist.py:classic --workdir runs/gan_classic \
        --config.data.path=/path/to/mnist_idx_dir

  Expected result on the 10,000 MNIST test images: blurry digits early, then collapse onto a few
  classes; the default variant is the recipe that holds up.

smoke: the FC GAN end to end in seconds on the built-in digits (CI uses it).

    jaxgen train --config configs/gan_mnist.py:smoke --workdir /tmp/gan_smoke

  Expected run time: well under a minute on 2 CPU cores. Expected result: grids of noise turning
  into blobs; nothing readable yet.

Measured runs: benchmarks/results/gan_quality.md; why the default recipe is what it is:
benchmarks/results/config_notes.md.
"""

from jaxgen.gan.config import default_config

VARIANTS = ("default", "classic", "smoke")


def get_config(variant: str = "default"):
    c = default_config()
    if variant == "default":
        c.data.source = "tfds"
        c.data.tfds_name = "mnist"
        c.model.latent_dist = "normal"
        c.train.lr_g = 1e-3
        c.train.lr_d = 2e-4
        c.train.beta1 = 0.5
        c.train.ema_decay = 0.999
        c.train.epochs = 2000
        c.train.eval_every = 2000
        c.train.eval_samples = 2000
        c.train.checkpoint_every = 10000
        c.train.log_every = 200
        c.train.sample_every = 3120  # a grid every 20 epochs of the 10,000 images
        c.train.time_budget_s = 900.0
    elif variant == "classic":
        c.data.source = "tfds"
        c.data.tfds_name = "mnist"
    elif variant == "smoke":
        c.data.source = "builtin"
        c.train.steps = 60
        c.train.batch = 32
        c.train.log_every = 10
        c.train.sample_every = 30
        c.train.checkpoint_every = 30
        c.train.grid = 16
    else:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    return c
