"""The one training loop: a trainer is a :class:`Recipe` and :func:`train_and_evaluate` runs it.

Shaped like the Flax examples' ``train_and_evaluate(config, workdir)``: restore-or-init from the
workdir (model-kind check, resume guard, fallback past an unreadable checkpoint), then one loop
whose periodic actions (log, evaluate, draw, checkpoint) fire by :func:`itstime`; it stops on
SIGTERM/Ctrl-C or when the time budget ends; the non-finite check reads a step's metrics one step
late, so the host never waits on the device; with several devices the batch is sharded over
all of them (:mod:`jaxgen.training.parallel`).

**Budgeted schedules.** With ``train.time_budget_s`` set, the loop measures the step rate after
warm-up and, when fewer steps than planned fit in the budget, asks the recipe for a step built
for the steps that fit (``make_step(horizon)``), so a learning-rate schedule that anneals to its
floor at the planned last step anneals at the budget's instead (budgeted training, Li et al.
2020). The decision is logged; the run then ends at the fitted step.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from jaxgen.errors import UserError
from jaxgen.training import checkpoint, parallel
from jaxgen.training.metrics import RunLog, best_logged
from jaxgen.training.preemption import StopOnSignal, not_started_message, stop_message

# Fit the schedule once this much of the budget has run after warm-up, within
# [FIT_MIN_S, FIT_MAX_S].
FIT_AFTER_FRACTION = 0.05
FIT_MIN_S, FIT_MAX_S = 5.0, 60.0


def itstime(step: int, every: int, total: int) -> bool:
    """True at the multiples of ``every`` (``every <= 0``: never) and at the last step ``total``."""
    return step == total or (every > 0 and step % every == 0)


class Evaluation(NamedTuple):
    """What a recipe's evaluation returns: ``score`` (lower is better: the best checkpoint keeps
    the lowest), the metrics ``row`` to log, and a ``message`` for the console."""

    score: float | None
    row: dict
    message: str


@dataclasses.dataclass
class Recipe:
    """A trainer, as the loop sees it. Every callable is plain Python around pure jitted code.

    ``make_step(horizon)`` returns the pure ``step(state, *batch) -> (state, metrics)`` (not yet
    jitted; the loop jits it once, with the state donated) whose schedules end at ``horizon``;
    ``batch(step)`` the host arrays of global step ``step``, with ``batch_axes`` their batch axis
    (``None``: replicated, e.g. a flag). ``loss_keys`` must stay finite; the first is shown on the
    progress line. ``evaluate(step, state)`` runs every ``eval_every`` steps and ``draw(step,
    state)`` every ``draw_every``, and both at the end and when the time budget ends the run (not on
    a signal: a preempted run saves and exits at once)."""

    kind: str
    cfg: Any
    meta: dict
    total_steps: int
    init_state: Callable[[], Any]
    make_step: Callable[[int], Callable]
    batch: Callable[[int], tuple]
    batch_axes: tuple
    items_per_step: int
    unit: str
    loss_keys: tuple[str, ...]
    describe: str
    nonfinite_advice: str
    evaluate: Callable[[int, Any], Evaluation | None] | None = None
    eval_every: int = 0
    best_key: str = ""
    draw: Callable[[int, Any], None] | None = None
    draw_every: int = 0
    log_extra: Callable[[int], dict] = lambda step: {}
    on_start: Callable[[RunLog, int], None] = lambda log, start: None
    on_close: Callable[[], None] = lambda: None
    fits_schedule: bool = True
    # the state's shapes and dtypes without making one, for recipes whose ``init_state`` trains
    # something first (the StackGAN's text encoder, the CycleGAN's semantic classifier): a resume
    # checks and restores against it, and ``init_state`` runs only when nothing can be restored
    abstract_state: Callable[[], Any] | None = None


@dataclasses.dataclass
class Summary:
    """How a run ended: ``steps`` reached, ``start`` (the step it resumed from), ``rate``
    (items/s after warm-up), ``best`` score, ``last`` metrics, ``wall_s``, and ``stopped``:
    ``None`` (finished), ``"budget"``, ``"preempted"`` or ``"interrupted"``."""

    steps: int
    start: int
    rate: float
    best: float | None
    last: dict
    last_eval: dict
    wall_s: float
    stopped: str | None
    horizon: int


def run(
    recipe: Recipe, workdir: str | Path, *, quiet: bool = False, stop: StopOnSignal | None = None
) -> Summary:
    """Train (or resume) ``recipe`` in ``workdir``. SIGTERM and Ctrl-C stop it after the current
    step with a checkpoint at that step; pass ``stop`` when the handlers must be in place before
    this call (the CLI installs them before the heavy imports)."""
    if stop is not None:
        return _run(recipe, Path(workdir), quiet=quiet, stop=stop)
    with StopOnSignal() as stop:
        return _run(recipe, Path(workdir), quiet=quiet, stop=stop)


def _fit_after(budget_s: float) -> float:
    return min(FIT_MAX_S, max(FIT_MIN_S, FIT_AFTER_FRACTION * budget_s))


def _fit_times(budget_s: float) -> list[float]:
    """When to fit (seconds after warm-up): early, then again at half the budget, when the rate
    also holds the evaluations, grids and checkpoints run so far."""
    first = _fit_after(budget_s)
    return [first] + ([0.5 * budget_s] if 0.5 * budget_s > first else [])


def steps_that_fit(
    done: int, steps_per_s: float, budget_s: float, elapsed_s: float, recompile_s: float
) -> int:
    """The last step a run at ``done`` reaches within its budget: the seconds left (less one
    recompilation of the step) at the measured rate."""
    return done + int(steps_per_s * max(0.0, budget_s - elapsed_s - recompile_s))


def _agree(value: int) -> int:
    """Process 0's ``value`` on every process (multi-host runs must fit the same horizon)."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def jit_step(step: Callable) -> Callable:
    """``jax.jit(step, donate_argnums=0)``, reused for an equal step: a ``functools.partial`` of
    the same function with equal arguments (the recipes bind models and optimisers that are
    themselves cached by their settings). A second run in one process (a resume, a study's next
    seed, a test) then neither traces nor compiles its step again."""
    if isinstance(step, functools.partial):
        try:
            return _jit_partial(step.func, step.args, tuple(sorted(step.keywords.items())))
        except TypeError:  # an unhashable argument: no reuse
            pass
    return jax.jit(step, donate_argnums=0)


