"""The trainers before and after a change, through the CLI, side by side (issue 16's redesign).

    python benchmarks/trainer_before_after.py                  # against ed1e841 (before the move)
    python benchmarks/trainer_before_after.py --old REV --rounds 3

Checks out ``--old`` into a temporary git worktree and runs ``jaxgen train`` from each tree in turn
(alternating which goes first, fresh workdir each time) on the same workloads: the char-RNN CPU
recipe, the fully connected GAN and the DCGAN on the built-in digits, for a fixed number of steps
with no evaluation. A run's throughput is measured the same way on both sides, from the
``wall_s`` of its ``metrics.jsonl`` rows (unchanged by the redesign): items between the first and
the last logged step over the seconds between them, so start-up and the compiling first step are
left out. The table gives the median of each side over the rounds and the median of the per-round
ratios. Writes ``trainer_before_after.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxgen import benchmarking  # noqa: E402

# name: (config before the move, config after it, overrides, items per step); logs at 1/3, 2/3, 3/3
WORKLOADS = {
    "char-rnn cpu recipe (2x256, B32, T64), 150 steps": (
        "configs/charrnn_cpu.py",
        "configs/charrnn.py:cpu",
        [
            "--config.train.steps=150",
            "--config.train.log_every=50",
            "--config.train.batch=32",
            "--config.train.eval_every=100000",
            "--config.train.checkpoint_every=100000",
            "--config.train.lr_schedule=constant",
            "--config.train.time_budget_s=0",
        ],
        32 * 64,
    ),
    "FC GAN, built-in digits, B64, 1500 steps": (
        "configs/gan_mnist.py",
        "configs/gan_mnist.py",
        [
            "--config.data.source=builtin",
            "--config.train.steps=1500",
            "--config.train.batch=64",
            "--config.train.log_every=500",
            "--config.train.eval_every=0",
            "--config.train.sample_every=100000",
            "--config.train.checkpoint_every=100000",
            "--config.train.time_budget_s=0",
        ],
        64,
    ),
    "DCGAN (32, 64, 128), built-in digits, B64, 60 steps": (
        "configs/dcgan_mnist.py",
        "configs/dcgan_mnist.py",
        [
            "--config.data.source=builtin",
            "--config.train.steps=60",
            "--config.train.batch=64",
            "--config.train.log_every=20",
            "--config.train.eval_every=0",
            "--config.train.sample_every=100000",
            "--config.train.checkpoint_every=100000",
            "--config.train.lr_decay_steps=0",
            "--config.train.time_budget_s=0",
        ],
        64,
    ),
}


def run_once(tree: Path, config: str, overrides: list[str], items: int) -> float:
    """One ``jaxgen train`` from ``tree`` (its package first on the path); items per second
    between its first and last metrics rows."""
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        cmd = [
            sys.executable,
            "-c",
            "import sys; from jaxgen.cli import main; sys.exit(main())",
            "train",
            "--config",
            str(tree / config),
            "--workdir",
            f"{work}/w",
            "--quiet",
            *overrides,
        ]
        subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True, text=True)
        rows = [json.loads(x) for x in Path(f"{work}/w/metrics.jsonl").read_text().splitlines()]
        first, last = rows[0], rows[-1]
        return (last["step"] - first["step"]) * items / (last["wall_s"] - first["wall_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", default="ed1e841", help="the git revision to compare against")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=["char-rnn", "FC GAN", "DCGAN"], help="one workload")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    results = {}
    with benchmarking.git_worktree(ROOT, args.old) as old_tree:
        for name, (old_cfg, new_cfg, overrides, items) in WORKLOADS.items():
            if args.only and not name.startswith(args.only):
                continue
            before, after = [], []
            for r in range(args.rounds):
                sides = [("before", old_tree, old_cfg), ("after", ROOT, new_cfg)]
                for side, tree, cfg in sides if r % 2 == 0 else sides[::-1]:
                    rate = run_once(tree, cfg, overrides, items)
                    (before if side == "before" else after).append(rate)
                    print(f"{name} round {r + 1} {side}: {rate:,.0f} items/s", flush=True)
            ratios = [a / b for a, b in zip(after, before)]
            results[name] = {
                "items_per_step": items,
                "before": before,
                "after": after,
                "before_median": statistics.median(before),
                "after_median": statistics.median(after),
                "after_over_before": statistics.median(ratios),
            }
    rows = [
        [
            name,
            "tokens/s" if r["items_per_step"] > 64 else "images/s",
            f"{r['before_median']:,.0f}",
            f"{r['after_median']:,.0f}",
            f"{r['after_over_before']:.2f}x",
        ]
        for name, r in results.items()
    ]
    table = benchmarking.md_table(
        [
            "workload",
            "rate",
            f"before ({args.old})",
            "after (this tree)",
            "after / before (median of rounds)",
        ],
        rows,
    )
    note = (
        f"\n\n{args.rounds} rounds, alternating which tree runs first; each run is a fresh "
        "`jaxgen train` process; its rate: items between its first and last metrics rows over "
        "their wall_s difference."
    )
    benchmarking.write_results(
        "trainer_before_after",
        {"old": args.old, "rounds": args.rounds, "workloads": results},
        table + note,
        args.out,
    )
    print(table + note)


if __name__ == "__main__":
    main()
