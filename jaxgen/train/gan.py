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
from jaxgen.models import gan as ganlib
from jaxgen.models.gan import GanModel
from jaxgen.train import checkpoint as ckpt
from jaxgen.train import parallel
from jaxgen.train.metrics import RunLog, best_logged, keep_if_finite
from jaxgen.train.preemption import StopOnSignal, not_started_message, stop_message

KIND = "gan"
_norm = optax.tree.norm if hasattr(optax, "tree") and hasattr(optax.tree, "norm") else optax.global_norm


# ----------------------------------------------------------------------------- pure pieces


def lr_schedule(lr: float, cfg) -> float | optax.Schedule:
    """``lr``, or with ``train.lr_decay_steps > 0`` a schedule: ``lr`` until step ``train.lr_decay_start``,
    then linearly down to ``lr * train.lr_final`` over ``lr_decay_steps`` steps, then flat. It counts
    optimiser updates, which are saved with the optimiser state, so a resumed run continues it."""
    t = cfg.train
    steps = int(t.get("lr_decay_steps", 0))
    if steps <= 0:
        return lr
    return optax.linear_schedule(lr, lr * float(t.get("lr_final", 0.1)), steps, int(t.get("lr_decay_start", 0)))


def make_optimizers(cfg) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """``(tx_g, tx_d)``: one Adam per network (``train.lr_g``/``lr_d``, ``beta1``, ``beta2``, and the
    optional linear decay of :func:`lr_schedule`)."""
    t = cfg.train
    return (optax.adam(lr_schedule(t.lr_g, cfg), b1=t.beta1, b2=t.beta2),
            optax.adam(lr_schedule(t.lr_d, cfg), b1=t.beta1, b2=t.beta2))


def init_state(model: GanModel, seed: int, tx_g, tx_d, *, ema: bool) -> dict:
    """The initial train state (built under one ``jit``: one compilation instead of one per op)."""
    return jax.jit(functools.partial(_init_state, model, tx_g=tx_g, tx_d=tx_d, ema=ema))(seed)


def _init_state(model: GanModel, seed, *, tx_g, tx_d, ema: bool) -> dict:
    k_init, k_train = jax.random.split(jax.random.key(seed))
    params, stats = model.init(k_init)
    state = {
        "params": params,
        "stats": stats,
        "opt_state": {"g": tx_g.init(params["g"]), "d": tx_d.init(params["d"])},
        "step": jnp.zeros((), jnp.int32),
        "key": jax.random.key_data(k_train),
    }
    if ema:
        state["ema"] = jax.tree.map(jnp.copy, params["g"])
    return state


