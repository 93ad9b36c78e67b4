"""Losses: the stable sigmoid cross-entropy from logits, label smoothing, the GAN losses.

Every loss takes logits, never probabilities: ``log(sigmoid(x))`` underflows to
``-inf`` for ``x < -104`` in float32 and its gradient vanishes long before,
while the logits form below is exact and finite for any finite logit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

Array = jax.Array

__all__ = ["sigmoid_bce_with_logits", "discriminator_loss", "generator_loss", "softmax_xent"]


def sigmoid_bce_with_logits(logits: Array, labels: Array | float) -> Array:
    """Elementwise ``-(z log sigmoid(x) + (1 - z) log(1 - sigmoid(x)))`` for logits ``x``, labels
    ``z``.

    Computed as ``softplus(x) - x z`` (``softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|)``,
    evaluated stably by ``logaddexp``): no overflow, no ``log(0)``, and the gradient is exactly
    ``sigmoid(x) - z`` everywhere, ``x = 0`` and ``x = +-1e4`` included (the ``max``/``abs`` form
    has a kink in its autodiff gradient at 0).
    """
    logits = jnp.asarray(logits)
    labels = jnp.broadcast_to(jnp.asarray(labels, logits.dtype), logits.shape)
    return jax.nn.softplus(logits) - logits * labels


def discriminator_loss(
    real_logits: Array, fake_logits: Array, *, real_label: float = 0.9, fake_label: float = 0.0
) -> tuple[Array, dict]:
    """Mean BCE of real logits against ``real_label`` (one-sided label smoothing: 0.9, not 1) plus
    the mean BCE of generated logits against ``fake_label`` (0). Returns ``(loss, parts)``."""
    real = sigmoid_bce_with_logits(real_logits, real_label).mean()
    fake = sigmoid_bce_with_logits(fake_logits, fake_label).mean()
    return real + fake, {"d_loss_real": real, "d_loss_fake": fake}


def generator_loss(fake_logits: Array) -> Array:
    """The non-saturating generator loss ``-log D(G(z))``: BCE of generated logits against label 1.

    Its gradient stays large when the discriminator confidently rejects the samples, unlike the
    minimax ``log(1 - D(G(z)))`` whose gradient vanishes there.
    """
    return sigmoid_bce_with_logits(fake_logits, 1.0).mean()


def softmax_xent(logits: Array, labels: Array) -> Array:
    """Mean softmax cross-entropy with integer ``labels`` (``[B, K]`` logits, ``[B]`` labels)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
