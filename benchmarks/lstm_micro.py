r"""Small pieces of the LSTM step, each form against the one it replaced, inside the time loop.

What the char-RNN profile (``benchmarks/charrnn_profile.py``) pointed at, measured in isolation
at the CPU recipe's shape (batch 32, hidden 256, 64 steps; medians of interleaved calls):

* ``gates``: the LSTM's elementwise step on ``z [B, 4H]`` in a ``lax.scan``: a sigmoid or tanh
  on each quarter (``recurrence.lstm_activate``) against one tanh over the whole width with
  per-column constants (``recurrence.lstm_gates``);
* ``forward``: one layer's forward scan with either gate form (the matrix product included);
* ``backward``: the hand-written backward scan's product ``dz @ W_hh^T``, as one
  ``[B, 4H] x [4H, H]`` product of the concatenated gate gradients or as four ``[B, H] x [H, H]``;
* ``products``: the per-step product alone, ``[B, H] x [H, 4H]`` (forward) against
  ``[B, 4H] x [4H, H]`` (backward), with the same FLOPs;
* ``bias``: one layer's forward and backward (autodiff of the scan) with the bias added to
  ``zx [T, B, 4H]`` before the loop or inside it (tried for the fused path; no gain, not kept);
* ``gather``: the token-id projection ``take(w_ih, ids)`` with ``mode="fill"`` (JAX's default)
  against ``mode="clip"``;
* ``dropout``: a threefry mask for ``[T, B, H]`` against the ``rbg`` generator;
* ``unroll``: one layer's forward and backward at ``unroll`` 1, 2, 4;
* ``wavefront`` (only with ``--groups wavefront``): a 2-layer forward pass as two scans (layer 1,
  one large input projection, layer 2) against one scan that steps layer 1 at ``t`` beside
  layer 2 at ``t - 1``, with two products per iteration or one product of a block matrix;
* ``step``: the whole char-RNN train step (``--layers`` layers, no dropout) compiled with each
  gate form: how much of the ``gates`` gain is left once XLA fuses the whole step;
* ``products (PyTorch)``: the two per-step products in a Python loop in PyTorch (its own
  process, 2 threads; left out without torch): what MKL makes of the same small products.

    python benchmarks/lstm_micro.py           # about 2 minutes on 2 cores
    python benchmarks/lstm_micro.py --reps 10

Writes lstm_micro.{json,md} to benchmarks/results/ (or --out).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxgen import benchmarking as bm
from jaxgen import recurrence, rnn

ROOT = Path(__file__).resolve().parents[1]


def gate_loops(T, B, H):
    """The elementwise LSTM step in a scan, with each gate form."""
    keys = jax.random.split(jax.random.key(0), 2)
    zx = jax.random.normal(keys[0], (T, B, 4 * H))
    h0 = jnp.zeros((B, H))

    def loop(activate):
        def f(zx):
            def body(carry, z):
                h, c = carry
                h_new, c_new = recurrence.lstm_update(activate(z), c)
                return (h_new + h, c_new), None

            return jax.lax.scan(body, (h0, h0), zx)[0]

        return jax.jit(f), (zx,)

    quarters = loop(lambda z: recurrence.lstm_activate(*jnp.split(z, 4, axis=-1)))
    return {"sigmoid per quarter": quarters, "one tanh (lstm_gates)": loop(recurrence.lstm_gates)}


def forward_loops(T, B, H):
    keys = jax.random.split(jax.random.key(1), 2)
    w = jax.random.normal(keys[0], (H, 4 * H)) / H**0.5
    zx = jax.random.normal(keys[1], (T, B, 4 * H))
    h0 = jnp.zeros((B, H))

    def loop(activate):
        def f(w, zx):
            def body(carry, z):
                h, c = carry
                h, c = recurrence.lstm_update(activate(z + h @ w), c)
                return (h, c), h

            return jax.lax.scan(body, (h0, h0), zx)

        return jax.jit(f), (w, zx)

    quarters = loop(lambda z: recurrence.lstm_activate(*jnp.split(z, 4, axis=-1)))
    return {"sigmoid per quarter": quarters, "one tanh (lstm_gates)": loop(recurrence.lstm_gates)}


def backward_loops(T, B, H):
    keys = jax.random.split(jax.random.key(2), 5)
    w = jax.random.normal(keys[0], (H, 4 * H)) / H**0.5
    acts = jax.nn.sigmoid(jax.random.normal(keys[1], (T, B, 4 * H)))
    cs, c_prev, dys = (jax.random.normal(k, (T, B, H)) for k in keys[2:])
    h0 = jnp.zeros((B, H))

    def loop(split):
        def f(w, acts, cs, c_prev, dys):
            w_t = jnp.split(w.T, 4, axis=0)

            def body(carry, inputs):
                dh, dc = carry
                dy, a, c_new, cp = inputs
                gates = jnp.split(a, 4, axis=-1)
                dz, dcp = recurrence.lstm_gate_grads(gates, cp, jnp.tanh(c_new), dh + dy, dc)
                if split:
                    return (sum(d @ wk for d, wk in zip(dz, w_t)), dcp), dz
                dz = jnp.concatenate(dz, axis=-1)
                return (dz @ w.T, dcp), dz

            return jax.lax.scan(body, (h0, h0), (dys, acts, cs, c_prev), reverse=True)

        return jax.jit(f), (w, acts, cs, c_prev, dys)

    return {"concatenate, one product": loop(False), "four products": loop(True)}


def product_loops(T, B, H):
    keys = jax.random.split(jax.random.key(3), 2)
    w = jax.random.normal(keys[0], (H, 4 * H)) / H**0.5
    xs = jax.random.normal(keys[1], (T, B, 4 * H))
    h0 = jnp.zeros((B, H))

    def fwd(w, xs):  # [B, H] x [H, 4H] each step
        def body(c, x):
            z = c @ w + x
            return z[:, :H] + z[:, H : 2 * H] + z[:, 2 * H : 3 * H] + z[:, 3 * H :], None

        return jax.lax.scan(body, h0, xs)[0]

    def bwd(w, xs):  # [B, 4H] x [4H, H] each step
        wt = w.T
        return jax.lax.scan(lambda c, x: (c + x @ wt, None), h0, xs)[0]

    return {
        "[B, H] x [H, 4H] (forward)": (jax.jit(fwd), (w, xs)),
        "[B, 4H] x [4H, H] (backward)": (jax.jit(bwd), (w, xs)),
    }


def bias_loops(T, B, H):
    keys = jax.random.split(jax.random.key(4), 3)
    w = jax.random.normal(keys[0], (H, 4 * H)) / H**0.5
    b = jax.random.normal(keys[1], (4 * H,))
    zx = jax.random.normal(keys[2], (T, B, 4 * H))
    h0 = jnp.zeros((B, H))

    def run(w, b, zx, inside):
        def body(carry, z):
            h, c = carry
            h, c = recurrence.lstm_update(recurrence.lstm_gates(z + h @ w + inside * b), c)
            return (h, c), h

        return jax.lax.scan(body, (h0, h0), zx + (1 - inside) * b)[1].sum()

    def grad(inside):
        return jax.jit(jax.grad(lambda w, b, zx: run(w, b, zx, inside), argnums=(0, 1, 2)))

    return {"outside the loop": (grad(0), (w, b, zx)), "inside": (grad(1), (w, b, zx))}


def gather_loops(T, B, H, vocab=65):
    w = jax.random.normal(jax.random.key(6), (vocab, 4 * H))
    ids = jax.random.randint(jax.random.key(7), (T, B), 0, vocab)
    b = jnp.zeros((4 * H,))
    return {
        mode: (jax.jit(lambda w, ids, b, m=mode: jnp.take(w, ids, axis=0, mode=m) + b), (w, ids, b))
        for mode in ("fill", "clip")
    }


def dropout_loops(T, B, H):
    key = jax.random.key(8)

    def rbg(k):
        data = jax.random.key_data(k)
        k = jax.random.wrap_key_data(jnp.concatenate([data, data + jnp.uint32(1)]), impl="rbg")
        return jax.random.bernoulli(k, 0.9, (T, B, H))

    return {
        "threefry": (jax.jit(lambda k: jax.random.bernoulli(k, 0.9, (T, B, H))), (key,)),
        "rbg": (jax.jit(rbg), (key,)),
    }


def unroll_loops(T, B, H):
    p = rnn.lstm_init(jax.random.key(9), H, H)
    xs = jax.random.normal(jax.random.key(10), (T, B, H))
    out = {}
    for u in (1, 2, 4):
        g = jax.jit(jax.grad(lambda p, x, u=u: rnn.lstm(p, x, unroll=u)[1].sum(), argnums=(0, 1)))
        out[f"unroll {u}"] = (g, (p, xs))
    return out


def step_loops(T, B, H, layers=2, vocab=65):
    import functools

    import numpy as np

    from jaxgen.charrnn import train as charrnn_train
    from jaxgen.config import load_config

    cfg = load_config(f"{ROOT / 'configs' / 'charrnn.py'}:cpu")
    cfg.model.layers, cfg.model.hidden, cfg.train.batch, cfg.train.seq_len = layers, H, B, T
    tx = charrnn_train.make_optimizer(cfg, 10_000)
    state = charrnn_train.init_state(cfg, vocab, tx)
    rng = np.random.default_rng(0)
    ids, targets = (jnp.asarray(rng.integers(0, vocab, (T, B)), jnp.int32) for _ in range(2))
    args = (state, ids, targets, jnp.asarray(False))
    out = {}
    for name, gates in [
        ("sigmoid per quarter", lambda z: recurrence.lstm_activate(*jnp.split(z, 4, axis=-1))),
        ("one tanh (lstm_gates)", recurrence.lstm_gates),
    ]:
        kept = recurrence.lstm_gates
        recurrence.lstm_gates = gates  # traced (and compiled) now, with this form
        try:
            fn = jax.jit(
                functools.partial(charrnn_train.train_step, tx=tx, dropout_rate=0.0),
            )
            jax.block_until_ready(fn(*args))
        finally:
            recurrence.lstm_gates = kept
        out[name] = (fn, args)
    return out


def wavefront_loops(T, B, H):
    keys = jax.random.split(jax.random.key(11), 5)
    w1, w2h, w2i = (jax.random.normal(k, (H, 4 * H)) / H**0.5 for k in keys[:3])
    zx1 = jax.random.normal(keys[3], (T, B, 4 * H))
    b2 = jax.random.normal(keys[4], (4 * H,))
    zero = jnp.zeros((B, H))

    def cell(z, c):
        return recurrence.lstm_update(recurrence.lstm_gates(z), c)

    def sequential(w1, w2h, w2i, zx1):
        def layer(w, zx):
            def body(carry, z):
                h, c = cell(z + carry[0] @ w, carry[1])
                return (h, c), h

            return jax.lax.scan(body, (zero, zero), zx)[1]

        y1 = layer(w1, zx1)
        return layer(w2h, y1 @ w2i + b2)

    def wavefront(w1, w2h, w2i, zx1, block):
        w_block = jnp.concatenate([w2i, w2h], axis=0)  # [2H, 4H]: [y1, h2] @ it

        def body(carry, inputs):
            (h1, c1, h2, c2), (z1, t) = carry, inputs
            if block:
                z2 = jnp.concatenate([h1, h2], axis=-1) @ w_block + b2
            else:
                z2 = h1 @ w2i + h2 @ w2h + b2
            n2, m2 = cell(z2, c2)  # layer 2 at t - 1 reads layer 1's output at t - 1
            n1, m1 = cell(z1 + h1 @ w1, c1)
            first = t == 0
            n2, m2 = jnp.where(first, h2, n2), jnp.where(first, c2, m2)
            return (n1, m1, n2, m2), n2

        steps = jnp.arange(T)
        (h1, c1, h2, c2), ys = jax.lax.scan(body, (zero, zero, zero, zero), (zx1, steps))
        last, _ = cell(h1 @ w2i + h2 @ w2h + b2, c2)
        return jnp.concatenate([ys[1:], last[None]], axis=0)

    args = (w1, w2h, w2i, zx1)
    return {
        "two scans": (jax.jit(sequential), args),
        "wavefront, two products": (jax.jit(lambda *a: wavefront(*a, False)), args),
        "wavefront, one block product": (jax.jit(lambda *a: wavefront(*a, True)), args),
    }


GROUPS = {
    "gates": gate_loops,
    "forward": forward_loops,
    "backward": backward_loops,
    "products": product_loops,
    "bias": bias_loops,
    "gather": gather_loops,
    "dropout": dropout_loops,
    "unroll": unroll_loops,
    "step": step_loops,
}
EXTRA_GROUPS = {"wavefront": wavefront_loops}


def torch_products(T, B, H, reps, threads=2) -> dict:
    """The ``products`` group in PyTorch (run in its own process: no JAX here)."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    w = torch.randn(H, 4 * H) / H**0.5
    wt = w.t().contiguous()
    xs = torch.randn(T, B, 4 * H)

    def fwd():
        c = torch.zeros(B, H)
        for t in range(T):
            z = c @ w + xs[t]
            c = z[:, :H] + z[:, H : 2 * H] + z[:, 2 * H : 3 * H] + z[:, 3 * H :]
        return c

    def bwd():
        c = torch.zeros(B, H)
        for t in range(T):
            c = c + xs[t] @ wt
        return c

    out = {}
    for name, fn in [("[B, H] x [H, 4H] (forward)", fwd), ("[B, 4H] x [4H, H] (backward)", bwd)]:
        fn()
        fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = times
    return {"torch_version": torch.__version__, "threads": threads, "times": out}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2, help="layers of the step group's char-RNN")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="lstm_micro")
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--groups", default="", help=f"comma-separated, of {', '.join([*GROUPS, 'wavefront'])}"
    )
    args = ap.parse_args(argv)
    shape = (args.seq, args.batch, args.hidden)
    if args.torch_worker:
        print(json.dumps(torch_products(*shape, args.reps)))
        return
    results, rows = {}, []
    chosen = args.groups.split(",") if args.groups else list(GROUPS)
    every = {**GROUPS, **EXTRA_GROUPS}
    for group in chosen:
        make = every[group]
        variants = make(*shape, **({"layers": args.layers} if group == "step" else {}))
        calls = {k: (lambda f=f, a=a: f(*a)) for k, (f, a) in variants.items()}
        times = bm.interleaved(calls, reps=args.reps, warmup=2)
        meds = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        first = next(iter(meds.values()))
        results[group] = {
            k: {"ms": m, "samples_ms": [1e3 * x for x in times[k]]} for k, m in meds.items()
        }
        for k, m in meds.items():
            rows.append([group, k, f"{m:.2f}", f"{first / m:.2f}x"])
            print(group, k, f"{m:.2f} ms", flush=True)
    if "products" not in chosen:
        pass
    elif importlib.util.find_spec("torch") is not None:
        me = [sys.executable, str(Path(__file__).resolve()), "--torch-worker"]
        me += ["--seq", str(args.seq), "--batch", str(args.batch), "--hidden", str(args.hidden)]
        proc = subprocess.run(me + ["--reps", str(args.reps)], capture_output=True, text=True)
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        meds = {k: 1e3 * statistics.median(v) for k, v in got["times"].items()}
        xla = results["products"]
        results["products (PyTorch)"] = {
            k: {"ms": m, "samples_ms": [1e3 * x for x in got["times"][k]]} for k, m in meds.items()
        }
        results["products (PyTorch)"]["torch_version"] = got["torch_version"]
        for k, m in meds.items():
            rows.append(
                [
                    f"products (PyTorch {got['torch_version']})",
                    k,
                    f"{m:.2f}",
                    f"{xla[k]['ms'] / m:.2f}x XLA's",
                ]
            )
            print("products (PyTorch)", k, f"{m:.2f} ms", flush=True)
    else:
        print("torch is not installed: the PyTorch rows are left out", flush=True)
    table = bm.md_table(["what", "form", "ms (median)", "speed vs the first form"], rows)
    table += (
        f"\nShape: {args.seq} steps, batch {args.batch}, hidden {args.hidden} "
        f"({args.layers} layers in the step group); "
        f"{args.reps} interleaved calls of each form, medians.\n"
    )
    bm.write_results(
        args.name, {"shape": shape, "reps": args.reps, "groups": results}, table, args.out
    )
    print(table)


if __name__ == "__main__":
    main()
