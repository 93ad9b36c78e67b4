"""Bounded memory on long sequences: ``rnn.lstm(..., remat=k)`` against the full backward pass.

One LSTM (and one GRU) layer, forward + backward of a loss over the outputs (gradients for the
parameters and the inputs), at T = 1,000 and 10,000. Measured in one process: the compiled step's
temporary memory (``memory_analysis().temp_size_in_bytes``: everything the step allocates beyond
its arguments and outputs, i.e. the residuals the backward pass keeps) and the step time (median
of interleaved repetitions), each against the full backward pass of the same cell.

    python benchmarks/remat.py            # about 4 minutes on 2 cores
    python benchmarks/remat.py --quick    # T = 200, 1,000: under a minute
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxgen import benchmarking as bm
from jaxgen import rnn

SHAPE = dict(batch=32, hidden=128, features=64)


def step(cell, **kw):
    seq = {"lstm": rnn.lstm, "gru": rnn.gru}[cell]

    def loss(p, xs):
        return jnp.mean(jnp.tanh(seq(p, xs, **kw)[1]))

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    lengths = (200, 1000) if args.quick else (1000, 10000)
    b, h, f = SHAPE["batch"], SHAPE["hidden"], SHAPE["features"]
    variants = {
        "lstm full": ("lstm", {}),
        "lstm remat=50": ("lstm", {"remat": 50}),
        "lstm remat=100": ("lstm", {"remat": 100}),
        "gru full": ("gru", {}),
        "gru remat=100": ("gru", {"remat": 100}),
    }
    params = {
        "lstm": rnn.lstm_init(jax.random.key(0), f, h),
        "gru": rnn.gru_init(jax.random.key(0), f, h),
    }
    rows, out = [], []
    for t in lengths:
        xs = jax.random.normal(jax.random.key(1), (t, b, f))
        fns, temps = {}, {}
        for name, (cell, kw) in variants.items():
            compiled = step(cell, **kw).lower(params[cell], xs).compile()
            temps[name] = compiled.memory_analysis().temp_size_in_bytes
            fns[name] = lambda c=compiled, p=params[cell], xs=xs: c(p, xs)
        times = bm.interleaved(fns, args.reps)
        for name, (cell, _) in variants.items():
            base = f"{cell} full"
            mem_ratio = temps[name] / temps[base]
            time_ratio = statistics.median(a / z for a, z in zip(times[name], times[base]))
            ms = 1e3 * statistics.median(times[name])
            out.append(
                dict(
                    variant=name,
                    T=t,
                    temp_mib=temps[name] / 2**20,
                    ms=ms,
                    memory_vs_full=mem_ratio,
                    time_vs_full=time_ratio,
                )
            )
            rows.append([name, t, temps[name] / 2**20, mem_ratio, ms, time_ratio])
            print(
                f"T={t} {name}: {temps[name] / 2**20:.1f} MiB ({mem_ratio:.3f}x), "
                f"{ms:.0f} ms ({time_ratio:.2f}x)",
                flush=True,
            )
    table = bm.md_table(
        ["variant", "T", "temp MiB", "memory vs full", "fwd+bwd ms (median)", "time vs full"],
        rows,
    )
    md = (
        f"One layer, B {b}, H {h}, F {f}, float32; forward + backward; medians of {args.reps} "
        "interleaved repetitions; ratios against the same cell's full backward in the same "
        f"round.\n\n{table}"
    )
    bm.write_results("remat", dict(shape=SHAPE, rows=out, argv=sys.argv[1:]), md, Path(args.out))
    print(md)


if __name__ == "__main__":
    main()
