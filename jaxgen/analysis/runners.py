"""Entry points that run an analysis end to end and write JSON + markdown + PNG.

The runners measure; :mod:`jaxgen.analysis.report` formats the tables and draws the figures.

    jaxgen analyze gradient-decay  ->  run_gradient_decay(out_dir, quick=...)
    jaxgen analyze memory-span     ->  run_memory_span(out_dir, quick=...)

Both return the path of the JSON file they wrote; the markdown and PNG files
sit beside it with the same stem.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxgen.analysis import gradient_decay, models, report, tasks
from jaxgen.analysis.train import make_task, train_seeds
from jaxgen.benchmarking import write_results
from jaxgen.linear_rnn import LRU_LONG_RANGE

DEFAULT_OUT = "benchmarks/results"
GRADIENT_LENGTHS = (10, 25, 50, 100, 200, 500, 1000)
FORGET_BIASES = (3.0, 5.0)  # besides jaxgen's default of 1 (the config named "lstm")
CHRONO_MAX = 1000

# (recurrent_init, recurrent_scale, label) for the simple RNN
RNN_INITS = (
    ("orthogonal", 1.0, "orthogonal x1 (jaxgen default)"),
    ("orthogonal", 0.5, "orthogonal x0.5"),
    ("identity", 1.0, "identity x1 (Le et al. 2015)"),
    ("uniform", 1.0, "uniform +-1/sqrt(H) (PyTorch default)"),
)
RNN_ACTIVATIONS = ("tanh", "sigmoid", "relu")


def _log(verbose, msg):
    if verbose:
        print(msg, file=sys.stderr, flush=True)


def _curve(norms) -> list:
    """log10 of the norm relative to lag 0, rounded; None where not finite."""
    n = np.asarray(norms, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.log10(n / n[0])
    return [round(float(v), 3) if np.isfinite(v) else None for v in rel]


# --------------------------------------------------------------------------- gradient decay


def gradient_decay_configs(hidden_size: int) -> list[dict]:
    """Every (cell, activation, initialisation) measured at initialisation."""
    cfgs = []
    for act in RNN_ACTIVATIONS:
        for init, scale, label in RNN_INITS:
            cfgs.append(
                {
                    "name": f"rnn-{act} {init}x{scale:g}",
                    "kind": "rnn",
                    "activation": act,
                    "init": {"recurrent_init": init, "recurrent_scale": scale},
                    "init_label": label,
                }
            )
    cfgs.append(
        {
            "name": "lstm",
            "kind": "lstm",
            "activation": "tanh",
            "init": {},
            "init_label": "orthogonal x1, forget bias 1 (jaxgen default)",
        }
    )
    cfgs.append(
        {
            "name": "gru",
            "kind": "gru",
            "activation": "tanh",
            "init": {},
            "init_label": "orthogonal x1 (jaxgen default)",
        }
    )
    # the forget gate's initial bias as the factor (the GRU's update gate)
    for bias in FORGET_BIASES:
        cfgs.append(
            {
                "name": f"lstm b{bias:g}",
                "kind": "lstm",
                "activation": "tanh",
                "init": {"forget_bias": bias},
                "init_label": f"orthogonal x1, forget bias {bias:g}",
            }
        )
    for kind in ("lstm", "gru"):
        cfgs.append(
            {
                "name": f"{kind} chrono",
                "kind": kind,
                "activation": "tanh",
                "init": {"chrono": CHRONO_MAX},
                "init_label": f"orthogonal x1, chrono init (T_max {CHRONO_MAX})",
            }
        )
    for kind, label in (("mingru", "minGRU"), ("minlstm", "minLSTM")):
        cfgs.append(
            {
                "name": kind,
                "kind": kind,
                "activation": "tanh",
                "init": {},
                "init_label": f"{label}: U(+-1/sqrt(F)) weights and biases (jaxgen default)",
            }
        )
    cfgs.append(
        {
            "name": "lru",
            "kind": "lru",
            "activation": "tanh",
            "init": dict(LRU_LONG_RANGE),
            "init_label": "LRU: |lambda| on the ring [0.9, 0.999], phase <= pi/10 (the paper's "
            "long-range init)",
        }
    )
    return cfgs


TRAINED_CONFIGS = ("rnn-tanh orthogonalx1", "lstm", "gru", "mingru", "minlstm", "lru")


def _fmt(v):
    return "-" if v is None else f"{v:.3f}"


def _spectral(kind, activation, w_hh):
    if w_hh is None:  # minGRU, minLSTM: no recurrent matrix, the state only decays elementwise
        return {"sigma_max": None, "gate_sigma_max": None, "bound": None,
                "vanishing_guaranteed": None}  # fmt: skip
    if kind == "rnn":
        return gradient_decay.pascanu_check(w_hh, activation)
    gates = 4 if kind == "lstm" else 3
    return {
        "sigma_max": float(np.linalg.svd(np.asarray(w_hh), compute_uv=False)[0]),
        "gate_sigma_max": gradient_decay.gate_sigma_max(w_hh, gates),
        "bound": None,
        "vanishing_guaranteed": None,
    }


def run_gradient_decay(
    out_dir: str | os.PathLike = DEFAULT_OUT,
    quick: bool = False,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    batch_size: int = 32,
    lengths: tuple[int, ...] | None = None,
    train_steps: int | None = None,
    train_length: int = 50,
    verbose: bool = True,
) -> Path:
    """Measure ‖∂L/∂h_t‖ against lag; write ``gradient_decay.{json,md,png}`` into ``out_dir``.

    At initialisation: the simple RNN with every activation in
    ``RNN_ACTIVATIONS`` and initialisation in ``RNN_INITS``, the LSTM and the
    GRU. After training (``train_steps`` Adam steps on the adding problem of
    length ``train_length``): the tanh RNN, LSTM and GRU. Each at every
    sequence length in ``lengths``, on an adding-problem batch of that length
    (loss: squared error of a linear readout of ``h_T``).

    ``quick=True``: lengths (10, 50, 200), hidden 32, 150 training steps
    (about a minute on 2 CPU cores); the full run takes about a minute too (compile-bound).
    """
    t_start = time.perf_counter()
    if quick:
        lengths = lengths or (10, 50, 200)
        hidden_size = 32 if hidden_size == 64 else hidden_size
        train_steps = train_steps or 150
    lengths = tuple(lengths or GRADIENT_LENGTHS)
    train_steps = train_steps or 600
    key = jax.random.key(seed)
    k_model, k_data, k_train = jax.random.split(key, 3)
    norms_fn = jax.jit(
        gradient_decay.model_grad_norms, static_argnames=("kind", "activation", "loss")
    )
    data = {T: tasks.adding_problem(jax.random.fold_in(k_data, T), batch_size, T) for T in lengths}

    results = []

    def measure(cfg, params, phase):
        spec = _spectral(cfg["kind"], cfg["activation"], params["cell"].get("w_hh"))
        per_T = {}
        for T in lengths:
            xs, y = data[T]
            norms = np.asarray(norms_fn(cfg["kind"], params, xs, y, activation=cfg["activation"]))
            fit = gradient_decay.decay_fit(norms)
            fit["nonfinite"] = bool(not np.isfinite(norms).all())
            per_T[str(T)] = {**fit, "norm_lag0": float(norms[0]), "log10_rel_norm": _curve(norms)}
        results.append(
            {
                "config": cfg["name"],
                "kind": cfg["kind"],
                "activation": cfg["activation"],
                "init": cfg["init"],
                "init_label": cfg["init_label"],
                "phase": phase,
                "spectral": spec,
                "by_length": per_T,
            }
        )
        longest = per_T[str(lengths[-1])]
        horizon = report.format_horizon(longest, lengths[-1])
        _log(
            verbose,
            f"[gradient-decay] {phase:7s} {cfg['name']:28s} "
            f"sigma_max={_fmt(spec['sigma_max'])} T={lengths[-1]}: "
            f"slope={longest['slope']:.4f}/step horizon={horizon}",
        )

    for cfg in gradient_decay_configs(hidden_size):
        params = models.init_model(cfg["kind"], k_model, 2, hidden_size, 1, **cfg["init"])
        measure(cfg, params, "init")

    trained = {}
    task = make_task("adding", train_length)
    for cfg in gradient_decay_configs(hidden_size):
        if cfg["name"] not in TRAINED_CONFIGS:
            continue
        out = train_seeds(
            cfg["kind"],
            task,
            k_train,
            num_seeds=1,
            hidden_size=hidden_size,
            batch_size=32,
            learning_rate=1e-2,
            max_steps=train_steps,
            eval_every=min(train_steps, 150),
            stop_when_solved=False,
            activation=cfg["activation"],
            init_kwargs=cfg["init"],
        )
        params = jax.tree.map(lambda a: a[0], out["params"])
        trained[cfg["name"]] = {"final_mae": out["final_metric"][0], "steps": out["steps_run"]}
        _log(
            verbose,
            f"[gradient-decay] trained {cfg['name']} on adding T={train_length}: "
            f"MAE {out['final_metric'][0]:.4f} after {out['steps_run']} steps",
        )
        measure(cfg, params, "trained")

    payload = {
        "what": "||dL/dh_t|| against lag T-t, L = squared error of a linear readout of h_T on the "
        "adding problem; one backward pass with zero probes added to every h_t",
        "settings": {
            "seed": seed,
            "hidden_size": hidden_size,
            "batch_size": batch_size,
            "lengths": list(lengths),
            "train_task": f"adding, T={train_length}",
            "train_steps": train_steps,
            "learning_rate": 1e-2,
            "quick": quick,
            "horizon_ratio": 1e-3,
            "fit_floor_log10": gradient_decay.UNDERFLOW_LOG10,
        },
        "trained": trained,
        "results": results,
        "seconds": time.perf_counter() - t_start,
    }
    md = report.gradient_decay_markdown(results, lengths, trained, payload["settings"])
    path = write_results("gradient_decay", payload, md, out_dir)
    png = Path(out_dir) / "gradient_decay.png"
    report.plot_gradient_decay(results, lengths, png, RNN_INITS, RNN_ACTIVATIONS)
    report.plot_forget_decay(results, lengths, Path(out_dir) / "gradient_decay_forget.png")
    return path


# --------------------------------------------------------------------------- memory span

MEMORY_LAGS_FULL = (5, 10, 20, 50, 100, 200, 500, 1000)


def memory_cells(chrono_max: int) -> dict:
    """The cells of the memory-span study: name -> (kind, init options, label). The factor is the
    forget gate's initialisation (the GRU's update gate); ``chrono_max`` is chrono's longest lag."""
    return {
        "rnn": ("rnn", {}, "tanh RNN, orthogonal"),
        "lstm": ("lstm", {}, "LSTM, forget bias 1 (jaxgen's default)"),
        "lstm-b3": ("lstm", {"forget_bias": 3.0}, "LSTM, forget bias 3"),
        "lstm-b5": ("lstm", {"forget_bias": 5.0}, "LSTM, forget bias 5"),
        "lstm-chrono": ("lstm", {"chrono": chrono_max}, f"LSTM, chrono init (T_max {chrono_max})"),
        "gru": ("gru", {}, "GRU, update bias 0 (jaxgen's default)"),
        "gru-chrono": ("gru", {"chrono": chrono_max}, f"GRU, chrono init (T_max {chrono_max})"),
        "mingru": ("mingru", {}, "minGRU (no recurrent weights; jaxgen's default init)"),
        "minlstm": ("minlstm", {}, "minLSTM (no recurrent weights; jaxgen's default init)"),
        "lru": ("lru", dict(LRU_LONG_RANGE), "LRU, |lambda| in [0.9, 0.999], phase <= pi/10"),
    }


