"""GAN train steps at two commits, side by side: what a change did to jaxgen's own step time.

    python benchmarks/step_before_after.py --old 2bb61a9        # the norms' autodiff gradients
    python benchmarks/step_before_after.py --old REV --steps cyclegan,cdcgan --rounds 3

Checks ``--old`` out into a temporary git worktree and runs each step's timing worker (the one its
speed benchmark against PyTorch uses) from each tree in turn, a fresh process each time,
alternating which goes first: the CycleGAN step of ``benchmarks/translation_speed.py`` (shipped
config, batch 16), the StackGAN step of ``benchmarks/stackgan_speed.py`` (batch 64, no
auxiliary heads) and the class-conditional DCGAN step of ``benchmarks/gan_quality.py`` (batch
64). Each worker reports its median over its repetitions; the table gives the median of each side
over the rounds and the median of the per-round ratios (above 1: the new tree is faster). Writes
``<name>.{json,md}`` (default ``step_before_after``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxgen import benchmarking as bm  # noqa: E402

# step -> (worker command relative to a tree, key of its seconds per step in the printed JSON)
WORKERS = {
    "cyclegan": (["benchmarks/translation_speed.py", "jax", "--model", "cyclegan"], "median_s"),
    "stackgan": (["benchmarks/stackgan_speed.py", "--worker"], "s_per_step"),
    "cdcgan": (["benchmarks/gan_quality.py", "--worker", "step", "--arch", "cdcgan"], "s_per_step"),
}


def compare(old: str, steps: list[str], rounds: int) -> dict:
    out = {}
    with bm.git_worktree(ROOT, old) as tree:
        for name in steps:
            script, key = WORKERS[name]
            cmd = {
                side: [sys.executable, str(Path(root) / script[0]), *script[1:]]
                for side, root in (("new", ROOT), ("old", tree))
            }
            runs = bm.interleaved_processes(cmd, rounds)
            new = [r[key] for r in runs["new"]]
            was = [r[key] for r in runs["old"]]
            out[name] = {"new_s": new, "old_s": was, "speedup": bm.median_ratio(was, new),
                         "speedup_rounds": [a / b for a, b in zip(was, new)]}  # fmt: skip
            print(name, out[name], flush=True)
    return out


def markdown(payload: dict) -> str:
    rows = [
        [name, statistics.median(r["old_s"]) * 1e3, statistics.median(r["new_s"]) * 1e3,
         f"{r['speedup']:.3f}x", ", ".join(f"{x:.3f}" for x in r["speedup_rounds"])]
        for name, r in payload["results"].items()
    ]  # fmt: skip
    return "\n".join([
        f"# Train steps before and after: {payload['old']} against {payload['new']}", "",
        f"`{payload['command']}`: each step's timing worker from both trees, a fresh process each, "
        f"{payload['rounds']} alternating rounds; medians over rounds, the ratio is the median of "
        "the per-round ratios (above 1: the new tree is faster).", "",
        bm.md_table(["step", "old ms", "new ms", "old / new", "per round"], rows), "",
    ])  # fmt: skip


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--old", required=True, help="the commit to compare against")
    ap.add_argument("--steps", default="cyclegan,stackgan,cdcgan")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="step_before_after")
    args = ap.parse_args(argv)
    steps = args.steps.split(",")
    if unknown := set(steps) - set(WORKERS):
        raise SystemExit(f"unknown step(s) {sorted(unknown)}; choose from {sorted(WORKERS)}")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    payload = {
        "old": args.old,
        "new": head,
        "rounds": args.rounds,
        "command": "python benchmarks/step_before_after.py " + " ".join(argv or sys.argv[1:]),
        "results": compare(args.old, steps, args.rounds),
    }
    bm.write_results(args.name, payload, markdown(payload), Path(args.out))


if __name__ == "__main__":
    main()
