"""LSTM training-step throughput: jaxgen beside Flax, against the GEMM ceiling.

One step = forward through a stacked LSTM, softmax cross-entropy over a
vocabulary of 83 at every step, backward through time, Adam update.

Variants (interleaved, medians):
  * ``jaxgen``          token ids (row gather), hoisted projection, fused BPTT
  * ``jaxgen-autodiff`` the same, but JAX differentiates the scan
  * ``flax``            ``flax.linen.RNN(OptimizedLSTMCell)`` on one-hot inputs,
                        batch-major, as a Flax user writes it

FLOPs are model FLOPs (3x the forward GEMMs, the one-hot input layer counted as
a dense product), the same for every variant, so GFLOP/s is comparable.

    python benchmarks/rnn_step.py            # both shapes, ~3 minutes on 2 cores
    python benchmarks/rnn_step.py --quick    # fewer repetitions
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxgen import benchmarking as bm
from jaxgen import rnn

VOCAB = 83
SHAPES = {
    "char-rnn": dict(layers=2, hidden=512, batch=128, seq=100),
    "small": dict(layers=1, hidden=128, batch=32, seq=50),
}


def model_flops(layers, hidden, batch, seq, vocab=VOCAB):
    per_token = 0
    for n in range(layers):
        fan_in = vocab if n == 0 else hidden
        per_token += 2 * (fan_in + hidden) * 4 * hidden
    per_token += 2 * hidden * vocab
    return 3 * per_token * batch * seq


def xent(logits, targets):
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def make_jaxgen(cfg, backward):
    key = jax.random.key(0)
    k1, k2 = jax.random.split(key)
    params = {
        "lstm": rnn.lstm_stack_init(k1, VOCAB, cfg["hidden"], cfg["layers"]),
        "w_out": jax.random.normal(k2, (cfg["hidden"], VOCAB)) / cfg["hidden"] ** 0.5,
        "b_out": jnp.zeros((VOCAB,)),
    }
    tx = optax.adam(1e-3)

    def loss_fn(p, ids, targets):  # ids, targets [T, B]
        _, ys = rnn.lstm_stack(p["lstm"], ids, backward=backward)
        return xent(ys @ p["w_out"] + p["b_out"], targets)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state, ids, targets):
        p, opt = state
        loss, g = jax.value_and_grad(loss_fn)(p, ids, targets)
        upd, opt = tx.update(g, opt, p)
        return (optax.apply_updates(p, upd), opt), loss

    ids = jax.random.randint(jax.random.key(1), (cfg["seq"], cfg["batch"]), 0, VOCAB)
    targets = jnp.roll(ids, -1, axis=0)
    return step, (params, tx.init(params)), (ids, targets)


class FlaxCharLSTM(nn.Module):
    hidden: int
    layers: int

    @nn.compact
    def __call__(self, x):  # [B, T, V] one-hot
        for _ in range(self.layers):
            x = nn.RNN(nn.OptimizedLSTMCell(self.hidden))(x)
        return nn.Dense(VOCAB)(x)


def make_flax(cfg):
    model = FlaxCharLSTM(cfg["hidden"], cfg["layers"])
    ids = jax.random.randint(jax.random.key(1), (cfg["batch"], cfg["seq"]), 0, VOCAB)
    targets = jnp.roll(ids, -1, axis=1)
    params = model.init(jax.random.key(0), jax.nn.one_hot(ids, VOCAB))
    tx = optax.adam(1e-3)

    def loss_fn(p, ids, targets):
        return xent(model.apply(p, jax.nn.one_hot(ids, VOCAB)), targets)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state, ids, targets):
        p, opt = state
        loss, g = jax.value_and_grad(loss_fn)(p, ids, targets)
        upd, opt = tx.update(g, opt, p)
        return (optax.apply_updates(p, upd), opt), loss

    return step, (params, tx.init(params)), (ids, targets)


class Runner:
    """Holds a donated train state so repeated calls keep stepping."""

    def __init__(self, step, state, batch):
        self.step, self.state, self.batch = step, state, batch
        t0 = time.perf_counter()
        self.state, loss = step(self.state, *batch)
        jax.block_until_ready(loss)
        self.compile_s = time.perf_counter() - t0

    def __call__(self):
        self.state, loss = self.step(self.state, *self.batch)
        return loss


def run_shape(name, cfg, reps):
    runners = {
        "jaxgen": Runner(*make_jaxgen(cfg, "fused")),
        "jaxgen-autodiff": Runner(*make_jaxgen(cfg, "autodiff")),
        "flax": Runner(*make_flax(cfg)),
    }
    times = bm.interleaved(runners, reps=reps)
    flops = model_flops(**cfg)
    tokens = cfg["batch"] * cfg["seq"]
    out = {}
    for k, ts in times.items():
        med = statistics.median(ts)
        out[k] = {
            "step_ms": 1e3 * med,
            "tokens_per_s": tokens / med,
            "gflops": flops / med / 1e9,
            "compile_s": runners[k].compile_s,
            "samples_ms": [1e3 * t for t in ts],
        }
    for k in out:
        out[k]["speed_vs_flax"] = out["flax"]["step_ms"] / out[k]["step_ms"]
    return {"config": cfg, "model_gflop_per_step": flops / 1e9, "variants": out}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    ceiling = bm.gemm_ceiling()
    print(f"float32 GEMM ceiling: {ceiling['median_gflops']:.1f} GFLOP/s (median), "
          f"{ceiling['best_gflops']:.1f} best", flush=True)
    results = {}
    for name, cfg in SHAPES.items():
        reps = (3 if args.quick else 7) if name == "char-rnn" else (10 if args.quick else 40)
        print(f"shape {name}: {cfg} ({reps} interleaved reps)", flush=True)
        results[name] = run_shape(name, cfg, reps)
    ceiling_after = bm.gemm_ceiling()
    ceil = statistics.median([ceiling["median_gflops"], ceiling_after["median_gflops"]])
    rows = []
    for name, r in results.items():
        for k, v in r["variants"].items():
            v["fraction_of_gemm_ceiling"] = v["gflops"] / ceil
            rows.append([name, k, v["tokens_per_s"], v["step_ms"], v["compile_s"], v["gflops"],
                         f"{100 * v['fraction_of_gemm_ceiling']:.0f}%", f"{v['speed_vs_flax']:.2f}x"])
    table = bm.md_table(
        ["shape", "variant", "tokens/s", "step ms", "compile s", "GFLOP/s", "of GEMM ceiling", "vs flax"], rows
    )
    table += (f"\nGEMM ceiling (2048³ float32 matmul, median of before/after): {ceil:.0f} GFLOP/s.\n")
    bm.write_results("rnn_step", {"gemm_ceiling": {"before": ceiling, "after": ceiling_after, "used_gflops": ceil},
                                  "shapes": results}, table, args.out)
    print(table)


if __name__ == "__main__":
    main()
