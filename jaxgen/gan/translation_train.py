"""Training image-to-image translation: the Pix2Pix and CycleGAN configs, their data, and the
recipes :func:`jaxgen.training.loop.run` runs; :func:`load` and :func:`translate` for a trained
workdir (``jaxgen translate``).

* **Pix2Pix** (model kind ``pix2pix``): pairs built offline from digits
  (:func:`jaxgen.data.pairs.edges_to_digits` or ``low_res_to_digits``) or read from a folder
  (``data.pairs``); the last ``data.holdout`` pairs are held out for the L1 the best checkpoint
  keeps and for the grids (input | output | target).
* **CycleGAN** (model kind ``cyclegan``): two unpaired image sets, by default MNIST and the
  built-in UCI digits (scikit-learn's 8x8 scans, upsampled: another scanner, resolution and
  stroke); the last ``data.holdout`` of each (or ``data.holdout_a`` / ``data.holdout_b``) are
  held out for the cycle L1 and the grids (input | translation | reconstruction). The image
  histories are part of the train state.

Images are padded with the background value (-1) to sides the networks take (28x28 digits go
into a 5-level U-Net as 32x32) and cropped back. Step ``s`` reads batch ``s`` of a seeded
:class:`ImageBatches` per set, so a checkpoint holds everything to continue exactly.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen import plots
from jaxgen.config import add_shared_fields, require_positive_ints, validate_run_length
from jaxgen.data import pairs as pairs_lib
from jaxgen.data.images import ImageBatches, Images, builtin_digits, load_images, tfds_images
from jaxgen.errors import UserError
from jaxgen.gan import cyclegan, pix2pix
from jaxgen.gan import translation as tr
from jaxgen.gan.step import make_optimizers
from jaxgen.training import checkpoint, loop
from jaxgen.training.loop import Evaluation
from jaxgen.training.preemption import StopOnSignal

PIX2PIX, CYCLEGAN = "pix2pix", "cyclegan"
KINDS = (PIX2PIX, CYCLEGAN)
GRID_COLUMNS = 10  # examples in a training grid


# ---------------------------------------------------------------------------------- configs


def _train_fields(c: ml_collections.ConfigDict) -> None:
    c.train = ml_collections.ConfigDict()
    c.train.batch = 16
    c.train.epochs = 10  # used when train.steps is 0
    c.train.steps = 0
    c.train.lr_g = 2e-4  # Adam 2e-4, beta1 0.5: both papers' rates
    c.train.lr_d = 2e-4
    c.train.beta1 = 0.5
    c.train.beta2 = 0.999
    c.train.lr_decay_start = 0  # step at which both rates start to fall linearly
    c.train.lr_decay_steps = 0  # 0: constant rates
    c.train.lr_final = 0.0  # fraction of the rates left at the end of the decay
    c.train.eval_every = 500  # steps between held-out evaluations (0: only at the end)
    c.train.eval_images = 256  # held-out images each evaluation translates
    c.train.sample_every = 500  # steps between grids (0: only at the end)
    c.train.log_every = 50
    c.train.checkpoint_every = 1000


def _smoke_train(c: ml_collections.ConfigDict, batch: int) -> ml_collections.ConfigDict:
    """The smoke variants' run: 20 steps, evaluated, drawn and saved every 10."""
    t = c.train
    t.batch, t.steps, t.eval_every, t.eval_images = batch, 20, 10, 16
    t.sample_every, t.log_every, t.checkpoint_every = 10, 5, 10
    return c


def pix2pix_config() -> ml_collections.ConfigDict:
    """Pix2Pix on digits: outline -> digit, 28x28 padded to 32x32, a 5-level U-Net."""
    c = ml_collections.ConfigDict()
    c.model_kind = PIX2PIX
    c.seed = 0  # init, data order, dropout
    c.data = ml_collections.ConfigDict()
    c.data.source = "tfds"  # the digits: 'builtin' (scikit-learn digits, offline) or 'tfds'
    c.data.path = ""  # a folder of MNIST-format IDX files (or a .npy); wins over data.source
    c.data.tfds_name = "mnist"
    c.data.task = "edges"  # pairs from the digits: 'edges' (outline -> digit), 'lowres' (7x7 -> 28)
    c.data.pairs = ""  # a folder of pairs (A/ + B/ same names, or side-by-side A|B); wins over all
    c.data.limit = 0  # use only the first N pairs (0: all)
    c.data.holdout = 1000  # the last N pairs are held out (evaluation and grids)
    c.model = ml_collections.ConfigDict()
    c.model.g_features = (32, 64, 128, 128, 128)  # G channels: U-Net levels / ResNet's first
    c.model.d_features = (32, 64, 128)  # PatchGAN channels; len - 1 stride-2 layers (4: 70x70)
    c.model.dropout = 0.5  # the U-Net's only noise, on when training and translating
    c.model.l1_weight = 100.0  # lambda of the L1 term
    c.model.gan_weight = 1.0  # weight of the adversarial term; 0: L1 alone (the baseline)
    _train_fields(c)
    return add_shared_fields(c)


