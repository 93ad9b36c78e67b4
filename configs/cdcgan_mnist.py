r"""Class-conditional DCGAN on MNIST digits (28x28 padded to 32x32): ask for a digit, get it.

default: the DCGAN recipe of configs/dcgan_mnist.py (the same networks, learning rates, decay,
EMA and budget), with the label as one-hot inputs to the generator and a projection discriminator
(Miyato & Koyama 2018). The sample grid has one class a column.

    jaxgen train --config configs/cdcgan_mnist.py --workdir runs/cdcgan_mnist \
        --config.data.path=/path/to/mnist_idx_dir          # or leave data at tfds 'mnist' (network)
    jaxgen sample --workdir runs/cdcgan_mnist --label 7 --num 64 --grid sevens.png
    jaxgen eval --workdir runs/cdcgan_mnist                  # adds how often each class is right

  Expected run time: ~15 minutes on 2 CPU cores (train.time_budget_s=900).
  Measured: benchmarks/results/cdcgan.md.

concat: the same with the classic conditional discriminator, one-hot label planes concatenated
to the image (config.model.cond_d='concat'), for the comparison in benchmarks/results/cdcgan.md.

smoke: end to end on the built-in digits in seconds, with small filters (8, 16, 32).

    jaxgen train --config configs/cdcgan_mnist.py:smoke --workdir /tmp/cdcgan_smoke
"""

from pathlib import Path

from jaxgen.config import load_config
from jaxgen.gan.config import cdcgan_config, dcgan_smoke_config

VARIANTS = ("default", "concat", "smoke")


def get_config(variant: str = "default"):
    if variant == "smoke":
        c = dcgan_smoke_config(image_size=28, channels=1)
        c.data.source = "builtin"
        c.model.num_classes = 10
        c.train.grid = 20
        return c
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    u = load_config(Path(__file__).with_name("dcgan_mnist.py"))
    c = cdcgan_config(image_size=28, channels=1, num_classes=10)
    c.data, c.train = u.data, u.train  # the unconditional recipe's data and schedule
    c.train.grid = 100
    if variant == "concat":
        c.model.cond_d = "concat"
    return c
