"""Analyses of recurrent networks: vanishing gradients and memory span.

* :mod:`~jaxgen.analysis.gradient_decay`: ``‖∂L/∂h_t‖`` for every step in one
  backward pass (zero probes on the hidden states), decay fits, the Pascanu et
  al. (2013) bound.
* :mod:`~jaxgen.analysis.tasks`: the adding problem and the latch task of
  Hochreiter & Schmidhuber (1997), with explicit keys.
* :mod:`~jaxgen.analysis.train`: several seeds trained at once on a task.
* :func:`run_gradient_decay`, :func:`run_memory_span`: end-to-end runs that
  write JSON + markdown + PNG (the ``jaxgen analyze`` commands); their tables and
  figures are made by :mod:`~jaxgen.analysis.report`.

Only :mod:`jaxgen.cli` imports this package (benchmarks and tests may too).
"""

from .gradient_decay import (
    decay_fit,
    gate_sigma_max,
    grad_norms_by_lag,
    hidden_state_grads,
    model_grad_norms,
    pascanu_check,
)
from .runners import run_gradient_decay, run_memory_span
from .tasks import adding_problem, adding_target, latch_target, latch_task, latch_vocab_size
from .train import make_task, train_seeds

__all__ = [
    "adding_problem",
    "adding_target",
    "decay_fit",
    "gate_sigma_max",
    "grad_norms_by_lag",
    "hidden_state_grads",
    "latch_target",
    "latch_task",
    "latch_vocab_size",
    "make_task",
    "model_grad_norms",
    "pascanu_check",
    "run_gradient_decay",
    "run_memory_span",
    "train_seeds",
]