@functools.lru_cache(maxsize=16)
def _jit_partial(func: Callable, args: tuple, keywords: tuple) -> Callable:
    return jax.jit(functools.partial(func, *args, **dict(keywords)), donate_argnums=0)


def _run(recipe: Recipe, workdir: Path, *, quiet: bool, stop: StopOnSignal) -> Summary:
    cfg, t = recipe.cfg, recipe.cfg.train
    meta = checkpoint.check_workdir_kind(workdir, recipe.kind)
    resuming = meta is not None and bool(checkpoint.saved_steps(workdir / "checkpoints"))
    if resuming and recipe.abstract_state is not None:
        state, shapes = None, on_first_device(recipe.abstract_state())
    else:
        state = recipe.init_state()
        shapes = checkpoint.abstract(state)
    if (
        meta is not None
    ):  # before anything is written: a refused resume leaves the workdir as it was
        checkpoint.check_resumable(workdir, shapes, meta.get("config"), cfg.to_dict())
    workdir.mkdir(parents=True, exist_ok=True)
    ckpts = checkpoint.Checkpoints(workdir)
    start = 0
    restored = ckpts.restore(shapes) if resuming else None
    if restored is not None:
        start, state = restored
    elif state is None:  # every checkpoint unreadable: start afresh after all
        state = recipe.init_state()
    if restored is None and not (cfg.parallel.data_parallel and jax.device_count() > 1):
        # Committed to the device, as a restored state is: otherwise a resume in the same process
        # (a test, a study's next seed) would compile its step again for the other placement.
        state = jax.device_put(state, jax.devices()[0])
    if jax.process_index() == 0:
        checkpoint.write_json_atomic(
            workdir / checkpoint.META,
            {"model": recipe.kind, **recipe.meta, "config": cfg.to_dict()},
        )
    horizon = recipe.total_steps
    budget = float(t.time_budget_s or 0.0)
    log = RunLog(workdir, horizon, unit=recipe.unit, quiet=quiet, time_budget_s=budget)
    log.message(
        recipe.describe
        + f", steps {start} -> {horizon}"
        + (f" (resumed from step {start})" if start else "")
    )
    best = best_logged(workdir, recipe.best_key) if recipe.best_key else None
    recipe.on_start(log, start)
    if stop.requested:  # a signal during set-up: stop before compiling anything
        log.message(not_started_message(stop.reason))
        log.close()
        ckpts.close()
        return Summary(start, start, 0.0, best, {}, {}, 0.0, stop.reason, horizon)

    mesh = None
    first = recipe.batch(start)
    if cfg.parallel.data_parallel and jax.device_count() > 1:
        mesh = parallel.make_mesh()
        parallel.check_batch(t.batch, mesh)
        rows = parallel.local_rows(t.batch)
        log.message(
            f"data parallel over {mesh.devices.size} devices ({jax.process_count()} "
            f"processes); global batch {t.batch}"
        )

    def compile_step(horizon: int):
        nonlocal state
        pure = recipe.make_step(horizon)
        if mesh is None:
            return jit_step(pure)
        fn, state = parallel.jit_data_parallel(
            pure, mesh, state, tuple(np.ndim(b) for b in first), recipe.batch_axes
        )
        return fn

    def place(batch: tuple) -> tuple:
        if mesh is None:
            return batch
        out = []
        for b, axis in zip(batch, recipe.batch_axes):
            if axis is None:
                out.append(b)
                continue
            index = [slice(None)] * np.ndim(b)
            index[axis] = rows
            out.append(parallel.global_batch(mesh, b[tuple(index)], b.shape, batch_axis=axis))
        return tuple(out)

    step_fn = compile_step(horizon)
    t_start = time.perf_counter()
    rate, t_mark, mark_step, compile_s = 0.0, None, start, 0.0
    fit_times = _fit_times(budget) if budget > 0 else []
    actions_s = 0.0  # seconds spent in evaluations, grids and checkpoints since warm-up
    last_saved, last, last_eval = start, {}, {}
    pending: tuple[int, Any] | None = (
        None  # the last step's (step, device metrics), not yet checked
    )
    stopped = None

    def check() -> None:
        """Fetch the pending step's metrics (waits for that step only); stop on a non-finite
        loss."""
        nonlocal pending, last
        if pending is None:
            return
        s, metrics = pending
        pending = None
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        losses = {k: m[k] for k in recipe.loss_keys}
        if m.get("skipped"):
            log.message(
                f"step {s}: non-finite loss; update skipped (config.train.on_nonfinite='skip')"
            )
        elif not all(math.isfinite(v) for v in losses.values()):
            what = ", ".join(f"{k} {v}" for k, v in losses.items())
            raise UserError(
                f"the training loss became non-finite at step {s} ({what}); stopped without saving "
                f"it. The last good checkpoint (step {last_saved}) is kept in {str(workdir)!r}. "
                f"{recipe.nonfinite_advice} and resume"
            )
        last = m

    def save(done: int) -> None:
        nonlocal last_saved
        check()
        ckpts.save(done, state)
        last_saved = done

    try:
        step = start
        while step < horizon:
            state, metrics = step_fn(state, *place(recipe.batch(step)))
            done = step + 1
            check()  # the previous step's metrics: that step is finished or nearly so
            pending = (done, metrics)
            if t_mark is None:  # the first step includes compilation: time from its end
                jax.block_until_ready(state)
                t_mark, mark_step, compile_s = (
                    time.perf_counter(),
                    done,
                    time.perf_counter() - t_start,
                )
            elapsed = time.perf_counter() - t_start
            if fit_times and done > mark_step and time.perf_counter() - t_mark >= fit_times[0]:
                fit_times.pop(0)
                jax.block_until_ready(state)
                now = time.perf_counter()
                steps_per_s = (done - mark_step) / (now - t_mark)  # actions included
                # a schedule to fit costs one more compilation; a constant one only sets the stop
                recompile_s = compile_s if recipe.fits_schedule else 0.0
                fit = _agree(steps_that_fit(done, steps_per_s, budget, now - t_start, recompile_s))
                fit = min(max(fit, done), recipe.total_steps)
                note = f"time budget {budget:g} s: {steps_per_s:.2f} steps/s after warm-up"
                if abs(fit - horizon) > 0.01 * horizon:
                    then = (
                        f"schedules now end at step {fit:,}"
                        if recipe.fits_schedule
                        else f"the run stops at step {fit:,}"
                    )
                    log.message(f"{note}, so {fit:,} of {recipe.total_steps:,} steps fit; {then}")
                    horizon = log.total = fit
                    if recipe.fits_schedule:
                        step_fn = compile_step(horizon)
                elif fit == recipe.total_steps == horizon:
                    log.message(f"{note}; all {horizon:,} steps fit")
            out_of_time = (budget > 0 and elapsed >= budget and jax.process_count() == 1) or (
                budget > 0 and done == horizon < recipe.total_steps
            )
            preempted = stop.should_stop(done, ckpts.latest)
            if preempted:
                stopped = stop.reason or "preempted"
            elif out_of_time:
                stopped = "budget"
            ending = stopped is not None
            if (
                itstime(done, t.log_every, horizon)
                or ending
                or itstime(done, t.checkpoint_every, horizon)
            ):
                check()
                if done > mark_step:  # the steps' own rate: periodic actions left out
                    busy_s = time.perf_counter() - t_mark - actions_s
                    rate = (done - mark_step) * recipe.items_per_step / max(busy_s, 1e-9)
                log.write(
                    done,
                    {
                        **last,
                        f"{'tokens' if recipe.unit == 'tok' else 'images'}_per_s": rate,
                        **recipe.log_extra(done),
                    },
                )
            if last:
                log.progress(
                    done,
                    last[recipe.loss_keys[0]],
                    rate,
                    (horizon - done) * recipe.items_per_step / max(rate, 1e-9),
                    elapsed_s=time.perf_counter() - t_start,
                )
            t_actions = time.perf_counter()
            if ending:  # save first: a preempted run may have seconds left
                save(done)
            final = done == horizon or (ending and not preempted)
            if recipe.draw is not None and (itstime(done, recipe.draw_every, horizon) or final):
                check()
                recipe.draw(done, state)
            if recipe.evaluate is not None and (itstime(done, recipe.eval_every, horizon) or final):
                check()
                result = recipe.evaluate(done, state)
                if result is not None:
                    if result.score is not None and (best is None or result.score < best):
                        best = result.score
                        ckpts.save(done, state, best=True)
                    log.write(done, result.row)
                    last_eval = result.row
                    log.message(
                        result.message.format(best=best, elapsed=time.perf_counter() - t_start)
                    )
            if itstime(done, t.checkpoint_every, horizon) and not ending:
                save(done)
            if t_mark is not None:
                actions_s += time.perf_counter() - t_actions
            step = done
            if ending:
                log.message(stop_message(done, stopped if preempted else None, budget, workdir))
                break
        check()
    finally:
        log.close()
        ckpts.close()
        recipe.on_close()
    return Summary(
        int(step),
        start,
        rate,
        best,
        last,
        last_eval,
        time.perf_counter() - t_start,
        stopped,
        horizon,
    )


