"""Training the GANs: the recipe that :func:`jaxgen.training.loop.run` runs (data, the step of
:mod:`jaxgen.gan.step`, sample grids, sample quality, plots).

With the data order fixed by the seed (batch ``s`` is slice ``s % n`` of epoch ``s // n``'s
permutation), a checkpoint holds everything needed to continue exactly.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import ml_collections
import numpy as np
from ml_collections import ConfigDict

from jaxgen import plots
from jaxgen.data.images import ImageBatches, Images, fit_to_model, load_images
from jaxgen.errors import UserError
from jaxgen.evaluation.during_training import SampleQuality
from jaxgen.gan import models
from jaxgen.gan.config import KIND, validate_config
from jaxgen.gan.models import GanModel
from jaxgen.gan.sampling import (
    _generate_eval,
    balanced_labels,
    generate,
    recalibrate_samples,
    sampling_generator,
)
from jaxgen.gan.step import init_state, make_optimizers, train_step
from jaxgen.training import checkpoint, loop
from jaxgen.training.io import write_atomic
from jaxgen.training.preemption import StopOnSignal


def prepare_data(cfg, model: GanModel) -> Images:
    d = cfg.data
    data = load_images(d.source, d.path, d.tfds_name, image_size=d.image_size)
    if d.limit > 0:
        labels = None if data.labels is None else data.labels[: d.limit]
        data = Images(data.images[: d.limit], labels, data.name)
    return data


def _check_labels_fit(data: Images, model: GanModel) -> np.ndarray | None:
    """The labels a conditional model trains on (``None`` for an unconditional one), refused when
    the data has none or a label outside ``0 ... num_classes - 1``."""
    if not model.num_classes:
        return None
    if data.labels is None:
        raise UserError(
            f"a class-conditional GAN needs labelled images, and {data.name} has no labels; use "
            "MNIST IDX files with their labels file, builtin, or a labelled tfds dataset"
        )
    lo, hi = int(data.labels.min()), int(data.labels.max())
    if lo < 0 or hi >= model.num_classes:
        raise UserError(
            f"{data.name} has labels {lo} ... {hi}, but config.model.num_classes="
            f"{model.num_classes}; set it to {hi + 1}"
        )
    return data.labels.astype(np.int32)


def total_steps(cfg, batches: ImageBatches) -> int:
    return cfg.train.steps if cfg.train.steps > 0 else cfg.train.epochs * len(batches)


def _check_same_model(cfg, meta: dict, workdir: Path) -> None:
    """Refuse to resume a workdir whose GAN differs from the config's in architecture or in
    what changes the saved state's structure."""
    # a workdir from before the conditional GAN: unconditional, with the default cond_d
    old = {"num_classes": 0, "cond_d": "projection", **meta["config"]["model"]}
    keys = ("arch", "latent", "image_size", "channels", "g_hidden", "d_hidden", "features")
    for k in (*keys, "num_classes", "cond_d"):
        if k in old and list(np.atleast_1d(old[k])) != list(np.atleast_1d(cfg.model[k])):
            raise UserError(
                f"workdir {str(workdir)!r} holds a GAN with config.model.{k}={old[k]}, but the "
                f"config says {cfg.model[k]}; use the same config to resume, or a new workdir"
            )
    old_t = meta["config"].get("train", {})
    for k, what in (("ema_decay", "a generator EMA"), ("lr_decay_steps", "a learning-rate decay")):
        # both change the saved state's structure (an EMA copy of G; the schedule's step count)
        was = old_t.get(k, 0) > 0
        if was != (cfg.train[k] > 0):
            raise UserError(
                f"workdir {str(workdir)!r} was trained {'with' if was else 'without'} {what} "
                f"(config.train.{k}={old_t.get(k, 0)}), but the config says config.train.{k}="
                f"{cfg.train[k]}; resume with it {'on' if was else 'off'}, or use a new workdir"
            )


