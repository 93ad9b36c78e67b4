r"""One LSTM layer's time loops: ``mode="native"`` (the C++ kernel, :mod:`jaxgen.native`) against
``mode="scan"`` (``lax.scan`` with the hand-written backward), on the projected input.

For each shape: the forward pass alone, and forward plus backward (``jax.vjp`` of the outputs,
the gradient of ``zx``, ``W_hh`` and the initial carry). Both modes compile once; calls are
interleaved, ``--rounds`` fresh processes alternate, and the table gives medians over rounds of
each process's median (the ratio: the median of the per-round ratios).

Shapes: ``cpu`` (the CPU recipe's layer: batch 32, hidden 256, 64 steps), ``small`` (batch 32,
hidden 128, 50 steps), ``char-rnn`` (the classic recipe's layer: batch 128, hidden 512, 100
steps), ``long`` (batch 8, hidden 128, 1,000 steps).

    python benchmarks/native_lstm.py             # about 2 minutes on 2 cores
    python benchmarks/native_lstm.py --rounds 1  # one process

Writes native_lstm.{json,md} to benchmarks/results/ (or --out).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "cpu": dict(T=64, B=32, H=256),
    "small": dict(T=50, B=32, H=128),
    "char-rnn": dict(T=100, B=128, H=512),
    "long": dict(T=1000, B=8, H=128),
}
MODES = ("scan", "native")


def worker(reps: int) -> dict:
    """Median seconds per call of each (shape, pass, mode) in this process."""
    import jax

    from jaxgen import benchmarking as bm
    from jaxgen import native

    if not native.available():
        raise SystemExit(f"the native kernel is not available here: {native.load()}")
    out = {}
    for name, s in SHAPES.items():
        T, B, H = s["T"], s["B"], s["H"]
        k = jax.random.split(jax.random.key(0), 4)
        params = {"w_hh": jax.random.normal(k[0], (H, 4 * H)) / H**0.5}
        zx = jax.random.normal(k[1], (T, B, 4 * H))
        carry = (jax.random.normal(k[2], (B, H)), jax.random.normal(k[3], (B, H)))
        dys = jax.random.normal(k[3], (T, B, H))

        def run(mode, p, zx, carry):
            from jaxgen import recurrence

            if mode == "native":
                return native.lstm_sequence(p, zx, carry)
            return recurrence.lstm_scan(p, zx, carry)

        calls = {}
        for mode in MODES:
            fwd = jax.jit(lambda p, zx, c, m=mode: run(m, p, zx, c)[1])
            both = jax.jit(
                lambda p, zx, c, d, m=mode: jax.vjp(lambda *a: run(m, *a)[1], p, zx, c)[1](d)
            )
            calls[("forward", mode)] = functools.partial(fwd, params, zx, carry)
            calls[("forward + backward", mode)] = functools.partial(both, params, zx, carry, dys)
        times = bm.interleaved(calls, reps=reps)
        for (what, mode), ts in times.items():
            out[f"{name}|{what}|{mode}"] = statistics.median(ts)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.reps)))
        return
    sys.path.insert(0, str(ROOT))
    from jaxgen import benchmarking as bm

    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--reps", str(args.reps)]
    runs = bm.interleaved_processes({"jax": cmd}, args.rounds)["jax"]
    rows, results = [], {}
    for name, s in SHAPES.items():
        for what in ("forward", "forward + backward"):
            per = {m: [r[f"{name}|{what}|{m}"] for r in runs] for m in MODES}
            ratio = bm.median_ratio(per["scan"], per["native"])
            results[f"{name}|{what}"] = {
                **{f"{m}_ms": 1e3 * statistics.median(per[m]) for m in MODES},
                **{f"{m}_ms_rounds": [1e3 * x for x in per[m]] for m in MODES},
                "speed_native_vs_scan": ratio,
            }
            rows.append(
                [
                    f"{name} (T {s['T']}, B {s['B']}, H {s['H']})",
                    what,
                    1e3 * statistics.median(per["scan"]),
                    1e3 * statistics.median(per["native"]),
                    f"{ratio:.2f}x",
                ]
            )
    table = bm.md_table(["shape", "pass", "scan ms", "native ms", "native speed"], rows)
    table += (
        f"\nOne LSTM layer on the projected input; {args.rounds} processes, {args.reps} "
        "interleaved calls of each in each; medians over processes, the speed is the median of "
        "the per-process ratios scan / native. `python benchmarks/native_lstm.py`.\n"
    )
    bm.write_results("native_lstm", {"shapes": SHAPES, "results": results}, table, args.out)
    print(table)


if __name__ == "__main__":
    main()