MEMORY_CELLS = ("rnn", "lstm", "lstm-b3", "lstm-chrono", "gru", "gru-chrono")


def run_memory_span(
    out_dir: str | os.PathLike = DEFAULT_OUT,
    quick: bool = False,
    *,
    seed: int = 0,
    lags: tuple[int, ...] | None = None,
    task_names: tuple[str, ...] = ("adding", "latch"),
    cells: tuple[str, ...] = MEMORY_CELLS,
    num_seeds: int = 3,
    hidden_size: int = 32,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    max_steps: int | None = None,
    eval_every: int = 250,
    eval_size: int = 1000,
    skip_after_failure: bool = True,
    recheck: tuple[str, str, tuple[int, ...], int] | None = ("latch", "rnn", (100, 200), 10),
    verbose: bool = True,
    stem: str = "memory_span",
) -> Path:
    """Success rate against lag on the long-lag tasks; write ``<stem>.{json,md,png}``.

    Every (task, cell, lag) trains ``num_seeds`` models with the same budget (``max_steps`` Adam
    steps of ``batch_size`` sequences, evaluated every ``eval_every`` steps on ``eval_size``
    held-out sequences; stops early once every seed has solved it). Adding problem: ``lag`` is the
    sequence length T, solved at MAE < 0.04. Latch: ``lag`` distractors, solved at accuracy >= 0.95.
    ``cells`` name entries of :func:`memory_cells` (chrono's longest lag is the sweep's longest
    sequence). With ``skip_after_failure`` a cell that solves no seed at a lag is not trained at
    the longer lags of that task (shown as not run). The chance that an input-blind model passes
    each criterion is computed (:func:`chance_of_passing`), and ``recheck = (task, cell, lags,
    seeds)`` reruns one cell with more seeds (when ``cells`` has it). The JSON is rewritten
    after every run, so a long sweep that is stopped keeps what it measured.

    ``quick=True``: lags (5, 20), 250 steps (about a minute on 2 CPU cores). The full sweep (lags
    5 ... 1000, at most 2000 steps a run) takes about an hour.
    """
    from jaxgen.analysis.train import chance_of_passing

    t_start = time.perf_counter()
    if quick:
        lags = lags or (5, 20)
        max_steps = max_steps or 250
        recheck = None
    lags = tuple(sorted(lags or MEMORY_LAGS_FULL))
    max_steps = max_steps or 2000
    chrono_max = max(lags) + 2
    table = memory_cells(chrono_max)
    unknown = [c for c in cells if c not in table]
    if unknown:
        raise ValueError(f"unknown memory-span cells {unknown}; choose from {tuple(table)}")
    base = jax.random.key(seed)
    settings = {
        "seed": seed,
        "lags": list(lags),
        "tasks": list(task_names),
        "cells": list(cells),
        "cell_labels": {c: table[c][2] for c in cells},
        "cell_init": {c: table[c][1] for c in cells},
        "chrono_max": chrono_max,
        "num_seeds": num_seeds,
        "hidden_size": hidden_size,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "optimizer": f"adam {learning_rate:g}, clip_by_global_norm(1.0)",
        "max_steps": max_steps,
        "max_sequences": max_steps * batch_size,
        "eval_every": eval_every,
        "eval_size": eval_size,
        "skip_after_failure": skip_after_failure,
        "quick": quick,
        "criteria": {
            "adding": "MAE < 0.04 (lag = sequence length T)",
            "latch": "accuracy >= 0.95 (4 symbols, 4 distractor tokens, lag = distractor steps)",
        },
        "chance": {
            name: chance_of_passing(
                make_task(name, max(lags)), eval_size, evaluations=max_steps // eval_every
            )
            for name in task_names
        },
    }
    runs, rechecks = [], []

    def save(final=False):
        payload = {
            "settings": settings,
            "runs": runs,
            "recheck": rechecks,
            "seconds": time.perf_counter() - t_start,
            "finished": final,
        }
        md = report.memory_span_markdown(runs, settings, rechecks)
        path = write_results(stem, payload, md, out_dir)
        if final:
            report.plot_memory_span(runs, settings, Path(out_dir) / f"{stem}.png")
        return path

    def train_cell(name, task, lag, key, seeds):
        kind, init, _ = table[name]

        def progress(step, metric, success):
            _log(
                verbose and lag >= 200,
                f"[memory-span]   {task.name} lag={lag} {name}: step {step}, "
                f"{task.metric_name} {np.round(metric, 3).tolist()}, solved {int(success.sum())}",
            )

        out = train_seeds(
            kind,
            task,
            key,
            num_seeds=seeds,
            hidden_size=hidden_size,
            batch_size=batch_size,
            learning_rate=learning_rate,
            max_steps=max_steps,
            eval_every=eval_every,
            eval_size=eval_size,
            init_kwargs=init,
            progress=progress,
        )
        out.pop("params")
        _log(
            verbose,
            f"[memory-span] {task.name:6s} lag={lag:4d} {name:11s} solved {sum(out['success'])}/"
            f"{seeds} steps {out['steps_to_solve']} best {task.metric_name} "
            f"{np.round(out['best_metric'], 3).tolist()} ({out['seconds']:.1f} s + "
            f"{out['compile_seconds']:.1f} s compile)",
        )
        return {"task": task.name, "lag": lag, "cell": name, "kind": kind, **out}

    failed = set()  # (task, cell) pairs that solved no seed at some lag
    for lag in lags:  # shortest lags first, both tasks at each: a stopped sweep is still balanced
        for ti, name in enumerate(task_names):
            task = make_task(name, lag)
            key = jax.random.fold_in(jax.random.fold_in(base, ti), lag)  # same data for every cell
            for cell in cells:
                if (name, cell) in failed:
                    runs.append({"task": name, "lag": lag, "cell": cell, "skipped": True})
                    continue
                run = train_cell(cell, task, lag, key, num_seeds)
                runs.append(run)
                if skip_after_failure and not any(run["success"]):
                    failed.add((name, cell))
                save()
    if recheck is not None and recheck[1] in cells:  # only a cell this sweep trains
        name, cell, recheck_lags, seeds = recheck
        for lag in recheck_lags:
            task = make_task(name, lag)
            key = jax.random.fold_in(jax.random.fold_in(base, 1000 + lag), 7)  # fresh seeds
            rechecks.append(train_cell(cell, task, lag, key, seeds))
            save()
    return save(final=True)
