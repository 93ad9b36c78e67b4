"""The GAN train state and its one pure, jitted train step (D, then G through the same fakes)."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from jaxgen import losses
from jaxgen.gan import models
from jaxgen.gan.models import GanModel
from jaxgen.training.metrics import keep_if_finite


class TrainState(NamedTuple):
    """The GAN train state (a pytree; orbax saves it field by field)."""

    params: dict  # {"g": generator params, "d": discriminator params}
    stats: dict  # {"g": ..., "d": ...} batch-norm running statistics (empty for the FC GAN)
    opt_state: dict  # {"g": Adam state, "d": Adam state}: one optimiser per network
    step: jax.Array  # int32 [] global step
    key: jax.Array  # uint32 [2] raw PRNG key data; step s uses fold_in(key, s)
    ema: Any = None  # generator params averaged over training (train.ema_decay > 0), else None


_norm = (
    optax.tree.norm if hasattr(optax, "tree") and hasattr(optax.tree, "norm") else optax.global_norm
)


def lr_schedule(lr: float, cfg, fit: float = 1.0) -> float | optax.Schedule:
    """``lr``, or with ``train.lr_decay_steps > 0`` a schedule: ``lr`` until step
    ``train.lr_decay_start``, then linearly down to ``lr * train.lr_final`` over ``lr_decay_steps``
    steps, then flat. It counts optimiser updates, which are saved with the optimiser state, so a
    resumed run continues it. ``fit`` < 1 (a run shortened to fit its time budget) scales the
    decay's start and length by that fraction, so the decay still ends with the run."""
    return _schedule(float(lr), *_decay(cfg, fit))


def _decay(cfg, fit: float) -> tuple[int, int, float]:
    """``(start, steps, final fraction)`` of the learning-rate decay (steps 0: none)."""
    t = cfg.train
    steps = int(t.get("lr_decay_steps", 0))
    if steps <= 0:
        return 0, 0, 0.0
    start = int(t.get("lr_decay_start", 0))
    if fit < 1.0:
        start, steps = int(start * fit), max(1, int(steps * fit))
    return start, steps, float(t.get("lr_final", 0.1))


def _schedule(lr: float, start: int, steps: int, final: float) -> float | optax.Schedule:
    return lr if steps <= 0 else optax.linear_schedule(lr, lr * final, steps, start)


def make_optimizers(
    cfg, fit: float = 1.0
) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """``(tx_g, tx_d)``: one Adam per network (``train.lr_g``/``lr_d``, ``beta1``, ``beta2``, and
    the optional linear decay of :func:`lr_schedule`, fitted by ``fit``). Equal settings give the
    same objects, so a step jitted with them is reused (see ``training.loop``)."""
    t = cfg.train
    decay = _decay(cfg, fit)
    return (
        _adam(float(t.lr_g), float(t.beta1), float(t.beta2), decay),
        _adam(float(t.lr_d), float(t.beta1), float(t.beta2), decay),
    )


@functools.lru_cache(maxsize=32)
def _adam(lr: float, b1: float, b2: float, decay: tuple) -> optax.GradientTransformation:
    return optax.adam(_schedule(lr, *decay), b1=b1, b2=b2)


def init_state(model: GanModel, seed: int, tx_g, tx_d, *, ema: bool) -> TrainState:
    """The initial train state, from one compiled function kept per (model, optimisers, ema):
    op by op, every random draw and every optimiser zero of a new shape would compile on its own.
    The optimisers are cached by their settings (:func:`make_optimizers`), so equal settings
    share it."""
    try:
        init = _cached_init_fn(model, tx_g, tx_d, ema)
    except TypeError:  # an unhashable optimiser: compiled for this call only
        init = _init_fn(model, tx_g, tx_d, ema)
    return init(seed)


def _init_fn(model: GanModel, tx_g, tx_d, ema: bool):
    def init(seed):
        k_init, k_train = jax.random.split(jax.random.key(seed))
        params, stats = model.init(k_init)
        return TrainState(
            params=params,
            stats=stats,
            opt_state={"g": tx_g.init(params["g"]), "d": tx_d.init(params["d"])},
            step=jnp.zeros((), jnp.int32),
            key=jax.random.key_data(k_train),
            ema=jax.tree.map(jnp.copy, params["g"]) if ema else None,
        )

    return jax.jit(init)


_cached_init_fn = functools.lru_cache(maxsize=16)(_init_fn)


