r"""Text to image on MNIST digits, StackGAN-style: "a bold seven leaning right" -> a 16x16 sketch
(stage I) -> a 28x28 digit (stage II, 32x32 padded).

default: captions written from each digit's label, stroke thickness and slant
(jaxgen.gan.captions), a bidirectional LSTM text encoder pretrained on them (direction dropout,
a paraphrase term that pulls two captions of one image together) and frozen,
conditioning augmentation, both stages trained together with matching-aware discriminators that
also read the digit, thickness and slant (auxiliary heads, TAC-GAN).

    jaxgen train --config configs/stackgan_mnist.py --workdir runs/stackgan \
        --config.data.path=/path/to/mnist_idx_dir          # or leave data at tfds 'mnist' (network)
    jaxgen sample --workdir runs/stackgan --text "a bold seven leaning right" --num 16 \
        --grid sevens.png

  Expected run time: ~15 minutes on 2 CPU cores (train.time_budget_s=900; the learning-rate
  decay is fitted to the steps that fit). Measured: benchmarks/results/stackgan.md.

plain: the first recipe: a left-to-right LSTM text encoder pretrained for 1,500 steps, no
  paraphrase term, no auxiliary heads (for comparison; it reads held-out word orders badly:
  benchmarks/results/text_encoder.md).

smoke: end to end on the built-in digits in seconds, with small networks.

    jaxgen train --config configs/stackgan_mnist.py:smoke --workdir /tmp/stackgan_smoke
"""

from jaxgen.gan.stackgan_train import default_config, smoke_config

VARIANTS = ("default", "plain", "smoke")


def get_config(variant: str = "default"):
    if variant == "smoke":
        return smoke_config()
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    c = default_config()
    if variant == "plain":
        c.model.text_encoder = "lstm"
        c.model.aux_weight = 0.0
        c.text.pretrain_steps = 1500
        c.text.paraphrase_weight = 0.0
    c.train.steps = 6000
    c.train.lr_decay_start = 2000  # then both rates fall linearly to 0 by the last step
    c.train.lr_decay_steps = 4000
    c.train.lr_final = 0.0
    c.train.checkpoint_every = 1000
    c.train.sample_every = 500
    c.train.time_budget_s = 900.0
    return c
