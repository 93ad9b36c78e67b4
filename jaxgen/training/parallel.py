"""Data parallelism through JAX's own SPMD machinery (``jax.sharding``), one CPU to a multi-host
slice.

* A 1-D :class:`~jax.sharding.Mesh` named ``data`` over every device of every process.
* Parameters, optimiser states and everything else in the train state are replicated; the batch
  is sharded along its batch axis. The train step is the single-device step, jitted with explicit
  ``in_shardings``/``out_shardings``: XLA inserts the gradient all-reduce, and batch statistics
  (the DCGAN's batch norm) are means over the **global** batch.
* Per-step randomness is ``fold_in(key, step)`` on the replicated key, drawn for the global batch
  and sharded like it, so the numbers do not depend on the device count.
* Each process loads only its slice of the global batch, and
  ``jax.make_array_from_process_local_data`` assembles the global array.
* ``train.batch`` in the configs is always the **global** batch (all devices, all hosts); it must
  divide evenly by the device count.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxgen.errors import UserError

AXIS = "data"


def maybe_initialize_distributed(
    enabled: bool, coordinator: str = "", num_processes: int = 0, process_id: int = -1
) -> None:
    """``jax.distributed.initialize()`` when a config asks for it (multi-host TPU slices and GPU
    clusters; on Cloud TPU the arguments are discovered automatically). Call before anything else
    touches JAX devices."""
    if not enabled:
        return
    kw = {}
    if coordinator:
        kw = dict(
            coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
        )
    jax.distributed.initialize(**kw)


def make_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int, batch_axis: int = 0) -> NamedSharding:
    spec = [None] * ndim
    spec[batch_axis] = AXIS
    return NamedSharding(mesh, P(*spec))


def check_batch(global_batch: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if global_batch % n:
        raise UserError(
            f"config.train.batch={global_batch} (the global batch) does not divide evenly over "
            f"{n} devices; use a multiple of {n}"
        )


def local_rows(global_batch: int) -> slice:
    """This process's rows of a global batch (processes own equal, contiguous slices)."""
    per = global_batch // jax.process_count()
    i = jax.process_index()
    return slice(i * per, (i + 1) * per)


def global_batch(
    mesh: Mesh, local: np.ndarray, global_shape: tuple[int, ...], batch_axis: int = 0
) -> jax.Array:
    """The global batch array from this process's slice of it."""
    sharding = batch_sharding(mesh, len(global_shape), batch_axis)
    return jax.make_array_from_process_local_data(sharding, local, global_shape)


def jit_data_parallel(
    step: Callable,
    mesh: Mesh,
    state: Any,
    batch_ndims: tuple[int, ...],
    batch_axes: tuple[int, ...] | None = None,
) -> tuple[Callable, Any]:
    """``(jitted_step, placed_state)``: ``step(state, *batch)`` with the state replicated over
    ``mesh`` and each batch argument sharded along its batch axis (default 0; ``None``: replicated,
    e.g. a scalar flag)."""
    batch_axes = batch_axes or (0,) * len(batch_ndims)
    rep = replicated(mesh)
    state_sh = jax.tree.map(lambda _: rep, state)
    in_sh = (state_sh,) + tuple(
        rep if ax is None else batch_sharding(mesh, nd, ax)
        for nd, ax in zip(batch_ndims, batch_axes)
    )
    fn = jax.jit(step, in_shardings=in_sh, out_shardings=(state_sh, rep), donate_argnums=0)
    return fn, jax.device_put(state, state_sh)
