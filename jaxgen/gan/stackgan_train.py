"""Training the text-to-image StackGAN: its config, and the recipe :func:`jaxgen.training.loop.run`
runs (captions written once from the images, the text encoder pretrained, both stages trained in
one step, grids of fixed captions).

Captions come from :mod:`jaxgen.gan.captions` (``text.captions_per_image`` per image, training
templates only); step ``s`` reads image batch ``s`` of :class:`ImageBatches` and, for each image,
caption ``default_rng([seed, 3, s])``'s draw: a checkpoint holds everything to continue exactly.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import ml_collections
import numpy as np

from jaxgen import plots
from jaxgen.config import add_shared_fields, require_positive_ints, validate_run_length
from jaxgen.data.images import ImageBatches, Images, fit_to_model, load_images
from jaxgen.errors import UserError
from jaxgen.gan import captions, stackgan, text
from jaxgen.gan.config import validate_rates
from jaxgen.gan.step import make_optimizers
from jaxgen.training import checkpoint, loop
from jaxgen.training.preemption import StopOnSignal

KIND = "stackgan"

# the training grid: one digit a column, these descriptions in rows (fixed latents)
GRID_ROWS = (
    "a thin upright {d}",
    "a bold upright {d}",
    "a {d} leaning left",
    "a {d} leaning right",
)


def default_config() -> ml_collections.ConfigDict:
    """The StackGAN recipe for 28x28 digits (stage I 16x16, stage II 32x32)."""
    c = ml_collections.ConfigDict()
    c.model_kind = KIND
    c.seed = 0  # init, data order, caption choice, latents

    c.data = ml_collections.ConfigDict()
    c.data.source = "tfds"  # 'builtin' (scikit-learn digits, offline) or 'tfds'
    c.data.path = ""  # a folder of MNIST-format IDX files (with labels); wins over data.source
    c.data.tfds_name = "mnist"
    c.data.image_size = 0  # unused (the digits are 28x28); kept for the shared image loader
    c.data.limit = 0  # use only the first N images (0: all)

    c.model = ml_collections.ConfigDict()
    c.model.latent = 64  # size of z
    c.model.c_dim = 16  # conditioning code (conditioning augmentation)
    c.model.text_hidden = 64  # text LSTM hidden size
    c.model.text_embed = 32  # text embedding size
    c.model.text_encoder = "bilstm"  # 'bilstm' (reads both ways) or 'lstm' (left to right)
    c.model.d_text = 16  # embedding compressed for the concat discriminators
    c.model.cond_d = "projection"  # discriminators read the text: 'projection' or 'concat'
    c.model.features = 32  # base filters
    c.model.res_blocks = 2  # stage II residual blocks
    c.model.init_std = 0.02
    c.model.aux_weight = 1.0  # >0: discriminators also read digit/thickness/slant (TAC-GAN heads)

    c.text = ml_collections.ConfigDict()
    c.text.captions_per_image = 5  # training captions written for each image
    c.text.max_words = 12  # captions are padded to this many words
    c.text.pretrain_steps = 3000  # text-encoder pretraining steps (then frozen)
    c.text.pretrain_batch = 128
    c.text.pretrain_lr = 3e-3
    c.text.direction_dropout = 0.5  # bilstm pretraining: captions with one direction zeroed
    c.text.paraphrase_weight = 0.1  # pulls two captions of one image to one embedding

    c.train = ml_collections.ConfigDict()
    c.train.batch = 64
    c.train.epochs = 30  # used when train.steps is 0
    c.train.steps = 0
    c.train.lr_g = 1e-3  # the DCGAN recipe's rates (configs/dcgan_mnist.py)
    c.train.lr_d = 4e-4
    c.train.lr_decay_start = 0  # step at which both rates start to fall linearly
    c.train.lr_decay_steps = 0  # 0: constant rates
    c.train.lr_final = 0.0
    c.train.beta1 = 0.5
    c.train.beta2 = 0.999
    c.train.real_label = 0.9  # one-sided label smoothing
    c.train.kl_weight = 0.1  # conditioning augmentation's KL penalty (1.0: labels 0.35, not 0.69)
    c.train.sample_every = 0  # steps between sample grids; 0: once per epoch
    c.train.log_every = 50
    c.train.checkpoint_every = 1000
    return add_shared_fields(c)


def smoke_config() -> ml_collections.ConfigDict:
    """End to end on the built-in digits in seconds: small filters, 20 steps."""
    c = default_config()
    c.data.source = "builtin"
    c.model.features = 8
    c.model.res_blocks = 1
    c.model.text_hidden = 32
    c.text.captions_per_image = 2
    c.text.pretrain_steps = 100
    c.text.pretrain_batch = 64
    c.train.steps = 20
    c.train.batch = 16
    c.train.log_every = 5
    c.train.sample_every = 10
    c.train.checkpoint_every = 10
    return c


def validate_config(cfg) -> None:
    """Every check that needs no data: one UserError naming the field."""
    require_positive_ints(
        cfg,
        (
            "model.latent", "model.c_dim", "model.text_hidden", "model.text_embed",
            "model.d_text", "model.features", "text.captions_per_image", "text.max_words",
            "text.pretrain_steps", "text.pretrain_batch", "train.batch", "train.log_every",
            "train.checkpoint_every",
        ),
    )  # fmt: skip
    m, t = cfg.model, cfg.train
    if not (isinstance(m.res_blocks, int) and m.res_blocks >= 0):
        raise UserError(f"config.model.res_blocks must be an integer >= 0, got {m.res_blocks!r}")
    if m.text_encoder not in text.ENCODERS:
        raise UserError(
            f"config.model.text_encoder must be one of {', '.join(text.ENCODERS)}, got "
            f"{m.text_encoder!r}"
        )
    if m.cond_d not in ("projection", "concat"):
        raise UserError(f"config.model.cond_d must be 'projection' or 'concat', got {m.cond_d!r}")
    if not (isinstance(m.aux_weight, (int, float)) and m.aux_weight >= 0):
        raise UserError(f"config.model.aux_weight must be a number >= 0, got {m.aux_weight!r}")
    if not (t.kl_weight >= 0):
        raise UserError(f"config.train.kl_weight must be >= 0, got {t.kl_weight}")
    dd = cfg.text.direction_dropout
    if not (isinstance(dd, (int, float)) and 0 <= dd < 1):
        raise UserError(f"config.text.direction_dropout must be in [0, 1), got {dd!r}")
    pw = cfg.text.paraphrase_weight
    if not (isinstance(pw, (int, float)) and pw >= 0):
        raise UserError(f"config.text.paraphrase_weight must be a number >= 0, got {pw!r}")
    if not cfg.text.pretrain_lr > 0:
        raise UserError(f"config.text.pretrain_lr must be positive, got {cfg.text.pretrain_lr}")
    validate_rates(t)
    validate_run_length(t)


def spec_of(cfg, vocab_size: int) -> stackgan.StackGan:
    m = cfg.model
    return stackgan.StackGan(
        vocab_size=vocab_size, latent=m.latent, c_dim=m.c_dim, text_hidden=m.text_hidden,
        text_embed=m.text_embed, d_text=m.d_text, features=m.features,
        res_blocks=m.res_blocks, init_std=float(m.init_std), cond_d=m.cond_d,
        aux=m.get("aux_weight", 0.0) > 0, text_encoder=m.get("text_encoder", "lstm"),
    )  # fmt: skip


def optimizers(cfg, fit: float = 1.0):
    """Adam for the generator side and the discriminators: the GAN trainer's builder, whose
    ``train`` fields (rates, betas, the fitted linear decay) this config shares."""
    return make_optimizers(cfg, fit)


def load_digits(cfg) -> Images:
    """The labelled 28x28 grey digits the captions are written for."""
    d = cfg.data
    data = load_images(d.source, d.path, d.tfds_name, image_size=d.image_size)
    if d.limit > 0:
        labels = None if data.labels is None else data.labels[: d.limit]
        data = Images(data.images[: d.limit], labels, data.name)
    if data.labels is None:
        raise UserError(
            f"StackGAN writes its captions from each image's label, and {data.name} has no "
            "labels; use MNIST IDX files with their labels file, builtin, or tfds mnist"
        )
    if data.shape != (28, 28, 1) or data.labels.min() < 0 or data.labels.max() > 9:
        raise UserError(
            f"the StackGAN recipe is for 28x28 grey digits 0-9; {data.name} has images "
            f"{data.shape} and labels {data.labels.min()} ... {data.labels.max()}"
        )
    return data


def caption_table(data: Images, cfg, vocab: text.WordVocab):
    """``(ids [N, K, T], lengths [N, K], attributes)``: ``K`` training captions of every image."""
    k, t = cfg.text.captions_per_image, cfg.text.max_words
    caps = captions.write_captions(data.images, data.labels, per_image=k, seed=cfg.seed)
    ids, lengths = vocab.encode([c for cs in caps for c in cs], max_len=t)
    return (
        ids.reshape(len(data), k, t),
        lengths.reshape(len(data), k),
        captions.measure(data.images),
    )


def pretrained_text(cfg, data: Images, vocab, table):
    """The frozen text encoder: pretrained on the captions (:func:`text.pretrain_encoder`), with
    the probe's accuracy on held-out templates for the log."""
    ids, lengths, attrs = table
    m, tc = cfg.model, cfg.text
    key = jax.random.fold_in(jax.random.key(cfg.seed), 5)
    enc, history = text.pretrain_encoder(
        key, ids, lengths, data.labels, attrs.thickness, attrs.slant, vocab_size=len(vocab),
        hidden=m.text_hidden, embed_dim=m.text_embed, steps=tc.pretrain_steps,
        batch=tc.pretrain_batch, lr=tc.pretrain_lr, kind=m.text_encoder,
        direction_dropout=tc.direction_dropout if m.text_encoder == "bilstm" else 0.0,
        paraphrase_weight=tc.paraphrase_weight,
    )  # fmt: skip
    return enc, history