def train_step(state: dict, real: jax.Array, *, model: GanModel, tx_g, tx_d, real_label: float = 0.9,
               latent_dist: str = "normal", ema_decay: float = 0.0, skip_nonfinite: bool = False) -> tuple[dict, dict]:
    """One GAN step on a real batch ``[B, S, S, C]`` in [-1, 1]: the discriminator, then the generator.

    1. ``z ~ p(z)``; ``fake = G(z)`` (one generator forward, kept with its VJP).
    2. Discriminator: BCE(D(real), ``real_label``) + BCE(D(fake), 0), real and generated batches passed
       **separately**, so batch norm normalises each with its own statistics. Adam on D only.
    3. Generator: the non-saturating loss BCE(D'(fake), 1) against the **updated** discriminator D';
       its gradient is pulled back through the VJP of step 1 (the same ``z`` and dropout key, so the
       same images: no second generator forward). Adam on G only.
    4. Optionally ``ema <- d * ema + (1 - d) * G params`` (with a warm-up ``d_t = min(d, (1+t)/(10+t))``).

    Batch-norm running statistics: the generator's move once per step (step 1), the discriminator's
    twice (its real pass, then its fake pass); the discriminator pass inside the generator update uses
    batch statistics and leaves the running ones alone. ``skip_nonfinite``: a NaN/Inf loss leaves
    the state unchanged but for the step (``metrics["skipped"]`` is 1). Bind the keyword arguments with
    ``functools.partial`` and jit with ``donate_argnums=0``.
    """
    step = state["step"]
    key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), step)
    k_z, k_g, k_dr, k_df, k_dg = jax.random.split(key, 5)
    gp, dp = state["params"]["g"], state["params"]["d"]
    gs, ds = state["stats"]["g"], state["stats"]["d"]
    z = ganlib.sample_latent(k_z, real.shape[0], model.latent, latent_dist)

    (fake, gs_new), g_vjp = jax.vjp(lambda p: model.generate(p, gs, z, train=True, key=k_g), gp)

    def d_loss_fn(p):
        real_logits, ds1 = model.discriminate(p, ds, real, train=True, key=k_dr)
        fake_logits, ds2 = model.discriminate(p, ds1, jax.lax.stop_gradient(fake), train=True, key=k_df)
        loss, parts = losses.discriminator_loss(real_logits, fake_logits, real_label=real_label)
        return loss, (ds2, parts, real_logits, fake_logits)

    (d_loss, (ds_new, parts, real_logits, fake_logits)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(dp)
    d_updates, d_opt = tx_d.update(d_grads, state["opt_state"]["d"], dp)
    dp_new = optax.apply_updates(dp, d_updates)

    def g_loss_fn(images):
        logits, _ = model.discriminate(dp_new, ds_new, images, train=True, key=k_dg)
        return losses.generator_loss(logits), logits

    (g_loss, g_logits), d_fake = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
    (g_grads,) = g_vjp((d_fake, jax.tree.map(jnp.zeros_like, gs_new)))
    g_updates, g_opt = tx_g.update(g_grads, state["opt_state"]["g"], gp)
    gp_new = optax.apply_updates(gp, g_updates)

    new_state = {**state, "params": {"g": gp_new, "d": dp_new}, "stats": {"g": gs_new, "d": ds_new},
                 "opt_state": {"g": g_opt, "d": d_opt}, "step": step + 1}
    if "ema" in state:
        t = step.astype(jnp.float32)
        decay = jnp.minimum(ema_decay, (1.0 + t) / (10.0 + t))
        new_state["ema"] = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state["ema"], gp_new)
    metrics = {
        "d_loss": d_loss, "g_loss": g_loss, **parts,
        "d_real": jax.nn.sigmoid(real_logits).mean(),  # D's mean belief that real images are real
        "d_fake": jax.nn.sigmoid(fake_logits).mean(),  # ... that generated ones are (before its update)
        "d_fake_after": jax.nn.sigmoid(g_logits).mean(),  # ... after its update
        "g_grad_norm": _norm(g_grads), "d_grad_norm": _norm(d_grads),
        "g_param_norm": _norm(gp_new), "d_param_norm": _norm(dp_new),
        "g_update_norm": _norm(g_updates), "d_update_norm": _norm(d_updates),
    }
    if skip_nonfinite:
        new_state, metrics["skipped"] = keep_if_finite(state, new_state, d_loss, g_loss)
    return new_state, metrics


def sampler(state: dict) -> tuple[Any, Any]:
    """The generator parameters and batch-norm statistics used for sampling (EMA when kept)."""
    return state.get("ema", state["params"]["g"]), state["stats"]["g"]


