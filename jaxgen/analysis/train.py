"""Training on the long-lag tasks, several seeds at once (``vmap`` over seeds).

One compiled program per (cell kind, task, lag): ``vmap`` over seeds of a
``lax.scan`` over ``eval_every`` Adam steps. Every step draws a fresh batch
from ``fold_in(data_key, step)``, so a run is reproducible from its key.
"""

from __future__ import annotations

import math
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import models, tasks

Array = jax.Array


class Task(NamedTuple):
    """A long-lag task at one lag."""

    name: str  # "adding" or "latch"
    lag: int  # the task's lag parameter (adding: sequence length T)
    sample: Callable  # sample(key, batch) -> (xs [T, B, ...], y [B])
    input_size: int  # F (or vocabulary size for token ids)
    output_size: int  # readout width O
    loss: Callable  # loss(out [B, O], y [B]) -> scalar
    metric: Callable  # metric(out, y) -> scalar (MAE or accuracy)
    metric_name: str
    solved: Callable  # solved(metric) -> bool
    threshold: float


def make_task(name: str, lag: int, *, num_symbols: int = 4, num_distractors: int = 4) -> Task:
    """The adding problem (``lag`` = sequence length) or the latch task (``lag`` distractors)."""
    if name == "adding":
        return Task(
            name,
            lag,
            sample=lambda key, batch: tasks.adding_problem(key, batch, lag),
            input_size=2,
            output_size=1,
            loss=lambda out, y: jnp.mean((out[:, 0] - y) ** 2),
            metric=lambda out, y: jnp.mean(jnp.abs(out[:, 0] - y)),
            metric_name="MAE",
            solved=lambda m: m < 0.04,
            threshold=0.04,
        )
    if name == "latch":
        return Task(
            name,
            lag,
            sample=lambda key, batch: tasks.latch_task(
                key, batch, lag, num_symbols=num_symbols, num_distractors=num_distractors
            ),
            input_size=tasks.latch_vocab_size(num_symbols, num_distractors),
            output_size=num_symbols,
            loss=lambda out, y: optax.softmax_cross_entropy_with_integer_labels(out, y).mean(),
            metric=lambda out, y: jnp.mean(jnp.argmax(out, -1) == y),
            metric_name="accuracy",
            solved=lambda m: m >= 0.95,
            threshold=0.95,
        )
    raise ValueError(f"unknown task {name!r}; choose 'adding' or 'latch'")


def train_seeds(
    kind: str,
    task: Task,
    key: Array,
    *,
    num_seeds: int = 3,
    hidden_size: int = 32,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    clip_norm: float = 1.0,
    max_steps: int = 2000,
    eval_every: int = 250,
    eval_size: int = 1000,
    stop_when_solved: bool = True,
    activation: str = "tanh",
    unroll: int = 1,
    init_kwargs: dict | None = None,
    progress: Callable | None = None,
) -> dict:
    """Train ``num_seeds`` models of one kind on ``task``; return per-seed results.

    Evaluates the task metric on ``eval_size`` held-out sequences every
    ``eval_every`` steps. A seed *succeeds* when its metric meets the task's
    threshold at some evaluation (H&S 1997 stop training once solved). With
    ``stop_when_solved`` training stops once every seed has succeeded.

    ``progress(step, metric [S], success [S])`` is called after each evaluation.

    Returns a dict with ``success [S]`` (bool), ``steps_to_solve [S]`` and
    ``seconds_to_solve [S]`` (None if never), ``final_metric [S]``, ``best_metric [S]``,
    ``history`` (step, seconds, loss, metric), ``steps_run``, ``seconds`` (training and
    evaluation), ``compile_seconds``, and ``params`` (stacked over seeds, leading axis S).
    """
    init_kwargs = init_kwargs or {}
    k_init, k_data, k_eval = jax.random.split(key, 3)
    init_keys = jax.random.split(k_init, num_seeds)
    data_keys = jax.random.split(k_data, num_seeds)
    params = jax.vmap(
        lambda k: models.init_model(
            kind, k, task.input_size, hidden_size, task.output_size, **init_kwargs
        )
    )(init_keys)
    opt = optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(learning_rate))
    opt_state = jax.vmap(opt.init)(params)
    xs_eval, y_eval = task.sample(k_eval, eval_size)

    def loss_fn(p, xs, y):
        return task.loss(models.apply_model(kind, p, xs, activation, unroll), y)

    def chunk(p, s, kd, step0):
        def body(carry, i):
            p, s = carry
            xs, y = task.sample(jax.random.fold_in(kd, step0 + i), batch_size)
            loss, g = jax.value_and_grad(loss_fn)(p, xs, y)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss

        (p, s), losses = jax.lax.scan(body, (p, s), jnp.arange(eval_every))
        return p, s, losses.mean()

    def evaluate(p):
        return task.metric(models.apply_model(kind, p, xs_eval, activation, unroll), y_eval)

    chunk_v = jax.jit(jax.vmap(chunk, in_axes=(0, 0, 0, None)), donate_argnums=(0, 1))
    eval_v = jax.jit(jax.vmap(evaluate))

    t0 = time.perf_counter()
    chunk_v = chunk_v.lower(params, opt_state, data_keys, 0).compile()
    eval_v = eval_v.lower(params).compile()
    compile_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    success = np.zeros(num_seeds, bool)
    steps_to_solve = [None] * num_seeds
    sign = 1.0 if task.metric_name == "accuracy" else -1.0
    best = np.full(num_seeds, -np.inf * sign)
    seconds_to_solve = [None] * num_seeds
    history = []
    step = 0
    metric = np.full(num_seeds, np.nan)
    while step < max_steps:
        params, opt_state, loss = chunk_v(params, opt_state, data_keys, step)
        step += eval_every
        metric = np.asarray(eval_v(params))
        elapsed = time.perf_counter() - t0
        history.append(
            {
                "step": step,
                "seconds": round(elapsed, 2),
                "loss": np.asarray(loss).tolist(),
                "metric": metric.tolist(),
            }
        )
        for s in range(num_seeds):
            best[s] = max(best[s], metric[s]) if sign > 0 else min(best[s], metric[s])
            if not success[s] and bool(task.solved(metric[s])):
                success[s] = True
                steps_to_solve[s] = step
                seconds_to_solve[s] = round(elapsed, 2)
        if progress is not None:
            progress(step, metric, success)
        if stop_when_solved and success.all():
            break
    return {
        "success": success.tolist(),
        "steps_to_solve": steps_to_solve,
        "seconds_to_solve": seconds_to_solve,
        "final_metric": metric.tolist(),
        "best_metric": best.tolist(),
        "history": history,
        "steps_run": step,
        "seconds": time.perf_counter() - t0,
        "compile_seconds": compile_seconds,
        "params": params,
    }


