"""Run logging: a progress line, metrics as JSONL and TensorBoard event files."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import optax

_norm = (
    optax.tree.norm if hasattr(optax, "tree") and hasattr(optax.tree, "norm") else optax.global_norm
)


def global_norms(grads, params, updates) -> dict:
    """Global L2 norms of the gradients, parameters and updates of a step."""
    return {"grad_norm": _norm(grads), "param_norm": _norm(params), "update_norm": _norm(updates)}


def keep_if_finite(old_state, new_state, *losses_) -> tuple[Any, jax.Array]:
    """``(state, skipped)``: ``new_state`` when every loss is finite, else ``old_state`` with only
    its step advanced (the update is skipped, so one bad batch does not poison the parameters). The
    states are train-state named tuples with a ``step`` field."""
    import jax.numpy as jnp

    ok = jnp.all(jnp.stack([jnp.isfinite(loss) for loss in losses_]))
    kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_state, old_state)
    return kept._replace(step=new_state.step), (~ok).astype(jnp.float32)


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


def format_eta(steps_left_s: float | None, budget_left_s: float | None) -> str:
    """The progress line's ``left ...``: the sooner of the end of the steps (``None``: speed not
    known yet) and the end of the time budget (``None``: no budget), naming which one ends the run
    when a budget is set, e.g. ``left 2m10s (time budget)`` or ``left 0m40s (steps)``."""
    if budget_left_s is None:
        return "left ?" if steps_left_s is None else f"left {_fmt_time(steps_left_s)}"
    if steps_left_s is None:
        return f"left <={_fmt_time(budget_left_s)} (time budget)"
    if budget_left_s < steps_left_s:
        return f"left {_fmt_time(budget_left_s)} (time budget)"
    return f"left {_fmt_time(steps_left_s)} (steps)"


def _summary_writer():
    """tensorboardX's SummaryWriter, imported without PyTorch: tensorboardX imports torch when it is
    installed (4 s) only to accept torch tensors, and we write plain floats."""
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = (
        None  # makes `import torch` raise ImportError, which tensorboardX handles
    )
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class RunLog:
    """Writes ``metrics.jsonl`` and TensorBoard events under ``workdir`` and draws a progress line.

    ``time_budget_s`` (0: none) is the run's ``train.time_budget_s``: the line's time left is the
    sooner of the steps' end and the budget's (pass ``elapsed_s``, the clock the budget runs on)."""

    def __init__(
        self,
        workdir: str | Path,
        total_steps: int,
        *,
        unit: str = "tok",
        quiet: bool = False,
        time_budget_s: float = 0.0,
    ):
        self.workdir = Path(workdir)
        self.total = total_steps
        self.time_budget_s = float(time_budget_s or 0.0)
        self.unit = unit
        # On multi-host runs only process 0 writes (the workdir is shared); the others stay silent.
        self.primary = jax.process_index() == 0
        self.quiet = quiet or not self.primary
        self.jsonl = (
            open(self.workdir / "metrics.jsonl", "a", buffering=1) if self.primary else None
        )
        self.tb = None
        if self.primary:
            try:
                self.tb = _summary_writer()(str(self.workdir / "tb"))
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

    def progress(
        self, step: int, loss: float, rate: float, eta_s: float, *, elapsed_s: float | None = None
    ) -> None:
        """Draw the progress line; ``eta_s`` is the steps' time left at ``rate`` (ignored while the
        rate is 0), ``elapsed_s`` the seconds the time budget has run."""
        if self.quiet:
            return
        now = time.perf_counter()
        if not self.tty and now - self._last_print < 10 and step != self.total:
            return  # in logs, one line every 10 s
        self._last_print = now
        width = 24
        done = int(width * step / max(1, self.total))
        bar = "#" * done + "." * (width - done)
        budget_left = (
            self.time_budget_s - elapsed_s
            if self.time_budget_s > 0 and elapsed_s is not None
            else None
        )
        line = (
            f"[{bar}] step {step}/{self.total}  loss {loss:.3f}  {rate:,.0f} {self.unit}/s  "
            + format_eta(eta_s if rate > 0 else None, budget_left)
        )
        # on a terminal: redraw in place, clearing what a longer previous line left (ESC [K)
        print(
            ("\r" + line + "\x1b[K") if self.tty else line,
            end="" if self.tty else "\n",
            file=sys.stderr,
            flush=True,
        )

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
