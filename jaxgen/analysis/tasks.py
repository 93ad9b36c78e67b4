"""Long-time-lag tasks of Hochreiter & Schmidhuber (1997), as pure generators.

Every generator takes an explicit ``jax.random`` key and returns time-major
inputs and the target; a ``*_target`` function recomputes the target from the
inputs alone, so a test can check a generator on hand-made sequences.

* **Adding problem** (H&S 1997, experiment 4). Inputs ``[T, B, 2]``: channel 0
  holds values uniform in ``[-1, 1]``, channel 1 marks exactly two steps with
  1.0: one in the first half (``t < T // 2``) and one in the second half.  The
  target is ``0.5 + (x_1 + x_2) / 4`` (in ``[0, 1]``), read at the last step.
  The first operand therefore lies at least ``T - T // 2`` steps back. H&S call a
  sequence solved when the absolute error at its end is below 0.04; here a
  model *solves the task* when the mean absolute error over a held-out set is
  below 0.04 (predicting the mean gives about 0.167; knowing only the second
  operand gives 0.125).
* **Latch (copy-first-symbol) task** (after H&S 1997, experiment 2). Token ids
  ``[T, B]`` with ``T = lag + 2``: a symbol ``s`` in ``[0, K)`` at step 0, then
  ``lag`` distractor tokens drawn from ``[K, K + D)``, then the query token
  ``K + D``. The target, read at the query step, is ``s``; chance is ``1 / K``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def adding_problem(key: Array, batch: int, length: int, dtype=jnp.float32) -> tuple[Array, Array]:
    """Adding-problem batch: ``xs [T, B, 2]`` (value, marker) and ``y [B]``.

    ``length`` is the sequence length ``T`` (at least 2). One marker lies
    uniformly in ``[0, T // 2)``, the other in ``[T // 2, T)``.
    """
    if length < 2:
        raise ValueError(f"the adding problem needs length >= 2, got {length}")
    kv, k1, k2 = jax.random.split(key, 3)
    half = length // 2
    values = jax.random.uniform(kv, (length, batch), dtype, -1.0, 1.0)
    p1 = jax.random.randint(k1, (batch,), 0, half)
    p2 = jax.random.randint(k2, (batch,), half, length)
    t = jnp.arange(length)[:, None]
    markers = ((t == p1[None]) | (t == p2[None])).astype(dtype)
    xs = jnp.stack([values, markers], axis=-1)
    return xs, adding_target(xs)


def adding_target(xs: Array) -> Array:
    """Target of adding-problem inputs ``[T, B, 2]``: ``0.5 + sum(marked values) / 4`` ``[B]``."""
    return 0.5 + jnp.sum(xs[..., 0] * xs[..., 1], axis=0) / 4.0


def latch_vocab_size(num_symbols: int = 4, num_distractors: int = 4) -> int:
    """Input vocabulary of the latch task: symbols, distractors and the query token."""
    return num_symbols + num_distractors + 1


def latch_task(
    key: Array, batch: int, lag: int, *, num_symbols: int = 4, num_distractors: int = 4
) -> tuple[Array, Array]:
    """Latch-task batch: ids ``[lag + 2, B]`` (int32) and target symbols ``y [B]``.

    Step 0 holds the symbol to remember, steps ``1 .. lag`` distractors, the
    last step the query token ``num_symbols + num_distractors``.
    """
    if lag < 0:
        raise ValueError(f"lag must be >= 0, got {lag}")
    ks, kd = jax.random.split(key)
    sym = jax.random.randint(ks, (1, batch), 0, num_symbols)
    dis = jax.random.randint(kd, (lag, batch), num_symbols, num_symbols + num_distractors)
    query = jnp.full((1, batch), num_symbols + num_distractors)
    ids = jnp.concatenate([sym, dis, query], axis=0).astype(jnp.int32)
    return ids, latch_target(ids)


def latch_target(ids: Array) -> Array:
    """Target of latch-task ids ``[T, B]``: the symbol at step 0, ``[B]``."""
    return ids[0]
