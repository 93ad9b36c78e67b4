"""GAN config defaults: the classic fully connected GAN and the DCGAN recipe, and their checks."""

from __future__ import annotations

import ml_collections

from jaxgen.config import add_shared_fields, require_positive_ints, validate_run_length
from jaxgen.errors import UserError

KIND = "gan"  # the model kind a workdir's jaxgen.json names


RECALIBRATE_SAMPLES = 16384  # train.recalibrate_samples of configs saved before it existed
RECALIBRATE_CHUNK = 2048  # latents a recalibration pass holds at once


def default_config() -> ml_collections.ConfigDict:
    """The classic fully connected GAN; every GAN config starts from this and changes fields."""
    c = ml_collections.ConfigDict()
    c.model_kind = "gan"  # which trainer `jaxgen train` runs
    c.seed = 0  # base PRNG seed: init, data order, latents, dropout (fold_in(key, step) per step)

    c.data = ml_collections.ConfigDict()
    c.data.source = (
        "builtin"  # 'builtin' (scikit-learn digits, offline) or 'tfds' (set data.tfds_name)
    )
    c.data.path = (
        ""  # a folder of MNIST-format IDX files (or a .npy [N, H, W, C]); wins over data.source
    )
    c.data.tfds_name = (
        "mnist"  # tensorflow-datasets name: mnist, fashion_mnist, svhn_cropped, celeb_a, ...
    )
    c.data.image_size = 0  # resize tfds images to this side (celeb_a: 32 or 64); 0 keeps their size
    c.data.limit = 0  # use only the first N images (0: all)

    c.model = ml_collections.ConfigDict()
    c.model.arch = "fc"  # 'fc' (fully connected GAN) or 'dcgan'
    c.model.latent = 100  # size of z
    c.model.latent_dist = "uniform"  # p(z): 'uniform' in [-1, 1] or 'normal'
    c.model.image_size = 28  # side of the images (DCGAN: 28 is padded to 32)
    c.model.channels = 1  # 1 for grey digits, 3 for colour (svhn_cropped, celeb_a)
    c.model.g_hidden = (32, 64, 128)  # FC generator hidden sizes
    c.model.d_hidden = (128, 64, 32)  # FC discriminator hidden sizes
    c.model.features = (32, 64, 128)  # DCGAN filters per stride-2 layer (discriminator order)
    c.model.slope = 0.2  # leaky ReLU slope
    c.model.g_dropout = 0.0  # FC generator dropout after each hidden layer
    c.model.d_dropout = 0.3  # FC discriminator dropout after each hidden layer
    c.model.init_std = 0.0  # weights N(0, init_std); 0: PyTorch's default (FC) or 0.02 (DCGAN)
    c.model.num_classes = 0  # DCGAN: > 0 makes it class-conditional (the data's labels 0 ... K-1)
    c.model.cond_d = "projection"  # conditional D: 'projection' (Miyato & Koyama) or 'concat'

    c.train = ml_collections.ConfigDict()
    c.train.batch = 64  # real images per step (and as many generated)
    c.train.epochs = 100  # passes over the data (used when train.steps is 0)
    c.train.steps = 0  # total steps; 0: train.epochs passes instead (negative: refused)
    c.train.lr_g = 2e-3  # generator Adam learning rate
    c.train.lr_d = 2e-3  # discriminator Adam learning rate
    c.train.lr_decay_start = 0  # step at which the learning rates start to decay linearly
    c.train.lr_decay_steps = 0  # steps of that decay (to lr * lr_final); 0: constant learning rates
    c.train.lr_final = 0.1  # fraction of each learning rate left at the end of the decay
    c.train.beta1 = 0.9  # Adam beta1 (DCGAN: 0.5)
    c.train.beta2 = 0.999  # Adam beta2
    c.train.real_label = 0.9  # one-sided label smoothing: target for real images (fake target is 0)
    c.train.ema_decay = 0.0  # > 0 keeps an exponential moving average of the generator for sampling
    c.train.recalibrate_samples = (
        RECALIBRATE_SAMPLES  # latents re-measuring the EMA's BN statistics
    )
    c.train.grid = 64  # fixed latents drawn in the sample grid
    c.train.sample_every = 0  # steps between sample grids; 0: once per epoch
    c.train.log_every = 50  # steps between metrics rows (and non-finite checks)
    c.train.checkpoint_every = 1000  # steps between checkpoints (and one at the end)
    c.train.eval_every = 0  # steps between sample-quality measurements (best/ kept by it); 0: none
    c.train.eval_samples = 2000  # samples per quality measurement
    c.train.classifier_cache = "~/.cache/jaxgen/classifiers"  # evaluation classifiers, one per dataset (shared with jaxgen eval)
    return add_shared_fields(c)  # train.time_budget_s, train.on_nonfinite, parallel.*