def pix2pix_smoke_config() -> ml_collections.ConfigDict:
    """End to end on the built-in digits in seconds."""
    c = pix2pix_config()
    c.data.source = "builtin"
    c.data.holdout = 64
    c.model.g_features = (8, 8, 8, 8, 8)
    c.model.d_features = (8, 8)
    return _smoke_train(c, batch=8)


def cyclegan_config() -> ml_collections.ConfigDict:
    """CycleGAN between MNIST (A) and the built-in UCI digits (B), 28x28."""
    c = ml_collections.ConfigDict()
    c.model_kind = CYCLEGAN
    c.seed = 0  # init, data order, image histories
    c.data = ml_collections.ConfigDict()
    c.data.a_source = "tfds"  # domain A: 'builtin' (scikit-learn digits) or 'tfds'
    c.data.a_path = ""  # domain A: a folder of IDX files or a .npy; wins over a_source
    c.data.a_tfds_name = "mnist"
    c.data.b_source = "builtin"  # domain B: 'builtin' (scikit-learn digits) or 'tfds'
    c.data.b_path = ""  # domain B: a folder of IDX files or a .npy; wins over b_source
    c.data.b_tfds_name = "mnist"
    c.data.builtin_box = 28  # builtin digits: upsampled to this box in 28x28 (20: as MNIST)
    c.data.tfds_pair = ""  # e.g. 'cycle_gan/horse2zebra': A, B from trainA/trainB (wins)
    c.data.image_size = 0  # tfds_pair: resize to this side (0: as stored)
    c.data.limit = 0  # use only the first N images of each domain (0: all)
    c.data.holdout = 200  # the last N images of each domain are held out
    c.data.holdout_a = 0  # domain A's own count, if not data.holdout (0: data.holdout)
    c.data.holdout_b = 0  # domain B's own count, if not data.holdout (0: data.holdout)
    c.model = ml_collections.ConfigDict()
    c.model.g_features = 16  # G channels: U-Net levels / ResNet's first (x2 per stride 2)
    c.model.g_blocks = 4  # residual blocks (the paper: 6 at 128x128, 9 at 256x256)
    c.model.d_features = (32, 64, 128)  # PatchGAN channels
    c.model.cycle_weight = 10.0  # lambda of the cycle loss
    c.model.identity_weight = 0.5  # identity loss, as a fraction of the cycle weight
    c.model.pool_size = 50  # generated images kept per discriminator's history
    c.model.semantic_weight = 0.0  # CyCADA's semantic term, a domain-A classifier (0: plain)
    c.model.semantic_epochs = 3  # epochs of that classifier (domain A's labels; then frozen)
    c.model.num_classes = 0  # > 0: class-conditional discriminators (both domains labelled)
    c.model.augment_shift = 0  # > 0: DiffAugment translation (pixels) of all D's inputs
    _train_fields(c)
    return add_shared_fields(c)


def cyclegan_smoke_config() -> ml_collections.ConfigDict:
    """End to end on the built-in digits in seconds (both domains the same set)."""
    c = cyclegan_config()
    c.data.a_source = "builtin"
    c.data.holdout = 32
    c.model.g_features = 4
    c.model.g_blocks = 1
    c.model.d_features = (8, 8)
    c.model.pool_size = 16
    return _smoke_train(c, batch=4)


def _features(cfg, name: str) -> tuple:
    v = cfg.model[name]
    v = (v,) if isinstance(v, int) else v
    if not (
        isinstance(v, (tuple, list))
        and v
        and all(isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in v)
    ):
        raise UserError(f"config.model.{name} must be positive channel counts, got {v!r}")
    return tuple(v)