def on_first_device(shapes: Any) -> Any:
    """``jax.eval_shape``'s shapes placed on this process's first device, as orbax restores."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), shapes)


def load_trained(
    workdir: str | Path,
    kind: str,
    template: Callable[[Any, dict], Any],
    which: str = "best",
    *,
    name: str = "",
) -> tuple[Any, dict, Any]:
    """``(state, meta, cfg)`` from a trained workdir of ``kind`` (``name``: how messages call it):
    the ``which`` checkpoint ("best" falls back to "latest"). ``template(cfg, meta)`` builds a
    state of the saved layout."""
    import ml_collections

    workdir = Path(workdir)
    meta = checkpoint.read_meta(workdir)
    if meta is None:
        raise UserError(
            f"{str(workdir)!r} holds no trained model (no {checkpoint.META}); train one "
            "with `jaxgen train`"
        )
    if meta.get("model") != kind:
        raise UserError(
            f"workdir {str(workdir)!r} holds a {meta.get('model')!r} model, not a {name or kind}"
        )
    cfg = ml_collections.ConfigDict(meta["config"])
    # the saved layout from shapes alone: building a real state would compile its initialiser
    abstract = on_first_device(jax.eval_shape(lambda: template(cfg, meta)))
    ckpts = checkpoint.Checkpoints(workdir)
    try:
        for w in [which, "latest"] if which == "best" else ["latest"]:
            got = ckpts.restore(abstract, which=w)
            if got is not None:
                return got[1], meta, cfg
    finally:
        ckpts.close()
    raise UserError(
        f"no checkpoint could be restored from {str(workdir)!r}; train (or resume) with "
        "`jaxgen train`"
    )