def dcgan_config(image_size: int = 28, channels: int = 1) -> ml_collections.ConfigDict:
    """The DCGAN recipe (Radford et al.) on top of :func:`default_config`: 4x4 stride-2 layers with
    (32, 64, 128) filters, N(0, 0.02) weights, Adam 2e-4 with beta1 0.5, batch 128, normal latents,
    and a generator EMA (decay 0.999) for sampling."""
    c = default_config()
    c.model.arch = "dcgan"
    c.model.image_size = image_size
    c.model.channels = channels
    c.model.latent_dist = "normal"
    c.model.features = (32, 64, 128)
    c.train.batch = 128
    c.train.lr_g = c.train.lr_d = 2e-4
    c.train.beta1 = 0.5
    c.train.ema_decay = 0.999
    return c


def dcgan_smoke_config(image_size: int = 28, channels: int = 1) -> ml_collections.ConfigDict:
    """:func:`dcgan_config` shrunk to train end to end in seconds (the configs' ``smoke`` variants,
    CI): filters (8, 16, 32), 20 steps of batch 16, a grid of 16 samples."""
    c = dcgan_config(image_size, channels)
    c.model.features = (8, 16, 32)  # small filters: seconds, not minutes
    c.train.ema_decay = 0.99
    c.train.steps = 20
    c.train.batch = 16
    c.train.log_every = 5
    c.train.sample_every = 10
    c.train.checkpoint_every = 10
    c.train.grid = 16
    c.train.recalibrate_samples = 2048  # a tenth of the sampling cost of each grid and evaluation
    return c


def cdcgan_config(image_size: int = 28, channels: int = 1, num_classes: int = 10):
    """:func:`dcgan_config` made class-conditional (``num_classes`` labels, a projection
    discriminator), with a 10x10 sample grid: one class a column."""
    c = dcgan_config(image_size, channels)
    c.model.num_classes = num_classes
    c.model.cond_d = "projection"
    c.train.grid = num_classes * num_classes
    return c


def validate_config(cfg) -> None:
    """Every check of a GAN config that needs no data: one UserError naming the field."""
    require_positive_ints(
        cfg,
        (
            "model.latent",
            "model.image_size",
            "model.channels",
            "train.batch",
            "train.log_every",
            "train.checkpoint_every",
            "train.grid",
        ),
    )
    t = cfg.train
    validate_rates(t)
    n = t.get("recalibrate_samples", RECALIBRATE_SAMPLES)
    if not (
        isinstance(n, int) and n > 0 and (n <= RECALIBRATE_CHUNK or n % RECALIBRATE_CHUNK == 0)
    ):
        raise UserError(
            f"config.train.recalibrate_samples must be a positive integer, a multiple of "
            f"{RECALIBRATE_CHUNK} above {RECALIBRATE_CHUNK}, got {n!r}"
        )
    if not 0.0 <= t.ema_decay < 1.0:
        raise UserError(
            f"config.train.ema_decay must be in [0, 1) (0 turns the EMA off), got {t.ema_decay}"
        )
    for name in ("g_dropout", "d_dropout"):
        if not 0.0 <= cfg.model[name] < 1.0:
            raise UserError(f"config.model.{name} must be in [0, 1), got {cfg.model[name]}")
    if cfg.model.latent_dist not in ("normal", "uniform"):
        raise UserError(
            f"config.model.latent_dist must be 'normal' or 'uniform', got {cfg.model.latent_dist!r}"
        )
    m = cfg.model
    if not (isinstance(m.num_classes, int) and m.num_classes >= 0):
        raise UserError(
            f"config.model.num_classes must be an integer >= 0 (0: unconditional), got "
            f"{m.num_classes!r}"
        )
    if m.num_classes and m.arch != "dcgan":
        raise UserError(
            f"config.model.num_classes={m.num_classes} needs config.model.arch='dcgan' (the "
            f"class-conditional GAN is a DCGAN), got {m.arch!r}"
        )
    if m.cond_d not in ("projection", "concat"):
        raise UserError(f"config.model.cond_d must be 'projection' or 'concat', got {m.cond_d!r}")
    validate_run_length(t)


def validate_rates(t) -> None:
    """The checks of ``train`` fields every GAN recipe shares (the FC GAN, the DCGANs, the
    StackGAN): learning rates, their linear decay, the real label, the non-finite policy."""
    for name in ("lr_g", "lr_d"):
        if not t[name] > 0:
            raise UserError(f"config.train.{name} must be positive, got {t[name]}")
    if not (
        isinstance(t.lr_decay_start, int)
        and isinstance(t.lr_decay_steps, int)
        and t.lr_decay_start >= 0
        and t.lr_decay_steps >= 0
    ):
        raise UserError(
            f"config.train.lr_decay_start and lr_decay_steps must be integers >= 0 "
            f"(lr_decay_steps 0: constant learning rate), got {t.lr_decay_start!r}, "
            f"{t.lr_decay_steps!r}"
        )
    if not 0.0 <= t.lr_final <= 1.0:
        raise UserError(
            f"config.train.lr_final is the final fraction of the learning rate, in "
            f"[0, 1], got {t.lr_final}"
        )
    if not 0.0 < t.real_label <= 1.0:
        raise UserError(
            f"config.train.real_label must be in (0, 1] (0.9 is one-sided label "
            f"smoothing), got {t.real_label}"
        )
    if t.on_nonfinite not in ("stop", "skip"):
        raise UserError(
            f"config.train.on_nonfinite must be 'stop' or 'skip', got {t.on_nonfinite!r}"
        )
