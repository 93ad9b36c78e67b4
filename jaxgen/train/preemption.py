"""Stop cleanly on SIGTERM (a Cloud TPU / spot VM preemption notice, or `kill`).

Inside :class:`StopOnSignal`, SIGTERM only sets a flag; the train loop checks it after each step,
saves a checkpoint and returns, so a preempted run loses nothing and `jaxgen train` on the same
workdir continues exactly. On multi-host runs orbax's ``reached_preemption`` sync point makes all
hosts agree on the step to save at.
"""

from __future__ import annotations

import signal
import threading


def _multi_process() -> bool:
    import jax

    return jax.process_count() > 1


class StopOnSignal:
    """Context manager: ``requested`` becomes True after SIGTERM (the previous handler is restored)."""

    def __init__(self, signals=(signal.SIGTERM,)):
        self.signals = signals
        self.requested = False
        self.signum = None
        self._old = {}

    def _handler(self, signum, frame):
        self.requested = True
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for s in self.signals:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False

    def should_stop(self, step: int, manager=None) -> bool:
        """True when this process got the signal, or (multi-host) orbax says another one did."""
        if self.requested:
            return True
        if manager is not None and _multi_process():
            try:
                return bool(manager.reached_preemption(step))
            except Exception:  # older orbax, or no distributed runtime: the local flag is enough
                return False
        return False


def stop_message(step: int, preempted: bool, budget_s: float) -> str:
    """What a train loop prints when it stops early (preemption or its time budget)."""
    if preempted:
        return (f"stopping at step {step}: SIGTERM received (preemption); checkpoint saved, run `jaxgen train` "
                "again on this workdir to continue")
    return f"stopping at step {step}: train.time_budget_s={budget_s:g} reached"
