"""Training on the long-lag tasks, several seeds at once (``vmap`` over seeds).

One compiled program per (cell kind, task, lag): ``vmap`` over seeds of a
``lax.scan`` over ``eval_every`` Adam steps. Every step draws a fresh batch
from ``fold_in(data_key, step)``, so a run is reproducible from its key.
"""

from __future__ import annotations

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
) -> dict:
    """Train ``num_seeds`` models of one kind on ``task``; return per-seed results.

    Evaluates the task metric on ``eval_size`` held-out sequences every
    ``eval_every`` steps. A seed *succeeds* when its metric meets the task's
    threshold at some evaluation (H&S 1997 stop training once solved). With
    ``stop_when_solved`` training stops once every seed has succeeded.

    Returns a dict with ``success [S]`` (bool), ``steps_to_solve [S]`` (None if
    never), ``final_metric [S]``, ``best_metric [S]``, ``history`` (step, metrics),
    ``steps_run``, ``seconds`` (training and evaluation), ``compile_seconds``, and
    ``params`` (stacked over seeds, leading axis S).
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
    history = []
    step = 0
    metric = np.full(num_seeds, np.nan)
    while step < max_steps:
        params, opt_state, loss = chunk_v(params, opt_state, data_keys, step)
        step += eval_every
        metric = np.asarray(eval_v(params))
        history.append({"step": step, "loss": np.asarray(loss).tolist(), "metric": metric.tolist()})
        for s in range(num_seeds):
            best[s] = max(best[s], metric[s]) if sign > 0 else min(best[s], metric[s])
            if not success[s] and bool(task.solved(metric[s])):
                success[s] = True
                steps_to_solve[s] = step
        if stop_when_solved and success.all():
            break
    return {
        "success": success.tolist(),
        "steps_to_solve": steps_to_solve,
        "final_metric": metric.tolist(),
        "best_metric": best.tolist(),
        "history": history,
        "steps_run": step,
        "seconds": time.perf_counter() - t0,
        "compile_seconds": compile_seconds,
        "params": params,
    }
