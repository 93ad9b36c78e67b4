"""One LSTM layer: lax.scan vs the fused Pallas kernel (vs cuDNN on CUDA).

For each shape (batch B, hidden H = input size F, sequence T) and each
variant, times the forward pass (``ys``) and the forward+backward pass
(gradients of ``sum(ys * ct)`` w.r.t. all weights and the input), interleaved,
medians. Variants:

  * ``scan``   ``rnn.lstm(mode="scan")``: hoisted input GEMM, lax.scan, fused BPTT
  * ``pallas`` ``rnn.lstm(mode="pallas")``: hoisted input GEMM, fused Pallas kernel
               (interpret mode on CPU: correct but very slow, not a kernel timing)
  * ``cudnn``  ``jax.experimental.rnn.lstm`` (cuDNN), CUDA only

Reported: step time, model FLOP/s (forward ``2*T*B*(F+H)*4H``, forward+backward
3x that) and model bytes/s (the HBM traffic a fused implementation cannot avoid:
inputs, hoisted projection written and read, outputs, weights; for
forward+backward also the float32 residuals ``6H`` per step and row written and
read, and the same traffic again for the gradients). ``--check`` also records the
largest relative difference of the kernel's outputs and gradients from scan.

    python benchmarks/kernels.py --quick      # CPU: one tiny shape, < 2 minutes
    python benchmarks/kernels.py --check      # GPU/TPU: the full grid
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import benchmarking as bm
from jaxgen import rnn

# seq outermost, hidden from small to large (on an H200 the Triton kernel compiled in 12 s at
# H 128 and took over two minutes at H 512): a run cut short by --max-seconds keeps the cheap ones
FULL = dict(batch=(64, 256, 8), hidden=(128, 512, 1024), seq=(500, 50))
QUICK = dict(batch=(8,), hidden=(32,), seq=(10,))


def flops(T, B, H, F, train):
    fwd = 2.0 * T * B * (F + H) * 4 * H
    return 3 * fwd if train else fwd


def model_bytes(T, B, H, F, itemsize, train):
    fwd = itemsize * (T * B * F + 2 * T * B * 4 * H + T * B * H + 4 * H * (F + H))
    if not train:
        return fwd
    return 2 * fwd + 4 * 2 * T * B * 6 * H


def cudnn_available():
    if jax.default_backend() != "gpu":
        return False
    try:
        from jax.experimental import rnn as jrnn  # noqa: F401
    except ImportError:
        return False
    return True


def make_variants(T, B, H, dtype, with_cudnn):
    F = H
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    p = jax.tree.map(lambda a: a.astype(dtype), rnn.lstm_init(k1, F, H))
    xs = jax.random.normal(k2, (T, B, F), dtype)
    ct = jax.random.normal(k3, (T, B, H), dtype)
    fns = {}
    for mode in ("scan", "pallas"):

        def fwd(p, xs, mode=mode):
            return rnn.lstm(p, xs, mode=mode)[1]

        # the cotangent is an argument: closed over, it would be a [T, B, H] constant baked into
        # the program (a first GPU run measured such programs far slower than expected)
        def train(p, xs, ct, mode=mode):
            return jax.grad(
                lambda p, xs: jnp.sum(fwd(p, xs).astype(jnp.float32) * ct), argnums=(0, 1)
            )(p, xs)

        fns[mode] = (jax.jit(fwd), jax.jit(train), (p, xs), (p, xs, ct))
    if with_cudnn:
        from jax.experimental import rnn as jrnn

        n = jrnn.get_num_params_in_lstm(F, H, 1, False)
        w = (0.05 * jax.random.normal(k1, (n,))).astype(dtype)
        xb = jnp.swapaxes(xs, 0, 1)  # cuDNN is batch-major
        h0 = jnp.zeros((1, B, H), dtype)
        lens = jnp.full((B,), T, jnp.int32)

        def cfwd(w, xb):
            return jrnn.lstm(xb, h0, h0, w, lens, F, H, 1, 0.0, False)[0]

        def ctrain(w, xb, ctb):
            return jax.grad(
                lambda w, xb: jnp.sum(cfwd(w, xb).astype(jnp.float32) * ctb), argnums=(0, 1)
            )(w, xb)

        fns["cudnn"] = (jax.jit(cfwd), jax.jit(ctrain), (w, xb), (w, xb, jnp.swapaxes(ct, 0, 1)))
    return fns


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def run_shape(T, B, H, dtype, reps, check):
    # cuDNN's RNN in jax.experimental.rnn takes float32 only
    fns = make_variants(T, B, H, dtype, cudnn_available() and dtype == jnp.float32)
    itemsize = jnp.dtype(dtype).itemsize
    out = {"T": T, "B": B, "H": H, "F": H, "dtype": jnp.dtype(dtype).name, "variants": {}}
    for phase, idx in (("forward", 0), ("forward+backward", 1)):
        calls, compile_s = {}, {}
        for name, f in fns.items():
            fn, args = f[idx], f[2 + idx]
            t0 = time.perf_counter()
            bm.block(fn(*args))
            compile_s[name] = time.perf_counter() - t0
            calls[name] = lambda fn=fn, args=args: fn(*args)
        times = bm.interleaved(calls, reps=reps, warmup=0)
        train = idx == 1
        for name, ts in times.items():
            med = statistics.median(ts)
            out["variants"].setdefault(name, {})[phase] = {
                "ms": 1e3 * med,
                "gflops": flops(T, B, H, H, train) / med / 1e9,
                "gbytes_per_s": model_bytes(T, B, H, H, itemsize, train) / med / 1e9,
                "first_call_s": compile_s[name],
                "samples_ms": [1e3 * t for t in ts],
            }
    if check:
        s, p = fns["scan"], fns["pallas"]
        gs, gp = jax.tree.leaves(s[1](*s[3])), jax.tree.leaves(p[1](*p[3]))
        out["pallas_vs_scan_rel_err"] = {
            "forward": rel_err(p[0](*p[2]), s[0](*s[2])),
            "forward+backward": max(rel_err(a, b) for a, b in zip(gp, gs)),
        }
        # the size of what is compared (a zero gradient would compare equal)
        out["scan_grad_abs_max"] = max(float(jnp.max(jnp.abs(g))) for g in gs)
    return out


def _write(shapes, backend, dtype, args, complete):
    """The table and the JSON of the shapes measured so far."""
    rows = []
    for s in shapes:
        base = s["variants"]["scan"]
        for name, v in s["variants"].items():
            for phase in ("forward", "forward+backward"):
                r = v[phase]
                rows.append(
                    [
                        s["T"],
                        s["B"],
                        s["H"],
                        name,
                        phase,
                        r["ms"],
                        r["gflops"],
                        r["gbytes_per_s"],
                        f"{base[phase]['ms'] / r['ms']:.2f}x",
                    ]
                )
    table = bm.md_table(
        ["T", "B", "H", "variant", "pass", "ms", "GFLOP/s", "GB/s (model)", "speed vs scan"], rows
    )
    if backend == "cpu":
        table += (
            "\nCPU: `pallas` runs in Pallas *interpret* mode (the kernel body executed as "
            "XLA ops, for correctness tests), so its times say nothing about the kernel on "
            'TPU/GPU; they are why `mode="auto"` picks scan on CPU.\n'
        )
    if not complete:
        table += "\nCut short by --max-seconds: the grid's other shapes were not run.\n"
    if not cudnn_available():
        table += "\ncuDNN (`jax.experimental.rnn`) needs a CUDA backend: not measured here.\n"
    path = bm.write_results(
        "kernels",
        {"dtype": dtype.name, "quick": args.quick, "complete": complete, "shapes": shapes},
        table,
        args.out,
    )
    return table, path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="one tiny shape (CPU: interpret mode is slow)"
    )
    ap.add_argument("--check", action="store_true", help="also compare kernel and scan numerically")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="start no new shape after this many seconds (results so far are kept)",
    )
    ap.add_argument("--seq", default=None, help="comma-separated sequence lengths for the grid")
    ap.add_argument("--hidden", default=None, help="comma-separated hidden sizes for the grid")
    args = ap.parse_args(argv)
    backend = jax.default_backend()
    if backend == "cpu" and not args.quick:
        ap.error(
            "on CPU the kernel runs in interpret mode: use --quick (the full grid is for GPU/TPU)"
        )
    grid = dict(QUICK if args.quick else FULL)
    if args.seq:
        grid["seq"] = tuple(int(t) for t in args.seq.split(","))
    if args.hidden:
        grid["hidden"] = tuple(int(h) for h in args.hidden.split(","))
    reps = args.reps or (3 if args.quick else 10)
    dtype = jnp.dtype(args.dtype)
    shapes, t0, complete = [], time.perf_counter(), True
    for T, H, B in itertools.product(grid["seq"], grid["hidden"], grid["batch"]):
        if args.max_seconds and shapes and time.perf_counter() - t0 > args.max_seconds:
            print(f"--max-seconds {args.max_seconds} reached: stopping before T={T} B={B} H={H}")
            complete = False
            break
        print(f"T={T} B={B} H={H} {dtype.name}", flush=True)
        shapes.append(run_shape(T, B, H, dtype, reps, args.check))
        # written after every shape, so a run cut short keeps what it measured
        table, path = _write(shapes, backend, dtype, args, complete=False)
    table, path = _write(shapes, backend, dtype, args, complete=complete)
    print(table)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
