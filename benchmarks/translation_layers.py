"""Where the CycleGAN step's time goes, layer by layer: jaxgen's convolutions against PyTorch's.

Each convolution of the shipped CycleGAN config (``configs/cyclegan_mnist_uci.py``: ResNet
generators of 16 features and 4 blocks at 28x28, PatchGANs (32, 64, 128)), batch 16, timed
forward and backward (the gradients of ``sum(y ** 2)`` for the weights and the input), as
``jaxgen.nn.layers`` runs it and as ``torch.nn.Conv2d`` / ``ConvTranspose2d`` runs it (2 threads).
Each side in its own process (their thread pools fight in one), ``--rounds`` rounds alternating
which goes first; per layer the median over rounds of each side's median, and the median of the
per-round ratios. ``per step``: how many times a CycleGAN step runs the layer (forward with a
backward), so ``count x ms`` says where the step's time goes. A third process per round runs the
jaxgen side pinned to one core: where its times equal the two-core ones, XLA used one core.

    python benchmarks/translation_layers.py               # 3 rounds, about 2 minutes
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH = 16
# name, kind, kernel, C_in, C_out, side, stride, padding, runs per CycleGAN step
LAYERS = [
    ("G stem 7x7, 1 -> 16, 28x28", "conv", 7, 1, 16, 28, 1, 3, 6),
    ("G down 4x4/2, 16 -> 32, 28x28", "conv", 4, 16, 32, 28, 2, 1, 6),
    ("G down 4x4/2, 32 -> 64, 14x14", "conv", 4, 32, 64, 14, 2, 1, 6),
    ("G residual 3x3, 64 -> 64, 7x7", "conv", 3, 64, 64, 7, 1, 1, 48),
    ("G up 4x4/2 transposed, 64 -> 32, 7x7", "convT", 4, 64, 32, 7, 2, 1, 6),
    ("G up 4x4/2 transposed, 32 -> 16, 14x14", "convT", 4, 32, 16, 14, 2, 1, 6),
    ("G head 7x7, 16 -> 1, 28x28", "conv", 7, 16, 1, 28, 1, 3, 6),
    ("D 4x4/2, 1 -> 32, 28x28", "conv", 4, 1, 32, 28, 2, 1, 6),
    ("D 4x4/2, 32 -> 64, 14x14", "conv", 4, 32, 64, 14, 2, 1, 6),
    ("D 4x4/1, 64 -> 128, 7x7", "conv", 4, 64, 128, 7, 1, 1, 6),
]


def _median_s(fn, n=30, reps=7):
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times)


def jax_worker() -> dict:
    import jax
    import jax.numpy as jnp

    from jaxgen.nn import layers

    out = {}
    for name, kind, k, ci, co, side, stride, pad, _ in LAYERS:
        x = jax.random.normal(jax.random.key(0), (BATCH, side, side, ci))
        if kind == "conv":
            p = layers.conv_init(jax.random.key(1), k, ci, co)

            def f(p, x, stride=stride, pad=pad):
                return layers.conv(p, x, stride=stride, padding=pad)
        else:
            p = layers.conv_transpose_init(jax.random.key(1), k, ci, co)

            def f(p, x, stride=stride):
                return layers.conv_transpose(p, x, stride=stride)

        g = jax.jit(jax.grad(lambda p, x, f=f: jnp.sum(f(p, x) ** 2), argnums=(0, 1)))
        out[name] = _median_s(lambda g=g, p=p, x=x: jax.block_until_ready(g(p, x)))
    return out


def torch_worker(threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    out = {}
    for name, kind, k, ci, co, side, stride, pad, _ in LAYERS:
        x = torch.randn(BATCH, ci, side, side, requires_grad=True)
        if kind == "conv":
            m = torch.nn.Conv2d(ci, co, k, stride, pad)
        else:
            m = torch.nn.ConvTranspose2d(ci, co, k, stride, pad)

        def step(m=m, x=x):
            x.grad = None
            m.zero_grad(set_to_none=True)
            (m(x) ** 2).sum().backward()

        out[name] = _median_s(step)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="translation_layers")
    ap.add_argument("--worker", choices=("jax", "torch"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--one-core", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one_core:  # before jax starts its thread pool: does XLA use the second core here?
        import os

        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    if args.worker:
        res = jax_worker() if args.worker == "jax" else torch_worker(args.threads)
        print(json.dumps(res))
        return

    from jaxgen import benchmarking as bm

    rounds = []
    for r in range(args.rounds):
        order = ("jax", "torch") if r % 2 == 0 else ("torch", "jax")
        got = {}
        for side in (*order, "jax-1core"):
            cmd = [sys.executable, __file__, "--worker", side.split("-")[0], "--threads",
                   str(args.threads)] + (["--one-core"] if side == "jax-1core" else [])  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            got[side] = json.loads(done.stdout.strip().splitlines()[-1])
        rounds.append(got)
        print(f"round {r + 1}: done", flush=True)
    rows, payload = [], []
    for name, *_, count in LAYERS:
        j = statistics.median(x["jax"][name] for x in rounds)
        t = statistics.median(x["torch"][name] for x in rounds)
        one = statistics.median(x["jax-1core"][name] for x in rounds)
        ratio = statistics.median(x["torch"][name] / x["jax"][name] for x in rounds)
        payload.append(dict(layer=name, jax_ms=1e3 * j, jax_one_core_ms=1e3 * one,
                            torch_ms=1e3 * t, speed=ratio, count=count))  # fmt: skip
        rows.append([name, count, 1e3 * j, 1e3 * one, 1e3 * t, f"{ratio:.2f}x",
                     1e3 * count * (j - t)])  # fmt: skip
    table = bm.md_table(
        ["layer (batch 16)", "per step", "jaxgen ms", "jaxgen on 1 core ms", "PyTorch ms",
         "jaxgen speed / PyTorch",
         "per step, jaxgen - PyTorch ms"],
        rows,
    )  # fmt: skip
    md = (
        "# The CycleGAN step's convolutions: jaxgen against PyTorch\n\n"
        f"Forward + weight and input gradients, {args.rounds} rounds, each side in its own "
        f"process (PyTorch {args.threads} threads); medians, ratio = median of per-round ratios "
        "(above 1: jaxgen faster). 'per step': runs of the layer in one CycleGAN step (6 "
        "generator passes, 6 discriminator passes); the last column weights the difference "
        "by it (the discriminator passes of the generators' update need no weight gradient, "
        "so it overstates those rows a little). 'jaxgen on 1 core': the same, in a third process "
        "pinned to one core: where it equals the two-core time, XLA ran the layer on one core."
        "\n\n" + table
    )
    bm.write_results(args.name, {"rounds": rounds, "layers": payload}, md, args.out)
    print(md)


if __name__ == "__main__":
    main()
