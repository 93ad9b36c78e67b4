"""Shared plumbing of the fused recurrent kernels: padded layout, block sizes, carry, specs.

Every kernel runs on one *padded layout*, the same for every backend, so that
the forward pass can pick its backend with :func:`jax.lax.platform_dependent`
and still hand the backward pass residuals of one shape:

* hidden ``H -> Hp``, a multiple of 128 (one TPU lane tile, so each gate block
  ``[k*Hp, (k+1)*Hp)`` starts on a lane boundary; on GPU, 128-wide column
  chunks keep every Triton tensor a power of two);
* batch ``B -> Bp``, a multiple of 16 (bf16 sublane tile on TPU, and the
  smallest ``tl.dot`` operand on GPU);
* time ``T -> Tp``, a multiple of the TPU time block.

Padded hidden units start at zero and stay zero (their weights are zero: the
gates see ``z = 0`` so ``c' = c/2 = 0`` and ``h' = o*tanh(0) = 0``); padded
rows and padded steps are masked through a per-row length (0 for padded
rows), so padding is never wrong, only wasted work.

In the shape comments, ``bb`` is the batch block (rows per program) and ``hc`` the hidden
column chunk of :class:`BlockSizes`.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

F32 = jnp.float32
LANE = 128  # hidden padding unit (TPU lane width; GPU column chunk)
SUBLANE = 16  # batch padding unit
TIME_BLOCK = 16  # steps per TPU grid iteration
TPU_MAX_BATCH_TILE = 256
GPU_BATCH_TILE = 16
# Estimated VMEM above which the TPU branch uses the scan path instead: the
# weights must stay resident, and v5e/v6e have 128 MiB, v7x 64 MiB per core.
TPU_VMEM_BUDGET = 48 * 2**20
# Largest padded hidden size the Triton branch takes (4 * (Hp/128)^2 dots per step
# are unrolled into the kernel; beyond this the CUDA branch uses the scan path).
GPU_MAX_HIDDEN = 1024
KINDS = ("tpu", "gpu")


_WARNED: set[str] = set()


def warn_once(reason: str, message: str) -> None:
    """``warnings.warn(message)`` the first time ``reason`` comes up in this process (then silent).

    Used where ``mode="pallas"``/``"auto"`` does something other than asked (runs ``lax.scan``,
    ignores an argument). Issued at trace time, so once per process, not once per call.
    """
    if reason in _WARNED:
        return
    _WARNED.add(reason)
    warnings.warn(message, UserWarning, stacklevel=3)


def target_platform() -> str:
    """The platform a trace will most likely be lowered for: JAX's default backend
    (``"cpu"``, ``"gpu"`` for CUDA/ROCm, ``"tpu"``). Programs exported for another
    platform with ``jax.export`` are not checked against this one."""
    return jax.default_backend()


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


# --------------------------------------------------------------------------- layout and tiling


@dataclasses.dataclass(frozen=True)
class Layout:
    """Logical and padded sizes of one call."""

    T: int
    B: int
    H: int
    Tp: int
    Bp: int
    Hp: int
    time_block: int  # steps per TPU grid iteration


def padded_layout(T: int, B: int, H: int) -> Layout:
    time_block = min(T, TIME_BLOCK)
    Bp = round_up(B, SUBLANE)
    if Bp > TPU_MAX_BATCH_TILE:
        Bp = round_up(B, TPU_MAX_BATCH_TILE)
    return Layout(
        T=T,
        B=B,
        H=H,
        Tp=round_up(T, time_block),
        Bp=Bp,
        Hp=round_up(H, LANE),
        time_block=time_block,
    )


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """How one backend tiles the padded problem (validated on construction).

    ``tpu``: grid ``(Bp/batch_block, Tp/time_block)``; the batch axis is parallel, the
    time axis sequential ("arbitrary"); the carry lives in VMEM scratch across time
    blocks and the weight block index never changes, so the weights are DMA'd
    into VMEM once per batch tile and stay there. Each step is one
    ``[bb, Hp] x [Hp, Hp]`` MXU product per gate.

    ``gpu`` (Triton): grid ``(Bp/16,)``, one program per 16 rows runs the whole
    time loop; the carry lives in registers as ``Hp/128`` column chunks, and
    the weights are re-read from global memory (L2-resident for moderate H)
    every step, because a Triton program cannot keep a 4*H*H matrix in its
    shared memory and Pallas/Triton has no grid-wide barrier for a
    persistent-RNN split of the weights over all SMs.
    """

    kind: str  # "tpu" (Mosaic) or "gpu" (Triton)
    batch_block: int  # rows per program (bb)
    time_block: int  # steps per grid iteration; the whole padded sequence on GPU
    hidden_chunk: int  # columns per hidden chunk (hc): all of Hp on TPU, 128 on GPU
    num_batch_blocks: int
    num_time_blocks: int  # 1 on GPU

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"BlockSizes.kind must be one of {KINDS}, got {self.kind!r}")
        for field in dataclasses.fields(self)[1:]:
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(
                    f"BlockSizes.{field.name} must be a positive integer, got {value!r}"
                )
        if self.batch_block % SUBLANE:
            raise ValueError(
                f"BlockSizes.batch_block must be a multiple of {SUBLANE} (the batch "
                f"padding unit), got {self.batch_block}"
            )
        if self.hidden_chunk % LANE:
            raise ValueError(
                f"BlockSizes.hidden_chunk must be a multiple of {LANE} (the hidden "
                f"padding unit), got {self.hidden_chunk}"
            )
        if self.kind == "gpu" and self.num_time_blocks != 1:
            raise ValueError(
                "BlockSizes.num_time_blocks must be 1 for kind='gpu' (one program "
                f"runs the whole time loop), got {self.num_time_blocks}"
            )

    @property
    def grid(self):
        if self.kind == "gpu":
            return (self.num_batch_blocks,)
        return (self.num_batch_blocks, self.num_time_blocks)

    @classmethod
    def tpu(cls, layout: Layout) -> BlockSizes:
        batch_block = min(layout.Bp, TPU_MAX_BATCH_TILE)
        return cls(
            "tpu",
            batch_block=batch_block,
            time_block=layout.time_block,
            hidden_chunk=layout.Hp,
            num_batch_blocks=layout.Bp // batch_block,
            num_time_blocks=layout.Tp // layout.time_block,
        )

    @classmethod
    def gpu(cls, layout: Layout) -> BlockSizes:
        return cls(
            "gpu",
            batch_block=GPU_BATCH_TILE,
            time_block=layout.Tp,
            hidden_chunk=LANE,
            num_batch_blocks=layout.Bp // GPU_BATCH_TILE,
            num_time_blocks=1,
        )

    @classmethod
    def of_kind(cls, kind: str, layout: Layout) -> BlockSizes:
        return cls.tpu(layout) if kind == "tpu" else cls.gpu(layout)


def tpu_vmem_estimate(
    layout: Layout, block_sizes: BlockSizes, gates: int, in_bytes: int, residual_cols: int
) -> int:
    """Bytes of VMEM the TPU kernel's blocks take (streamed blocks double-buffered,
    the resident weights single-buffered)."""
    width = gates * layout.Hp
    rows = block_sizes.time_block * block_sizes.batch_block
    weights = layout.Hp * width * in_bytes
    zx = 2 * rows * width * in_bytes
    ys = 2 * rows * layout.Hp * in_bytes
    residuals = 2 * rows * residual_cols * 4
    carry = 8 * block_sizes.batch_block * layout.Hp * 4
    return weights + zx + ys + residuals + carry


def tpu_fits(layout: Layout, gates: int, residual_cols: int) -> bool:
    """Whether the TPU kernel's estimated VMEM stays within :data:`TPU_VMEM_BUDGET`."""
    estimate = tpu_vmem_estimate(layout, BlockSizes.tpu(layout), gates, 4, residual_cols)
    return estimate <= TPU_VMEM_BUDGET


