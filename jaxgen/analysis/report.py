"""The markdown tables and PNG figures of the analyses run by :mod:`jaxgen.analysis.runners`.

Each function takes the results a runner measured (the same lists it writes to JSON) and only
formats or draws them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxgen.benchmarking import md_table
from jaxgen.plots import save_image_file


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path) -> None:
    fig.tight_layout()
    save_image_file(fig, Path(path), dpi=110)
    plt.close(fig)


def format_horizon(fit: dict, length: int) -> str:
    """The effective horizon of a decay fit at sequence length ``length``: ``>T-1`` when the norm
    never fell below the ratio, ``n/f`` when the forward pass overflowed."""
    if fit.get("nonfinite"):
        return "n/f"
    return f">{length - 1}" if fit["censored"] else str(fit["horizon"])


# --------------------------------------------------------------------------- gradient decay


def gradient_decay_markdown(results: list, lengths: tuple, trained: dict, settings: dict) -> str:
    """``gradient_decay.md``: horizons by length at init, the Pascanu check at the longest length,
    and the horizons before and after training."""
    t_max = lengths[-1]
    lines = [
        "# Gradient-norm decay: ||dL/dh_t|| against lag\n",
        "Loss on the last step only (squared error of a linear readout of h_T, adding-problem "
        f"inputs), hidden {settings['hidden_size']}, batch {settings['batch_size']}, "
        f"seed {settings['seed']}. "
        "All T gradients come from one backward pass (zero probes added to every h_t). "
        "*Effective horizon*: first lag at which the norm is below 1e-3 of its value at lag 0 "
        "(`>T-1`: never within the sequence; `n/f`: the forward pass overflowed). "
        "*Slope*: least-squares slope of log10(norm) against lag (decades per step), "
        f"fitted over lags above 1e-30 (float32 underflow), at T={t_max}.\n",
        "## Effective horizon (steps) at initialisation, by sequence length T\n",
    ]
    at_init = [r for r in results if r["phase"] == "init"]
    rows = [
        [r["config"]] + [format_horizon(r["by_length"][str(T)], T) for T in lengths]
        for r in at_init
    ]
    lines.append(md_table(["config"] + [f"T={T}" for T in lengths], rows))
    lines.append(f"\n## Per-step decay at T={t_max} and the Pascanu et al. (2013) bound\n")
    lines.append("Vanishing is guaranteed for the simple RNN when sigma_max(W_hh) < 1/gamma "
                 "(gamma = 1 for tanh and ReLU, 1/4 for the sigmoid). LSTM/GRU: sigma_max of the "
                 "whole [H, G*H] matrix; the bound does not apply.\n")  # fmt: skip
    rows = []
    for r in results:
        fit = r["by_length"][str(t_max)]
        spectral = r["spectral"]
        guaranteed = spectral["vanishing_guaranteed"]
        rows.append([
            r["config"], r["phase"], r["init_label"],
            "-" if spectral["sigma_max"] is None else f"{spectral['sigma_max']:.3f}",
            "-" if spectral["bound"] is None else f"{spectral['bound']:g}",
            "-" if guaranteed is None else ("yes" if guaranteed else "no"),
            f"{fit['slope']:.4f}", f"{fit['factor']:.3f}", format_horizon(fit, t_max),
            f"{fit['horizon_extrapolated']:.0f}",
        ])  # fmt: skip
    header = ["config", "phase", "init", "sigma_max", "1/gamma", "vanishing guaranteed",
              "slope (log10/step)", "factor/step", "horizon", "horizon (extrapolated)"]  # fmt: skip
    lines.append(md_table(header, rows))
    lines.append(f"\n## After training on the adding problem ({settings['train_task']}, "
                 f"{settings['train_steps']} Adam steps)\n")  # fmt: skip
    rows = []
    for name, info in trained.items():
        before = next(r for r in results if r["config"] == name and r["phase"] == "init")
        after = next(r for r in results if r["config"] == name and r["phase"] == "trained")
        horizons = [
            f"{format_horizon(before['by_length'][str(T)], T)} -> "
            f"{format_horizon(after['by_length'][str(T)], T)}"
            for T in lengths
        ]
        rows.append([name, f"{info['final_mae']:.3f}"] + horizons)
    lines.append("Effective horizon, at initialisation -> after training.\n")
    lines.append(md_table(["config", "MAE after training"] + [f"T={T}" for T in lengths], rows))
    lines.append("\n![gradient decay](gradient_decay.png)\n")
    forget = [r for r in at_init if r["config"] in FORGET_CONFIGS]
    if forget:
        lines.append("\n## The forget gate's initial bias sets the horizon\n")
        lines.append(
            "An LSTM's cell state keeps sigmoid(b_f) of itself a step when the forget gate sits at "
            "its bias b_f, so a gradient along it falls to 1e-3 after ln(1e-3) / ln(sigmoid(b_f)) "
            "steps: the *predicted* horizon. Chrono initialisation draws each unit's b_f as "
            f"log(U(1, T_max - 1)) (input-gate bias -b_f); the GRU's update gate plays the forget "
            f"gate's part. Measured at initialisation, T={t_max}.\n"
        )
        rows = []
        for r in forget:
            init = r["init"]
            bias = init.get("forget_bias", 1.0 if r["kind"] == "lstm" else 0.0)
            if "chrono" in init:
                b_txt, pred = (
                    f"log U(1, {init['chrono'] - 1})",
                    "up to " + str(round(predicted_horizon(np.log(init["chrono"] - 1.0)))),
                )
            elif r["kind"] == "lstm":
                b_txt, pred = f"{bias:g}", f"{predicted_horizon(bias):.0f}"
            else:
                b_txt, pred = f"{bias:g} (update gate)", "-"
            fit = r["by_length"][str(t_max)]
            rows.append([r["config"], b_txt, pred, format_horizon(fit, t_max),
                         f"{fit['slope']:.4f}"])  # fmt: skip
        lines.append(md_table(["config", "forget bias", "predicted horizon", "measured horizon",
                               "slope (log10/step)"], rows))  # fmt: skip
        lines.append("\n![forget-gate initialisation](gradient_decay_forget.png)\n")
    return "\n".join(lines)


FORGET_CONFIGS = ("lstm", "lstm b3", "lstm b5", "lstm chrono", "gru", "gru chrono")
MAIN_CONFIGS = ("rnn-tanh orthogonalx1", "lstm", "gru", "mingru", "minlstm", "lru")


def predicted_horizon(forget_bias: float, ratio: float = 1e-3) -> float:
    """Steps until a cell state kept at ``sigmoid(forget_bias)`` a step falls to ``ratio``: the
    LSTM's horizon at initialisation if its forget gate sat at its bias."""
    keep = 1.0 / (1.0 + np.exp(-forget_bias))
    return float(np.log(ratio) / np.log(keep))


