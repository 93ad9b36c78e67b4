"""Entry points that run an analysis end to end and write JSON + markdown + PNG.

    jaxgen analyze gradient-decay  ->  run_gradient_decay(out_dir, quick=...)
    jaxgen analyze memory-span     ->  run_memory_span(out_dir, quick=...)

Both return the path of the JSON file they wrote; the markdown and PNG files
sit beside it with the same stem.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import benchmarking as bm

from . import gradient_decay as gd
from . import models, tasks
from .train import make_task, train_seeds

DEFAULT_OUT = "benchmarks/results"
GRADIENT_LENGTHS = (10, 25, 50, 100, 200, 500, 1000)
MEMORY_LAGS = (5, 10, 20, 50, 100, 200)

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


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curve(norms) -> list:
    """log10 of the norm relative to lag 0, rounded; None where not finite."""
    n = np.asarray(norms, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.log10(n / n[0])
    return [round(float(v), 3) if np.isfinite(v) else None for v in rel]


def _fmt_horizon(fit, T):
    if fit.get("nonfinite"):
        return "n/f"
    return f">{T - 1}" if fit["censored"] else str(fit["horizon"])


# --------------------------------------------------------------------------- gradient decay


def gradient_decay_configs(hidden_size: int) -> list[dict]:
    """Every (cell, activation, initialisation) measured at initialisation."""
    cfgs = []
    for act in RNN_ACTIVATIONS:
        for init, scale, label in RNN_INITS:
            cfgs.append({"name": f"rnn-{act} {init}x{scale:g}", "kind": "rnn", "activation": act,
                         "init": {"recurrent_init": init, "recurrent_scale": scale}, "init_label": label})
    cfgs.append({"name": "lstm", "kind": "lstm", "activation": "tanh", "init": {},
                 "init_label": "orthogonal x1, forget bias 1 (jaxgen default)"})
    cfgs.append({"name": "gru", "kind": "gru", "activation": "tanh", "init": {},
                 "init_label": "orthogonal x1 (jaxgen default)"})
    return cfgs


def _spectral(kind, activation, w_hh):
    if kind == "rnn":
        return gd.pascanu_check(w_hh, activation)
    gates = 4 if kind == "lstm" else 3
    return {"sigma_max": float(np.linalg.svd(np.asarray(w_hh), compute_uv=False)[0]),
            "gate_sigma_max": gd.gate_sigma_max(w_hh, gates), "bound": None,
            "vanishing_guaranteed": None}


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
    norms_fn = jax.jit(gd.model_grad_norms, static_argnames=("kind", "activation", "loss"))
    data = {T: tasks.adding_problem(jax.random.fold_in(k_data, T), batch_size, T) for T in lengths}

    results = []

    def measure(cfg, params, phase):
        spec = _spectral(cfg["kind"], cfg["activation"], params["cell"]["w_hh"])
        per_T = {}
        for T in lengths:
            xs, y = data[T]
            norms = np.asarray(norms_fn(cfg["kind"], params, xs, y, activation=cfg["activation"]))
            fit = gd.decay_fit(norms)
            fit["nonfinite"] = bool(not np.isfinite(norms).all())
            per_T[str(T)] = {**fit, "norm_lag0": float(norms[0]), "log10_rel_norm": _curve(norms)}
        results.append({"config": cfg["name"], "kind": cfg["kind"], "activation": cfg["activation"],
                        "init": cfg["init"], "init_label": cfg["init_label"], "phase": phase,
                        "spectral": spec, "by_length": per_T})
        longest = per_T[str(lengths[-1])]
        _log(verbose, f"[gradient-decay] {phase:7s} {cfg['name']:28s} sigma_max={spec['sigma_max']:.3f} "
                      f"T={lengths[-1]}: slope={longest['slope']:.4f}/step horizon={_fmt_horizon(longest, lengths[-1])}")

    for cfg in gradient_decay_configs(hidden_size):
        params = models.init_model(cfg["kind"], k_model, 2, hidden_size, 1, **cfg["init"])
        measure(cfg, params, "init")

    trained = {}
    task = make_task("adding", train_length)
    for cfg in gradient_decay_configs(hidden_size):
        if cfg["name"] not in ("rnn-tanh orthogonalx1", "lstm", "gru"):
            continue
        out = train_seeds(cfg["kind"], task, k_train, num_seeds=1, hidden_size=hidden_size,
                          batch_size=32, learning_rate=1e-2, max_steps=train_steps,
                          eval_every=min(train_steps, 150), stop_when_solved=False,
                          activation=cfg["activation"], init_kwargs=cfg["init"])
        params = jax.tree.map(lambda a: a[0], out["params"])
        trained[cfg["name"]] = {"final_mae": out["final_metric"][0], "steps": out["steps_run"]}
        _log(verbose, f"[gradient-decay] trained {cfg['name']} on adding T={train_length}: "
                      f"MAE {out['final_metric'][0]:.4f} after {out['steps_run']} steps")
        measure(cfg, params, "trained")

    payload = {
        "what": "||dL/dh_t|| against lag T-t, L = squared error of a linear readout of h_T on the "
                "adding problem; one backward pass with zero probes added to every h_t",
        "settings": {"seed": seed, "hidden_size": hidden_size, "batch_size": batch_size,
                     "lengths": list(lengths), "train_task": f"adding, T={train_length}",
                     "train_steps": train_steps, "learning_rate": 1e-2, "quick": quick,
                     "horizon_ratio": 1e-3, "fit_floor_log10": gd.UNDERFLOW_LOG10},
        "trained": trained,
        "results": results,
        "seconds": time.perf_counter() - t_start,
    }
    md = _gradient_markdown(results, lengths, trained, payload["settings"])
    path = bm.write_results("gradient_decay", payload, md, out_dir)
    _plot_gradient_decay(results, lengths, Path(out_dir) / "gradient_decay.png")
    return path


def _gradient_markdown(results, lengths, trained, st) -> str:
    Tmax = lengths[-1]
    lines = [
        "# Gradient-norm decay: ||dL/dh_t|| against lag\n",
        f"Loss on the last step only (squared error of a linear readout of h_T, adding-problem "
        f"inputs), hidden {st['hidden_size']}, batch {st['batch_size']}, seed {st['seed']}. "
        "All T gradients come from one backward pass (zero probes added to every h_t). "
        "*Effective horizon*: first lag at which the norm is below 1e-3 of its value at lag 0 "
        "(`>T-1`: never within the sequence; `n/f`: the forward pass overflowed). "
        "*Slope*: least-squares slope of log10(norm) against lag (decades per step), "
        f"fitted over lags above 1e-30 (float32 underflow), at T={Tmax}.\n",
        "## Effective horizon (steps) at initialisation, by sequence length T\n",
    ]
    init = [r for r in results if r["phase"] == "init"]
    rows = [[r["config"]] + [_fmt_horizon(r["by_length"][str(T)], T) for T in lengths] for r in init]
    lines.append(bm.md_table(["config"] + [f"T={T}" for T in lengths], rows))
    lines.append(f"\n## Per-step decay at T={Tmax} and the Pascanu et al. (2013) bound\n")
    lines.append("Vanishing is guaranteed for the simple RNN when sigma_max(W_hh) < 1/gamma "
                 "(gamma = 1 for tanh and ReLU, 1/4 for the sigmoid). LSTM/GRU: sigma_max of the "
                 "whole [H, G*H] matrix; the bound does not apply.\n")
    rows = []
    for r in results:
        f = r["by_length"][str(Tmax)]
        s = r["spectral"]
        rows.append([r["config"], r["phase"], r["init_label"], f"{s['sigma_max']:.3f}",
                     "-" if s["bound"] is None else f"{s['bound']:g}",
                     "-" if s["vanishing_guaranteed"] is None else ("yes" if s["vanishing_guaranteed"] else "no"),
                     f"{f['slope']:.4f}", f"{f['factor']:.3f}", _fmt_horizon(f, Tmax),
                     f"{f['horizon_extrapolated']:.0f}"])
    lines.append(bm.md_table(["config", "phase", "init", "sigma_max", "1/gamma", "vanishing guaranteed",
                              "slope (log10/step)", "factor/step", "horizon", "horizon (extrapolated)"], rows))
    lines.append(f"\n## After training on the adding problem ({st['train_task']}, {st['train_steps']} Adam steps)\n")
    rows = []
    for name, info in trained.items():
        a = next(r for r in results if r["config"] == name and r["phase"] == "init")
        b = next(r for r in results if r["config"] == name and r["phase"] == "trained")
        rows.append([name, f"{info['final_mae']:.3f}"]
                    + [f"{_fmt_horizon(a['by_length'][str(T)], T)} -> {_fmt_horizon(b['by_length'][str(T)], T)}"
                       for T in lengths])
    lines.append("Effective horizon, at initialisation -> after training.\n")
    lines.append(bm.md_table(["config", "MAE after training"] + [f"T={T}" for T in lengths], rows))
    lines.append("\n![gradient decay](gradient_decay.png)\n")
    return "\n".join(lines)


def _plot_gradient_decay(results, lengths, path):
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    Tl = lengths[-1]
    Tm = 200 if 200 in lengths else lengths[len(lengths) // 2]

    def curve(r, T):
        y = np.array([np.nan if v is None else v for v in r["by_length"][str(T)]["log10_rel_norm"]])
        return np.arange(len(y)), y

    def pick(name, phase="init"):
        return next(r for r in results if r["config"] == name and r["phase"] == phase)

    ax = axes[0, 0]
    for name in ("rnn-tanh orthogonalx1", "lstm", "gru"):
        ax.plot(*curve(pick(name), Tl), label=name)
    ax.set_title(f"at initialisation, T={Tl}")
    ax = axes[0, 1]
    for init, scale, label in RNN_INITS:
        ax.plot(*curve(pick(f"rnn-tanh {init}x{scale:g}"), Tm), label=f"tanh, {label}")
    ax.set_title(f"tanh RNN, initialisations, T={Tm}")
    ax = axes[1, 0]
    for act in RNN_ACTIVATIONS:
        for init, scale in (("orthogonal", 1.0), ("identity", 1.0)):
            ax.plot(*curve(pick(f"rnn-{act} {init}x{scale:g}"), Tm), label=f"{act}, {init} x{scale:g}")
    ax.set_title(f"simple RNN, activations, T={Tm}")
    ax = axes[1, 1]
    for name in ("rnn-tanh orthogonalx1", "lstm", "gru"):
        line, = ax.plot(*curve(pick(name), Tl), label=f"{name} init", alpha=0.5)
        if any(r["config"] == name and r["phase"] == "trained" for r in results):
            ax.plot(*curve(pick(name, "trained"), Tl), "--", color=line.get_color(), label=f"{name} trained")
    ax.set_title(f"initialisation vs trained (adding problem), T={Tl}")
    for ax in axes.flat:
        ax.axhline(-3, color="gray", lw=0.8, ls=":")
        ax.set_xlabel("lag T - t (steps)")
        ax.set_ylabel("log10 ||dL/dh_t|| / ||dL/dh_T||")
        ax.set_ylim(bottom=max(ax.get_ylim()[0], -40))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- memory span


def run_memory_span(
    out_dir: str | os.PathLike = DEFAULT_OUT,
    quick: bool = False,
    *,
    seed: int = 0,
    lags: tuple[int, ...] | None = None,
    task_names: tuple[str, ...] = ("adding", "latch"),
    kinds: tuple[str, ...] = models.KINDS,
    num_seeds: int = 3,
    hidden_size: int = 32,
    batch_size: int = 32,
    learning_rate: float = 1e-2,
    max_steps: int | None = None,
    eval_every: int = 250,
    verbose: bool = True,
) -> Path:
    """Success rate against lag on the long-lag tasks; write ``memory_span.{json,md,png}``.

    Every (task, cell kind, lag) trains ``num_seeds`` models with the same
    budget (``max_steps`` Adam steps of batch ``batch_size``, evaluated every
    ``eval_every`` steps on 1000 held-out sequences; stops early once every
    seed has solved it). Adding problem: ``lag`` is the sequence length T,
    solved at MAE < 0.04. Latch: ``lag`` distractors, solved at accuracy >= 0.95.

    ``quick=True``: lags (5, 20), 250 steps (about a minute on 2 CPU cores);
    the full sweep takes about 10-15 minutes.
    """
    t_start = time.perf_counter()
    if quick:
        lags = lags or (5, 20)
        max_steps = max_steps or 250
    lags = tuple(lags or MEMORY_LAGS)
    max_steps = max_steps or 2000
    base = jax.random.key(seed)
    runs = []
    for ti, name in enumerate(task_names):
        for lag in lags:
            task = make_task(name, lag)
            key = jax.random.fold_in(jax.random.fold_in(base, ti), lag)  # same data for every cell
            for kind in kinds:
                out = train_seeds(kind, task, key, num_seeds=num_seeds, hidden_size=hidden_size,
                                  batch_size=batch_size, learning_rate=learning_rate,
                                  max_steps=max_steps, eval_every=eval_every)
                out.pop("params")
                runs.append({"task": name, "lag": lag, "kind": kind, **out})
                _log(verbose, f"[memory-span] {name:6s} lag={lag:4d} {kind:4s} solved {sum(out['success'])}/"
                              f"{num_seeds} steps {out['steps_to_solve']} best {task.metric_name} "
                              f"{np.round(out['best_metric'], 3).tolist()} ({out['seconds']:.1f} s + "
                              f"{out['compile_seconds']:.1f} s compile)")
    settings = {"seed": seed, "lags": list(lags), "tasks": list(task_names), "kinds": list(kinds),
                "num_seeds": num_seeds, "hidden_size": hidden_size, "batch_size": batch_size,
                "learning_rate": learning_rate, "optimizer": "adam, clip_by_global_norm(1.0)",
                "max_steps": max_steps, "eval_every": eval_every, "eval_size": 1000, "quick": quick,
                "criteria": {"adding": "MAE < 0.04 (lag = sequence length T)",
                             "latch": "accuracy >= 0.95 (4 symbols, 4 distractor tokens, lag = distractor steps)"}}
    payload = {"settings": settings, "runs": runs, "seconds": time.perf_counter() - t_start}
    md = _memory_markdown(runs, settings)
    path = bm.write_results("memory_span", payload, md, out_dir)
    _plot_memory_span(runs, settings, Path(out_dir) / "memory_span.png")
    return path


def _memory_markdown(runs, st) -> str:
    n = st["num_seeds"]
    lines = [
        "# Memory span: long-time-lag tasks (Hochreiter & Schmidhuber 1997)\n",
        f"Each cell: one layer, hidden {st['hidden_size']}, linear readout of the last step; "
        f"Adam lr {st['learning_rate']:g} with gradient clipping 1.0, batch {st['batch_size']}, "
        f"at most {st['max_steps']} steps (the same budget for every cell), {n} seeds per point, "
        f"evaluated every {st['eval_every']} steps on 1000 held-out sequences. "
        "A seed succeeds when it meets the criterion at some evaluation.\n",
        "* **adding**: lag = sequence length T (first operand at least T/2 steps back); "
        "target 0.5 + (x1 + x2)/4; solved at MAE < 0.04 (predicting the mean: ~0.167).",
        "* **latch**: remember the first of 4 symbols across `lag` random distractor steps, "
        "then a query token; solved at accuracy >= 0.95 (chance 0.25).\n",
        "## Success rate (seeds solved / seeds) by lag\n",
    ]
    header = ["lag"] + [f"{t} {k}" for t in st["tasks"] for k in st["kinds"]]
    rows = []
    for lag in st["lags"]:
        row = [lag]
        for t in st["tasks"]:
            for k in st["kinds"]:
                r = next(r for r in runs if r["task"] == t and r["kind"] == k and r["lag"] == lag)
                row.append(f"{sum(r['success'])}/{n}")
        rows.append(row)
    lines.append(bm.md_table(header, rows))
    lines.append("\n## Steps to solve (median over the seeds that solved it) and best metric (mean over seeds)\n")
    rows = []
    for lag in st["lags"]:
        row = [lag]
        for t in st["tasks"]:
            for k in st["kinds"]:
                r = next(r for r in runs if r["task"] == t and r["kind"] == k and r["lag"] == lag)
                solved = [s for s in r["steps_to_solve"] if s is not None]
                steps = f"{int(np.median(solved))}" if solved else "-"
                row.append(f"{steps} ({np.mean(r['best_metric']):.3f})")
        rows.append(row)
    lines.append(bm.md_table(header, rows))
    lines.append("\n![memory span](memory_span.png)\n")
    return "\n".join(lines)


def _plot_memory_span(runs, st, path):
    plt = _plt()
    fig, axes = plt.subplots(1, len(st["tasks"]), figsize=(6 * len(st["tasks"]), 4.2), squeeze=False)
    for ax, t in zip(axes[0], st["tasks"]):
        for i, k in enumerate(st["kinds"]):
            rate = [np.mean(next(r for r in runs if r["task"] == t and r["kind"] == k and r["lag"] == lag)["success"])
                    for lag in st["lags"]]
            ax.plot(st["lags"], np.array(rate) + (i - 1) * 0.015, "o-", label=k)
        ax.set_xscale("log")
        ax.set_xticks(st["lags"])
        ax.set_xticklabels([str(l) for l in st["lags"]])
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("lag (adding: sequence length)" if t == "adding" else "lag (distractor steps)")
        ax.set_ylabel(f"success rate ({st['num_seeds']} seeds)")
        ax.set_title(f"{t}: budget {st['max_steps']} steps, hidden {st['hidden_size']}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