def gpu_fits(layout: Layout) -> bool:
    return layout.Hp <= GPU_MAX_HIDDEN


def compiler_params(
    block_sizes: BlockSizes, layout: Layout, gates: int, in_bytes: int, residual_cols: int
):
    """TPU: the VMEM limit from the estimate; GPU: the Triton launch parameters."""
    if block_sizes.kind == "gpu":
        return pltriton.CompilerParams(num_warps=4, num_stages=1)
    vmem_bytes = tpu_vmem_estimate(layout, block_sizes, gates, in_bytes, residual_cols)
    limit = int(min(max(32 * 2**20, 1.5 * vmem_bytes), 100 * 2**20))
    return pltpu.CompilerParams(
        dimension_semantics=("parallel", "arbitrary"), vmem_limit_bytes=limit
    )


# --------------------------------------------------------------------------- padding


def pad_to(x, shape):
    pads = [(0, s - d) for d, s in zip(x.shape, shape)]
    if all(p == (0, 0) for p in pads):
        return x
    return jnp.pad(x, pads)


def pad_gates(x, gates: int, H: int, Hp: int):
    """Pad the last axis ``[..., G*H] -> [..., G*Hp]`` gate by gate (one gate: unchanged;
    :func:`pad_to` pads its last axis)."""
    if H == Hp or gates == 1:
        return x
    lead = x.shape[:-1]
    x = x.reshape(*lead, gates, H)
    x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, 0), (0, Hp - H)])
    return x.reshape(*lead, gates * Hp)


