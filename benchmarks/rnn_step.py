"""LSTM training-step throughput: jaxgen beside Flax and PyTorch, against the GEMM ceiling.

One step = forward through a stacked LSTM, softmax cross-entropy over a
vocabulary of 83 at every step, backward through time, Adam update.

Variants (medians):
  * ``jaxgen``          token ids (row gather of ``w_ih``), hoisted projection, fused BPTT
  * ``jaxgen-native``   the same, with both time loops in the compiled CPU kernel
                        (``mode="native"``, :mod:`jaxgen.native`)
  * ``jaxgen-autodiff`` the same as ``jaxgen``, but JAX differentiates the scan
  * ``jaxgen-onehot``   jaxgen on one-hot float inputs (the layer-0 projection is a real
                        GEMM): the same input as Flax and PyTorch get
  * ``flax``            ``flax.linen.RNN(OptimizedLSTMCell)`` on one-hot inputs,
                        batch-major, as a Flax user writes it
  * ``pytorch``         ``torch.nn.LSTM`` (time-major) + ``nn.Linear`` on one-hot inputs,
                        Adam, 2 threads (column left out, with a message, without torch)

So ``jaxgen`` vs ``flax`` compares each library as its users feed it (ids vs one-hot),
and ``jaxgen-onehot`` vs ``flax`` / ``pytorch`` compares the same input.

The JAX variants run interleaved in one process; PyTorch runs in its own process
(in one process with JAX their thread pools fight and PyTorch slows 30-80x). Each
round runs one JAX process and one PyTorch process, alternating which goes first;
each reports medians; the table gives the median over rounds, and ratios against
PyTorch are the median of the per-round ratios.

GFLOP/s are *executed* FLOPs (the matrix products the variant runs: forward,
input and weight gradients; no input gradient for the data; the row gather of
the ids variants counts zero; elementwise work not counted), so they differ
between the ids and one-hot variants; tokens/s is the like-for-like measure.

Shapes: ``char-rnn`` (the classic recipe, 2 x 512, B 128, T 100), ``cpu`` (the CPU recipe,
``configs/charrnn.py:cpu``: 2 x 256, B 32, T 64) and ``small`` (1 x 128, B 32, T 50).

``--old REV`` also times the ``jaxgen`` variant of git revision ``REV`` (a temporary worktree,
its own process in every round, named ``jaxgen@REV``): a change's before and after in one run.

    python benchmarks/rnn_step.py                  # all shapes, 3 rounds, ~15 min on 2 quiet cores
    python benchmarks/rnn_step.py --old f63a23a    # ... and jaxgen at f63a23a beside them
    python benchmarks/rnn_step.py --quick          # 1 round, fewer repetitions
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 83
SHAPES = {
    "char-rnn": dict(layers=2, hidden=512, batch=128, seq=100),
    "cpu": dict(layers=2, hidden=256, batch=32, seq=64),
    "small": dict(layers=1, hidden=128, batch=32, seq=50),
}
INPUTS = {
    "jaxgen": "ids",
    "jaxgen-native": "ids",
    "jaxgen-autodiff": "ids",
    "jaxgen-onehot": "one-hot",
    "flax": "one-hot",
    "pytorch": "one-hot",
}
TORCH_THREADS = 2


def executed_flops(layers, hidden, batch, seq, vocab=VOCAB, *, gather):
    """Matrix-product FLOPs one train step executes (see the module docstring)."""
    H, per_token = hidden, 0
    for n in range(layers):
        per_token += 3 * 2 * H * 4 * H  # h @ W_hh forward; dz @ W_hh^T and dW_hh backward
        if n == 0:
            per_token += (
                0 if gather else 2 * 2 * vocab * 4 * H
            )  # forward + dW_ih (no gradient for the data)
        else:
            per_token += 3 * 2 * H * 4 * H  # forward, dW_ih, dx
    per_token += 3 * 2 * H * vocab  # output layer: forward, dW, dx
    return per_token * batch * seq


# --------------------------------------------------------------------------- JAX process


def _jax_variants(cfg):
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    from jaxgen import rnn

    def xent(logits, targets):
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    def make_step(loss_fn, params):
        tx = optax.adam(1e-3)

        @functools.partial(jax.jit, donate_argnums=0)
        def step(state, ids, targets):
            p, opt = state
            loss, g = jax.value_and_grad(loss_fn)(p, ids, targets)
            upd, opt = tx.update(g, opt, p)
            return (optax.apply_updates(p, upd), opt), loss

        return step, (params, tx.init(params))

    def make_jaxgen(backward, onehot, mode="scan"):
        k1, k2 = jax.random.split(jax.random.key(0))
        params = {
            "lstm": rnn.lstm_stack_init(k1, VOCAB, cfg["hidden"], cfg["layers"]),
            "w_out": jax.random.normal(k2, (cfg["hidden"], VOCAB)) / cfg["hidden"] ** 0.5,
            "b_out": jnp.zeros((VOCAB,)),
        }

        def loss_fn(p, ids, targets):  # ids, targets [T, B]
            xs = jax.nn.one_hot(ids, VOCAB) if onehot else ids
            _, ys = rnn.lstm_stack(p["lstm"], xs, backward=backward, mode=mode)
            return xent(ys @ p["w_out"] + p["b_out"], targets)

        ids = jax.random.randint(jax.random.key(1), (cfg["seq"], cfg["batch"]), 0, VOCAB)
        return (*make_step(loss_fn, params), (ids, jnp.roll(ids, -1, axis=0)))

    class FlaxCharLSTM(nn.Module):
        hidden: int
        layers: int

        @nn.compact
        def __call__(self, x):  # [B, T, V] one-hot
            for _ in range(self.layers):
                x = nn.RNN(nn.OptimizedLSTMCell(self.hidden))(x)
            return nn.Dense(VOCAB)(x)

    def make_flax():
        model = FlaxCharLSTM(cfg["hidden"], cfg["layers"])
        ids = jax.random.randint(jax.random.key(1), (cfg["batch"], cfg["seq"]), 0, VOCAB)
        params = model.init(jax.random.key(0), jax.nn.one_hot(ids, VOCAB))

        def loss_fn(p, ids, targets):
            return xent(model.apply(p, jax.nn.one_hot(ids, VOCAB)), targets)

        return (*make_step(loss_fn, params), (ids, jnp.roll(ids, -1, axis=1)))

    return {
        "jaxgen": lambda: make_jaxgen("fused", False),
        "jaxgen-native": lambda: make_jaxgen("fused", False, "native"),
        "jaxgen-autodiff": lambda: make_jaxgen("autodiff", False),
        "jaxgen-onehot": lambda: make_jaxgen("fused", True),
        "flax": make_flax,
    }


class Runner:
    """Holds a donated train state so repeated calls keep stepping."""

    def __init__(self, step, state, batch):
        import jax

        self.step, self.state, self.batch = step, state, batch
        t0 = time.perf_counter()
        self.state, loss = step(self.state, *batch)
        jax.block_until_ready(loss)
        self.compile_s = time.perf_counter() - t0

    def __call__(self):
        self.state, loss = self.step(self.state, *self.batch)
        return loss


def jax_worker(shape: str, reps: int, variants: str | None = None) -> dict:
    """The JAX variants at ``shape`` (all, or the comma-separated ``variants``), interleaved in
    this process: median seconds per step."""
    from jaxgen import benchmarking as bm

    makers = _jax_variants(SHAPES[shape])
    if variants:
        makers = {k: makers[k] for k in variants.split(",")}
    runners = {k: Runner(*make()) for k, make in makers.items()}
    times = bm.interleaved(runners, reps=reps)
    return {
        k: {"s_per_step": statistics.median(ts), "samples_s": ts, "compile_s": runners[k].compile_s}
        for k, ts in times.items()
    }


# ------------------------------------------------------------------ PyTorch process (no JAX here)


def torch_worker(shape: str, reps: int, threads: int = TORCH_THREADS) -> dict:
    """``torch.nn.LSTM`` train step at ``shape``: median seconds per step of ``reps``."""
    import torch
    import torch.nn.functional as F

    cfg = SHAPES[shape]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(VOCAB, cfg["hidden"], num_layers=cfg["layers"])  # time-major [T, B, F]
    out = torch.nn.Linear(cfg["hidden"], VOCAB)
    opt = torch.optim.Adam(list(lstm.parameters()) + list(out.parameters()), lr=1e-3)
    ids = torch.randint(0, VOCAB, (cfg["seq"], cfg["batch"]))
    targets = ids.roll(-1, 0)

    def step():
        opt.zero_grad(set_to_none=True)
        ys, _ = lstm(F.one_hot(ids, VOCAB).float())
        loss = F.cross_entropy(out(ys).reshape(-1, VOCAB), targets.reshape(-1))
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()
    first_s = time.perf_counter() - t0
    step()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        samples.append(time.perf_counter() - t0)
    return {
        "pytorch": {
            "s_per_step": statistics.median(samples),
            "samples_s": samples,
            "compile_s": first_s,
            "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        }
    }


# --------------------------------------------------------------------------- driver


def run_shape(name, reps, rounds, old=None):
    """``old``: ``(rev, tree)``, the worktree whose ``jaxgen`` variant runs in its own process."""
    from jaxgen import benchmarking as bm

    me = [sys.executable, str(Path(__file__).resolve()), "--shape", name, "--reps", str(reps)]
    cmds = {"jax": me + ["--worker", "jax"]}
    if old is not None:  # PYTHONPATH puts the old tree's jaxgen ahead of the installed one
        cmds["jax-old"] = ["env", f"PYTHONPATH={old[1]}", *me, "--worker", "jax"]
        cmds["jax-old"] += ["--variants", "jaxgen"]
    if importlib.util.find_spec("torch") is not None:
        cmds["pytorch"] = me + ["--worker", "torch"]
    else:
        print("torch is not installed: the PyTorch column is left out", flush=True)
    runs = bm.interleaved_processes(cmds, rounds)
    per_round = [dict(j) for j in runs["jax"]]
    for i, t in enumerate(runs.get("pytorch", [])):
        per_round[i].update(t)
    for i, t in enumerate(runs.get("jax-old", [])):
        per_round[i][f"jaxgen@{old[0]}"] = t["jaxgen"]
    cfg = SHAPES[name]
    tokens = cfg["batch"] * cfg["seq"]
    out = {}
    for k in per_round[0]:
        s = [r[k]["s_per_step"] for r in per_round]
        med = statistics.median(s)
        kind = k.split("@")[0]
        flops = executed_flops(**cfg, gather=INPUTS[kind] == "ids")
        v = {
            "input": INPUTS[kind],
            "step_ms": 1e3 * med,
            "tokens_per_s": tokens / med,
            "executed_gflop_per_step": flops / 1e9,
            "gflops": flops / med / 1e9,
            "compile_s": statistics.median(r[k]["compile_s"] for r in per_round),
            "step_ms_rounds": [1e3 * x for x in s],
            "samples_ms": [[1e3 * x for x in r[k]["samples_s"]] for r in per_round],
        }
        if k == "pytorch":
            v.update(
                torch_version=per_round[0][k]["torch_version"],
                torch_threads=per_round[0][k]["torch_threads"],
            )
        out[k] = v
    for k, v in out.items():  # speed-ups: median over rounds of the per-round ratios
        v["speed_vs_flax"] = bm.median_ratio(
            [r["flax"]["s_per_step"] for r in per_round], [r[k]["s_per_step"] for r in per_round]
        )
        if "pytorch" in out:
            v["speed_vs_pytorch"] = bm.median_ratio(
                [r["pytorch"]["s_per_step"] for r in per_round],
                [r[k]["s_per_step"] for r in per_round],
            )
    return {
        "config": cfg,
        "tokens_per_step": tokens,
        "rounds": rounds,
        "reps_per_round": reps,
        "dense_model_gflop_per_step": executed_flops(**cfg, gather=False) / 1e9,
        "variants": out,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 round, fewer repetitions")
    ap.add_argument("--rounds", type=int, default=3, help="alternating JAX / PyTorch process pairs")
    ap.add_argument("--only", choices=list(SHAPES), default=None, help="one shape")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--worker", choices=("jax", "torch"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--shape", choices=list(SHAPES), default="small", help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--variants", default=None, help=argparse.SUPPRESS)
    ap.add_argument(
        "--old", default=None, metavar="REV", help="also time jaxgen at git revision REV"
    )
    args = ap.parse_args(argv)
    if args.worker:  # one timing process started by run_shape(); prints one JSON line
        if args.worker == "jax":
            print(json.dumps(jax_worker(args.shape, args.reps, args.variants)))
        else:
            print(json.dumps(torch_worker(args.shape, args.reps)))
        return

    sys.path.insert(0, str(ROOT))
    from jaxgen import benchmarking as bm

    rounds = 1 if args.quick else args.rounds
    ceiling = bm.gemm_ceiling()
    print(
        f"float32 GEMM ceiling: {ceiling['median_gflops']:.1f} GFLOP/s (median), "
        f"{ceiling['best_gflops']:.1f} best",
        flush=True,
    )
    results = {}
    with contextlib.ExitStack() as stack:
        old = None
        if args.old:
            old = (args.old, stack.enter_context(bm.git_worktree(ROOT, args.old)))
        for name in [args.only] if args.only else SHAPES:
            reps = (2 if args.quick else 5) if name == "char-rnn" else (10 if args.quick else 30)
            print(
                f"shape {name}: {SHAPES[name]} ({rounds} rounds of {reps} repetitions)", flush=True
            )
            results[name] = run_shape(name, reps, rounds, old)
    ceiling_after = bm.gemm_ceiling()
    ceil = statistics.median([ceiling["median_gflops"], ceiling_after["median_gflops"]])
    rows = []
    has_torch = any("pytorch" in r["variants"] for r in results.values())
    for name, r in results.items():
        for k, v in r["variants"].items():
            v["fraction_of_gemm_ceiling"] = v["gflops"] / ceil
            rows.append(
                [
                    name,
                    k,
                    v["input"],
                    v["tokens_per_s"],
                    v["step_ms"],
                    v["compile_s"],
                    v["gflops"],
                    f"{100 * v['fraction_of_gemm_ceiling']:.0f}%",
                    f"{v['speed_vs_flax']:.2f}x",
                ]
                + (
                    [f"{v['speed_vs_pytorch']:.2f}x" if "speed_vs_pytorch" in v else "-"]
                    if has_torch
                    else []
                )
            )
    table = bm.md_table(
        [
            "shape",
            "variant",
            "input",
            "tokens/s",
            "step ms",
            "compile s",
            "executed GFLOP/s",
            "of GEMM ceiling",
            "vs flax",
        ]
        + (["vs PyTorch"] if has_torch else []),
        rows,
    )
    first = next(iter(results.values()))
    torch_note = ""
    if has_torch:
        tv = first["variants"]["pytorch"]
        torch_note = (
            f" PyTorch {tv['torch_version']}, {tv['torch_threads']} threads, in its own process."
        )
    table += (
        f"\nGEMM ceiling (2048³ float32 matmul, median of before/after): {ceil:.0f} GFLOP/s. "
        f"{first['rounds']} alternating rounds of JAX / PyTorch processes; "
        "medians over rounds, ratios are "
        f'medians of per-round ratios.{torch_note} "compile s" is the first step (for PyTorch: no '
        "compilation, the first step's time).\n"
    )
    bm.write_results(
        "rnn_step",
        {
            "old": args.old,
            "gemm_ceiling": {"before": ceiling, "after": ceiling_after, "used_gflops": ceil},
            "shapes": results,
        },
        table,
        args.out,
    )
    print(table)


if __name__ == "__main__":
    main()