def plot_forget_decay(results: list, lengths: tuple, path: Path) -> None:
    """``gradient_decay_forget.png``: log10 relative norm against lag at initialisation for each
    forget-gate initialisation, at the longest length, with the predicted slopes dotted."""
    plt = _pyplot()
    t = lengths[-1]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for r in results:
        if r["phase"] != "init" or r["config"] not in FORGET_CONFIGS:
            continue
        y = np.array([np.nan if v is None else v for v in r["by_length"][str(t)]["log10_rel_norm"]])
        (line,) = ax.plot(np.arange(len(y)), y, label=r["config"])
        bias = r["init"].get("forget_bias", 1.0)
        if r["kind"] == "lstm" and "chrono" not in r["init"]:
            keep = 1.0 / (1.0 + np.exp(-bias))
            lag = np.arange(t)
            ax.plot(lag, lag * np.log10(keep), ":", color=line.get_color(), lw=1)
    ax.axhline(-3, color="gray", lw=0.8, ls=":")
    ax.set_ylim(-40, 1)
    ax.set_xlabel("lag T - t (steps)")
    ax.set_ylabel("log10 ||dL/dh_t|| / ||dL/dh_T||")
    ax.set_title(f"forget-gate initialisation at T={t} (dotted: sigmoid(b_f)^lag)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(plt, fig, path)


def plot_gradient_decay(
    results: list, lengths: tuple, path: Path, rnn_inits: tuple, rnn_activations: tuple
) -> None:
    """``gradient_decay.png``: four panels of log10 relative norm against lag (cells at init, tanh
    RNN initialisations ``rnn_inits``, RNN activations ``rnn_activations``, init vs trained)."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    t_long = lengths[-1]
    t_mid = 200 if 200 in lengths else lengths[len(lengths) // 2]

    def curve(r, T):
        y = np.array([np.nan if v is None else v for v in r["by_length"][str(T)]["log10_rel_norm"]])
        return np.arange(len(y)), y

    def pick(name, phase="init"):
        return next(r for r in results if r["config"] == name and r["phase"] == phase)

    names = [n for n in MAIN_CONFIGS if any(r["config"] == n for r in results)]
    ax = axes[0, 0]
    for name in names:
        ax.plot(*curve(pick(name), t_long), label=name)
    ax.set_title(f"at initialisation, T={t_long}")
    ax = axes[0, 1]
    for init, scale, label in rnn_inits:
        ax.plot(*curve(pick(f"rnn-tanh {init}x{scale:g}"), t_mid), label=f"tanh, {label}")
    ax.set_title(f"tanh RNN, initialisations, T={t_mid}")
    ax = axes[1, 0]
    for act in rnn_activations:
        for init, scale in (("orthogonal", 1.0), ("identity", 1.0)):
            label = f"{act}, {init} x{scale:g}"
            ax.plot(*curve(pick(f"rnn-{act} {init}x{scale:g}"), t_mid), label=label)
    ax.set_title(f"simple RNN, activations, T={t_mid}")
    ax = axes[1, 1]
    for name in names:
        (line,) = ax.plot(*curve(pick(name), t_long), label=f"{name} init", alpha=0.5)
        if any(r["config"] == name and r["phase"] == "trained" for r in results):
            ax.plot(*curve(pick(name, "trained"), t_long), "--", color=line.get_color(),
                    label=f"{name} trained")  # fmt: skip
    ax.set_title(f"initialisation vs trained (adding problem), T={t_long}")
    for ax in axes.flat:
        ax.axhline(-3, color="gray", lw=0.8, ls=":")
        ax.set_xlabel("lag T - t (steps)")
        ax.set_ylabel("log10 ||dL/dh_t|| / ||dL/dh_T||")
        ax.set_ylim(bottom=max(ax.get_ylim()[0], -40))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    _save(plt, fig, path)


# --------------------------------------------------------------------------- memory span


def _cells(settings: dict) -> list:
    return settings.get("cells") or settings["kinds"]  # "kinds": results written before chrono


def _run_at(runs: list, task: str, cell: str, lag: int) -> dict | None:
    """The run of ``cell`` on ``task`` at ``lag`` (None if the sweep has not reached it)."""
    return next(
        (
            r
            for r in runs
            if r["task"] == task and r.get("cell", r.get("kind")) == cell and r["lag"] == lag
        ),
        None,
    )


def _table_by_lag(runs: list, settings: dict, cell) -> str:
    """A markdown table: one row per lag, one column per (task, cell), ``cell(run)`` in each; ``·``
    where the cell was not trained (it failed at a shorter lag), blank where not reached yet."""
    columns = [(t, k) for t in settings["tasks"] for k in _cells(settings)]
    header = ["lag"] + [f"{t} {k}" for t, k in columns]

    def show(run):
        if run is None:
            return ""
        return "·" if run.get("skipped") else cell(run)

    rows = [
        [lag] + [show(_run_at(runs, t, k, lag)) for t, k in columns] for lag in settings["lags"]
    ]
    return md_table(header, rows)


def _fmt_chance(c: dict) -> str:
    return (
        f"10^{c['log10_per_evaluation']:.0f}"
        if c["per_evaluation"] < 1e-4
        else (f"{c['per_evaluation']:.2g}")
    )


def memory_span_markdown(runs: list, settings: dict, rechecks: list | None = None) -> str:
    """``memory_span.md``: the success rate by lag, then steps and seconds to solve and the best
    metric, the chance of passing by luck, and any re-run with more seeds."""
    n = settings["num_seeds"]
    budget = settings["max_steps"] * settings["batch_size"]
    lines = [
        "# Memory span: long-time-lag tasks (Hochreiter & Schmidhuber 1997)\n",
        f"Each cell: one layer, hidden {settings['hidden_size']}, linear readout of the last step; "
        f"Adam lr {settings['learning_rate']:g} with gradient clipping 1.0, "
        f"batch {settings['batch_size']}, "
        f"at most {settings['max_steps']} steps ({budget:,} sequences seen: the same budget for "
        f"every cell), {n} seeds per point, evaluated every {settings['eval_every']} steps on "
        f"{settings.get('eval_size', 1000)} held-out sequences. A seed succeeds when it meets the "
        "criterion at some evaluation; training stops when every seed has.\n",
        "* **adding**: lag = sequence length T (first operand at least T/2 steps back); "
        "target 0.5 + (x1 + x2)/4; solved at MAE < 0.04 (predicting the mean: ~0.167).",
        "* **latch**: remember the first of 4 symbols across `lag` random distractor steps, "
        "then a query token; solved at accuracy >= 0.95 (chance 0.25).\n",
    ]
    labels = settings.get("cell_labels")
    if labels:
        lines.append(
            "Cells (the factor is the forget gate's initial bias; the GRU's update gate):\n"
        )
        lines += [f"* `{c}`: {label}" for c, label in labels.items()]
        lines.append("")
    if settings.get("skip_after_failure"):
        lines.append(
            "`·`: not trained, because the cell solved no seed at a shorter lag of that task.\n"
        )
    chance = settings.get("chance")
    if chance:
        lines.append(
            "**Passing by luck.** The chance that a model which ignores its input passes, at one "
            "evaluation (at most that times the number of evaluations over a run):\n"
        )
        lines += [f"* {t}: {_fmt_chance(c)} ({c['how']})" for t, c in chance.items()]
        lines.append("")
    lines.append("## Success rate (seeds solved / seeds) by lag\n")

    def steps_and_best(run):
        solved = [s for s in run["steps_to_solve"] if s is not None]
        steps = f"{int(np.median(solved))}" if solved else "-"
        return f"{steps} ({np.mean(run['best_metric']):.3f})"

    def seconds(run):
        solved = [s for s in run.get("seconds_to_solve") or [] if s is not None]
        return f"{np.median(solved):.0f}" if solved else f"- ({run.get('seconds', 0):.0f})"

    lines.append(_table_by_lag(runs, settings, lambda run: f"{sum(run['success'])}/{n}"))
    lines.append("\n## Steps to solve (median over the seeds that solved it) and best metric "
                 "(mean over seeds)\n")  # fmt: skip
    lines.append(_table_by_lag(runs, settings, steps_and_best))
    if any("seconds_to_solve" in r for r in runs):
        lines.append(
            "\n## Seconds to solve (median over the seeds that solved it; unsolved: the seconds "
            "the whole budget took), all seeds trained at once on 2 CPU cores\n"
        )
        lines.append(_table_by_lag(runs, settings, seconds))
    if rechecks:
        lines.append("\n## Re-run with more seeds\n")
        rows = [
            [r["task"], r["cell"], r["lag"], f"{sum(r['success'])}/{len(r['success'])}",
             ", ".join(f"{m:.3f}" for m in r["best_metric"])]
            for r in rechecks
        ]  # fmt: skip
        lines.append(md_table(["task", "cell", "lag", "solved", "best metric per seed"], rows))
    lines.append("\n![memory span](memory_span.png)\n")
    return "\n".join(lines)


def plot_memory_span(runs: list, settings: dict, path: Path) -> None:
    """``memory_span.png``: success rate against lag, one panel per task, one line per cell (a
    cell's line ends where it was no longer trained)."""
    plt = _pyplot()
    tasks, lags = settings["tasks"], settings["lags"]
    cells = _cells(settings)
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.4), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        for i, k in enumerate(cells):
            pts = [(lag, _run_at(runs, t, k, lag)) for lag in lags]
            pts = [(lag, np.mean(r["success"])) for lag, r in pts if r and not r.get("skipped")]
            if not pts:
                continue
            x, y = zip(*pts)
            ax.plot(x, np.array(y) + (i - len(cells) / 2) * 0.012, "o-", label=k)
        ax.set_xscale("log")
        ax.set_xticks(lags)
        ax.set_xticklabels([str(lag) for lag in lags])
        ax.set_ylim(-0.05, 1.05)
        adding = t == "adding"
        ax.set_xlabel("lag (adding: sequence length)" if adding else "lag (distractor steps)")
        ax.set_ylabel(f"success rate ({settings['num_seeds']} seeds)")
        ax.set_title(f"{t}: budget {settings['max_steps']} steps, hidden {settings['hidden_size']}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(plt, fig, path)


def render_memory_span(json_path: str | Path) -> Path:
    """Rewrite ``memory_span.md`` and ``.png`` beside ``json_path`` from the JSON alone (for a sweep
    stopped part-way: the runner rewrites the JSON after every run, the figure only at the end)."""
    import json

    json_path = Path(json_path)
    payload = json.loads(json_path.read_text())
    runs, settings, rechecks = payload["runs"], payload["settings"], payload.get("recheck") or []
    md = memory_span_markdown(runs, settings, rechecks)
    md_path = json_path.with_suffix(".md")
    text = md_path.read_text() if md_path.exists() else ""
    head = text.split("# Memory span")[0] if "# Memory span" in text else ""  # the provenance line
    md_path.write_text(head + md)
    plot_memory_span(runs, settings, json_path.with_suffix(".png"))
    return md_path