def padded_lengths(lengths, layout: Layout):
    """``[Bp, 1]`` int32: real rows get their length (``T`` when none), padded rows 0."""
    if lengths is None:
        lengths = jnp.full((layout.B,), layout.T, jnp.int32)
    else:
        lengths = jnp.asarray(lengths)
        if not jnp.issubdtype(lengths.dtype, jnp.integer):
            raise TypeError(f"lengths must be integers, got dtype {lengths.dtype}")
        if lengths.shape != (layout.B,):
            raise ValueError(f"lengths must have shape [B] = ({layout.B},), got {lengths.shape}")
        lengths = jnp.clip(lengths, -1, layout.T).astype(jnp.int32)
    return pad_to(lengths, (layout.Bp,))[:, None]


# --------------------------------------------------------------------------- inside the kernels


def dot(a, w_block, wdtype):
    """``a @ w_block`` with float32 accumulation (full float32 precision for f32)."""
    precision = jax.lax.Precision.HIGHEST if wdtype == jnp.float32 else jax.lax.Precision.DEFAULT
    return jax.lax.dot(
        a.astype(wdtype), w_block, precision=precision, preferred_element_type=jnp.float32
    )


def columns(block_sizes: BlockSizes, chunk: int):
    """Static slice of hidden column chunk ``chunk`` (gate ``k``'s chunk ``q`` is
    ``columns(k * num_chunks + q)``)."""
    return slice(chunk * block_sizes.hidden_chunk, (chunk + 1) * block_sizes.hidden_chunk)


def chunked_dot(chunks, w_ref, cols, out_chunk, wdtype):
    """Column chunk ``out_chunk`` of ``x @ W``, with ``x`` held as its column ``chunks``."""
    acc = dot(chunks[0], w_ref[cols(0), cols(out_chunk)], wdtype)  # [bb, hc]
    for p in range(1, len(chunks)):
        acc = acc + dot(chunks[p], w_ref[cols(p), cols(out_chunk)], wdtype)
    return acc


def time_block_id(block_sizes: BlockSizes):
    """Which time block this program instance is on (always 0 on GPU: one block)."""
    return pl.program_id(1) if block_sizes.kind == "tpu" else 0


def time_index(block_sizes: BlockSizes, reverse: bool, time_block, step):
    """Global and in-block time index of the ``step``-th step processed in ``time_block``.

    ``reverse`` here is the *processing* direction (the backward pass of a
    forward-direction RNN runs in reverse).
    """
    block = (block_sizes.num_time_blocks - 1 - time_block) if reverse else time_block
    local = (block_sizes.time_block - 1 - step) if reverse else step
    return block * block_sizes.time_block + local, local


