"""Run logging: a progress line, metrics as JSONL and TensorBoard event files."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import optax


_norm = optax.tree.norm if hasattr(optax, "tree") and hasattr(optax.tree, "norm") else optax.global_norm


def global_norms(grads, params, updates) -> dict:
    """Global L2 norms of the gradients, parameters and updates of a step."""
    return {"grad_norm": _norm(grads), "param_norm": _norm(params), "update_norm": _norm(updates)}


def keep_if_finite(old_state: dict, new_state: dict, *losses_) -> tuple[dict, jax.Array]:
    """``(state, skipped)``: ``new_state`` when every loss is finite, else ``old_state`` with only its
    step advanced (the update is skipped, so one bad batch does not poison the parameters)."""
    import jax.numpy as jnp

    ok = jnp.all(jnp.stack([jnp.isfinite(l) for l in losses_]))
    kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_state, old_state)
    kept["step"] = new_state["step"]
    return kept, (~ok).astype(jnp.float32)


def best_logged(workdir: str | Path, key: str) -> float | None:
    """The smallest value of ``key`` in a workdir's ``metrics.jsonl`` (an earlier part of a resumed
    run), or ``None``."""
    p = Path(workdir) / "metrics.jsonl"
    best = None
    if p.exists():
        for line in p.read_text().splitlines():
            try:
                v = json.loads(line).get(key)
            except json.JSONDecodeError:
                continue
            if v is not None and (best is None or v < best):
                best = v
    return best


def _fmt_time(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class RunLog:
    """Writes ``metrics.jsonl`` and TensorBoard events under ``workdir`` and draws a progress line."""

    def __init__(self, workdir: str | Path, total_steps: int, *, unit: str = "tok", quiet: bool = False):
        self.workdir = Path(workdir)
        self.total = total_steps
        self.unit = unit
        # On multi-host runs only process 0 writes (the workdir is shared); the others stay silent.
        self.primary = jax.process_index() == 0
        self.quiet = quiet or not self.primary
        self.jsonl = open(self.workdir / "metrics.jsonl", "a", buffering=1) if self.primary else None
        self.tb = None
        if self.primary:
            try:
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(str(self.workdir / "tb"))
            except ImportError:  # optional: metrics.jsonl has everything
                pass
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self._last_print = 0.0

    def write(self, step: int, metrics: dict) -> None:
        if not self.primary:
            return
        row = {"step": int(step), "wall_s": round(time.perf_counter() - self.t0, 3)}
        row.update({k: float(v) for k, v in metrics.items()})
        self.jsonl.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, float(v), int(step))

    def progress(self, step: int, loss: float, rate: float, eta_s: float) -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        if not self.tty and now - self._last_print < 10 and step != self.total:
            return  # in logs, one line every 10 s
        self._last_print = now
        width = 24
        done = int(width * step / max(1, self.total))
        bar = "#" * done + "." * (width - done)
        line = (f"[{bar}] step {step}/{self.total}  loss {loss:.3f}  {rate:,.0f} {self.unit}/s  "
                f"left {_fmt_time(eta_s) if rate > 0 else '?'}")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if not self.primary:
            return
        if self.tty and not self.quiet:
            print(file=sys.stderr)
        print(text, flush=True)

    def close(self) -> None:
        if self.tty and not self.quiet:
            print(file=sys.stderr)
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