def validate_config(cfg) -> None:
    """Every check that needs no data: one UserError naming the field."""
    kind = cfg.model_kind
    require_positive_ints(
        cfg,
        ("train.batch", "train.log_every", "train.checkpoint_every", "train.eval_images"),
    )
    t, m, d = cfg.train, cfg.model, cfg.data
    for name in ("eval_every", "sample_every", "lr_decay_start", "lr_decay_steps"):
        if not (isinstance(t[name], int) and t[name] >= 0):
            raise UserError(f"config.train.{name} must be an integer >= 0, got {t[name]!r}")
    for name in ("lr_g", "lr_d"):
        if not t[name] > 0:
            raise UserError(f"config.train.{name} must be positive, got {t[name]}")
    if not 0.0 <= t.lr_final <= 1.0:
        raise UserError(f"config.train.lr_final must be in [0, 1], got {t.lr_final}")
    if t.on_nonfinite not in ("stop", "skip"):
        raise UserError(
            f"config.train.on_nonfinite must be 'stop' or 'skip', got {t.on_nonfinite!r}"
        )
    if kind == CYCLEGAN and not (isinstance(d.builtin_box, int) and 8 <= d.builtin_box <= 28):
        raise UserError(
            f"config.data.builtin_box must be an integer in 8 ... 28, got {d.builtin_box!r}"
        )
    if not (isinstance(d.holdout, int) and d.holdout >= 1):
        raise UserError(f"config.data.holdout must be an integer >= 1, got {d.holdout!r}")
    for name in ("holdout_a", "holdout_b"):
        v = d.get(name, 0)
        if not (isinstance(v, int) and v >= 0):
            raise UserError(
                f"config.data.{name} must be an integer >= 0 (0: config.data.holdout), got {v!r}"
            )
    if len(_features(cfg, "d_features")) < 2:
        raise UserError(
            f"config.model.d_features needs at least 2 channel counts, got {m.d_features!r}"
        )
    if kind == PIX2PIX:
        _features(cfg, "g_features")
        if d.task not in ("edges", "lowres"):
            raise UserError(f"config.data.task must be 'edges' or 'lowres', got {d.task!r}")
        if not 0.0 <= m.dropout < 1.0:
            raise UserError(f"config.model.dropout must be in [0, 1), got {m.dropout}")
        if not (m.l1_weight >= 0 and m.gan_weight >= 0):
            raise UserError(
                f"config.model.l1_weight and gan_weight must be >= 0, got {m.l1_weight} and "
                f"{m.gan_weight}"
            )
        if m.gan_weight == 0 and not m.l1_weight > 0:
            raise UserError(
                "config.model.gan_weight=0 trains on L1 alone, so config.model.l1_weight must "
                "be > 0"
            )
    else:
        require_positive_ints(cfg, ("model.g_features",))
        if not (isinstance(m.g_blocks, int) and m.g_blocks >= 0):
            raise UserError(f"config.model.g_blocks must be an integer >= 0, got {m.g_blocks!r}")
        if not (isinstance(m.pool_size, int) and m.pool_size >= 0):
            raise UserError(
                f"config.model.pool_size must be an integer >= 0 (0: no history), got "
                f"{m.pool_size!r}"
            )
        require_positive_ints(cfg, ("model.semantic_epochs",))
        n = m.get("num_classes", 0)
        if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
            raise UserError(
                f"config.model.num_classes must be an integer >= 0 (0: unconditional "
                f"discriminators), got {n!r}"
            )
        shift = m.get("augment_shift", 0)
        if not (isinstance(shift, int) and not isinstance(shift, bool) and shift >= 0):
            raise UserError(
                f"config.model.augment_shift must be an integer >= 0 (pixels; 0: no "
                f"augmentation), got {shift!r}"
            )
        for name in ("cycle_weight", "identity_weight", "semantic_weight"):
            if not m[name] >= 0:
                raise UserError(f"config.model.{name} must be >= 0, got {m[name]}")
    validate_run_length(t)


# ---------------------------------------------------------------------------------- data


class Split(NamedTuple):
    """Training and held-out arrays ``[N, H, W, C]`` in [-1, 1], labels where known."""

    train: np.ndarray
    held: np.ndarray
    held_labels: np.ndarray | None


def _split(x: np.ndarray, labels, holdout: int, what: str, field: str = "holdout") -> Split:
    if len(x) <= holdout:
        raise UserError(
            f"{what} has {len(x)} images, not more than config.data.{field}={holdout}; lower "
            f"config.data.{field} or give more images"
        )
    return Split(x[:-holdout], x[-holdout:], None if labels is None else labels[-holdout:])


