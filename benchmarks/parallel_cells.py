"""The third way over time: the associative scan against the sequential scan.

For minGRU, minLSTM and the LRU (``jaxgen.linear_rnn``), the same layer run three ways:
``mode="scan"`` (``lax.scan``, one step after another), ``mode="parallel"``
(``lax.associative_scan``, ``O(log T)`` sequential levels) and, for the gated cells,
``mode="parallel", log_space=True`` (the paper's log-space form), and ``mode="native"`` for
the gated cells (the sequential loop as one compiled CPU kernel, ``jaxgen.native``).
The LSTM's scan (jaxgen's fused backward) is the reference line.

Measured, all forward + backward of a loss over the outputs (gradients for the parameters and the
inputs), medians of interleaved repetitions within one process:

* **target**: B 32, H 256, F 256, T = 1,000 and 4,096: the whole layer (input projection
  included), the same layer with the recurrence replaced by an elementwise op (the bound on any
  parallel scan's speed-up: ``scan / bound``), and the recurrence alone (``linear_scan`` on ready
  ``a``, ``b``: the only part the modes differ in);
* **sweep**: B 8, H 128, T = 256 .. 16,384: step time, compile time and the compiled step's
  temporary memory (``memory_analysis().temp_size_in_bytes``);
* **accuracy**: float32 outputs of each mode against a float64 sequential run, at T = 16,384.

    python benchmarks/parallel_cells.py            # about 15 minutes on 2 cores
    python benchmarks/parallel_cells.py --quick    # smaller, about a minute (a smoke run)
    python benchmarks/parallel_cells.py --name parallel_cells_native --sweep 1024,4096
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import benchmarking as bm
from jaxgen import linear_rnn, recurrence, rnn

CELLS = {
    "mingru": (rnn.mingru_init, rnn.mingru),
    "minlstm": (rnn.minlstm_init, rnn.minlstm),
    "lru": (rnn.lru_init, rnn.lru),
}
VARIANTS = {"scan": dict(mode="scan"), "parallel": dict(mode="parallel")}
LOG = {"parallel log": dict(mode="parallel", log_space=True)}
NATIVE = {"native": dict(mode="native")}  # the sequential loop compiled (jaxgen.native)


def variants(cell):
    # The LRU's complex state has no compiled loop (mode="native" runs its scan).
    real = cell != "lru"
    return {**VARIANTS, **(NATIVE if real else {}), **(LOG if real else {})}


BOUND = "no recurrence (bound)"


def without_recurrence(cell):
    """The layer with its recurrence replaced by an elementwise ``h_t = a_t + b_t``: everything
    else (input projection, gates, output) as in the layer, no dependence across time. Its time is
    what no way of running the recurrence can go below, so ``scan / this`` bounds the speed-up
    any parallel scan can give the layer (Amdahl)."""

    def seq(p, xs):
        if cell == "lru":
            b = linear_rnn._lru_drive(p, xs)
            return None, linear_rnn._lru_out(p, linear_rnn._lru_lambda(p) + b, xs)
        coeffs = linear_rnn._mingru_coeffs if cell == "mingru" else linear_rnn._minlstm_coeffs
        a, b = coeffs(recurrence.input_projection(p, xs), False)
        return None, a + b

    return seq


def layer_grad(cell, kw):
    """jitted ``grad`` of a weighted sum of the outputs w.r.t. parameters and inputs."""
    if kw.get("bound"):
        seq, kw = without_recurrence(cell), {}
    else:
        seq = CELLS[cell][1] if cell != "lstm" else rnn.lstm

    def loss(p, xs):
        _, ys = seq(p, xs, **kw)
        return jnp.mean(jnp.tanh(ys))

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def compile_seconds(fn, *args):
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    seconds = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    temp = getattr(mem, "temp_size_in_bytes", None) if mem is not None else None
    return compiled, seconds, temp


def median_ms(times):
    return 1e3 * statistics.median(times)


def target(lengths, batch, hidden, reps):
    rows, out = [], []
    key = jax.random.key(0)
    for t in lengths:
        xs = jax.random.normal(key, (t, batch, hidden), jnp.float32)
        for cell in CELLS:
            p = CELLS[cell][0](key, hidden, hidden)
            fns = {}
            for name, kw in {**variants(cell), BOUND: dict(bound=True)}.items():
                fns[name], _, _ = compile_seconds(layer_grad(cell, kw), p, xs)
            times = bm.interleaved(
                {k: (lambda f=f, p=p, xs=xs: f(p, xs)) for k, f in fns.items()}, reps
            )
            ms = {k: median_ms(v) for k, v in times.items()}
            for name in fns:
                speedup = statistics.median(s / q for s, q in zip(times["scan"], times[name]))
                out.append(
                    dict(
                        part="layer",
                        cell=cell,
                        T=t,
                        variant=name,
                        ms=ms[name],
                        speedup_vs_scan=speedup,
                    )
                )
                rows.append(["layer", cell, t, name, ms[name], speedup])
            print(
                f"layer {cell:8s} T={t}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items()),
                flush=True,
            )
        # the recurrence alone: h_t = a_t h_{t-1} + b_t on ready coefficients
        a = jax.nn.sigmoid(jax.random.normal(key, (t, batch, hidden)))
        b = jax.random.normal(jax.random.key(1), (t, batch, hidden))
        fns = {}
        for name, kw in {**VARIANTS, **NATIVE, **LOG}.items():
            log = kw.get("log_space", False)

            def loss(a, b, kw=kw, log=log):
                if log:
                    a, b = jnp.log(a), jnp.log(jnp.abs(b) + 0.1)
                return jnp.mean(jnp.tanh(rnn.linear_scan(a, b, **kw)))

            fns[name] = jax.jit(jax.grad(loss, argnums=(0, 1)))
        times = bm.interleaved({k: (lambda f=f, a=a, b=b: f(a, b)) for k, f in fns.items()}, reps)
        for name in fns:
            speedup = statistics.median(s / q for s, q in zip(times["scan"], times[name]))
            out.append(
                dict(
                    part="recurrence",
                    cell="linear_scan",
                    T=t,
                    variant=name,
                    ms=median_ms(times[name]),
                    speedup_vs_scan=speedup,
                )
            )
            rows.append(["recurrence", "linear_scan", t, name, median_ms(times[name]), speedup])
        print(
            f"recurrence T={t}: "
            + ", ".join(f"{k} {median_ms(v):.1f} ms" for k, v in times.items()),
            flush=True,
        )
    table = bm.md_table(["part", "cell", "T", "mode", "fwd+bwd ms (median)", "speed vs scan"], rows)
    return out, table


def sweep(lengths, batch, hidden, reps):
    rows, out = [], []
    key = jax.random.key(0)
    lines = [("lstm", "scan", dict(mode="scan"))]
    for cell in CELLS:
        lines += [(cell, name, kw) for name, kw in variants(cell).items()]
    for t in lengths:
        xs = jax.random.normal(key, (t, batch, hidden), jnp.float32)
        fns, meta = {}, {}
        for cell, name, kw in lines:
            init = rnn.lstm_init if cell == "lstm" else CELLS[cell][0]
            p = init(key, hidden, hidden)
            compiled, seconds, temp = compile_seconds(layer_grad(cell, kw), p, xs)
            fns[f"{cell} {name}"] = lambda c=compiled, p=p, xs=xs: c(p, xs)
            meta[f"{cell} {name}"] = (cell, name, seconds, temp)
        times = bm.interleaved(fns, reps)
        for k, v in times.items():
            cell, name, seconds, temp = meta[k]
            mib = None if temp is None else temp / 2**20
            out.append(
                dict(cell=cell, mode=name, T=t, ms=median_ms(v), compile_s=seconds, temp_mib=mib)
            )
            rows.append([cell, name, t, median_ms(v), seconds, "n/a" if mib is None else mib])
        print(
            f"sweep T={t}: " + ", ".join(f"{k} {median_ms(v):.1f} ms" for k, v in times.items()),
            flush=True,
        )
    table = bm.md_table(["cell", "mode", "T", "fwd+bwd ms (median)", "compile s", "temp MiB"], rows)
    return out, table


def accuracy(t, batch, hidden):
    """Largest error of each float32 mode against a float64 sequential run, relative to the
    largest output."""
    out, rows = [], []
    key = jax.random.key(0)
    for cell in CELLS:
        init, seq = CELLS[cell]
        p = init(key, hidden, hidden)
        xs = jax.random.normal(key, (t, batch, hidden), jnp.float32)
        with jax.enable_x64(True):
            p64 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), p)
            want = np.asarray(seq(p64, jnp.asarray(xs, jnp.float64), mode="scan")[1])
        scale = np.max(np.abs(want))
        for name, kw in variants(cell).items():
            got = np.asarray(jax.jit(lambda p, xs, kw=kw, seq=seq: seq(p, xs, **kw)[1])(p, xs))
            err = float(np.max(np.abs(got - want)) / scale)
            out.append(dict(cell=cell, mode=name, T=t, max_rel_error=err))
            rows.append([cell, name, t, f"{err:.2e}"])
    return out, bm.md_table(["cell", "mode (float32)", "T", "max error / max |y|"], rows)


def plot(sweep_rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    keys = sorted({(r["cell"], r["mode"]) for r in sweep_rows})
    for cell, mode in keys:
        rs = [r for r in sweep_rows if r["cell"] == cell and r["mode"] == mode]
        ts = [r["T"] for r in rs]
        style = "-" if mode == "scan" else ("--" if mode == "parallel" else ":")
        for ax, field in zip(axes, ("ms", "compile_s", "temp_mib")):
            vals = [r[field] for r in rs]
            if all(v is not None for v in vals):
                ax.plot(ts, vals, style, marker="o", label=f"{cell} {mode}")
    for ax, title in zip(axes, ("fwd+bwd step (ms)", "compile (s)", "temporary memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("sequential lax.scan against lax.associative_scan (B 8, H 128, 2-core CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes: a smoke run")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--sweep", default=None, help="comma-separated lengths for the sweep")
    ap.add_argument("--skip-target", action="store_true", help="leave out the target shape")
    ap.add_argument("--name", default="parallel_cells", help="result files' name stem")
    args = ap.parse_args(argv)
    if args.quick:
        tgt, sw, acc = dict(lengths=(256,), batch=8, hidden=64), (64, 256), 1024
    else:
        tgt, sw, acc = (
            dict(lengths=(1000, 4096), batch=32, hidden=256),
            (256, 1024, 4096, 16384),
            16384,
        )
    if args.sweep:
        sw = tuple(int(t) for t in args.sweep.split(","))
    ceiling = bm.gemm_ceiling()
    print(f"GEMM ceiling {ceiling['median_gflops']:.0f} GFLOP/s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = dict(target=([], ""), sweep=([], ""), accuracy=([], ""))

    def save(complete):
        """Write what is measured so far (after each part: a run cut short keeps it)."""
        (t_rows, t_table), (s_rows, s_table), (a_rows, a_table) = parts.values()
        if s_rows:
            plot(s_rows, out / f"{args.name}.png")
        md = (
            f"GEMM ceiling {ceiling['median_gflops']:.0f} GFLOP/s. Forward + backward, medians of "
            f"{args.reps} interleaved repetitions; speed = scan time / mode time in the same "
            "round.\n\n"
            f"### Target shape (B {tgt['batch']}, H {tgt['hidden']})\n\n{t_table or 'not run'}\n"
            f"### Against T (B 8, H 128)\n\n{s_table or 'not run'}\n"
            f"### float32 error against a float64 sequential run (B 4, H 64)\n\n"
            f"{a_table or 'not run'}\n"
            + (f"![scan vs associative scan]({args.name}.png)\n" if s_rows else "")
            + ("" if complete else "\nCut short: the parts marked 'not run' did not finish.\n")
        )
        bm.write_results(
            args.name,
            dict(
                ceiling=ceiling,
                target=t_rows,
                sweep=s_rows,
                accuracy=a_rows,
                complete=complete,
                argv=sys.argv[1:],
            ),
            md,
            out,
        )
        return md

    if not args.skip_target:
        parts["target"] = target(reps=args.reps, **tgt)
        save(False)
    parts["sweep"] = sweep(sw, 8, 128, args.reps)
    save(False)
    parts["accuracy"] = accuracy(acc, 4, 64)
    print(save(True))


if __name__ == "__main__":
    main()
