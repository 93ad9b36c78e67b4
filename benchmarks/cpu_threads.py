"""Which of XLA's CPU ops use the second core: convolutions against matrix products.

The GAN steps (issues 18 and 19) are made of small convolutions and sit at parity with PyTorch on
2 cores while the char-RNN's products do not lag for lack of threads. This measures why: each op
below, in a process allowed both cores and in one pinned to core 0 (``os.sched_setaffinity``
before JAX starts, as ``taskset -c 0`` would), ``--rounds`` rounds alternating which goes first;
per op the median over rounds of each process's median, and the median per-round ratio
``one core / two cores``: 2.0 means the second core halves the time, 1.0 that it is not used.

Ops (float32, jitted, blocking on the result): the CycleGAN residual block's 3x3 convolution
(64 -> 64 at 7x7, batch 16; forward, and forward with both gradients), the same forward at
batch 256, the product that layer is as im2col (784 x 576 x 64) and a 1024^3 product.

    python benchmarks/cpu_threads.py                # 3 rounds, about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPS = [  # name, kind, shape
    ("3x3 convolution 64 -> 64, 7x7, batch 16, forward", "conv", 16),
    ("3x3 convolution 64 -> 64, 7x7, batch 16, forward + both gradients", "conv_grad", 16),
    ("3x3 convolution 64 -> 64, 7x7, batch 256, forward", "conv", 256),
    ("product 784 x 576 x 64 (that layer as im2col)", "dot", (784, 576, 64)),
    ("product 1024 x 1024 x 1024", "dot", (1024, 1024, 1024)),
]


def worker(reps: int) -> dict:
    """This process's median seconds per op (JAX imported here, after the affinity is set)."""
    import jax
    import jax.numpy as jnp

    from jaxgen import benchmarking as bm

    def conv(w, x):
        dn = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)

    k1, k2 = jax.random.split(jax.random.key(0))
    out = []
    for name, kind, shape in OPS:
        if kind == "dot":
            m, k, n = shape
            args = (jax.random.normal(k1, (m, k)), jax.random.normal(k2, (k, n)))
            fn, flops = jax.jit(jnp.matmul), 2.0 * m * k * n
        else:
            args = (jax.random.normal(k1, (3, 3, 64, 64)) * 0.05,
                    jax.random.normal(k2, (shape, 7, 7, 64)))  # fmt: skip
            fn = jax.jit(conv)
            flops = 2.0 * shape * 49 * 64 * 64 * 9
            if kind == "conv_grad":
                fn = jax.jit(jax.grad(lambda w, x: jnp.sum(conv(w, x) ** 2), argnums=(0, 1)))
                flops *= 3
        ts = bm.interleaved({name: lambda fn=fn, args=args: fn(*args)}, reps=reps, warmup=3)[name]
        out.append({"op": name, "s": statistics.median(ts), "flops": flops})
    return {"cores": sorted(os.sched_getaffinity(0)), "ops": out}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="cpu_threads")
    ap.add_argument("--worker", choices=("one", "all"), default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        if args.worker == "one":
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        print(json.dumps(worker(args.reps)))
        return
    from jaxgen import benchmarking as bm

    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("this process may use one core only; run it where two are allowed")
    me = [sys.executable, str(Path(__file__).resolve()), "--reps", str(args.reps), "--worker"]
    runs = bm.interleaved_processes({"two": me + ["all"], "one": me + ["one"]}, args.rounds)
    rows, table = [], []
    for i, (name, _, _) in enumerate(OPS):
        two = [r["ops"][i]["s"] for r in runs["two"]]
        one = [r["ops"][i]["s"] for r in runs["one"]]
        flops = runs["two"][0]["ops"][i]["flops"]
        row = {
            "op": name, "two_cores_s": statistics.median(two), "one_core_s": statistics.median(one),
            "one_over_two": bm.median_ratio(one, two), "two_s_rounds": two, "one_s_rounds": one,
            "gflops_two_cores": flops / statistics.median(two) / 1e9,
        }  # fmt: skip
        rows.append(row)
        table.append([name, row["two_cores_s"] * 1e3, row["one_core_s"] * 1e3,
                      f"{row['one_over_two']:.2f}x", row["gflops_two_cores"]])  # fmt: skip
    payload = {"rounds": args.rounds, "reps": args.reps, "cores": runs["two"][0]["cores"],
               "ops": rows, "command": "python benchmarks/cpu_threads.py " + " ".join(
                   argv if argv is not None else sys.argv[1:])}  # fmt: skip
    md = "\n".join([
        "# XLA's CPU ops on one core and on two\n",
        f"`{payload['command']}`: each op in a process allowed cores {payload['cores']} and in "
        f"one pinned to core {payload['cores'][0]}, {args.rounds} rounds alternating, medians of "
        f"{args.reps} calls; 'second core' is the median per-round ratio one core / two cores "
        "(2.0: the second core halves the time; 1.0: it is not used).\n",
        bm.md_table(["op (float32)", "two cores, ms", "one core, ms", "second core",
                     "GFLOP/s on two cores"], table),  # fmt: skip
        "\nThe diary of the forms tried around it is `cpu_convolutions.md`.\n",
    ])  # fmt: skip
    bm.write_results(args.name, payload, md, args.out)
    print(md)


if __name__ == "__main__":
    main()
