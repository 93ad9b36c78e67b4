"""Pix2Pix (Isola et al. 2017): the train state and the pure train step.

The generator is :func:`jaxgen.gan.translation.unet` (dropout its only noise), the
discriminator :func:`jaxgen.gan.translation.patchgan` on the input and an output image joined on
channels (real pair or generated pair). Losses as in the paper:

* D: ``(BCE(D(a, b), 1) + BCE(D(a, G(a)), 0)) / 2`` over every patch logit;
* G: ``gan_weight * BCE(D(a, G(a)), 1) + l1_weight * mean|G(a) - b|`` against the **updated**
  D (the reference implementation steps D first, then G). ``gan_weight=0`` is the paper's
  L1-only baseline: D is then neither trained nor read, so the step costs only the U-Net's.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxgen import losses
from jaxgen.gan import translation as tr

Array = jax.Array


class Pix2Pix(NamedTuple):
    """The networks' settings (hashable: jitted steps are keyed by it)."""

    in_channels: int = 1
    out_channels: int = 1
    g_features: tuple = (64, 128, 256, 256, 256)
    d_features: tuple = (64, 128, 256)
    dropout: float = 0.5
    l1_weight: float = 100.0
    gan_weight: float = 1.0  # 0: the generator learns from L1 alone (the paper's baseline)


class TrainState(NamedTuple):
    params: dict  # {"g": U-Net, "d": PatchGAN}
    opt_state: dict  # {"g": ..., "d": ...}
    step: Array  # int32 []
    key: Array  # uint32 [2] raw key data; step s uses fold_in(key, s)


def init_state(spec: Pix2Pix, seed: int, tx_g, tx_d) -> TrainState:
    k_g, k_d, k_train = jax.random.split(jax.random.key(seed), 3)
    params = {
        "g": tr.unet_init(k_g, spec.in_channels, spec.out_channels, spec.g_features),
        "d": tr.patchgan_init(k_d, spec.in_channels + spec.out_channels, spec.d_features),
    }
    return TrainState(
        params,
        {"g": tx_g.init(params["g"]), "d": tx_d.init(params["d"])},
        jnp.zeros((), jnp.int32),
        jax.random.key_data(k_train),
    )


def translate(spec: Pix2Pix, g_params, a: Array, key: Array | None) -> Array:
    """``G(a)``; with a ``key``, dropout is on (Pix2Pix samples that way too)."""
    return tr.unet(g_params, a, key=key, dropout_rate=spec.dropout)


def d_loss(spec: Pix2Pix, d_params, a: Array, b: Array, fake: Array) -> tuple[Array, dict]:
    real_logits = tr.patchgan(d_params, jnp.concatenate([a, b], axis=-1))
    fake_logits = tr.patchgan(d_params, jnp.concatenate([a, fake], axis=-1))
    real = losses.sigmoid_bce_with_logits(real_logits, 1.0).mean()
    fake_l = losses.sigmoid_bce_with_logits(fake_logits, 0.0).mean()
    return 0.5 * (real + fake_l), {
        "d_real": jax.nn.sigmoid(real_logits).mean(),
        "d_fake": jax.nn.sigmoid(fake_logits).mean(),
    }


def g_loss(spec: Pix2Pix, d_params, a: Array, b: Array, fake: Array) -> tuple[Array, dict]:
    logits = tr.patchgan(d_params, jnp.concatenate([a, fake], axis=-1))
    gan = losses.sigmoid_bce_with_logits(logits, 1.0).mean()
    l1 = tr.l1_loss(fake, b)
    return spec.gan_weight * gan + spec.l1_weight * l1, {"g_gan": gan, "g_l1": l1}


def train_step(
    state: TrainState, a: Array, b: Array, *, spec: Pix2Pix, tx_g, tx_d
) -> tuple[TrainState, dict[str, Any]]:
    """One step on pairs ``a`` (inputs) and ``b`` (targets), ``[B, H, W, C]`` in [-1, 1]:
    ``fake = G(a)`` once (its VJP kept), D's update on the pairs with ``fake`` held fixed, then
    G's update against the updated D, pulled back through the same VJP."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    p = state.params
    fake, g_vjp = jax.vjp(lambda gp: translate(spec, gp, a, key), p["g"])

    if spec.gan_weight == 0:  # L1 alone: D is left as it is
        l1, fake_grad = jax.value_and_grad(lambda f: spec.l1_weight * tr.l1_loss(f, b))(fake)
        d_new, d_opt = p["d"], state.opt_state["d"]
        gl, dl = l1, jnp.zeros(())
        d_terms = {"d_real": jnp.zeros(()), "d_fake": jnp.zeros(())}
        g_terms = {"g_gan": jnp.zeros(()), "g_l1": l1 / spec.l1_weight}
    else:
        (dl, d_terms), d_grads = jax.value_and_grad(
            lambda dp: d_loss(spec, dp, a, b, jax.lax.stop_gradient(fake)), has_aux=True
        )(p["d"])
        d_upd, d_opt = tx_d.update(d_grads, state.opt_state["d"], p["d"])
        d_new = optax.apply_updates(p["d"], d_upd)
        (gl, g_terms), fake_grad = jax.value_and_grad(
            lambda f: g_loss(spec, d_new, a, b, f), has_aux=True
        )(fake)
    (g_grads,) = g_vjp(fake_grad)
    g_upd, g_opt = tx_g.update(g_grads, state.opt_state["g"], p["g"])
    g_new = optax.apply_updates(p["g"], g_upd)

    metrics = {"d_loss": dl, "g_loss": gl, **d_terms, **g_terms}
    new = TrainState({"g": g_new, "d": d_new}, {"g": g_opt, "d": d_opt}, state.step + 1, state.key)
    return new, metrics
