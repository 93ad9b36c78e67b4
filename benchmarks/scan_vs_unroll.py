"""lax.scan against a Python-unrolled loop, and rematerialisation, for an LSTM train step.

One step = LSTM forward over T steps (``rnn.unroll(rnn.lstm_cell, ...)``, the
input projection inside the cell), a linear readout and squared error at every
step, backward through time, Adam update. Variants, for each sequence length T:

  * ``scan u=1 | u=4 | u=16``  ``lax.scan`` with partial unroll 1, 4, 16
  * ``python``                 the fully unrolled Python loop (``mode="python"``):
                               T copies of the step in the program
  * ``scan + remat/step``      ``jax.checkpoint`` on the cell: the backward pass
                               recomputes each step's gates from the saved carry
  * ``scan + remat/k``         nested scan, ``jax.checkpoint`` on every chunk of
                               ``k`` steps: only chunk-boundary carries are kept

Measured: lowering and compile time, HLO instruction count of the optimised
program (``compiled.as_text()``), ``compiled.memory_analysis()`` (temporary
buffers = peak scratch memory of the step; generated code size), and the step
time (median of interleaved repetitions). The Python loop is compiled only
while its predicted compile time stays under ``--python-cap`` seconds
(extrapolated from the previous lengths); longer T are skipped and reported.

    python benchmarks/scan_vs_unroll.py            # T = 10..500, ~5-8 minutes on 2 cores
    python benchmarks/scan_vs_unroll.py --quick    # T = 10, 50, 100, under 2 minutes
"""

from __future__ import annotations

import argparse
import functools
import math
import re
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from jaxgen import benchmarking as bm
from jaxgen import rnn

LENGTHS = (10, 50, 100, 200, 500)
QUICK_LENGTHS = (10, 50, 100)
CFG = dict(layers=1, hidden=128, batch=32, features=32)
REMAT_K = 10
VARIANTS = (
    "scan u=1",
    "scan u=4",
    "scan u=16",
    "python",
    "scan + remat/step",
    f"scan + remat/{REMAT_K}",
)


