r"""Where the char-RNN train step's time goes: XLA's CPU profile of the compiled step, per HLO op.

Traces ``--steps`` calls of the jitted ``jaxgen.charrnn.train.train_step`` (the recipe's step:
dropout, clipping, Adam, metrics) with ``jax.profiler`` and sums the duration of every executed
thunk by name, mapped back to the compiled HLO (its shape and the JAX operation it came from).
Thunks that run once per time step are grouped as "in the loops" (the forward and backward
scans); the rest run once per step. Thunks can overlap (XLA runs independent ones
concurrently), so the groups add up to more than the step.

    python benchmarks/charrnn_profile.py                      # configs/charrnn.py:cpu shape
    python benchmarks/charrnn_profile.py --layers 1 --hidden 128 --batch 32 --seq 50

It also times one validation pass over tiny-shakespeare's validation split (the last 10%,
111,520 characters): the per-window Python loop of ``eval_step`` that ``evaluate`` was (32
rows, the training batch) against the one compiled scan it is now, at 32 rows and at
``train.eval_batch`` = 128.

Writes charrnn_profile.{json,md} to benchmarks/results/ (or --out).
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import gzip
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import benchmarking as bm
from jaxgen.charrnn import train as charrnn_train
from jaxgen.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SKIP = ("ThunkExecutor", "$", "PjitFunction", "SlinkyThreadPool", "while")


def validation_times(params, cfg, reps: int = 5) -> dict:
    """Seconds per validation pass: the old per-window loop against the one compiled scan."""
    from jaxgen.charrnn import data, model

    corpus = data.load_corpus("builtin")
    vocab = data.Vocab.from_text(corpus)
    _, val_ids = data.split_corpus(vocab.encode(corpus), cfg.data.val_fraction)
    params = jax.tree.map(jnp.asarray, params)
    if params["w_out"].shape[1] != len(vocab):  # the profiled model's vocabulary size differs
        params = model.init(jax.random.key(0), len(vocab), cfg.model.hidden, cfg.model.layers)

    def loop(batches):  # evaluate() before: one jitted call per window, summed on the host
        carries, total = model.zero_carries(params, batches.batch), 0.0
        for k in range(len(batches)):
            s, carries = charrnn_train.eval_step(params, carries, *batches.window(k))
            total += float(s)
        return total

    out = {}
    for name, rows, fn in [
        ("per-window loop, 32 rows", 32, loop),
        ("one scan, 32 rows", 32, lambda b: charrnn_train.evaluate(params, b)),
        ("one scan, 128 rows", 128, lambda b: charrnn_train.evaluate(params, b)),
    ]:
        batches = data.CharBatches(val_ids, rows, cfg.train.seq_len, name="validation")
        fn(batches)  # compile
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn(batches)
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--cell", default="lstm", help="lstm, mingru, minlstm or lru")
    ap.add_argument("--mlp-ratio", type=int, default=4, help="the blocks' MLP width (not lstm)")
    ap.add_argument("--conv", type=int, default=0, help="the blocks' causal conv width (not lstm)")
    ap.add_argument("--steps", type=int, default=10, help="traced steps")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="charrnn_profile")
    args = ap.parse_args(argv)

    cfg = load_config(f"{ROOT / 'configs' / 'charrnn.py'}:cpu")
    cfg.model.layers, cfg.model.hidden = args.layers, args.hidden
    cfg.model.cell, cfg.model.mlp_ratio, cfg.model.conv = args.cell, args.mlp_ratio, args.conv
    cfg.train.batch, cfg.train.seq_len = args.batch, args.seq
    tx = charrnn_train.make_optimizer(cfg, 10_000)
    state = charrnn_train.init_state(cfg, args.vocab, tx)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, args.vocab, (args.seq, args.batch)), jnp.int32)
    targets = jnp.asarray(rng.integers(0, args.vocab, (args.seq, args.batch)), jnp.int32)
    reset = jnp.asarray(False)
    step = jax.jit(
        functools.partial(charrnn_train.train_step, tx=tx, dropout_rate=args.dropout)
    )  # not donated: the same state is stepped again and again

    def run():
        return jax.block_until_ready(step(state, ids, targets, reset))

    for _ in range(3):
        run()
    untraced = []
    for _ in range(20):
        t0 = time.perf_counter()
        run()
        untraced.append(time.perf_counter() - t0)

    trace_dir = tempfile.mkdtemp(prefix="charrnn_profile_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(args.steps):
            run()
    events = json.load(gzip.open(glob.glob(f"{trace_dir}/**/*.json.gz", recursive=True)[0]))
    events = events["traceEvents"] if isinstance(events, dict) else events
    total, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X":
            total[e["name"]] += e["dur"]
            count[e["name"]] += 1
    n = args.steps
    traced_ms = total["ThunkExecutor::Execute (wait for completion)"] / n / 1e3

    hlo = step.lower(state, ids, targets, reset).compile().as_text()
    defs = {}
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+) ", line)
        if m:
            op = re.search(r'op_name="([^"]+)"', line)
            defs[m.group(1)] = (m.group(2), op.group(1) if op else "")

    leaves = {k: v for k, v in total.items() if not k.startswith(SKIP)}
    rows = []
    for name, us in leaves.items():
        per_step = count[name] / n
        shape, op = defs.get(name, ("", ""))
        kind = "dot" if name.startswith(("ynn_fusion", "dot")) else "other"
        rows.append(
            {
                "thunk": name,
                "ms_per_step": us / n / 1e3,
                "calls_per_step": per_step,
                "in_loop": per_step >= args.seq,
                "kind": kind,
                "shape": shape,
                "op": op.removeprefix("jit(train_step)/"),
            }
        )
    rows.sort(key=lambda r: -r["ms_per_step"])

    def group(in_loop, kind=None):
        return sum(
            r["ms_per_step"]
            for r in rows
            if r["in_loop"] == in_loop and (kind is None or r["kind"] == kind)
        )

    summary = {
        "step_ms_untraced_median": 1e3 * statistics.median(untraced),
        "step_ms_traced": traced_ms,
        "in_loops_ms": group(True),
        "in_loops_dots_ms": group(True, "dot"),
        "in_loops_other_ms": group(True, "other"),
        "outside_loops_ms": group(False),
        "outside_loops_dots_ms": group(False, "dot"),
        "thunks_per_step": sum(r["calls_per_step"] for r in rows),
    }
    summary["validation_s"] = validation_times(state.params, cfg)
    payload = {"args": vars(args), "summary": summary, "thunks": rows}
    s = summary
    lines = [
        f"Shape {args.layers} x {args.hidden}, batch {args.batch}, seq {args.seq}, "
        f"vocab {args.vocab}, dropout {args.dropout}: the recipe's train step "
        f"{s['step_ms_untraced_median']:.1f} ms (median of 20, untraced), "
        f"{s['step_ms_traced']:.1f} ms traced.",
        "",
        f"* in the time loops: {s['in_loops_ms']:.1f} ms "
        f"(matrix products {s['in_loops_dots_ms']:.1f}, elementwise and copies "
        f"{s['in_loops_other_ms']:.1f});",
        f"* outside them: {s['outside_loops_ms']:.1f} ms "
        f"(matrix products {s['outside_loops_dots_ms']:.1f});",
        f"* {s['thunks_per_step']:,.0f} thunks executed per step.",
        "",
        "One validation pass over the built-in text's validation split (median of 5): "
        + "; ".join(f"{k} {v:.2f} s" for k, v in s["validation_s"].items())
        + ".",
        "",
    ]
    table = bm.md_table(
        ["thunk", "ms / step", "calls / step", "in loop", "shape", "from"],
        [
            [
                r["thunk"],
                f"{r['ms_per_step']:.2f}",
                f"{r['calls_per_step']:.0f}",
                "yes" if r["in_loop"] else "",
                r["shape"],
                r["op"][-60:],
            ]
            for r in rows[: args.top]
        ],
    )
    bm.write_results(args.name, payload, "\n".join(lines) + "\n" + table, args.out)
    print("\n".join(lines) + "\n" + table)


if __name__ == "__main__":
    main()
