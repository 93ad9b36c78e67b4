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


def _fmt_time(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class RunLog:
    """Writes ``metrics.jsonl`` and TensorBoard events under ``workdir`` and draws a progress line."""

    def __init__(self, workdir: str | Path, total_steps: int, *, unit: str = "tok", quiet: bool = False):
        self.workdir = Path(workdir)
        self.total = total_steps
        self.unit = unit
        self.quiet = quiet
        self.jsonl = open(self.workdir / "metrics.jsonl", "a", buffering=1)
        try:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(self.workdir / "tb"))
        except ImportError:  # optional: metrics.jsonl has everything
            self.tb = None
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self._last_print = 0.0

    def write(self, step: int, metrics: dict) -> None:
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
        if self.tty and not self.quiet:
            print(file=sys.stderr)
        print(text, flush=True)

    def close(self) -> None:
        if self.tty and not self.quiet:
            print(file=sys.stderr)
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
