"""Text generation from a char-RNN: temperature (0: greedy), top-k, top-p, priming.

The whole generation loop is one compiled ``lax.scan`` (no Python loop per
character), and the randomness comes from ``fold_in(key, t)``, so the same
seed gives the same text.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.charrnn import data, model, train
from jaxgen.charrnn.config import KIND
from jaxgen.errors import UserError
from jaxgen.training import loop

# Masses within this of ``top_p`` count as reaching it (float32 softmax sums are ~1e-7 off).
TOP_P_TOL = 1e-6


def filter_logits(
    logits: jax.Array,
    *,
    temperature: float | jax.Array = 1.0,
    top_k: int = 0,
    top_p: float | jax.Array = 1.0,
) -> jax.Array:
    """Logits ``[..., V]`` scaled by ``1/temperature``, keeping exactly the ``top_k`` largest (0:
    all) and, of those, the smallest set whose renormalised probability reaches ``top_p``; the
    others are set to ``-inf``.

    Ties are broken by index: among equal logits the lower vocabulary index ranks first (so
    ``top_k=1`` on ``[1, 1, 0]`` keeps index 0 only). ``top_p >= 1`` keeps everything (no
    float rounding can drop a token), and the most likely token is always kept. The nucleus
    test uses the tail mass ``sum of p_j at and after rank i`` (summed from the smallest, so
    it is exact to float32 rounding): rank ``i`` is kept when the mass ranked before it is
    below ``top_p`` by more than ``TOP_P_TOL``. ``temperature == 0`` is greedy: only the
    largest logit (lowest index among ties) stays finite, unscaled.
    """
    logits = jnp.asarray(logits)
    temperature = jnp.asarray(temperature, logits.dtype)
    greedy = temperature == 0
    logits = logits / jnp.where(greedy, jnp.ones_like(temperature), temperature)
    V = logits.shape[-1]
    order = jnp.argsort(
        -logits, axis=-1, stable=True
    )  # rank -> vocab index; ties: lower index first
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    rank = jnp.arange(V)
    keep = rank < (top_k if top_k > 0 else V)  # exactly k ranks
    sorted_logits = jnp.where(keep, sorted_logits, -jnp.inf)
    probs = jax.nn.softmax(sorted_logits, axis=-1)  # renormalised over the top-k
    tail = jnp.flip(jnp.cumsum(jnp.flip(probs, -1), axis=-1), -1)  # mass at rank >= i
    top_p = jnp.asarray(top_p, jnp.float32)
    in_nucleus = tail.astype(jnp.float32) > (1.0 - top_p) + TOP_P_TOL  # mass before rank i < top_p
    keep = keep & ((top_p >= 1.0) | in_nucleus | (rank == 0))
    keep = jnp.where(greedy, rank == 0, keep)
    keep = jnp.take_along_axis(keep, jnp.argsort(order, axis=-1), axis=-1)  # back to vocab order
    return jnp.where(keep, logits, -jnp.inf)


def greedy_or_sample(
    key: jax.Array, logits: jax.Array, *, temperature=1.0, top_k: int = 0, top_p=1.0
) -> jax.Array:
    """One token id per row of ``logits [..., V]``: the argmax (lowest index among ties, no
    randomness) when ``temperature == 0``, else a draw from :func:`filter_logits`."""
    filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    drawn = jax.random.categorical(key, filtered)
    return jnp.where(jnp.asarray(temperature) == 0, jnp.argmax(logits, axis=-1), drawn)


@functools.partial(jax.jit, static_argnames=("length", "top_k"))
def generate(
    params: dict,
    prime_ids: jax.Array,
    key: jax.Array,
    *,
    length: int,
    temperature=1.0,
    top_k: int = 0,
    top_p=1.0,
) -> jax.Array:
    """``length`` new ids after the prime ``[P]`` (P >= 1), as ``[length]`` int32.

    ``temperature == 0`` is greedy decoding (argmax at every step; ``key`` is unused)."""
    carries = model.zero_carries(params, 1)
    carries, logits = model.apply(params, prime_ids[:, None], carries)

    def body(c, t):
        carries, last = c
        nxt = greedy_or_sample(
            jax.random.fold_in(key, t), last, temperature=temperature, top_k=top_k, top_p=top_p
        )
        carries, lg = model.apply(params, nxt.reshape(1, 1), carries)
        return (carries, lg[0, 0]), nxt

    _, ids = jax.lax.scan(body, (carries, logits[-1, 0]), jnp.arange(length))
    return ids.astype(jnp.int32)


def sample_text(
    params,
    vocab,
    *,
    prime: str = "\n",
    length: int = 500,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
) -> str:
    """The prime followed by ``length`` generated characters; ``temperature=0`` is greedy (argmax
    at every step, the same text for every seed)."""
    if length < 0:
        raise UserError(f"length must be non-negative, got {length}")
    if not temperature >= 0 or not np.isfinite(temperature):
        raise UserError(f"temperature must be >= 0 (0: greedy, argmax), got {temperature}")
    if not 0 < top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0 or top_k > len(vocab):
        raise UserError(
            f"top_k must be between 0 (off) and the vocabulary size {len(vocab)}, got {top_k}"
        )
    if not prime:
        prime = "\n" if "\n" in vocab.chars else vocab.chars[0]
        shown = ""
    else:
        shown = prime
    prime_ids = jnp.asarray(vocab.encode(prime))
    if length == 0:
        return shown
    ids = generate(
        params,
        prime_ids,
        jax.random.key(seed),
        length=length,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
    )
    return shown + vocab.decode(np.asarray(ids))


def load_for_sampling(workdir: str | Path, which: str = "best"):
    """``(params, vocab, cfg)`` from a trained workdir (best checkpoint, else the latest)."""

    def template(cfg, meta):
        vocab_size = len(data.Vocab.from_json(meta["vocab"]))
        return train.init_state(cfg, vocab_size, train.make_optimizer(cfg, 1))

    state, meta, cfg = loop.load_trained(workdir, KIND, template, which, name="char-RNN")
    return state.params, data.Vocab.from_json(meta["vocab"]), cfg
