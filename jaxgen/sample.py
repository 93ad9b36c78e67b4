"""Text generation from a char-RNN: temperature, top-k, top-p, priming.

The whole generation loop is one compiled ``lax.scan`` (no Python loop per
character), and the randomness comes from ``fold_in(key, t)``, so the same
seed gives the same text.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import UserError
from jaxgen.models import charrnn as model


def filter_logits(logits: jax.Array, *, temperature: float | jax.Array = 1.0, top_k: int = 0,
                  top_p: float | jax.Array = 1.0) -> jax.Array:
    """Logits ``[..., V]`` scaled by ``1/temperature``, keeping the ``top_k`` largest and the
    smallest set whose probability reaches ``top_p`` (others set to ``-inf``)."""
    logits = logits / temperature
    if top_k > 0:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly more likely tokens
    drop_sorted = before >= top_p
    drop = jnp.take_along_axis(drop_sorted, jnp.argsort(order, axis=-1), axis=-1)  # back to vocab order
    return jnp.where(drop, -jnp.inf, logits)


@functools.partial(jax.jit, static_argnames=("length", "top_k"))
def generate(params: dict, prime_ids: jax.Array, key: jax.Array, *, length: int, temperature=1.0,
             top_k: int = 0, top_p=1.0) -> jax.Array:
    """``length`` new ids after the prime ``[P]`` (P >= 1), as ``[length]`` int32."""
    carries = model.zero_carries(params, 1)
    carries, logits = model.apply(params, prime_ids[:, None], carries)

    def body(c, t):
        carries, last = c
        nxt = jax.random.categorical(jax.random.fold_in(key, t),
                                     filter_logits(last, temperature=temperature, top_k=top_k, top_p=top_p))
        carries, lg = model.apply(params, nxt.reshape(1, 1), carries)
        return (carries, lg[0, 0]), nxt

    _, ids = jax.lax.scan(body, (carries, logits[-1, 0]), jnp.arange(length))
    return ids.astype(jnp.int32)


def sample_text(params, vocab, *, prime: str = "\n", length: int = 500, temperature: float = 1.0,
                top_k: int = 0, top_p: float = 1.0, seed: int = 0) -> str:
    """The prime followed by ``length`` generated characters."""
    if length < 0:
        raise UserError(f"--length must be non-negative, got {length}")
    if not temperature > 0:
        raise UserError(f"--temperature must be positive, got {temperature}")
    if not 0 < top_p <= 1:
        raise UserError(f"--top_p must be in (0, 1], got {top_p}")
    if top_k < 0 or top_k > len(vocab):
        raise UserError(f"--top_k must be between 0 (off) and the vocabulary size {len(vocab)}, got {top_k}")
    if not prime:
        prime = "\n" if "\n" in vocab.chars else vocab.chars[0]
        shown = ""
    else:
        shown = prime
    prime_ids = jnp.asarray(vocab.encode(prime))
    if length == 0:
        return shown
    ids = generate(params, prime_ids, jax.random.key(seed), length=length, temperature=temperature,
                   top_k=top_k, top_p=top_p)
    return shown + vocab.decode(np.asarray(ids))