def train_step(
    state: TrainState,
    real: jax.Array,
    labels: jax.Array | None = None,
    *,
    model: GanModel,
    tx_g,
    tx_d,
    real_label: float = 0.9,
    latent_dist: str = "normal",
    ema_decay: float = 0.0,
    skip_nonfinite: bool = False,
) -> tuple[TrainState, dict]:
    """One GAN step on a real batch ``[B, S, S, C]`` in [-1, 1]: the discriminator, then the
    generator.

    1. ``z ~ p(z)``; ``fake = G(z)`` (one generator forward, kept with its VJP).
    2. Discriminator: BCE(D(real), ``real_label``) + BCE(D(fake), 0), real and generated batches
       passed **separately**, so batch norm normalises each with its own statistics. Adam on D
       only.
    3. Generator: the non-saturating loss BCE(D'(fake), 1) against the **updated** discriminator D';
       its gradient is pulled back through the VJP of step 1 (the same ``z`` and dropout key, so the
       same images: no second generator forward). Adam on G only.
    4. Optionally ``ema <- d * ema + (1 - d) * G params`` (with a warm-up
       ``d_t = min(d, (1+t)/(10+t))``).

    A class-conditional model (``model.num_classes > 0``) takes the real images' ``labels``
    (int ``[B]``); the generated batch's labels are drawn uniformly from
    ``fold_in(step key, 7)`` and go with the fakes to D (as the fakes' labels) and to G's loss.

    Batch-norm running statistics: the generator's move once per step (step 1), the discriminator's
    twice (its real pass, then its fake pass); the discriminator pass inside the generator update
    uses batch statistics and leaves the running ones alone. ``skip_nonfinite``: a NaN/Inf loss
    leaves the state unchanged but for the step (``metrics["skipped"]`` is 1). Bind the keyword
    arguments with ``functools.partial`` and jit with ``donate_argnums=0``.
    """
    chex.assert_rank(real, 4)  # [B, H, W, C]
    step = state.step
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), step)
    k_z, k_g, k_dr, k_df, k_dg = jax.random.split(key, 5)
    gp, dp = state.params["g"], state.params["d"]
    gs, ds = state.stats["g"], state.stats["d"]
    z = models.sample_latent(k_z, real.shape[0], model.latent, latent_dist)
    fake_labels = None
    if model.num_classes:  # a key of its own: the unconditional draws stay what they were
        k_y = jax.random.fold_in(key, 7)
        fake_labels = jax.random.randint(k_y, (real.shape[0],), 0, model.num_classes)

    (fake, gs_new), g_vjp = jax.vjp(
        lambda p: model.generate(p, gs, z, labels=fake_labels, train=True, key=k_g), gp
    )

    def d_loss_fn(p):
        real_logits, ds1 = model.discriminate(p, ds, real, labels=labels, train=True, key=k_dr)
        fake_logits, ds2 = model.discriminate(
            p, ds1, jax.lax.stop_gradient(fake), labels=fake_labels, train=True, key=k_df
        )
        loss, parts = losses.discriminator_loss(real_logits, fake_logits, real_label=real_label)
        return loss, (ds2, parts, real_logits, fake_logits)

    (d_loss, (ds_new, parts, real_logits, fake_logits)), d_grads = jax.value_and_grad(
        d_loss_fn, has_aux=True
    )(dp)
    d_updates, d_opt = tx_d.update(d_grads, state.opt_state["d"], dp)
    dp_new = optax.apply_updates(dp, d_updates)

    def g_loss_fn(images):
        logits, _ = model.discriminate(
            dp_new, ds_new, images, labels=fake_labels, train=True, key=k_dg
        )
        return losses.generator_loss(logits), logits

    # the generator loss's gradient with respect to the generated images, pulled back through G
    (g_loss, g_logits), fake_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
    (g_grads,) = g_vjp((fake_grad, jax.tree.map(jnp.zeros_like, gs_new)))
    g_updates, g_opt = tx_g.update(g_grads, state.opt_state["g"], gp)
    gp_new = optax.apply_updates(gp, g_updates)

    ema = None
    if state.ema is not None:
        t = step.astype(jnp.float32)
        decay = jnp.minimum(ema_decay, (1.0 + t) / (10.0 + t))
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema, gp_new)
    new_state = TrainState(
        params={"g": gp_new, "d": dp_new},
        stats={"g": gs_new, "d": ds_new},
        opt_state={"g": g_opt, "d": d_opt},
        step=step + 1,
        key=state.key,
        ema=ema,
    )
    metrics = {
        "d_loss": d_loss,
        "g_loss": g_loss,
        **parts,
        "d_real": jax.nn.sigmoid(real_logits).mean(),  # D's mean belief that real images are real
        "d_fake": jax.nn.sigmoid(
            fake_logits
        ).mean(),  # ... that generated ones are (before its update)
        "d_fake_after": jax.nn.sigmoid(g_logits).mean(),  # ... after its update
        "g_grad_norm": _norm(g_grads),
        "d_grad_norm": _norm(d_grads),
        "g_param_norm": _norm(gp_new),
        "d_param_norm": _norm(dp_new),
        "g_update_norm": _norm(g_updates),
        "d_update_norm": _norm(d_updates),
    }
    if skip_nonfinite:
        new_state, metrics["skipped"] = keep_if_finite(state, new_state, d_loss, g_loss)
    return new_state, metrics
