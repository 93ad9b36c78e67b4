"""One page from a GPU run of ``benchmarks/gpu_check.sh``: ``gpu_check.{json,md}``.

Reads what the check wrote into a folder (default ``benchmarks/results/gpu``): ``env.txt``,
``kernels_f32.json`` (scan vs Pallas vs cuDNN, one LSTM layer), ``rnn_step_gpu.json`` (the
char-RNN train step, jaxgen beside Flax, from ``rnn_step.py``'s JAX worker),
``parallel_cells_target.json`` and ``parallel_cells_sweep.json`` (associative vs sequential
scan), and ``pytest_*.txt``; writes the summary tables beside them.

    python benchmarks/gpu_summary.py [--dir benchmarks/results/gpu]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from jaxgen import benchmarking as bm
from jaxgen.training.io import write_text_atomic


def _load(d: Path, name: str):
    p = d / name
    return json.loads(p.read_text()) if p.exists() else None


def _x(ratio):
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.0f}x"


def kernels_rows(k):
    rows = []
    for s in k["shapes"]:
        base = s["variants"]["scan"]
        for name, v in s["variants"].items():
            for phase, r in v.items():
                rows.append(
                    [s["T"], s["B"], s["H"], name, phase, r["ms"], _x(base[phase]["ms"] / r["ms"])]
                )
    return rows


def rnn_step_rows(r, tokens):
    flax = r["flax"]["s_per_step"]
    return [
        [name, 1e3 * v["s_per_step"], tokens / v["s_per_step"], _x(flax / v["s_per_step"])]
        for name, v in r.items()
    ]


def pytest_counts(d: Path):
    out = {}
    for p in sorted(d.glob("pytest_*.txt")):
        text = p.read_text()
        line = next((ln for ln in text.splitlines() if re.match(r"^[.FEsx]+", ln)), "")
        marks = re.match(r"^[.FEsx]*", line).group(0)
        out[p.stem] = {
            "passed": marks.count("."),
            "failed": marks.count("F") + marks.count("E"),
            "stopped_by_limit": "exit 124" in text,
        }
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="benchmarks/results/gpu")
    args = ap.parse_args(argv)
    d = Path(args.dir)
    env = (d / "env.txt").read_text().strip() if (d / "env.txt").exists() else "?"
    payload, md = {"env": env}, [f"Machine:\n\n```\n{env}\n```\n"]

    tests = pytest_counts(d)
    payload["pytest"] = tests
    for name, t in tests.items():
        md.append(
            f"Tests ({name}): {t['passed']} passed, {t['failed']} failed"
            + (" before the stage's time limit stopped the run" if t["stopped_by_limit"] else "")
            + ".\n"
        )

    k = _load(d, "kernels_f32.json")
    if k:
        rows = kernels_rows(k)
        payload["kernels_f32"] = rows
        md.append("### One LSTM layer, float32: scan, Pallas (Triton), cuDNN\n")
        md.append(
            bm.md_table(["T", "B", "H", "variant", "pass", "ms", "speed vs scan"], rows)
            + "\nThe forward+backward rows were timed with the cotangent closed over (a [T, B, H] "
            "constant in the program); `kernels.py` now passes it as an argument.\n"
        )

    r = _load(d, "rnn_step_gpu.json")
    if r:
        tokens = 128 * 100  # the char-rnn shape: 2 x 512, B 128, T 100
        rows = rnn_step_rows(r, tokens)
        payload["rnn_step"] = rows
        md.append("### Char-RNN train step (2 x 512 LSTM, B 128, T 100, vocabulary 83, Adam)\n")
        md.append(bm.md_table(["variant", "step ms", "tokens/s", "speed vs flax"], rows))

    t = _load(d, "parallel_cells_target.json")
    if t:
        rows = [
            [x["part"], x["cell"], x["T"], x["variant"], x["ms"], _x(x["speedup_vs_scan"])]
            for x in t["target"]
        ]
        payload["parallel_target"] = rows
        md.append("### Associative scan vs sequential scan, B 32, H 256, forward + backward\n")
        md.append(bm.md_table(["part", "cell", "T", "mode", "ms", "speed vs scan"], rows))
    s = _load(d, "parallel_cells_sweep.json")
    if s:
        by = {(x["cell"], x["mode"], x["T"]): x["ms"] for x in s["sweep"]}
        rows = []
        for (cell, mode, T), ms in by.items():
            if mode != "scan":
                rows.append([cell, mode, T, by[(cell, "scan", T)], ms, by[(cell, "scan", T)] / ms])
        speedups = [x[-1] for x in rows]
        rows = [x[:-1] + [_x(x[-1])] for x in rows]
        payload["parallel_sweep"] = rows
        md.append("### Against T, B 8, H 128, forward + backward\n")
        md.append(bm.md_table(["cell", "mode", "T", "scan ms", "mode ms", "speed vs scan"], rows))
        md.append(f"Median speed-up over these rows: {statistics.median(speedups):.0f}x.\n")
        if (d / "parallel_cells_sweep.png").exists():
            md.append("![scan vs associative scan on the GPU](parallel_cells_sweep.png)\n")

    write_text_atomic(d / "gpu_check.json", json.dumps(payload, indent=2, default=float))
    write_text_atomic(d / "gpu_check.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
