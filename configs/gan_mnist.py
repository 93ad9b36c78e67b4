"""The fully connected GAN on 28x28 digits: the classic networks with a recipe that does not collapse.

    jaxgen train --config configs/gan_mnist.py --workdir runs/gan_mnist \
        --config.data.path=/path/to/mnist_idx_dir          # or leave data at tfds 'mnist' (network)
    jaxgen eval --workdir runs/gan_mnist

Networks as in the classic recipe (configs/gan_mnist_classic.py): D 784-128-64-32-1 and
G 100-32-64-128-784, leaky ReLU 0.2, dropout 0.3 in D, tanh output, batch 64, real labels 0.9.
What changes, and why (2-minute probes on the 10,000 MNIST test images, 2 CPU cores, 17k steps each;
classifier score out of 10, see benchmarks/results/gan_quality.md for the full 15-minute runs):

* The discriminator learns 5x slower than the generator (Adam 2e-4 vs 1e-3) with beta1 0.5. With
  equal rates D wins: its loss reaches the label-smoothing floor, G's tanh saturates and the
  samples collapse to one salt-and-pepper stroke (classic lr 2e-3: score 1.5; lr 5e-4 for both:
  one class, score 1.0; 2e-4 for both with G dropout: score 4.5). With D at 2e-4 and G at 1e-3:
  all ten classes, largest 13%, score 7.4 after 2 minutes.
* Normal latents (the uniform ones of the classic recipe work as well here; normal is the norm).
* The generator that is sampled is an exponential moving average of G (decay 0.999), which
  smooths the step-to-step oscillation of GAN training.
* Stopping on the metric: every 2,000 steps the Frechet distance of the evaluation classifier's
  features (2,000 samples against the real images) is measured and the best checkpoint is kept in
  WORKDIR/best, which `jaxgen sample` and `jaxgen eval` use.

Expected: ~10,000 images/s on 2 CPU cores (quality checks included); train.time_budget_s stops it
after 15 minutes (~140k steps): all ten classes, 7-13% each, classifier score 8.2 out of 10,
Frechet distance 71 (real vs real 4.3).
"""

from jaxgen.gan.config import default_config


def get_config():
    c = default_config()
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
    return c
