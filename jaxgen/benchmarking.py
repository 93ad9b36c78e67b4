"""Benchmark helpers: warm-up, blocking, medians, interleaving, results files.

Benchmarks on shared machines are noisy, so every comparison here runs its
variants *interleaved* (A, B, C, A, B, C, ...) in one process and reports
medians and ratios against a baseline measured in the same run.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import jax
import jax.numpy as jnp

from jaxgen.training.io import write_text_atomic


def environment() -> dict:
    """Machine, backend and versions a result was measured on."""
    import flax
    import numpy as np
    import optax

    dev = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "num_devices": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def block(x):
    return jax.block_until_ready(x)


def time_call(fn: Callable[[], object]) -> float:
    """Seconds for one call of ``fn``, blocking on its result."""
    t0 = time.perf_counter()
    block(fn())
    return time.perf_counter() - t0


def compiled_flops(jitted, *args) -> float:
    """The FLOPs XLA's cost analysis counts for one call of ``jitted`` on ``args`` (0 where the
    backend reports none): the executed-work figure behind a benchmark's GFLOP/s."""
    cost = jitted.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


def gemm_ceiling(n: int = 2048, reps: int = 7, dtype=jnp.float32) -> dict:
    """Measured float32 GEMM throughput of this machine: median and best of ``reps``."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    f = jax.jit(jnp.matmul)
    block(f(a, b))
    times = [time_call(lambda: f(a, b)) for _ in range(reps)]
    flops = 2.0 * n**3
    return {
        "n": n,
        "median_gflops": flops / statistics.median(times) / 1e9,
        "best_gflops": flops / min(times) / 1e9,
    }


def interleaved(
    variants: dict[str, Callable[[], object]], reps: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Time each variant ``reps`` times, interleaved; returns seconds per call."""
    for fn in variants.values():
        for _ in range(warmup):
            block(fn())
    times = {k: [] for k in variants}
    for _ in range(reps):
        for k, fn in variants.items():
            times[k].append(time_call(fn))
    return times


def interleaved_processes(
    commands: dict[str, list[str]], rounds: int, timeout: float = 1800.0
) -> dict[str, list]:
    """Run each command once per round, each in a fresh process, alternating between them
    (the order reverses every round); returns, per variant, the JSON object each run printed
    on its last stdout line.

    For comparisons across frameworks that must not share a process: in one process
    PyTorch's OpenMP threads and XLA's thread pool compete and PyTorch runs 30-80x slower.
    Each run reports its own medians; compare rounds pairwise (:func:`median_ratio`).
    """
    out = {k: [] for k in commands}
    names = list(commands)
    for r in range(rounds):
        for k in names if r % 2 == 0 else names[::-1]:
            proc = subprocess.run(commands[k], capture_output=True, text=True, timeout=timeout)
            if proc.returncode != 0:
                raise RuntimeError(
                    f"{k} run failed ({' '.join(commands[k])}):\n{proc.stderr[-3000:]}"
                )
            out[k].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


@contextlib.contextmanager
def git_worktree(repo: str | os.PathLike, rev: str) -> Iterator[Path]:
    """A clean checkout of ``rev`` of the git repository ``repo`` in a temporary worktree, removed
    on exit: what a before/after benchmark runs the old (or the committed) side from."""
    tree = Path(tempfile.mkdtemp(prefix=f"jaxgen-{rev[:12]}-"))
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), rev],
        cwd=repo,
        check=True,
        capture_output=True,
    )
    try:
        yield tree
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(tree)],
            cwd=repo,
            check=False,
            capture_output=True,
        )


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of ``num[i] / den[i]`` (the two sides measured in the same round)."""
    return statistics.median(a / b for a, b in zip(num, den))


def write_results(
    name: str, payload: dict, table_md: str, out_dir: str | os.PathLike = "benchmarks/results"
) -> Path:
    """Write ``NAME.json`` and ``NAME.md`` (with the environment), each atomically, and return the
    JSON path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"environment": environment(), **payload}
    path = out / f"{name}.json"
    write_text_atomic(path, json.dumps(payload, indent=2, default=float))
    env = payload["environment"]
    header = (
        f"_Measured {env['date']} on {env['backend']} ({env['device']}, {env['cpu_count']} cores), "
        f"jax {env['jax']}, flax {env['flax']}._\n\n"
    )
    write_text_atomic(out / f"{name}.md", header + table_md.rstrip() + "\n")
    return path


def rewrite_markdown(json_path: str | os.PathLike, markdown: Callable[[dict], str]) -> Path:
    """Rewrite ``NAME.md`` beside ``NAME.json`` from the JSON (after a change to a table's
    wording), keeping the environment it was measured in; returns the JSON path."""
    path = Path(json_path)
    payload = json.loads(path.read_text())
    return write_results(path.stem, payload, markdown(payload), path.parent)


def md_table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