def scratch_shapes(block_sizes: BlockSizes, layout: Layout, count: int):
    """VMEM scratch for ``count`` carried ``[bb, Hp]`` float32 arrays (TPU; none on GPU)."""
    if block_sizes.kind != "tpu":
        return ()
    return [pltpu.VMEM((block_sizes.batch_block, layout.Hp), F32) for _ in range(count)]


def load_carry(block_sizes, time_block, num_chunks, initial_refs, scratch_refs):
    """The carry entering this time block: per carried array, a tuple of float32 column chunks.

    TPU: the carry lives in VMEM scratch across the sequential time axis; the first time
    block fills it from ``initial_refs`` (one chunk, all of ``Hp``). GPU: this program runs
    the whole time loop and holds the carry in registers, as ``num_chunks`` column chunks.
    """
    if block_sizes.kind == "tpu":

        @pl.when(time_block == 0)
        def _init_carry():
            for scratch_ref, initial_ref in zip(scratch_refs, initial_refs):
                scratch_ref[...] = initial_ref[...].astype(F32)  # [bb, Hp]

        return tuple((scratch_ref[...],) for scratch_ref in scratch_refs)  # [bb, Hp]
    return tuple(
        tuple(
            initial_ref[:, columns(block_sizes, q)].astype(F32)  # [bb, hc]
            for q in range(num_chunks)
        )
        for initial_ref in initial_refs
    )


def begin_kernel(block_sizes, hidden, initial_refs, scratch_refs):
    """What every kernel body starts with: the number of hidden column chunks (``Hp / hc``),
    the chunk slicer ``cols(q)``, this program's time block and the carry entering it."""
    num_chunks = hidden // block_sizes.hidden_chunk
    cols = functools.partial(columns, block_sizes)
    time_block = time_block_id(block_sizes)
    carry = load_carry(block_sizes, time_block, num_chunks, initial_refs, scratch_refs)
    return num_chunks, cols, time_block, carry


def store_carry(block_sizes, time_block, carry, scratch_refs, final_refs):
    """Keep the carry leaving this time block (TPU scratch) and write the final carry after
    the last block (the carry as :func:`load_carry` returns it)."""
    if block_sizes.kind == "tpu":
        for scratch_ref, (chunk,) in zip(scratch_refs, carry):
            scratch_ref[...] = chunk

        @pl.when(time_block == block_sizes.num_time_blocks - 1)
        def _write_final_carry():
            for final_ref, (chunk,) in zip(final_refs, carry):
                final_ref[...] = chunk.astype(final_ref.dtype)

        return
    for final_ref, chunks in zip(final_refs, carry):
        for q, chunk in enumerate(chunks):
            final_ref[:, columns(block_sizes, q)] = chunk.astype(final_ref.dtype)


# --------------------------------------------------------------------------- block specs


def block_specs(block_sizes: BlockSizes, reverse: bool):
    """BlockSpec factories: ``sequence(width)`` for ``[Tp, Bp, width]`` arrays (time blocks
    visited in the processing direction ``reverse``), ``rows(width)`` for ``[Bp, width]``,
    ``whole(shape)`` for arrays read whole."""
    num_time_blocks = block_sizes.num_time_blocks
    if block_sizes.kind == "gpu":

        def sequence_index(b):
            return 0, b, 0

        def row_index(b):
            return b, 0

        def whole_index(b):
            return 0, 0
    else:

        def sequence_index(b, t):
            return (num_time_blocks - 1 - t if reverse else t), b, 0

        def row_index(b, t):
            return b, 0

        def whole_index(b, t):
            return 0, 0

    def sequence(width):
        shape = (block_sizes.time_block, block_sizes.batch_block, width)
        return pl.BlockSpec(shape, sequence_index)

    def rows(width):
        return pl.BlockSpec((block_sizes.batch_block, width), row_index)

    def whole(shape):
        # Read whole with a constant block index: fetched once, resident on chip.
        # On TPU one buffer suffices (the block never changes), halving its VMEM.
        mode = pl.Buffered(buffer_count=1) if block_sizes.kind == "tpu" else None
        return pl.BlockSpec(shape, whole_index, pipeline_mode=mode)

    return sequence, rows, whole