def grid_captions(rows=GRID_ROWS) -> list[str]:
    """The training grid's captions, row by row: each row's description for digits 0 ... 9."""
    return [r.format(d=captions.DIGITS[d]) for r in rows for d in range(10)]


# fields added after the first StackGAN workdirs were written, with the value those had
ADDED_FIELDS = {
    "model": {"text_encoder": "lstm", "aux_weight": 0.0},
    "text": {"direction_dropout": 0.0, "paraphrase_weight": 0.0},
}


def _check_same_model(cfg, meta: dict, workdir: Path) -> None:
    old = meta["config"]
    for group in ("model", "text"):
        for k, v in {**ADDED_FIELDS.get(group, {}), **old.get(group, {})}.items():
            if k in cfg[group] and v != cfg[group][k]:
                raise UserError(
                    f"workdir {str(workdir)!r} holds a StackGAN with config.{group}.{k}={v}, but "
                    f"the config says {cfg[group][k]}; use the same config to resume, or a new "
                    "workdir"
                )


def _layout(cfg, vocab: text.WordVocab):
    """A StackGAN train state with the layout a checkpoint holds (for ``jax.eval_shape``): the
    text encoder, pretrained in a real run, is a random one here."""
    tx_g, tx_d = optimizers(cfg)
    spec = spec_of(cfg, len(vocab))
    enc = text.encoder_init(jax.random.key(0), len(vocab), cfg.model.text_hidden,
                            cfg.model.text_embed, spec.text_encoder)  # fmt: skip
    return stackgan.init_state(spec, cfg.seed, enc, tx_g, tx_d)