def _log10_binomial_tail(n: int, k: int, p: float) -> float:
    """log10 P(X >= k) for X ~ Binomial(n, p), exact (summed in log space, so tiny tails do not
    underflow)."""
    if k <= 0:
        return 0.0
    if k > n:
        return -math.inf
    terms = np.array(
        [
            math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1)
            + j * math.log(p) + (n - j) * math.log1p(-p)
            for j in range(k, n + 1)
        ]
    )  # fmt: skip
    top = terms.max()
    return float((top + math.log(np.exp(terms - top).sum())) / math.log(10))


def _log10_normal_tail(z: float) -> float:
    """log10 P(Z > z) for a standard normal Z (the asymptotic form where erfc underflows)."""
    if z < 30:
        return math.log10(0.5 * math.erfc(z / math.sqrt(2)))
    return (-0.5 * z * z - math.log(z * math.sqrt(2 * math.pi))) / math.log(10)


def chance_of_passing(task: Task, eval_size: int, evaluations: int = 1) -> dict:
    """How likely a model that ignores its input passes ``task``'s criterion by luck.

    Latch: it guesses one of the ``K`` symbols at random, so its held-out accuracy is
    Binomial(``eval_size``, 1/K) / ``eval_size``; the tail at the threshold is exact. Adding: the
    best input-blind prediction, the constant 0.5 (the target's median), has a mean absolute error
    of 1/6 per sequence with standard deviation ``sd`` (both measured on 10^6 draws); the chance
    that its mean over ``eval_size`` sequences falls below the threshold is a normal tail, ``z``
    standard errors out. Training checks ``evaluations`` times and keeps the best, so the chance of
    passing at least once is at most ``evaluations`` times the single one.

    Returns ``{"log10_per_evaluation", "per_evaluation", "at_most_any", "how"}``.
    """
    if task.name == "latch":
        K = task.output_size
        need = math.ceil(task.threshold * eval_size - 1e-9)
        log10_p = _log10_binomial_tail(eval_size, need, 1.0 / K)
        how = (
            f"a random symbol guess: P(Binomial({eval_size}, 1/{K}) >= {need}), "
            f"{need / eval_size:.3f} accuracy"
        )
    else:
        # the target's law does not depend on the length: draw it from the shortest sequences
        _, y = tasks.adding_problem(jax.random.key(12345), 1_000_000, 2)
        err = np.abs(np.asarray(y, np.float64) - 0.5)
        mu, sd = float(err.mean()), float(err.std())
        z = (mu - task.threshold) * math.sqrt(eval_size) / sd
        log10_p = _log10_normal_tail(z)
        how = (
            f"the constant 0.5: MAE {mu:.4f} (sd {sd:.4f} a sequence), {z:.0f} standard errors "
            f"above {task.threshold} over {eval_size} sequences"
        )
    p = 10.0**log10_p
    return {
        "log10_per_evaluation": log10_p,
        "per_evaluation": p,
        "at_most_any": min(1.0, evaluations * p),
        "how": how,
    }
