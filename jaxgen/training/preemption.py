"""Stop cleanly on SIGTERM (a Cloud TPU / spot VM preemption notice, or `kill`) and on Ctrl-C.

Inside :class:`StopOnSignal`, SIGTERM and the first SIGINT only set a flag; the train loop checks
it after each step, saves a checkpoint at that step and returns, so an interrupted run loses
nothing and `jaxgen train` on the same workdir continues exactly. Nothing is raised into the
middle of a step: an exception thrown while XLA compiles or orbax writes is what used to crash
the process. A second Ctrl-C restores the default action and so ends the process at once,
losing only the steps since the last checkpoint. On multi-host runs orbax's
``reached_preemption`` sync point makes all hosts agree on the step to save at.
"""

from __future__ import annotations

import signal
import sys
import threading


def _multi_process() -> bool:
    import jax

    return jax.process_count() > 1


class StopOnSignal:
    """Context manager: ``requested`` becomes True after SIGTERM or SIGINT (the previous handlers
    are restored on exit). ``reason`` is ``"preempted"`` (SIGTERM) or ``"interrupted"`` (Ctrl-C)."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signals = signals
        self.requested = False
        self.signum = None
        self._old = {}

    @property
    def reason(self) -> str | None:
        if not self.requested:
            return None
        return "interrupted" if self.signum == signal.SIGINT else "preempted"

    def _handler(self, signum, frame):
        first = not self.requested
        self.requested = True
        self.signum = self.signum or signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C ends the process at once
            if first:
                print(
                    "\njaxgen: Ctrl-C: stopping after this step and saving a checkpoint "
                    "(Ctrl-C again quits at "
                    "once, losing the steps since the last checkpoint)",
                    file=sys.stderr,
                    flush=True,
                )

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for s in self.signals:
                if s == signal.SIGINT and signal.getsignal(s) is signal.SIG_IGN:
                    # started in the background with Ctrl-C ignored (nohup, `cmd &`): keep it so
                    continue
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}
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


def stop_message(step: int, reason: str | None, budget_s: float, workdir=None) -> str:
    """What a train loop prints when it stops early: ``reason`` is ``"preempted"``,
    ``"interrupted"`` or ``None`` (its time budget)."""
    where = f" in {str(workdir)!r}" if workdir is not None else ""
    again = "run `jaxgen train` again on this workdir to continue"
    if reason == "preempted":
        return (
            f"stopping at step {step}: SIGTERM received (preemption); "
            f"checkpoint {step} saved{where}; {again}"
        )
    if reason == "interrupted":
        return (
            f"stopping at step {step}: interrupted (Ctrl-C); "
            f"checkpoint {step} saved{where}; {again}"
        )
    return (
        f"stopping at step {step}: train.time_budget_s={budget_s:g} reached; "
        f"checkpoint {step} saved{where}"
    )


def not_started_message(reason: str | None) -> str:
    """What a trainer prints when a signal arrived before its first step."""
    what = "SIGTERM received" if reason == "preempted" else "interrupted (Ctrl-C)"
    return (
        f"stopping before the first step: {what}; nothing was trained and no checkpoint was written"
    )
