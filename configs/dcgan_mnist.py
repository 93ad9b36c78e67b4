"""DCGAN on MNIST digits (28x28 padded to 32x32), the recipe of Radford et al. with label smoothing.

    jaxgen train --config configs/dcgan_mnist.py --workdir runs/dcgan_mnist \
        --config.data.path=../shared/data/mnist          # or leave data at tfds 'mnist' (network)
    jaxgen eval --workdir runs/dcgan_mnist

Discriminator: 4x4 stride-2 convolutions with 32, 64, 128 filters, leaky ReLU 0.2, batch norm on all
but the input layer, dense logit. Generator: dense to 4x4x128, 4x4 stride-2 transposed convolutions
128 -> 64 -> 32 -> 1, ReLU, batch norm on all but the output, tanh. Weights N(0, 0.02); Adam 2e-4,
beta1 0.5, for both networks; batch 128; real labels 0.9; normal latents.

Additions for quality on a fixed budget (measured in benchmarks/results/gan_quality.md):
* batch 64 instead of 128: on a CPU the wall clock, not the data, is the limit, and twice the
  updates in the same time helped (15 minutes: classifier score 8.02 vs 7.30 with batch 128 and
  EMA 0.999);
* an exponential moving average of the generator (decay 0.99, about the last 100 steps) is what
  gets sampled; its batch-norm statistics are re-measured on 2,048 latents before sampling;
* the sample quality (Frechet distance of the evaluation classifier's features, 2,000 samples) is
  measured every 500 steps and the best checkpoint is kept in WORKDIR/best, which `jaxgen sample`
  and `jaxgen eval` use; a late collapse therefore costs nothing.

Expected: on the 10,000 MNIST test images and 2 CPU cores (~400 images/s), train.time_budget_s
stops it after 15 minutes (~5,400 steps, 35 epochs): all ten classes, 7-14% each, classifier score
8.0 out of 10, Frechet distance 46 (real vs real 4.3), still improving. On a GPU the 100 epochs
take minutes.
"""

from jaxgen.train.gan import dcgan_config


def get_config():
    c = dcgan_config(image_size=28, channels=1)
    c.data.source = "tfds"
    c.data.tfds_name = "mnist"
    c.train.batch = 64  # twice the updates of 128 in the same time (the budget, not the data, is the limit)
    c.train.ema_decay = 0.99  # ~100-step average: 0.999 lags ~1,000 steps behind a 3,000-step run
    c.train.epochs = 100
    c.train.eval_every = 500
    c.train.eval_samples = 2000
    c.train.checkpoint_every = 1000
    c.train.log_every = 50
    c.train.sample_every = 0  # one grid per epoch
    c.train.time_budget_s = 900.0
    return c
