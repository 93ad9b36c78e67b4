"""Training the GANs: one pure, jitted train step and the run loop.

The train state is a plain dict::

    {"params":    {"g": generator params, "d": discriminator params},
     "stats":     {"g": ..., "d": ...} batch-norm running statistics (empty for the FC GAN),
     "opt_state": {"g": Adam state, "d": Adam state} (two optimisers, one per network),
     "ema":       generator params averaged over training (only when train.ema_decay > 0),
     "step":      int32 [] global step,
     "key":       uint32 [2] raw PRNG key data; step s uses fold_in(key, s)}

With the data order fixed by the seed (batch ``s`` is slice ``s % n`` of epoch ``s // n``'s
permutation), a checkpoint holds everything needed to continue exactly.
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxgen import losses, plots
from jaxgen.data import images as imdata
from jaxgen.errors import UserError
from jaxgen.gan import models
from jaxgen.gan.config import KIND, validate_config
from jaxgen.gan.models import GanModel
from jaxgen.gan.sampling import _generate_eval, generate, generator_params, recalibrate
from jaxgen.gan.step import init_state, make_optimizers, train_step
from jaxgen.training import checkpoint as ckpt
from jaxgen.training import parallel
from jaxgen.training.metrics import RunLog, best_logged, keep_if_finite
from jaxgen.training.preemption import StopOnSignal, not_started_message, stop_message



def prepare_data(cfg, model: GanModel) -> imdata.Images:
    d = cfg.data
    data = imdata.load_images(d.source, d.path, d.tfds_name, image_size=d.image_size)
    if d.limit > 0:
        data = imdata.Images(data.images[:d.limit], None if data.labels is None else data.labels[:d.limit], data.name)
    return data


def total_steps(cfg, batches: imdata.ImageBatches) -> int:
    return cfg.train.steps if cfg.train.steps > 0 else cfg.train.epochs * len(batches)


class _Quality:
    """Sample quality during training: the Frechet distance of classifier features (and the
    classifier score) of ``n`` samples against the real images, with the evaluation classifier
    (:mod:`jaxgen.analysis.image_metrics`), trained once per dataset and cached."""

    def __init__(self, data: imdata.Images, n: int, cache_dir: Path, seed: int, log):
        from jaxgen.evaluation import image_metrics as im

        self.im = im
        self.n = min(n, len(data))
        log.message(f"quality: evaluation classifier for {data.name} (cached in {cache_dir})")
        self.clf, info = im.get_classifier(data, cache_dir, seed=seed)
        log.message(f"quality: classifier held-out accuracy {info.get('holdout_accuracy') or float('nan'):.4f}")
        rng = np.random.default_rng(seed)
        real = data.images[rng.permutation(len(data))[: self.n]]
        feats, _ = im.features_and_probs(self.clf, real)
        self.mu, self.cov = feats.mean(0), np.cov(feats, rowvar=False)

    def __call__(self, samples: np.ndarray) -> dict:
        feats, probs = self.im.features_and_probs(self.clf, samples[: self.n])
        fid = self.im.frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), self.mu, self.cov)
        hist = self.im.class_histogram(probs)
        return {"fid": float(fid), "classifier_score": float(self.im.classifier_score(probs)),
                "classes_covered": float(hist["covered"]), "top_class_fraction": float(hist["max_fraction"])}


def _sample_grid(model, state, fixed_z, dist, key):
    gp, gs = generator_params(state)
    if "ema" in state:
        gs = recalibrate(model, gp, gs, key, dist=dist)
    return np.asarray(_generate_eval(model, gp, gs, fixed_z)), (gp, gs)


def train(cfg: ml_collections.ConfigDict, workdir: str | Path, *, quiet: bool = False,
          stop: StopOnSignal | None = None) -> dict:
    """Train (or resume) a GAN in ``workdir``; returns a summary dict.

    SIGTERM and Ctrl-C stop the run after the current step: the checkpoint at that step is saved
    first; the sample grid is drawn only when the time budget ends the run; ``summary["stopped"]`` says
    why. Pass ``stop`` when the signal handlers must be in place before this call."""
    if stop is not None:
        return _run(cfg, workdir, quiet=quiet, stop=stop)
    with StopOnSignal() as stop:
        return _run(cfg, workdir, quiet=quiet, stop=stop)


def _run(cfg: ml_collections.ConfigDict, workdir: str | Path, *, quiet: bool, stop: StopOnSignal) -> dict:
    validate_config(cfg)
    workdir = Path(workdir)
    model = models.build(cfg.model)
    meta = ckpt.check_workdir_kind(workdir, KIND)
    if meta is not None:
        old = meta["config"]["model"]
        for k in ("arch", "latent", "image_size", "channels", "g_hidden", "d_hidden", "features"):
            if k in old and list(np.atleast_1d(old[k])) != list(np.atleast_1d(cfg.model[k])):
                raise UserError(f"workdir {str(workdir)!r} holds a GAN with model.{k}={old[k]}, but the config says "
                                f"{cfg.model[k]}; use the same config to resume, or a new --workdir")
        old_t = meta["config"].get("train", {})
        for k, what in (("ema_decay", "a generator EMA"), ("lr_decay_steps", "a learning-rate decay")):
            # both change the saved state's structure (an EMA copy of G; the schedule's step count)
            if (old_t.get(k, 0) > 0) != (cfg.train[k] > 0):
                raise UserError(f"workdir {str(workdir)!r} was trained {'with' if old_t.get(k, 0) > 0 else 'without'} "
                                f"{what} (train.{k}={old_t.get(k, 0)}), but the config says train.{k}={cfg.train[k]}; "
                                f"resume with it {'on' if old_t.get(k, 0) > 0 else 'off'}, or use a new --workdir")
    data = prepare_data(cfg, model)
    fitted = imdata.fit_to_model(data, model.size, model.channels) if cfg.model.arch == "dcgan" else data
    if cfg.model.arch == "fc" and data.shape != (model.size, model.size, model.channels):
        raise UserError(f"the dataset {data.name} has images of shape {data.shape} but the FC GAN makes "
                        f"{(model.size, model.size, model.channels)}; set --config.model.image_size and "
                        "--config.model.channels to match")
    batches = imdata.ImageBatches(fitted.images, cfg.train.batch, cfg.seed)
    steps = total_steps(cfg, batches)
    tx_g, tx_d = make_optimizers(cfg)
    ema = cfg.train.ema_decay > 0
    state = init_state(model, cfg.seed, tx_g, tx_d, ema=ema)
    if meta is not None:  # before anything is written: a refused resume leaves the workdir as it was
        ckpt.check_resumable(workdir, ckpt.abstract(state), meta.get("config"), cfg.to_dict())

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "samples").mkdir(exist_ok=True)
    ckpts = ckpt.Checkpoints(workdir)
    start = 0
    restored = ckpts.restore(ckpt.abstract(state)) if meta is not None else None
    if restored is not None:
        start, state = restored
    if jax.process_index() == 0:
        ckpt.write_json_atomic(workdir / ckpt.META, {"model": KIND, "arch": cfg.model.arch, "config": cfg.to_dict(),
                                                 "data": data.name, "image_shape": list(data.shape)})
    log = RunLog(workdir, steps, unit="img", quiet=quiet, time_budget_s=cfg.train.time_budget_s)
    log.message(f"{cfg.model.arch} GAN: {len(data):,} images {data.shape} from {data.name}, {len(batches)} batches "
                f"of {cfg.train.batch} per epoch, steps {start} -> {steps}"
                + (f" (resumed from step {start})" if start else ""))

    quality = None
    if cfg.train.eval_every > 0:
        if data.labels is None:
            log.message("quality: the dataset has no labels, so no evaluation classifier; best/ is not kept")
        else:
            cache = Path(cfg.train.classifier_cache).expanduser() if cfg.train.classifier_cache else workdir / "eval"
            quality = _Quality(data, cfg.train.eval_samples, cache, cfg.seed, log)

    step = functools.partial(train_step, model=model, tx_g=tx_g, tx_d=tx_d, real_label=cfg.train.real_label,
                             latent_dist=cfg.model.latent_dist, ema_decay=cfg.train.ema_decay,
                             skip_nonfinite=cfg.train.on_nonfinite == "skip")
    mesh = None
    if cfg.parallel.data_parallel and jax.device_count() > 1:
        mesh = parallel.make_mesh()
        parallel.check_batch(cfg.train.batch, mesh)
        step_fn, state = parallel.jit_data_parallel(step, mesh, state, (4,))
        rows = parallel.local_rows(cfg.train.batch)
        log.message(f"data parallel over {mesh.devices.size} devices ({jax.process_count()} processes); global batch "
                    f"{cfg.train.batch}")
    else:
        step_fn = jax.jit(step, donate_argnums=0)
    base = jax.random.key(cfg.seed)
    fixed_z = models.sample_latent(jax.random.fold_in(base, 1), cfg.train.grid, model.latent, cfg.model.latent_dist)
    eval_key = jax.random.fold_in(base, 2)
    hist_path = workdir / "samples" / "history.npz"
    history = _load_history(hist_path, start)
    sample_every = cfg.train.sample_every if cfg.train.sample_every > 0 else len(batches)
    sampled_at, sampled = -1, None  # the step whose grid last recalibrated the sampler, and its (params, stats)
    best = best_logged(workdir, "fid")
    last_saved, pending = start, []
    t_start = time.perf_counter()
    rate, t_mark, mark_step = 0.0, None, start
    last = {}

    def flush():
        """Check the pending steps' metrics (one device sync); stop at the first non-finite loss."""
        nonlocal last
        rows = jax.device_get(pending)
        for s, m in rows:
            if "skipped" in m and float(m["skipped"]):
                log.message(f"step {s}: non-finite loss; update skipped (train.on_nonfinite='skip')")
            elif not (math.isfinite(float(m["d_loss"])) and math.isfinite(float(m["g_loss"]))):
                raise UserError(
                    f"the training loss became non-finite at step {s} (d_loss {float(m['d_loss'])}, g_loss "
                    f"{float(m['g_loss'])}); stopped without saving it. The last good checkpoint (step {last_saved}) "
                    f"is kept in {str(workdir)!r}. Lower --config.train.lr_g / lr_d and resume")
        if rows:
            last = rows[-1][1]
        pending.clear()

    stopped = None
    if stop.requested:  # a signal during set-up: stop before compiling anything
        log.message(not_started_message(stop.reason))
        log.close()
        ckpts.close()
        return {"steps": start, "start": start, "images_per_s": 0.0, "best_fid": best, "wall_s": 0.0, "last": {},
                "stopped": stop.reason}
    try:
        for step in range(start, steps):
            real = batches[step]
            if mesh is not None:
                real = parallel.global_batch(mesh, real[rows], real.shape)
            state, metrics = step_fn(state, real)
            done = step + 1
            pending.append((done, metrics))
            if t_mark is None and step > start:  # the first step includes compilation
                jax.block_until_ready(state["step"])
                t_mark, mark_step = time.perf_counter(), done
            boundary = (done % cfg.train.log_every == 0 or done == steps)
            out_of_time = bool(cfg.train.time_budget_s) and time.perf_counter() - t_start >= cfg.train.time_budget_s
            preempted = stop.should_stop(done, ckpts.latest)
            if out_of_time or preempted:
                stopped = (stop.reason or "preempted") if preempted else "budget"
            out_of_time = out_of_time or preempted
            if boundary or out_of_time or done % cfg.train.checkpoint_every == 0:
                flush()
                if t_mark is not None and done > mark_step:
                    rate = (done - mark_step) * cfg.train.batch / (time.perf_counter() - t_mark)
                log.write(done, {**last, "images_per_s": rate, "epoch": done / len(batches)})
                log.progress(done, float(last["d_loss"]), rate, (steps - done) * cfg.train.batch / max(rate, 1e-9),
                             elapsed_s=time.perf_counter() - t_start)
            if out_of_time:  # stopping early: save before the slower grid and quality work
                flush()
                ckpts.save(done, state)
                last_saved = done
            if (done % sample_every == 0 or done == steps or (out_of_time and not preempted)) and log.primary:
                grid, sampled = _sample_grid(model, state, fixed_z, cfg.model.latent_dist, eval_key)
                sampled_at = done
                grid = models.crop(model, grid)
                plots.save_grid(grid, workdir / "samples" / f"step_{done:07d}.png")
                plots.save_grid(grid, workdir / "samples" / "latest.png")
                history.append((done, grid[:10]))
                _save_history(hist_path, history)
            if quality is not None and (done % cfg.train.eval_every == 0 or done == steps or (out_of_time and not preempted)):
                flush()
                if sampled_at == done:  # the grid just recalibrated this state with the same key
                    gp, gs = sampled
                else:
                    gp, gs = generator_params(state)
                    if "ema" in state:
                        gs = recalibrate(model, gp, gs, eval_key, dist=cfg.model.latent_dist)
                samples = generate(model, gp, gs, jax.random.fold_in(eval_key, done), quality.n,
                                   dist=cfg.model.latent_dist)
                q = quality(samples)
                log.write(done, q)
                improved = best is None or q["fid"] < best
                if improved:
                    best = q["fid"]
                    ckpts.save(done, state, best=True)
                log.message(f"step {done} (epoch {done / len(batches):.1f}): Frechet distance {q['fid']:.2f} "
                            f"(best {best:.2f}), classifier score {q['classifier_score']:.2f}, "
                            f"{q['classes_covered']:.0f} classes, largest {q['top_class_fraction']:.0%}, "
                            f"{time.perf_counter() - t_start:.0f}s")
            if done % cfg.train.checkpoint_every == 0 or done == steps or out_of_time:
                flush()
                ckpts.save(done, state)
                last_saved = done
            if out_of_time:
                log.message(stop_message(done, stopped if preempted else None, cfg.train.time_budget_s, workdir))
                break
    finally:
        log.close()
        ckpts.close()
        if log.primary and (workdir / "metrics.jsonl").exists():
            try:
                plots.save_loss_curves(workdir / "metrics.jsonl", workdir / "losses.png")
                plots.save_progress(history, workdir / "progress.png")
            except Exception as e:  # plotting must never lose a run
                print(f"warning: could not draw the plots ({type(e).__name__}: {e})")
    return {"steps": int(state["step"]), "start": start, "images_per_s": rate, "best_fid": best,
            "wall_s": time.perf_counter() - t_start, "last": {k: float(v) for k, v in last.items()},
            "stopped": stopped}


def _load_history(path: Path, upto: int) -> list:
    if not path.exists():
        return []
    try:
        with np.load(path) as z:
            return [(int(s), z["images"][i]) for i, s in enumerate(z["steps"]) if s <= upto]
    except Exception:
        return []


def _save_history(path: Path, history: list) -> None:
    import os

    tmp = path.with_name("history.tmp.npz")
    np.savez(tmp, steps=np.array([s for s, _ in history]), images=np.stack([x for _, x in history]))
    os.replace(tmp, path)
