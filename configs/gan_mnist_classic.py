"""The classic fully connected GAN recipe, kept for comparison (it mode-collapses).

    jaxgen train --config configs/gan_mnist_classic.py --workdir runs/gan_classic \
        --config.data.path=/path/to/mnist_idx_dir

D 784-128-64-32-1 and G 100-32-64-128-784, leaky ReLU 0.2, dropout 0.3, tanh output, uniform
latents, Adam lr 2e-3 (default betas) for both networks, batch 64, label smoothing 0.9, 100 epochs.
Expected result on the 10,000 MNIST test images: blurry digits early, then collapse onto a few
classes; see benchmarks/results/gan_quality.md for the measured numbers. configs/gan_mnist.py is
the recipe that holds up.
"""

from jaxgen.gan.config import default_config


def get_config():
    c = default_config()
    c.data.source = "tfds"
    c.data.tfds_name = "mnist"
    return c
