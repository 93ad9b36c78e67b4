"""CycleGAN (Zhu et al. 2017): the train state and the pure train step.

Two ResNet generators, ``G_ab: A -> B`` and ``G_ba: B -> A``, two PatchGAN discriminators,
``D_a`` and ``D_b``, least-squares GAN losses, and, in the order of the reference
implementation:

1. the generators' update: ``lsgan_g(D_b(G_ab(a))) + lsgan_g(D_a(G_ba(b)))``
   ``+ cycle * (|G_ba(G_ab(a)) - a| + |G_ab(G_ba(b)) - b|)``
   ``+ cycle * identity * (|G_ab(b) - b| + |G_ba(a) - a|)`` (means; the identity term only when
   both domains have the same channels), against the discriminators as they were;
   with ``semantic_weight > 0`` also CyCADA's semantic consistency (Hoffman et al. 2018):
   ``semantic_weight * (CE(f(G_ab(a)), argmax f(a)) + CE(f(G_ba(b)), argmax f(b)))``, ``f`` a
   frozen classifier trained on domain A's labels (``params["sem"]``), so a translation keeps
   the class ``f`` reads in its input;
2. each discriminator's update on real images against generated ones drawn through its image
   history (:func:`jaxgen.gan.translation.pool_query`), which lives in the train state.

With ``augment_shift > 0`` every image a discriminator sees, real or generated, in both updates,
is first moved by a random offset of up to that many pixels (DiffAugment's translation, Zhao et
al. 2020, :func:`jaxgen.gan.translation.random_shift`): for a domain with few images (1,497 UCI
digits) the discriminators cannot memorise them.

With ``num_classes > 0`` (both domains labelled, still unpaired) the discriminators are
class-conditional PatchGANs (a projection term per patch, :func:`jaxgen.gan.translation.patchgan`):
``D_b`` judges ``(b, label of b)`` as real and ``(G_ab(a), label of a)`` as fake, and the
generator's GAN terms ask ``D_b(G_ab(a), label of a)`` and ``D_a(G_ba(b), label of b)``; the
histories keep each image's label. So ``G_ab`` must turn an MNIST 7 into what domain B's 7s look
like, not only into something of domain B: the class survives the translation through the
adversarial term itself.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxgen.gan import translation as tr

Array = jax.Array
GENERATORS = ("g_ab", "g_ba")
DISCRIMINATORS = ("d_a", "d_b")


class CycleGan(NamedTuple):
    """The networks' settings (hashable: jitted steps are keyed by it)."""

    channels_a: int = 1
    channels_b: int = 1
    g_features: int = 32
    g_blocks: int = 6
    d_features: tuple = (64, 128, 256)
    cycle_weight: float = 10.0
    identity_weight: float = 0.5  # times cycle_weight, as in the paper's code
    pool_size: int = 50
    semantic_weight: float = 0.0  # CyCADA's semantic consistency; needs a domain-A classifier
    num_classes: int = 0  # > 0: class-conditional discriminators (both domains' labels)
    augment_shift: int = 0  # > 0: DiffAugment's random translation of everything D sees


class TrainState(NamedTuple):
    params: dict  # g_ab, g_ba, d_a, d_b
    opt_state: dict  # {"g": over both generators, "d": over both discriminators}
    pools: dict  # {"a": history of G_ba's images, "b": history of G_ab's}
    step: Array  # int32 []
    key: Array  # uint32 [2]; step s uses fold_in(key, s)


def init_state(
    spec: CycleGan, seed: int, image_shape_a, image_shape_b, tx_g, tx_d, classifier=None
) -> TrainState:
    """``image_shape_*``: ``(H, W, C)`` of each domain (the histories hold that shape);
    ``classifier``: the frozen domain-A classifier the semantic term reads (only with
    ``spec.semantic_weight > 0``; kept in ``params["sem"]``, never updated)."""
    if (spec.semantic_weight > 0) != (classifier is not None):
        raise ValueError("a classifier is needed exactly when spec.semantic_weight > 0")
    ks = jax.random.split(jax.random.key(seed), 5)
    ca, cb = spec.channels_a, spec.channels_b
    params = {
        "g_ab": tr.resnet_generator_init(ks[0], ca, cb, spec.g_features, spec.g_blocks),
        "g_ba": tr.resnet_generator_init(ks[1], cb, ca, spec.g_features, spec.g_blocks),
        "d_a": tr.patchgan_init(ks[2], ca, spec.d_features, spec.num_classes),
        "d_b": tr.patchgan_init(ks[3], cb, spec.d_features, spec.num_classes),
    }
    if classifier is not None:
        params["sem"] = classifier
    gens = {k: params[k] for k in GENERATORS}
    discs = {k: params[k] for k in DISCRIMINATORS}
    return TrainState(
        params,
        {"g": tx_g.init(gens), "d": tx_d.init(discs)},
        {
            "a": tr.pool_init(spec.pool_size, image_shape_a, labels=bool(spec.num_classes)),
            "b": tr.pool_init(spec.pool_size, image_shape_b, labels=bool(spec.num_classes)),
        },
        jnp.zeros((), jnp.int32),
        jax.random.key_data(ks[4]),
    )


def semantic_loss(classifier, x: Array, translated: Array) -> Array:
    """``CE(f(translated), argmax f(x))``, mean over the batch: the class the frozen classifier
    reads in the input, asked of its translation (the pseudo-label carries no gradient)."""
    from jaxgen.evaluation.classifier import classifier_apply

    target = jax.lax.stop_gradient(jnp.argmax(classifier_apply(classifier, x)[0], -1))
    logits = classifier_apply(classifier, translated)[0]
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), target[:, None], -1).mean()


