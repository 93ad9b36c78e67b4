"""The README's test suite before and after a change, side by side on this machine.

    python benchmarks/suite_time.py --old 0a6e3cd              # HEAD against 0a6e3cd, one round
    python benchmarks/suite_time.py --old 0a6e3cd --rounds 2
    python benchmarks/suite_time.py                            # HEAD alone

Checks out ``--old`` and the committed ``HEAD`` into temporary git worktrees (clean trees, cold
compilation caches) and runs, in each, the pytest part of that tree's own README test command,
alternating which side goes first in each round. This machine's speed drifts by 20-30% within an
hour, so only the ratio within a round means much; the table gives each round's wall and CPU
(user + system, the suite and its subprocesses) seconds, the medians and the new/old ratios.
Writes ``suite_time.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxgen import benchmarking  # noqa: E402


def readme_pytest(tree: Path) -> list[str]:
    """The ``python -m pytest ...`` part of the test command in ``tree``'s README."""
    for line in (tree / "README.md").read_text().splitlines():
        if "python -m pytest" in line and line.lstrip().startswith("pip install"):
            return shlex.split(line[line.index("python -m pytest") :])
    raise SystemExit(f"no test command found in {tree / 'README.md'}")


def run_suite(tree: Path) -> dict:
    shutil.rmtree(tree / ".pytest_cache", ignore_errors=True)  # a cold compilation cache
    cmd = readme_pytest(tree)
    cmd[0] = sys.executable
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env["PYTHONPATH"] = str(tree)  # this tree's jaxgen, whatever the editable install points at
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = r.stdout.strip().splitlines()
    summary = lines[-1] if lines else r.stderr[-300:]
    m = re.search(r"(\d+) passed", summary)
    slowest = [x for x in lines if re.match(r"\s*[\d.]+s (call|setup|teardown) ", x)][:15]
    return {
        "command": " ".join(cmd[1:]),
        "ok": r.returncode == 0,
        "passed": int(m.group(1)) if m else 0,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "summary": summary,
        "failures": [x for x in lines if x.startswith(("FAILED", "ERROR"))],
        "slowest": slowest,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--old", default="", help="a git revision to compare against (none: HEAD alone)"
    )
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    runs = {"old": [], "new": []} if args.old else {"new": []}
    with (
        benchmarking.git_worktree(ROOT, args.old or "HEAD") as old,
        benchmarking.git_worktree(ROOT, "HEAD") as new,
    ):
        for r in range(args.rounds):
            sides = [("new", new), ("old", old)] if args.old else [("new", new)]
            for side, tree in sides if r % 2 == 0 else sides[::-1]:
                res = run_suite(tree)
                runs[side].append(res)
                print(
                    f"round {r + 1} {side}: {res['wall_s']} s wall, {res['cpu_s']} s CPU, "
                    f"{res['summary']}",
                    *res["failures"],
                    sep="\n  ",
                    flush=True,
                )
    med = {
        side: {k: statistics.median(x[k] for x in runs[side]) for k in ("wall_s", "cpu_s")}
        for side in runs
    }
    ratios = (
        {
            k: benchmarking.median_ratio([x[k] for x in runs["new"]], [x[k] for x in runs["old"]])
            for k in ("wall_s", "cpu_s")
        }
        if args.old
        else {}
    )
    rows = [
        [f"round {i + 1}", side, x["summary"], f"{x['wall_s']:.0f}", f"{x['cpu_s']:.0f}"]
        for side in runs
        for i, x in enumerate(runs[side])
    ]
    if args.old:
        title = f"# The test suite: {args.old} (old) against {head} (new)\n\n"
        medians = (
            f"\nMedian wall: old {med['old']['wall_s']:.0f} s, new {med['new']['wall_s']:.0f} s "
            f"(new/old {ratios['wall_s']:.2f}); median CPU: old {med['old']['cpu_s']:.0f} s, new "
            f"{med['new']['cpu_s']:.0f} s (new/old {ratios['cpu_s']:.2f}).\n\n"
        )
    else:
        title = f"# The test suite at {head}\n\n"
        medians = (
            f"\nMedian wall {med['new']['wall_s']:.0f} s, CPU {med['new']['cpu_s']:.0f} s.\n\n"
        )
    md = (
        title
        + "The README test command (its pytest part) in a clean worktree with a cold compilation "
        "cache"
        + (", sides alternating" if args.old else "")
        + ". CPU is user + system seconds of the suite and its subprocesses.\n\n"
        + benchmarking.md_table(["round", "side", "pytest summary", "wall s", "CPU s"], rows)
        + medians
        + "Slowest tests, new side, last round:\n\n```\n"
        + "\n".join(runs["new"][-1]["slowest"])
        + "\n```\n"
    )
    failures = [f for side in runs for x in runs[side] for f in x["failures"]]
    if failures:
        md += "\nFailures:\n\n```\n" + "\n".join(failures) + "\n```\n"
    payload = {"old": args.old, "new": head, "runs": runs, "median": med, "new_over_old": ratios}
    benchmarking.write_results("suite_time", payload, md, args.out)
    print(md)


if __name__ == "__main__":
    main()
