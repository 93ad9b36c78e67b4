"""Fused recurrent sequence kernels (Pallas), forward and backward.

Public entry points (called by :func:`jaxgen.rnn.lstm` and :func:`jaxgen.rnn.rnn`
for ``mode="pallas"`` and ``mode="auto"``):

* :func:`lstm_sequence` ``(params, zx, (h0, c0)) -> ((h_T, c_T), ys)``
* :func:`rnn_sequence` ``(params, zx, h0) -> (h_T, ys)``

with ``zx`` the already-projected input ``x @ w_ih + b``, time-major
``[T, B, G*H]``. Their references, of the same signature less ``mode``, are the
``lax.scan`` paths of :mod:`jaxgen.recurrence` (``lstm_sequence_reference``,
``rnn_sequence_reference``). The kernels know only arrays: they import
:mod:`jaxgen.recurrence` for the step equations, never :mod:`jaxgen.rnn`.

Layout, as in JAX's own Pallas ops: :mod:`~jaxgen.kernels.common` (padded layout,
:class:`~jaxgen.kernels.common.BlockSizes`, carry and block specs),
:mod:`~jaxgen.kernels.lstm` and :mod:`~jaxgen.kernels.simple_rnn` (kernel bodies,
``pallas_call`` wrappers, jnp mirrors), :mod:`~jaxgen.kernels.ops` (checks, padding,
platform dispatch, custom VJPs). See ``docs/kernels.md`` for the design.

Which implementation runs is decided by the platform the program is *lowered
for* (``jax.lax.platform_dependent``), not by the machine tracing it, so
``jax.export`` for TPU or CUDA from a CPU-only machine holds the real kernel:

==========  ===================================  ==========================
platform    ``mode="pallas"``                    ``mode="auto"``
==========  ===================================  ==========================
cpu         kernel in Pallas interpret mode      LSTM: the C++ loops of
            (correct, slow: for tests)           :mod:`jaxgen.native`; RNN:
                                                 ``lax.scan`` path
tpu         Mosaic TPU kernel                    kernel
cuda/rocm   Triton kernel                        ``lax.scan`` path
==========  ===================================  ==========================

``AUTO`` records what ``mode="auto"`` picks: a fixed table, not a measurement
made at run time. On CPU it is the compiled C++ loop of ``mode="native"`` for
the LSTM (1.35x the scan path's train step at 2 x 256, batch 32, seq 64,
``benchmarks/results/rnn_step.md``) and the scan path for the simple RNN;
interpret mode was measured orders of magnitude slower
(``benchmarks/results/kernels.md``). On
CUDA it is the scan path too: on an H200 the Triton kernel's forward took
205 ms at T 500, B 64, H 128 against the scan's 4.2 ms
(``benchmarks/results/gpu/gpu_check.md``); one program walks the sequence, so the
kernel is latency-bound. ROCm runs the same Triton kernel (not measured). The
TPU entry is the *intended* choice, not yet backed by a measurement on TPU.

Where a shape does not fit a backend's kernel (TPU: the resident weights and
blocks exceed the VMEM budget; GPU: padded hidden size above 1024) that
backend's branch runs the same computation as a ``lax.scan`` instead. With
``mode="pallas"`` this issues a ``UserWarning`` (once per reason and process,
at trace time) when the default backend is that platform; ``mode="auto"``
falls back silently (that is its contract). Neither mode takes ``unroll=`` or
``backward=`` (:func:`jaxgen.rnn.lstm` warns when they are set).
"""

from jaxgen import recurrence
from jaxgen.kernels import common
from jaxgen.kernels.common import BlockSizes
from jaxgen.kernels.ops import AUTO, lstm_sequence, rnn_sequence

lstm_sequence_reference = recurrence.lstm_scan
rnn_sequence_reference = recurrence.rnn_scan

__all__ = [
    "AUTO",
    "BlockSizes",
    "common",
    "lstm_sequence",
    "lstm_sequence_reference",
    "rnn_sequence",
    "rnn_sequence_reference",
]