def recipe(cfg: ml_collections.ConfigDict, workdir: str | Path) -> loop.Recipe:
    """The StackGAN as a :class:`jaxgen.training.loop.Recipe`."""
    validate_config(cfg)
    workdir = Path(workdir)
    meta = checkpoint.check_workdir_kind(workdir, KIND)
    if meta is not None:
        _check_same_model(cfg, meta, workdir)
    data = load_digits(cfg)
    vocab = text.WordVocab.from_captions()
    spec = spec_of(cfg, len(vocab))
    table = caption_table(data, cfg, vocab)
    ids, lengths, attrs = table
    targets = np.concatenate([data.labels[:, None], captions.classes(attrs)], 1).astype(np.int32)
    padded = fit_to_model(data, 32, 1)
    rows_of = ImageBatches(padded.images, cfg.train.batch, cfg.seed, labels=np.arange(len(data)))
    t = cfg.train
    steps = t.steps if t.steps > 0 else t.epochs * len(rows_of)
    grid_ids, grid_len = vocab.encode(grid_captions(), max_len=cfg.text.max_words)
    grid_key = jax.random.fold_in(jax.random.key(cfg.seed), 1)
    run = {"primary": True, "pretrain": None}

    def batch(step: int):
        images, rows = rows_of.pair_for_step(step)
        which = np.random.default_rng([cfg.seed, 3, step]).integers(ids.shape[1], size=len(rows))
        return images, ids[rows, which], lengths[rows, which], targets[rows]

    def make_step(horizon: int):
        tx_g, tx_d = optimizers(cfg, fit=min(1.0, horizon / steps))
        return functools.partial(
            stackgan.train_step, spec=spec, tx_g=tx_g, tx_d=tx_d, real_label=t.real_label,
            kl_weight=float(t.kl_weight), aux_weight=float(cfg.model.aux_weight),
            skip_nonfinite=t.on_nonfinite == "skip",
        )  # fmt: skip

    def fresh_state():
        enc, history = pretrained_text(cfg, data, vocab, table)
        run["pretrain"] = (float(history[:50].mean()), float(history[-50:].mean()))
        tx_g, tx_d = optimizers(cfg)
        return stackgan.init_state(spec, cfg.seed, enc, tx_g, tx_d)

    def on_start(log, start: int) -> None:
        run["primary"] = log.primary
        (workdir / "samples").mkdir(exist_ok=True)
        if run["pretrain"] and not start:
            a, b = run["pretrain"]
            log.message(
                f"text encoder: pretrained for {cfg.text.pretrain_steps} steps (probe loss "
                f"{a:.3f} -> {b:.3f}), then frozen"
            )

    def draw(done: int, state) -> None:
        if not run["primary"]:
            return
        x16, x32 = stackgan.generate(spec, state.params, state.stats, grid_ids, grid_len,
                                     grid_key, sample_c=False)  # fmt: skip
        x16 = np.asarray(stackgan.crop(spec, stackgan.upsample(x16)))
        x28 = np.asarray(stackgan.crop(spec, x32))
        for name, x in (("", x28), ("_stage1", x16)):
            plots.save_grid(x, workdir / "samples" / f"step_{done:07d}{name}.png", ncol=10)
            plots.save_grid(x, workdir / "samples" / f"latest{name}.png", ncol=10)

    def on_close() -> None:
        if run["primary"] and (workdir / "metrics.jsonl").exists():
            try:
                plots.save_loss_curves(workdir / "metrics.jsonl", workdir / "losses.png")
            except Exception as e:  # plotting must never lose a run
                print(f"warning: could not draw the plots ({type(e).__name__}: {e})")

    return loop.Recipe(
        kind=KIND,
        cfg=cfg,
        meta={"data": data.name, "vocab": vocab.words[1:], "image_shape": [28, 28, 1]},
        total_steps=steps,
        init_state=fresh_state,
        abstract_state=lambda: jax.eval_shape(lambda: _layout(cfg, vocab)),
        make_step=make_step,
        batch=batch,
        batch_axes=(0, 0, 0, 0),
        items_per_step=t.batch,
        unit="img",
        loss_keys=("d_loss", "g_loss"),
        describe=(
            f"StackGAN: {len(data):,} digits from {data.name} with {ids.shape[1]} captions each, "
            f"{len(rows_of)} batches of {t.batch} per epoch"
        ),
        nonfinite_advice="Lower config.train.lr_g / lr_d",
        draw=draw,
        draw_every=t.sample_every if t.sample_every > 0 else len(rows_of),
        log_extra=lambda step: {"epoch": step / len(rows_of)},
        on_start=on_start,
        on_close=on_close,
        fits_schedule=t.lr_decay_steps > 0 and t.get("budget_fit", True),
    )


def train(cfg, workdir: str | Path, *, quiet=False, stop: StopOnSignal = None) -> dict:
    """Train (or resume) a StackGAN in ``workdir``; returns a summary dict."""
    s = loop.run(recipe(cfg, workdir), workdir, quiet=quiet, stop=stop)
    return {"steps": s.steps, "start": s.start, "images_per_s": s.rate, "wall_s": s.wall_s,
            "last": s.last, "stopped": s.stopped, "horizon": s.horizon}  # fmt: skip


def load(workdir: str | Path, which: str = "latest"):
    """``(spec, params, stats, vocab, cfg)`` of a trained StackGAN workdir, for
    :func:`stackgan.sample_text`."""

    def template(cfg, meta):
        return _layout(cfg, text.WordVocab(meta["vocab"]))

    state, meta, cfg = loop.load_trained(workdir, KIND, template, which, name="StackGAN")
    vocab = text.WordVocab(meta["vocab"])
    return spec_of(cfg, len(vocab)), state.params, state.stats, vocab, cfg