def recipe(cfg: ml_collections.ConfigDict, workdir: str | Path) -> loop.Recipe:
    """A GAN as a :class:`jaxgen.training.loop.Recipe`."""
    validate_config(cfg)
    workdir = Path(workdir)
    model = models.build(cfg.model)
    meta = checkpoint.check_workdir_kind(workdir, KIND)
    if meta is not None:
        _check_same_model(cfg, meta, workdir)
    data = prepare_data(cfg, model)
    fitted = fit_to_model(data, model.size, model.channels) if cfg.model.arch == "dcgan" else data
    if cfg.model.arch == "fc" and data.shape != (model.size, model.size, model.channels):
        raise UserError(
            f"the dataset {data.name} has images of shape {data.shape} but the FC GAN makes "
            f"{(model.size, model.size, model.channels)}; set config.model.image_size and "
            "config.model.channels to match"
        )
    labels = _check_labels_fit(data, model)
    batches = ImageBatches(fitted.images, cfg.train.batch, cfg.seed, labels=labels)
    steps = total_steps(cfg, batches)
    t, dist = cfg.train, cfg.model.latent_dist
    base = jax.random.key(cfg.seed)
    fixed_z = models.sample_latent(jax.random.fold_in(base, 1), t.grid, model.latent, dist)
    fixed_y = balanced_labels(model, t.grid)
    eval_key = jax.random.fold_in(base, 2)
    hist_path = workdir / "samples" / "history.npz"
    run = {"history": [], "quality": None, "sampled": (-1, None), "primary": True}

    def make_step(horizon: int):
        tx_g, tx_d = make_optimizers(cfg, fit=min(1.0, horizon / steps))
        return functools.partial(
            train_step,
            model=model,
            tx_g=tx_g,
            tx_d=tx_d,
            real_label=t.real_label,
            latent_dist=dist,
            ema_decay=t.ema_decay,
            skip_nonfinite=t.on_nonfinite == "skip",
        )

    def on_start(log, start: int) -> None:
        run["primary"] = log.primary
        (workdir / "samples").mkdir(exist_ok=True)
        run["history"] = _load_history(hist_path, start)
        if t.eval_every > 0:
            if data.labels is None:
                log.message(
                    "quality: the dataset has no labels, so no evaluation classifier; "
                    "best/ is not kept"
                )
            else:
                cache = (
                    Path(t.classifier_cache).expanduser()
                    if t.classifier_cache
                    else workdir / "eval"
                )
                run["quality"] = SampleQuality(data, t.eval_samples, cache, cfg.seed, log)

    recal = recalibrate_samples(cfg)  # latents re-measuring an EMA generator's statistics

    def sampler(done: int, state):
        """The sampling generator at step ``done`` (recalibrated once per step)."""
        if run["sampled"][0] != done:
            run["sampled"] = (done, sampling_generator(model, state, eval_key, dist, recal))
        return run["sampled"][1]

    def draw(done: int, state) -> None:
        if not run["primary"]:
            return
        grid = models.crop(
            model, np.asarray(_generate_eval(model, *sampler(done, state), fixed_z, fixed_y))
        )
        ncol = model.num_classes or None  # a conditional grid: one class a column
        plots.save_grid(grid, workdir / "samples" / f"step_{done:07d}.png", ncol=ncol)
        plots.save_grid(grid, workdir / "samples" / "latest.png", ncol=ncol)
        run["history"].append((done, grid[:10]))
        _save_history(hist_path, run["history"])

    def evaluation(done: int, state) -> loop.Evaluation | None:
        quality = run["quality"]
        if quality is None:
            return None
        asked = balanced_labels(model, quality.n)
        samples = generate(
            model,
            *sampler(done, state),
            jax.random.fold_in(eval_key, done),
            quality.n,
            dist=dist,
            labels=asked,
        )
        q = quality(samples, asked)
        acc = f", label accuracy {q['label_accuracy']:.3f}" if "label_accuracy" in q else ""
        return loop.Evaluation(
            q["fid"],
            q,
            f"step {done} (epoch {done / len(batches):.1f}): Frechet distance {q['fid']:.2f} "
            f"(best {{best:.2f}}), classifier score {q['classifier_score']:.2f}, "
            f"{q['classes_covered']:.0f} classes, largest {q['top_class_fraction']:.0%}{acc}, "
            "{elapsed:.0f}s",
        )

    def on_close() -> None:
        if run["primary"] and (workdir / "metrics.jsonl").exists():
            try:
                plots.save_loss_curves(workdir / "metrics.jsonl", workdir / "losses.png")
                plots.save_progress(run["history"], workdir / "progress.png")
            except Exception as e:  # plotting must never lose a run
                print(f"warning: could not draw the plots ({type(e).__name__}: {e})")

    def fresh_state():
        tx_g, tx_d = make_optimizers(cfg)
        return init_state(model, cfg.seed, tx_g, tx_d, ema=t.ema_decay > 0)

    return loop.Recipe(
        kind=KIND,
        cfg=cfg,
        meta={
            "arch": cfg.model.arch,
            "data": data.name,
            "image_shape": list(data.shape),
            "num_classes": model.num_classes,
        },
        total_steps=steps,
        init_state=fresh_state,
        make_step=make_step,
        batch=(lambda step: batches.pair_for_step(step))
        if labels is not None
        else (lambda step: (batches.for_step(step),)),
        batch_axes=(0, 0) if labels is not None else (0,),
        items_per_step=t.batch,
        unit="img",
        loss_keys=("d_loss", "g_loss"),
        describe=(
            f"{'class-conditional ' if model.num_classes else ''}"
            f"{cfg.model.arch} GAN: {len(data):,} images {data.shape} from {data.name}, "
            f"{len(batches)} batches of {t.batch} per epoch"
        ),
        nonfinite_advice="Lower config.train.lr_g / lr_d",
        evaluate=evaluation,
        eval_every=t.eval_every,
        best_key="fid",
        draw=draw,
        draw_every=t.sample_every if t.sample_every > 0 else len(batches),
        log_extra=lambda step: {"epoch": step / len(batches)},
        on_start=on_start,
        on_close=on_close,
        fits_schedule=t.lr_decay_steps > 0 and t.get("budget_fit", True),
    )


def train(cfg: ConfigDict, workdir: str | Path, *, quiet=False, stop: StopOnSignal = None) -> dict:
    """Train (or resume) a GAN in ``workdir``; returns a summary dict (``steps`` reached,
    ``start``, ``images_per_s``, ``best_fid``, ``last`` metrics, ``wall_s``, ``stopped``).

    SIGTERM and Ctrl-C stop the run after the current step: the checkpoint at that step is
    saved first; the sample grid is drawn only when the time budget ends the run."""
    s = loop.run(recipe(cfg, workdir), workdir, quiet=quiet, stop=stop)
    return {
        "steps": s.steps,
        "start": s.start,
        "images_per_s": s.rate,
        "best_fid": s.best,
        "wall_s": s.wall_s,
        "last": s.last,
        "stopped": s.stopped,
        "horizon": s.horizon,
    }


def _load_history(path: Path, upto: int) -> list:
    if not path.exists():
        return []
    try:
        with np.load(path) as z:
            return [(int(s), z["images"][i]) for i, s in enumerate(z["steps"]) if s <= upto]
    except Exception:
        return []


def _save_history(path: Path, history: list) -> None:
    steps = np.array([s for s, _ in history])
    images = np.stack([x for _, x in history])
    write_atomic(path, lambda f: np.savez(f, steps=steps, images=images))