@functools.partial(jax.jit, static_argnames=("model", "num", "dist", "chunk"))
def recalibrate(model: GanModel, g_params, g_stats, key, *, num: int = 16384, dist: str = "normal",
                chunk: int = 2048):
    """Batch-norm statistics of ``g_params`` measured on ``num`` fresh latents. An averaged (EMA)
    generator's weights never produced the running statistics of the training run, so they are
    re-estimated before sampling. No-op for models without batch norm.

    The latents pass in chunks of ``chunk`` (train-mode batch norm within each chunk, so memory is
    that of one chunk); each layer's statistics are pooled over the chunks: the mean of the chunk
    means, and the mean of the chunk variances plus the variance of the chunk means. 16,384
    latents rather than 2,048 raised the DCGAN's classifier score by 0.023-0.027 and lowered its
    Frechet distance for each of three sample seeds (`README.md`, GAN results)."""
    if not jax.tree.leaves(g_stats):
        return g_stats
    if num % chunk:
        raise ValueError(f"recalibrate: num ({num}) must be a multiple of chunk ({chunk})")
    z = ganlib.sample_latent(key, num, model.latent, dist).reshape(num // chunk, chunk, model.latent)
    per_chunk = jax.lax.map(lambda zc: model.generate(g_params, g_stats, zc, train=True, key=None,
                                                      bn_momentum=0.0)[1], z)

    def pool(layer):
        mean = layer["mean"].mean(0)
        return {"mean": mean, "var": layer["var"].mean(0) + ((layer["mean"] - mean) ** 2).mean(0)}

    return {name: pool(layer) for name, layer in per_chunk.items()}


@functools.partial(jax.jit, static_argnames=("model",))
def _generate_eval(model: GanModel, g_params, g_stats, z):
    images, _ = model.generate(g_params, g_stats, z, train=False)
    return ganlib.crop(model, images)


def generate(model: GanModel, g_params, g_stats, key, num: int, *, dist: str = "normal",
             batch: int = 500) -> np.ndarray:
    """``num`` images ``[num, H, W, C]`` float32 in [-1, 1] (cropped to the data's shape), in batches
    of ``batch`` (one compilation)."""
    out = []
    for i in range(0, num, batch):
        z = ganlib.sample_latent(jax.random.fold_in(key, i // batch), batch, model.latent, dist)
        out.append(np.asarray(_generate_eval(model, g_params, g_stats, z)))
    return np.concatenate(out)[:num].astype(np.float32)


# ----------------------------------------------------------------------------- the run


def validate_config(cfg) -> None:
    for name in ("model.latent", "model.image_size", "model.channels", "train.batch", "train.log_every",
                 "train.checkpoint_every", "train.grid"):
        group, field = name.split(".")
        v = cfg[group][field]
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise UserError(f"--config.{name} must be a positive integer, got {v!r}")
    t = cfg.train
    for name in ("lr_g", "lr_d"):
        if not t[name] > 0:
            raise UserError(f"--config.train.{name} must be positive, got {t[name]}")
    if not (isinstance(t.lr_decay_start, int) and isinstance(t.lr_decay_steps, int)
            and t.lr_decay_start >= 0 and t.lr_decay_steps >= 0):
        raise UserError(f"--config.train.lr_decay_start and lr_decay_steps must be integers >= 0 "
                        f"(lr_decay_steps 0: constant learning rate), got {t.lr_decay_start!r}, {t.lr_decay_steps!r}")
    if not 0.0 <= t.lr_final <= 1.0:
        raise UserError(f"--config.train.lr_final is the final fraction of the learning rate, in [0, 1], got {t.lr_final}")
    if not 0.0 < t.real_label <= 1.0:
        raise UserError(f"--config.train.real_label must be in (0, 1] (0.9 is one-sided label smoothing), "
                        f"got {t.real_label}")
    if not 0.0 <= t.ema_decay < 1.0:
        raise UserError(f"--config.train.ema_decay must be in [0, 1) (0 turns the EMA off), got {t.ema_decay}")
    for name in ("g_dropout", "d_dropout"):
        if not 0.0 <= cfg.model[name] < 1.0:
            raise UserError(f"--config.model.{name} must be in [0, 1), got {cfg.model[name]}")
    if t.on_nonfinite not in ("stop", "skip"):
        raise UserError(f"--config.train.on_nonfinite must be 'stop' or 'skip', got {t.on_nonfinite!r}")
    if cfg.model.latent_dist not in ("normal", "uniform"):
        raise UserError(f"--config.model.latent_dist must be 'normal' or 'uniform', got {cfg.model.latent_dist!r}")
    from jaxgen.config import validate_run_length

    validate_run_length(t)


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
        from jaxgen.analysis import image_metrics as im

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
    gp, gs = sampler(state)
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
    model = ganlib.build(cfg.model)
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
    fixed_z = ganlib.sample_latent(jax.random.fold_in(base, 1), cfg.train.grid, model.latent, cfg.model.latent_dist)
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
                grid = ganlib.crop(model, grid)
                plots.save_grid(grid, workdir / "samples" / f"step_{done:07d}.png")
                plots.save_grid(grid, workdir / "samples" / "latest.png")
                history.append((done, grid[:10]))
                _save_history(hist_path, history)
            if quality is not None and (done % cfg.train.eval_every == 0 or done == steps or (out_of_time and not preempted)):
                flush()
                if sampled_at == done:  # the grid just recalibrated this state with the same key
                    gp, gs = sampled
                else:
                    gp, gs = sampler(state)
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


def load_generator(workdir: str | Path, which: str = "best"):
    """``(model, g_params, g_stats, cfg)`` of a trained GAN, ready for :func:`generate`.

    ``which="best"`` takes the checkpoint with the best sample quality when the run kept one, else the
    latest. The averaged generator is used when the run kept one, with its statistics recalibrated.
    """
    workdir = Path(workdir)
    meta = ckpt.read_meta(workdir)
    if meta is None:
        raise UserError(f"{str(workdir)!r} holds no trained model (no {ckpt.META}); train one with `jaxgen train`")
    if meta.get("model") != KIND:
        raise UserError(f"workdir {str(workdir)!r} holds a {meta.get('model')!r} model, not a GAN")
    cfg = ml_collections.ConfigDict(meta["config"])
    model = ganlib.build(cfg.model)
    tx_g, tx_d = make_optimizers(cfg)
    template = init_state(model, cfg.seed, tx_g, tx_d, ema=cfg.train.ema_decay > 0)
    ckpts = ckpt.Checkpoints(workdir)
    try:
        for w in ([which, "latest"] if which == "best" else ["latest"]):
            got = ckpts.restore(ckpt.abstract(template), which=w)
            if got is not None:
                state = got[1]
                gp, gs = sampler(state)
                if "ema" in state:
                    gs = recalibrate(model, gp, gs, jax.random.fold_in(jax.random.key(cfg.seed), 2),
                                     dist=cfg.model.latent_dist)
                return model, gp, gs, cfg
    finally:
        ckpts.close()
    raise UserError(f"no checkpoint could be restored from {str(workdir)!r}; train (or resume) with `jaxgen train`")


def default_config() -> ml_collections.ConfigDict:
    """The classic fully connected GAN; every GAN config starts from this and changes fields."""
    c = ml_collections.ConfigDict()
    c.model_kind = "gan"  # which trainer `jaxgen train` runs
    c.seed = 0  # base PRNG seed: init, data order, latents, dropout (fold_in(key, step) per step)

    c.data = ml_collections.ConfigDict()
    c.data.source = "builtin"  # 'builtin' (scikit-learn digits, offline) or 'tfds' (set data.tfds_name)
    c.data.path = ""  # a folder of MNIST-format IDX files (or a .npy [N, H, W, C]); wins over data.source
    c.data.tfds_name = "mnist"  # tensorflow-datasets name: mnist, fashion_mnist, svhn_cropped, celeb_a, ...
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
    c.train.grid = 64  # fixed latents drawn in the sample grid
    c.train.sample_every = 0  # steps between sample grids; 0: once per epoch
    c.train.log_every = 50  # steps between metrics rows (and non-finite checks)
    c.train.checkpoint_every = 1000  # steps between checkpoints (and one at the end)
    c.train.eval_every = 0  # steps between sample-quality measurements (best/ kept by it); 0: none
    c.train.eval_samples = 2000  # samples per quality measurement
    c.train.classifier_cache = "~/.cache/jaxgen/classifiers"  # evaluation classifiers, one per dataset (shared with jaxgen eval)
    c.train.time_budget_s = 0.0  # stop (sample, save) after this many seconds of training; 0: no limit
    c.train.on_nonfinite = "stop"  # a NaN/Inf loss: 'stop' (name the step, keep the last checkpoint) or 'skip' the update

    c.parallel = ml_collections.ConfigDict()
    c.parallel.data_parallel = True  # with several devices: shard the (global) train.batch over all of them
    c.parallel.distributed = False  # multi-host: call jax.distributed.initialize() first (TPU slices, GPU clusters)
    return c


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