def _augment(spec: CycleGan, key, *images):
    """Each batch moved by ``random_shift`` with its own key (``augment_shift`` 0: as is)."""
    if not spec.augment_shift:
        return images
    keys = jax.random.split(key, len(images))
    return tuple(tr.random_shift(x, k, spec.augment_shift) for x, k in zip(images, keys))


def generator_loss(
    spec: CycleGan, gens, discs, a: Array, b: Array, sem=None, la=None, lb=None, key=None
) -> tuple[Array, tuple]:
    """The generators' total loss and ``((fake_a, fake_b), terms)``; ``la``/``lb``: the labels
    of ``a``/``b`` (class-conditional discriminators only); ``key``: the augmentation's (only
    with ``spec.augment_shift > 0``)."""
    fake_b = tr.resnet_generator(gens["g_ab"], a)
    fake_a = tr.resnet_generator(gens["g_ba"], b)
    seen_b, seen_a = _augment(spec, key, fake_b, fake_a)
    gan = tr.lsgan_g_loss(tr.patchgan(discs["d_b"], seen_b, la)) + tr.lsgan_g_loss(
        tr.patchgan(discs["d_a"], seen_a, lb)
    )
    cycle = tr.l1_loss(tr.resnet_generator(gens["g_ba"], fake_b), a) + tr.l1_loss(
        tr.resnet_generator(gens["g_ab"], fake_a), b
    )
    total = gan + spec.cycle_weight * cycle
    terms = {"g_gan": gan, "cycle": cycle}
    if spec.identity_weight and spec.channels_a == spec.channels_b:
        identity = tr.l1_loss(tr.resnet_generator(gens["g_ab"], b), b) + tr.l1_loss(
            tr.resnet_generator(gens["g_ba"], a), a
        )
        total = total + spec.cycle_weight * spec.identity_weight * identity
        terms["identity"] = identity
    if spec.semantic_weight:
        semantic = semantic_loss(sem, a, fake_b) + semantic_loss(sem, b, fake_a)
        total = total + spec.semantic_weight * semantic
        terms["semantic"] = semantic
    return total, ((fake_a, fake_b), terms)


def discriminator_loss(discs, a: Array, b: Array, old_a: Array, old_b: Array, labels=None):
    """``lsgan_d`` of each discriminator on its domain's real images against the generated ones
    its history returned; ``labels``: ``(la, lb, old_la, old_lb)``, those images' labels
    (class-conditional discriminators only)."""
    la, lb, old_la, old_lb = labels if labels is not None else (None,) * 4
    da = discs["d_a"]
    db = discs["d_b"]
    loss_a = tr.lsgan_d_loss(tr.patchgan(da, a, la), tr.patchgan(da, old_a, old_la))
    loss_b = tr.lsgan_d_loss(tr.patchgan(db, b, lb), tr.patchgan(db, old_b, old_lb))
    return loss_a + loss_b, {"d_a": loss_a, "d_b": loss_b}


def train_step(
    state: TrainState,
    a: Array,
    b: Array,
    la: Array | None = None,
    lb: Array | None = None,
    *,
    spec: CycleGan,
    tx_g,
    tx_d,
) -> tuple[TrainState, dict[str, Any]]:
    """One step on unpaired batches ``a`` and ``b`` (``[B, H, W, C]`` in [-1, 1]); with
    class-conditional discriminators also their int labels ``la`` and ``lb`` ``[B]``."""
    if bool(spec.num_classes) != (la is not None and lb is not None):
        raise ValueError("class-conditional discriminators need la and lb; the others take none")
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    k_a, k_b = jax.random.split(key)  # the histories' (as before augmentation existed)
    k_g, k_d = jax.random.split(jax.random.fold_in(key, 1))  # the augmentation's
    p = state.params
    gens = {k: p[k] for k in GENERATORS}
    discs = {k: p[k] for k in DISCRIMINATORS}

    (gl, ((fake_a, fake_b), g_terms)), g_grads = jax.value_and_grad(
        lambda g: generator_loss(spec, g, discs, a, b, p.get("sem"), la, lb, k_g), has_aux=True
    )(gens)
    g_upd, g_opt = tx_g.update(g_grads, state.opt_state["g"], gens)
    gens = optax.apply_updates(gens, g_upd)

    fake_a, fake_b = jax.lax.stop_gradient(fake_a), jax.lax.stop_gradient(fake_b)
    if spec.num_classes:  # G_ba's images carry b's labels, G_ab's a's
        pool_a, old_a, old_la = tr.pool_query(state.pools["a"], fake_a, k_a, lb)
        pool_b, old_b, old_lb = tr.pool_query(state.pools["b"], fake_b, k_b, la)
        labels = (la, lb, old_la, old_lb)
    else:
        pool_a, old_a = tr.pool_query(state.pools["a"], fake_a, k_a)
        pool_b, old_b = tr.pool_query(state.pools["b"], fake_b, k_b)
        labels = None
    seen = _augment(spec, k_d, a, b, old_a, old_b)
    (dl, d_terms), d_grads = jax.value_and_grad(
        lambda d: discriminator_loss(d, *seen, labels), has_aux=True
    )(discs)
    d_upd, d_opt = tx_d.update(d_grads, state.opt_state["d"], discs)
    discs = optax.apply_updates(discs, d_upd)

    frozen = {"sem": p["sem"]} if "sem" in p else {}
    new = TrainState(
        {**gens, **discs, **frozen},
        {"g": g_opt, "d": d_opt},
        {"a": pool_a, "b": pool_b},
        state.step + 1,
        state.key,
    )
    return new, {"g_loss": gl, "d_loss": dl, **g_terms, **d_terms}