def model_side(h: int, w: int, multiple: int) -> int:
    """The side the networks see: ``h`` (= ``w``) rounded up to a multiple of ``multiple``."""
    if h != w:
        raise UserError(f"the images are {h}x{w}; the translation models take square images")
    return -(-h // multiple) * multiple


def pad_to(x, side: int):
    """Pad ``[N, H, W, C]`` to ``side x side`` with the background value -1 (split evenly)."""
    p = side - x.shape[1]
    if p == 0:
        return x
    lo = p // 2
    return jnp.pad(x, ((0, 0), (lo, p - lo), (lo, p - lo), (0, 0)), constant_values=-1.0)


def crop_to(x, h: int):
    """Undo :func:`pad_to`."""
    p = x.shape[1] - h
    lo = p // 2
    return x[:, lo : lo + h, lo : lo + h]


def load_pairs(cfg) -> pairs_lib.Pairs:
    """The Pix2Pix pairs: a folder (``data.pairs``) or built from the digits (``data.task``)."""
    d = cfg.data
    if d.pairs:
        p = pairs_lib.load_paired_folder(Path(d.pairs).expanduser())
    else:
        digits = load_images(d.source, d.path, d.tfds_name)
        make = pairs_lib.edges_to_digits if d.task == "edges" else pairs_lib.low_res_to_digits
        p = make(digits.images, digits.labels, name=digits.name)
    if d.limit > 0:
        lab = None if p.labels is None else p.labels[: d.limit]
        p = pairs_lib.Pairs(p.a[: d.limit], p.b[: d.limit], lab, p.names[: d.limit], p.name)
    return p


def load_domains(cfg) -> tuple[Images, Images]:
    """CycleGAN's two image sets (A, B), same side, each 1 or 3 channels."""
    d = cfg.data
    if d.tfds_pair:
        a = tfds_images(d.tfds_pair, "trainA", image_size=d.image_size)
        b = tfds_images(d.tfds_pair, "trainB", image_size=d.image_size)
    else:
        a, b = (
            builtin_digits(28, d.builtin_box)
            if source == "builtin" and not path
            else load_images(source, path, name)
            for source, path, name in (
                (d.a_source, d.a_path, d.a_tfds_name),
                (d.b_source, d.b_path, d.b_tfds_name),
            )
        )
    if d.limit > 0:
        a, b = (
            Images(x.images[: d.limit], None if x.labels is None else x.labels[: d.limit], x.name)
            for x in (a, b)
        )
    if a.images.shape[1:3] != b.images.shape[1:3]:
        raise UserError(
            f"domain A ({a.name}) has {a.shape[0]}x{a.shape[1]} images but domain B ({b.name}) "
            f"{b.shape[0]}x{b.shape[1]}; the two must be one size (resize one set, or set "
            "config.data.image_size for a tfds pair)"
        )
    return a, b


# ---------------------------------------------------------------------------------- specs


def pix2pix_spec(cfg, in_channels: int, out_channels: int) -> pix2pix.Pix2Pix:
    m = cfg.model
    return pix2pix.Pix2Pix(
        in_channels=in_channels, out_channels=out_channels,
        g_features=_features(cfg, "g_features"), d_features=_features(cfg, "d_features"),
        dropout=float(m.dropout), l1_weight=float(m.l1_weight), gan_weight=float(m.gan_weight),
    )  # fmt: skip


def cyclegan_spec(cfg, channels_a: int, channels_b: int) -> cyclegan.CycleGan:
    m = cfg.model
    return cyclegan.CycleGan(
        channels_a=channels_a, channels_b=channels_b, g_features=int(m.g_features),
        g_blocks=int(m.g_blocks), d_features=_features(cfg, "d_features"),
        cycle_weight=float(m.cycle_weight), identity_weight=float(m.identity_weight),
        pool_size=int(m.pool_size), semantic_weight=float(m.get("semantic_weight", 0.0)),
        num_classes=int(m.get("num_classes", 0)),
        augment_shift=int(m.get("augment_shift", 0)),
    )  # fmt: skip


def _multiple(cfg) -> int:
    """What the sides must divide by: the U-Net's ``2 ** levels``; the ResNet generator's 4."""
    return 2 ** len(_features(cfg, "g_features")) if cfg.model_kind == PIX2PIX else 4


# model fields added after workdirs were first written, with the value those workdirs meant
ADDED_FIELDS = {"num_classes": 0, "augment_shift": 0}


def _check_same_model(cfg, meta: dict, workdir: Path) -> None:
    for k, v in {**ADDED_FIELDS, **meta["config"].get("model", {})}.items():
        now = cfg.model.get(k)
        if k in cfg.model and (list(v) if isinstance(v, (list, tuple)) else v) != (
            list(now) if isinstance(now, (list, tuple)) else now
        ):
            raise UserError(
                f"workdir {str(workdir)!r} holds a {meta['model']} with config.model.{k}={v}, "
                f"but the config says {now}; use the same config to resume, or a new workdir"
            )


# ---------------------------------------------------------------------------------- recipes


@functools.partial(jax.jit, static_argnames=("spec",))
def _pix2pix_eval(spec, g_params, a, b, key):
    fake = pix2pix.translate(spec, g_params, a, key)
    return fake, jnp.abs(fake - b).mean()


@functools.partial(jax.jit, static_argnames=("spec",))
def _cycle_eval(spec, params, a, b):
    fake_b = cyclegan_translate(spec, params, a, "a2b")
    fake_a = cyclegan_translate(spec, params, b, "b2a")
    rec_a = cyclegan_translate(spec, params, fake_b, "b2a")
    rec_b = cyclegan_translate(spec, params, fake_a, "a2b")
    return (fake_b, rec_a, fake_a, rec_b), (jnp.abs(rec_a - a).mean(), jnp.abs(rec_b - b).mean())


def cyclegan_translate(spec, params, x, direction: str):
    """``G_ab(x)`` for ``a2b``, ``G_ba(x)`` for ``b2a``."""
    return tr.resnet_generator(params["g_ab" if direction == "a2b" else "g_ba"], x)


def _common(cfg, workdir: Path, kind: str):
    validate_config(cfg)
    if cfg.model_kind != kind:
        raise UserError(f"config.model_kind is {cfg.model_kind!r}, not {kind!r}")
    meta = checkpoint.check_workdir_kind(workdir, kind)
    if meta is not None:
        _check_same_model(cfg, meta, workdir)


def _recipe(kind: str, cfg, workdir: Path, run: dict, batch_axes=(0, 0), **fields) -> loop.Recipe:
    """The :class:`loop.Recipe` fields both translation recipes share, and theirs."""
    t = cfg.train
    return loop.Recipe(
        kind=kind,
        cfg=cfg,
        batch_axes=batch_axes,
        items_per_step=t.batch,
        unit="img",
        loss_keys=("d_loss", "g_loss"),
        nonfinite_advice="Lower config.train.lr_g / lr_d",
        eval_every=t.eval_every,
        draw_every=t.sample_every,
        on_close=_on_close(workdir, run),
        fits_schedule=t.lr_decay_steps > 0 and t.get("budget_fit", True),
        **fields,
    )


def _on_close(workdir: Path, run: dict):
    def close() -> None:
        if run["primary"] and (workdir / "metrics.jsonl").exists():
            try:
                plots.save_loss_curves(workdir / "metrics.jsonl", workdir / "losses.png")
            except Exception as e:  # plotting must never lose a run
                print(f"warning: could not draw the plots ({type(e).__name__}: {e})")

    return close


def pix2pix_recipe(cfg, workdir: str | Path) -> loop.Recipe:
    """Pix2Pix as a :class:`jaxgen.training.loop.Recipe`."""
    workdir = Path(workdir)
    _common(cfg, workdir, PIX2PIX)
    p = load_pairs(cfg)
    h = p.a.shape[1]
    side = model_side(h, p.a.shape[2], _multiple(cfg))
    a, b = np.asarray(pad_to(p.a, side)), np.asarray(pad_to(p.b, side))
    sa = _split(a, p.labels, cfg.data.holdout, f"the pairs {p.name}")
    sb = _split(b, p.labels, cfg.data.holdout, f"the pairs {p.name}")
    spec = pix2pix_spec(cfg, a.shape[-1], b.shape[-1])
    t = cfg.train
    rows_of = ImageBatches(sa.train, t.batch, cfg.seed, labels=sb.train)
    steps = t.steps if t.steps > 0 else t.epochs * len(rows_of)
    n_eval = min(t.eval_images, len(sa.held))
    eval_key = jax.random.fold_in(jax.random.key(cfg.seed), 7)
    run = {"primary": True}

    def make_step(horizon: int):
        tx_g, tx_d = make_optimizers(cfg, fit=min(1.0, horizon / steps))
        return functools.partial(pix2pix.train_step, spec=spec, tx_g=tx_g, tx_d=tx_d)

    def fresh_state():
        tx_g, tx_d = make_optimizers(cfg)
        return pix2pix.init_state(spec, cfg.seed, tx_g, tx_d)

    def on_start(log, start: int) -> None:
        run["primary"] = log.primary
        (workdir / "samples").mkdir(exist_ok=True)

    def evaluate(done: int, state) -> Evaluation:
        _, l1 = _pix2pix_eval(spec, state.params["g"], sa.held[:n_eval], sb.held[:n_eval],
                              eval_key)  # fmt: skip
        l1 = float(l1)
        return Evaluation(l1, {"val_l1": l1}, f"held-out L1 {l1:.4f} ({n_eval} pairs)")

    def draw(done: int, state) -> None:
        if not run["primary"]:
            return
        x, y = sa.held[:GRID_COLUMNS], sb.held[:GRID_COLUMNS]
        fake, _ = _pix2pix_eval(spec, state.params["g"], x, y, eval_key)
        rows = [crop_to(np.asarray(z), h) for z in (x, fake, y)]
        grid = np.concatenate(_same_channels(*rows))
        for name in (f"step_{done:07d}.png", "latest.png"):
            plots.save_grid(grid, workdir / "samples" / name, ncol=len(x))

    return _recipe(
        PIX2PIX,
        cfg,
        workdir,
        run,
        meta={
            "data": p.name,
            "image_shape_a": list(p.a.shape[1:]),
            "image_shape_b": list(p.b.shape[1:]),
            "model_side": side,
        },
        total_steps=steps,
        init_state=fresh_state,
        make_step=make_step,
        batch=lambda step: rows_of.pair_for_step(step),
        describe=(
            f"Pix2Pix: {len(sa.train):,} pairs from {p.name} ({len(sa.held):,} held out), "
            f"{h}x{h} in a {side}x{side} U-Net, {len(rows_of)} batches of {t.batch} per epoch"
        ),
        evaluate=evaluate,
        best_key="val_l1",
        draw=draw,
        log_extra=lambda step: {"epoch": step / len(rows_of)},
        on_start=on_start,
    )


def _same_channels(*xs: np.ndarray) -> list[np.ndarray]:
    """Grids hold one kind of image: grey rows repeated to RGB when another row is RGB."""
    c = max(x.shape[-1] for x in xs)
    return [np.repeat(x, c, axis=-1) if x.shape[-1] != c else x for x in xs]


def _check_labels(num_classes: int, *domains: Images) -> None:
    for x, name in zip(domains, "AB"):
        if x.labels is None:
            raise UserError(
                f"config.model.num_classes={num_classes} (class-conditional discriminators) "
                f"needs both domains' labels, and domain {name} ({x.name}) has none; use "
                "labelled images or set config.model.num_classes=0"
            )
        lo, hi = int(np.min(x.labels)), int(np.max(x.labels))
        if lo < 0 or hi >= num_classes:
            raise UserError(
                f"domain {name} ({x.name}) has labels in [{lo}, {hi}], outside "
                f"0..{num_classes - 1}; set config.model.num_classes={hi + 1}"
            )


def _labelled_batch(rows_a, rows_b, step: int) -> tuple:
    """``(a, b, labels of a, labels of b)``: the step's batches as the train step takes them."""
    (a, la), (b, lb) = rows_a.pair_for_step(step), rows_b.pair_for_step(step)
    return a, b, la, lb


def _train_labels(x: Images, split: Split, labelled: bool):
    return np.asarray(x.labels[: len(split.train)], np.int32) if labelled else None


def cyclegan_holdout(cfg, domain: str) -> tuple[int, str]:
    """How many of ``domain``'s ('a' or 'b') last images are held out, and the config field that
    says so: ``data.holdout_a`` / ``data.holdout_b`` where set (> 0), else ``data.holdout``
    (workdirs written before the per-domain fields have neither)."""
    field = f"holdout_{domain}"
    own = cfg.data.get(field, 0)
    return (own, field) if own else (cfg.data.holdout, "holdout")


def _cyclegan_layout(spec, cfg, shape_a, shape_b):
    """A CycleGAN train state with the layout a checkpoint of ``spec`` holds (for
    ``jax.eval_shape``): the semantic classifier, trained in a real run, is a random one here."""
    tx_g, tx_d = make_optimizers(cfg)
    sem = None
    if spec.semantic_weight:
        from jaxgen.evaluation.classifier import classifier_init

        sem = classifier_init(jax.random.key(0), shape_a)
    return cyclegan.init_state(spec, cfg.seed, shape_a, shape_b, tx_g, tx_d, sem)


def cyclegan_recipe(cfg, workdir: str | Path) -> loop.Recipe:
    """CycleGAN as a :class:`jaxgen.training.loop.Recipe`."""
    workdir = Path(workdir)
    _common(cfg, workdir, CYCLEGAN)
    da, db = load_domains(cfg)
    h = da.images.shape[1]
    side = model_side(h, da.images.shape[2], _multiple(cfg))
    hold_a, field_a = cyclegan_holdout(cfg, "a")
    hold_b, field_b = cyclegan_holdout(cfg, "b")
    held = f"{hold_a} of each" if hold_a == hold_b else f"{hold_a:,} of A and {hold_b:,} of B"
    sa = _split(np.asarray(pad_to(da.images, side)), da.labels, hold_a, f"domain A ({da.name})",
                field_a)  # fmt: skip
    sb = _split(np.asarray(pad_to(db.images, side)), db.labels, hold_b, f"domain B ({db.name})",
                field_b)  # fmt: skip
    spec = cyclegan_spec(cfg, da.images.shape[-1], db.images.shape[-1])
    if spec.num_classes:
        _check_labels(spec.num_classes, da, db)
    t = cfg.train
    labelled = bool(spec.num_classes)
    rows_a = ImageBatches(sa.train, t.batch, cfg.seed, labels=_train_labels(da, sa, labelled))
    rows_b = ImageBatches(sb.train, t.batch, cfg.seed + 1, labels=_train_labels(db, sb, labelled))
    per_epoch = max(len(rows_a), len(rows_b))
    steps = t.steps if t.steps > 0 else t.epochs * per_epoch
    n_eval = min(t.eval_images, len(sa.held), len(sb.held))
    run = {"primary": True}

    def make_step(horizon: int):
        tx_g, tx_d = make_optimizers(cfg, fit=min(1.0, horizon / steps))
        return functools.partial(cyclegan.train_step, spec=spec, tx_g=tx_g, tx_d=tx_d)

    if spec.semantic_weight and da.labels is None:
        raise UserError(
            f"config.model.semantic_weight > 0 needs domain A's labels, and {da.name} has none; "
            "use labelled images for A (MNIST IDX files with labels, builtin, tfds mnist) or "
            "set config.model.semantic_weight=0"
        )

    def fresh_state():
        tx_g, tx_d = make_optimizers(cfg)
        sem = None
        if spec.semantic_weight:  # trained here; a resume restores it (abstract_state)
            from jaxgen.evaluation.classifier import train_classifier

            labelled = Images(sa.train, da.labels[: len(sa.train)], da.name)
            sem, info = train_classifier(
                labelled, seed=cfg.seed, epochs=cfg.model.semantic_epochs, holdout=0.1,
                batch=min(128, max(8, len(labelled) // 4)),
            )  # fmt: skip
            run["semantic"] = info["holdout_accuracy"]
        return cyclegan.init_state(
            spec, cfg.seed, sa.train.shape[1:], sb.train.shape[1:], tx_g, tx_d, sem
        )

    def on_start(log, start: int) -> None:
        run["primary"] = log.primary
        (workdir / "samples").mkdir(exist_ok=True)
        if run.get("semantic") is not None and not start:
            log.message(
                f"semantic consistency: a classifier on domain A's labels ({run['semantic']:.3f} "
                "held-out accuracy), frozen"
            )

    def evaluate(done: int, state) -> Evaluation:
        _, (ea, eb) = _cycle_eval(spec, state.params, sa.held[:n_eval], sb.held[:n_eval])
        ea, eb = float(ea), float(eb)
        return Evaluation(
            ea + eb,
            {"val_cycle": ea + eb, "val_cycle_a": ea, "val_cycle_b": eb},
            f"held-out cycle L1 A->B->A {ea:.4f}, B->A->B {eb:.4f} ({n_eval} each)",
        )

    def draw(done: int, state) -> None:
        if not run["primary"]:
            return
        x, y = sa.held[:GRID_COLUMNS], sb.held[:GRID_COLUMNS]
        (fake_b, rec_a, fake_a, rec_b), _ = _cycle_eval(spec, state.params, x, y)
        rows = [crop_to(np.asarray(z), h) for z in (x, fake_b, rec_a, y, fake_a, rec_b)]
        grid = np.concatenate(_same_channels(*rows))
        for name in (f"step_{done:07d}.png", "latest.png"):
            plots.save_grid(grid, workdir / "samples" / name, ncol=len(x))

    return _recipe(
        CYCLEGAN,
        cfg,
        workdir,
        run,
        meta={
            "data": [da.name, db.name],
            "image_shape_a": list(da.shape),
            "image_shape_b": list(db.shape),
            "model_side": side,
        },
        total_steps=steps,
        init_state=fresh_state,
        abstract_state=lambda: jax.eval_shape(
            lambda: _cyclegan_layout(spec, cfg, sa.train.shape[1:], sb.train.shape[1:])
        ),
        make_step=make_step,
        batch=(
            (lambda step: _labelled_batch(rows_a, rows_b, step))
            if labelled
            else (lambda step: (rows_a.for_step(step), rows_b.for_step(step)))
        ),
        batch_axes=(0, 0, 0, 0) if labelled else (0, 0),
        describe=(
            f"CycleGAN: A {da.name} ({len(sa.train):,} images), B {db.name} "
            f"({len(sb.train):,}), {held} held out, {h}x{h} in {side}x{side}"
        ),
        evaluate=evaluate,
        best_key="val_cycle",
        draw=draw,
        log_extra=lambda step: {"epoch": step / per_epoch},
        on_start=on_start,
    )


def recipe(cfg, workdir: str | Path) -> loop.Recipe:
    if cfg.get("model_kind") == PIX2PIX:
        return pix2pix_recipe(cfg, workdir)
    return cyclegan_recipe(cfg, workdir)


def train(cfg, workdir: str | Path, *, quiet=False, stop: StopOnSignal = None) -> dict:
    """Train (or resume) a Pix2Pix or a CycleGAN (by ``cfg.model_kind``) in ``workdir``."""
    s = loop.run(recipe(cfg, workdir), workdir, quiet=quiet, stop=stop)
    return {"steps": s.steps, "start": s.start, "images_per_s": s.rate, "wall_s": s.wall_s,
            "last": s.last, "best": s.best, "stopped": s.stopped, "horizon": s.horizon}  # fmt: skip


# ---------------------------------------------------------------------------------- inference


class Trained(NamedTuple):
    """A trained translation model: ``kind``, ``spec``, ``params``, the image shapes, the
    side the networks see, the config and the whole train ``state``."""

    kind: str
    spec: object
    params: dict
    shape_a: tuple
    shape_b: tuple
    side: int
    cfg: object
    state: object


def load(workdir: str | Path, which: str = "best") -> Trained:
    """The trained Pix2Pix or CycleGAN in ``workdir`` (``which``: ``best`` falls back to
    ``latest``)."""
    meta = checkpoint.read_meta(workdir)
    if meta is None:
        raise UserError(
            f"{str(workdir)!r} holds no trained model (no {checkpoint.META}); train one with "
            "`jaxgen train --config configs/pix2pix_edges2digits.py` (or cyclegan_mnist_uci.py)"
        )
    kind = meta.get("model")
    if kind not in KINDS:
        raise UserError(
            f"workdir {str(workdir)!r} holds a {kind!r} model; `jaxgen translate` needs a "
            "pix2pix or cyclegan workdir (configs/pix2pix_edges2digits.py, "
            "configs/cyclegan_mnist_uci.py)"
        )
    shape_a, shape_b = tuple(meta["image_shape_a"]), tuple(meta["image_shape_b"])

    def spec_of(cfg):
        if kind == PIX2PIX:
            return pix2pix_spec(cfg, shape_a[-1], shape_b[-1])
        return cyclegan_spec(cfg, shape_a[-1], shape_b[-1])

    def template(cfg, meta):
        tx_g, tx_d = make_optimizers(cfg)
        spec = spec_of(cfg)
        if kind == PIX2PIX:
            return pix2pix.init_state(spec, cfg.seed, tx_g, tx_d)
        s = meta["model_side"]
        return _cyclegan_layout(spec, cfg, (s, s, shape_a[-1]), (s, s, shape_b[-1]))

    state, meta, cfg = loop.load_trained(workdir, kind, template, which, name=kind)
    side = meta["model_side"]
    return Trained(kind, spec_of(cfg), state.params, shape_a, shape_b, side, cfg, state)


def translate(model: Trained, x: np.ndarray, direction: str = "a2b", *, seed: int = 0,
              chunk: int = 256) -> np.ndarray:  # fmt: skip
    """Translate images ``x [N, H, W, C]`` in [-1, 1] of the source domain (``a2b``: A to B;
    ``b2a`` for a CycleGAN); returns float32 ``[N, H, W, C_out]`` in [-1, 1]. Pix2Pix keeps its
    dropout on (its only noise, as the paper samples): ``seed`` picks it."""
    if direction not in ("a2b", "b2a"):
        raise UserError(f"--direction must be a2b or b2a, got {direction!r}")
    if direction == "b2a" and model.kind == PIX2PIX:
        raise UserError("a Pix2Pix translates one way only (A to B); drop --direction b2a")
    src = model.shape_a if direction == "a2b" else model.shape_b
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or x.shape[1:] != src:
        kinds = {1: "grey", 3: "RGB"}
        got = "x".join(map(str, x.shape[1:])) if x.ndim == 4 else f"shape {x.shape}"
        raise UserError(
            f"this {model.kind} translates {src[0]}x{src[1]} {kinds.get(src[2], src[2])} images "
            f"({src[2]} channel(s)) of domain {direction[0].upper()}, got {got}; resize or "
            "convert the input"
        )
    if len(x) == 0:
        raise UserError("no images to translate")
    h = src[0]
    out = []
    key = jax.random.key(seed)
    for i in range(0, len(x), chunk):
        part = pad_to(x[i : i + chunk], model.side)
        if model.kind == PIX2PIX:
            k = jax.random.fold_in(key, i)
            y = _pix2pix_translate(model.spec, model.params["g"], part, k)
        else:
            y = _cycle_translate(model.spec, model.params, part, direction)
        out.append(np.asarray(crop_to(y, h), np.float32))
    return np.concatenate(out)


@functools.partial(jax.jit, static_argnames=("spec",))
def _pix2pix_translate(spec, g_params, a, key):
    return pix2pix.translate(spec, g_params, a, key)


@functools.partial(jax.jit, static_argnames=("spec", "direction"))
def _cycle_translate(spec, params, x, direction):
    return cyclegan_translate(spec, params, x, direction)