def forward(variant, params, xs):
    """LSTM outputs ``[T, B, H]`` for a variant; ``xs`` is ``[T, B, F]``."""
    cell = rnn.lstm_cell
    carry = rnn.lstm_zero_carry(params, xs.shape[1:2])
    if variant.startswith("scan u="):
        return rnn.unroll(cell, params, carry, xs, mode="scan", unroll=int(variant[7:]))[1]
    if variant == "python":
        return rnn.unroll(cell, params, carry, xs, mode="python")[1]
    if variant == "scan + remat/step":
        return rnn.unroll(jax.checkpoint(cell), params, carry, xs, mode="scan")[1]
    if variant.startswith("scan + remat/"):
        k = int(variant.split("/")[1])
        T = xs.shape[0]
        if T % k:
            raise ValueError(f"T={T} is not a multiple of the remat chunk {k}")

        @jax.checkpoint
        def chunk(carry, xk):  # k steps; only ``carry`` is saved for the backward pass
            return rnn.unroll(cell, params, carry, xk, mode="scan")

        _, ys = jax.lax.scan(chunk, carry, xs.reshape(T // k, k, *xs.shape[1:]))
        return ys.reshape(T, *ys.shape[2:])
    raise ValueError(variant)


def make_step(variant, opt):
    def loss_fn(p, xs, targets):
        ys = forward(variant, p["lstm"], xs)
        pred = ys @ p["w_out"]
        return jnp.mean((pred - targets) ** 2)

    def step(p, s, xs, targets):
        loss, g = jax.value_and_grad(loss_fn)(p, xs, targets)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    return jax.jit(step)


def setup(T):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
    params = {
        "lstm": rnn.lstm_init(k1, CFG["features"], CFG["hidden"]),
        "w_out": jax.random.normal(k2, (CFG["hidden"], 1)) / CFG["hidden"] ** 0.5,
    }
    xs = jax.random.normal(k3, (T, CFG["batch"], CFG["features"]))
    targets = jax.random.normal(k4, (T, CFG["batch"], 1))
    return params, xs, targets


_INSTR = re.compile(r"^\s*(ROOT\s+)?%?[\w.\-]+ = ", re.M)


def hlo_stats(text):
    """Instruction count, while loops and dot products of an optimised HLO module."""
    return {
        "instructions": len(_INSTR.findall(text)),
        "while_loops": len(re.findall(r"\bwhile\(", text)),
        "dots": len(re.findall(r"\bdot\(", text))
        + len(re.findall(r'custom_call_target="__onednn\$matmul', text)),
        "fusions": len(re.findall(r"\bfusion\(", text)),
    }


def compile_variant(variant, T, opt):
    params, xs, targets = setup(T)
    state = opt.init(params)
    step = make_step(variant, opt)
    t0 = time.perf_counter()
    lowered = step.lower(params, state, xs, targets)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    rec = {
        "variant": variant,
        "T": T,
        "lower_s": t1 - t0,
        "compile_s": t2 - t1,
        "stablehlo_ops": lowered.as_text().count("\n"),
        **hlo_stats(compiled.as_text()),
    }
    try:
        ma = compiled.memory_analysis()
        rec.update(
            temp_bytes=int(ma.temp_size_in_bytes),
            argument_bytes=int(ma.argument_size_in_bytes),
            output_bytes=int(ma.output_size_in_bytes),
            code_bytes=int(ma.generated_code_size_in_bytes),
        )
    except Exception as e:  # noqa: BLE001 - not every backend reports it
        rec["memory_analysis_error"] = repr(e)
    run = functools.partial(compiled, params, state, xs, targets)
    return rec, run


def predicted_compile(history, T):
    """Extrapolate the Python loop's compile time to ``T`` from the measured (T, seconds) pairs."""
    if not history:
        return 0.0
    ((Ta, ca),) = history[-1:]
    alpha = 1.0
    if len(history) >= 2:
        (Tb, cb) = history[-2]
        alpha = max(1.0, math.log(ca / cb) / math.log(Ta / Tb))
    return ca * (T / Ta) ** alpha


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="T = 10, 50, 100 and fewer repetitions")
    ap.add_argument("--lengths", type=int, nargs="+", default=None)
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per variant")
    ap.add_argument(
        "--python-cap",
        type=float,
        default=None,
        help="skip the Python loop where its predicted compile time exceeds this (s)",
    )
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    lengths = tuple(args.lengths or (QUICK_LENGTHS if args.quick else LENGTHS))
    reps = args.reps or (3 if args.quick else 7)
    cap = args.python_cap or (20.0 if args.quick else 60.0)
    opt = optax.adam(1e-3)
    t_start = time.perf_counter()
    records, skipped, py_hist = [], [], []
    for T in lengths:
        runs = {}
        for v in VARIANTS:
            if v == "python":
                pred = predicted_compile(py_hist, T)
                if pred > cap:
                    skipped.append(
                        {"variant": v, "T": T, "predicted_compile_s": pred, "cap_s": cap}
                    )
                    print(
                        f"T={T:4d} {v:18s} skipped: predicted compile {pred:.0f} s "
                        f"> cap {cap:.0f} s",
                        flush=True,
                    )
                    continue
            if v.startswith("scan + remat/") and v != "scan + remat/step" and T % REMAT_K:
                continue
            rec, run = compile_variant(v, T, opt)
            if v == "python":
                py_hist.append((T, rec["lower_s"] + rec["compile_s"]))
            records.append(rec)
            runs[v] = run
        times = bm.interleaved(runs, reps=reps, warmup=1)
        for rec in records:
            if rec["T"] == T:
                ts = times[rec["variant"]]
                rec["step_ms"] = 1e3 * statistics.median(ts)
                rec["step_ms_min"] = 1e3 * min(ts)
                print(
                    f"T={T:4d} {rec['variant']:18s} "
                    f"compile {rec['lower_s'] + rec['compile_s']:6.2f} s  "
                    f"step {rec['step_ms']:8.2f} ms  "
                    f"temp {rec.get('temp_bytes', 0) / 2**20:7.2f} MiB  "
                    f"HLO instr {rec['instructions']:6d}",
                    flush=True,
                )
    payload = {
        "config": {
            **CFG,
            "cell": "rnn.lstm_cell via rnn.unroll (input projection inside the loop)",
            "loss": "squared error of a linear readout at every step",
            "optimizer": "adam",
            "reps": reps,
            "python_compile_cap_s": cap,
            "remat_chunk": REMAT_K,
            "lengths": list(lengths),
            "quick": args.quick,
        },
        "results": records,
        "skipped": skipped,
        "seconds": time.perf_counter() - t_start,
    }
    md = markdown(records, skipped, lengths, reps, cap)
    path = bm.write_results("scan_vs_unroll", payload, md, args.out)
    plot(records, lengths, Path(args.out) / "scan_vs_unroll.png")
    print(f"wrote {path} ({time.perf_counter() - t_start:.0f} s)")


def _get(records, v, T):
    return next((r for r in records if r["variant"] == v and r["T"] == T), None)


THIRD = (
    "\n## The third way: the associative scan\n\n"
    "For linear recurrences (minGRU, minLSTM, LRU) `lax.associative_scan` runs the time loop in "
    "`log2 T` parallel levels. Its step time, compile time and memory against the sequential "
    "scan (and the LSTM's scan) for T = 256 ... 16,384 are in `parallel_cells.md` "
    "(`benchmarks/parallel_cells.py`): the LSTM cannot be run this way, its recurrence is not "
    "linear.\n"
)


def markdown(records, skipped, lengths, reps, cap):
    lines = [
        "# lax.scan vs Python-unrolled loop, and rematerialisation (LSTM train step)\n",
        f"One LSTM layer, hidden {CFG['hidden']}, batch {CFG['batch']}, "
        f"{CFG['features']} input features; "
        "forward + backward + Adam. Compile = lowering + XLA compile. Step time = median of "
        f"{reps} interleaved calls. Temp = `compiled.memory_analysis().temp_size_in_bytes` "
        "(scratch buffers of the step, excluding parameters and inputs). HLO = instructions in "
        "the optimised module (`compiled.as_text()`).\n",
        "## Scan vs Python unroll\n",
    ]
    header = [
        "T",
        "variant",
        "compile (s)",
        "step (ms)",
        "step vs scan u=1",
        "temp (MiB)",
        "HLO instr",
        "while loops",
    ]
    rows = []
    for T in lengths:
        base = _get(records, "scan u=1", T)
        for v in VARIANTS[:4]:
            r = _get(records, v, T)
            if r is None:
                if v == "python" and any(s["T"] == T for s in skipped):
                    s = next(s for s in skipped if s["T"] == T)
                    rows.append(
                        [
                            T,
                            v,
                            f"skipped (predicted {s['predicted_compile_s']:.0f} s > {cap:.0f} s)",
                            "-",
                            "-",
                            "-",
                            "-",
                            "-",
                        ]
                    )
                continue
            rows.append(
                [
                    T,
                    v,
                    f"{r['lower_s'] + r['compile_s']:.2f}",
                    f"{r['step_ms']:.2f}",
                    f"{r['step_ms'] / base['step_ms']:.2f}x",
                    f"{r.get('temp_bytes', 0) / 2**20:.2f}",
                    r["instructions"],
                    r["while_loops"],
                ]
            )
    lines.append(bm.md_table(header, rows))
    lines.append("\n## Rematerialisation: memory against time\n")
    lines.append(
        f"`remat/step`: `jax.checkpoint` on the cell; `remat/{REMAT_K}`: nested scan, "
        f"`jax.checkpoint` on every chunk of {REMAT_K} steps.\n"
    )
    header = [
        "T",
        "variant",
        "temp (MiB)",
        "temp vs no remat",
        "step (ms)",
        "step vs no remat",
        "compile (s)",
    ]
    rows = []
    for T in lengths:
        base = _get(records, "scan u=1", T)
        for v in ("scan u=1", "scan + remat/step", f"scan + remat/{REMAT_K}"):
            r = _get(records, v, T)
            if r is None:
                continue
            name = "no remat (scan u=1)" if v == "scan u=1" else v
            rows.append(
                [
                    T,
                    name,
                    f"{r.get('temp_bytes', 0) / 2**20:.2f}",
                    f"{r.get('temp_bytes', 0) / max(base.get('temp_bytes', 1), 1):.2f}x",
                    f"{r['step_ms']:.2f}",
                    f"{r['step_ms'] / base['step_ms']:.2f}x",
                    f"{r['lower_s'] + r['compile_s']:.2f}",
                ]
            )
    lines.append(bm.md_table(header, rows))
    if skipped:
        lines.append(
            "\nSkipped: "
            + "; ".join(
                f"{s['variant']} at T={s['T']} "
                f"(predicted compile {s['predicted_compile_s']:.0f} s > cap {s['cap_s']:.0f} s)"
                for s in skipped
            )
            + ".\n"
        )
    lines.append("\n![scan vs unroll](scan_vs_unroll.png)\n")
    lines.append(THIRD)
    return "\n".join(lines)


def plot(records, lengths, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for v in VARIANTS:
        rs = [r for r in records if r["variant"] == v]
        if not rs:
            continue
        Ts = [r["T"] for r in rs]
        axes[0].plot(Ts, [r["lower_s"] + r["compile_s"] for r in rs], "o-", label=v)
        axes[1].plot(Ts, [r["step_ms"] for r in rs], "o-", label=v)
        axes[2].plot(Ts, [r.get("temp_bytes", 0) / 2**20 for r in rs], "o-", label=v)
    for ax, title in zip(axes, ("compile time (s)", "step time (ms)", "temp memory (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"LSTM train step, hidden {CFG['hidden']}, batch {CFG['batch']} ({jax.default_backend()})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
