"""Shared plumbing of the fused recurrent kernels: padded layout, backend configs.

Every kernel runs on one *padded layout*, the same for every backend, so that
the forward pass can pick its backend with :func:`jax.lax.platform_dependent`
and still hand the backward pass residuals of one shape:

* hidden ``H -> Hp``, a multiple of 128 (one TPU lane tile, so each gate block
  ``[k*Hp, (k+1)*Hp)`` starts on a lane boundary; on GPU, 128-wide column
  chunks keep every Triton tensor a power of two);
* batch ``B -> Bp``, a multiple of 16 (bf16 sublane tile on TPU, and the
  smallest ``tl.dot`` operand on GPU);
* time ``T -> Tp``, a multiple of the TPU time block ``tt``.

Padded hidden units start at zero and stay zero (their weights are zero: the
gates see ``z = 0`` so ``c' = c/2 = 0`` and ``h' = o*tanh(0) = 0``); padded
rows and padded steps are masked through a per-row length (0 for padded
rows), so padding is never wrong, only wasted work.
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np

LANE = 128  # hidden padding unit (TPU lane width; GPU column chunk)
SUBLANE = 16  # batch padding unit
TIME_BLOCK = 16  # steps per TPU grid iteration (``tt``)
TPU_MAX_BATCH_TILE = 256
GPU_BATCH_TILE = 16
# Estimated VMEM above which the TPU branch uses the scan path instead: the
# weights must stay resident, and v5e/v6e have 128 MiB, v7x 64 MiB per core.
TPU_VMEM_BUDGET = 48 * 2**20
# Largest padded hidden size the Triton branch takes (4 * (Hp/128)^2 dots per step
# are unrolled into the kernel; beyond this the CUDA branch uses the scan path).
GPU_MAX_HIDDEN = 1024


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


@dataclasses.dataclass(frozen=True)
class Layout:
    """Logical and padded sizes of one call."""

    T: int
    B: int
    H: int
    Tp: int
    Bp: int
    Hp: int
    tt: int  # TPU time block


def layout(T: int, B: int, H: int) -> Layout:
    tt = min(T, TIME_BLOCK)
    Bp = round_up(B, SUBLANE)
    if Bp > TPU_MAX_BATCH_TILE:
        Bp = round_up(B, TPU_MAX_BATCH_TILE)
    return Layout(T=T, B=B, H=H, Tp=round_up(T, tt), Bp=Bp, Hp=round_up(H, LANE), tt=tt)


@dataclasses.dataclass(frozen=True)
class Config:
    """How one backend tiles the padded problem.

    ``tpu``: grid ``(Bp/bt, Tp/tt)``; the batch axis is parallel, the time axis
    sequential ("arbitrary"); the carry lives in VMEM scratch across time
    blocks and the weight block index never changes, so the weights are DMA'd
    into VMEM once per batch tile and stay there. Each step is one
    ``[bt, Hp] x [Hp, Hp]`` MXU product per gate.

    ``gpu`` (Triton): grid ``(Bp/16,)``, one program per 16 rows runs the whole
    time loop; the carry lives in registers as ``Hp/128`` column chunks, and
    the weights are re-read from global memory (L2-resident for moderate H)
    every step, because a Triton program cannot keep a 4*H*H matrix in its
    shared memory and Pallas/Triton has no grid-wide barrier for a
    persistent-RNN split of the weights over all SMs.
    """

    kind: str  # "tpu" or "gpu"
    bt: int  # batch tile
    tt: int  # time block (grid axis 1); == Tp for gpu
    nt: int  # number of time blocks
    hc: int  # hidden column chunk
    nb: int  # number of batch tiles

    @property
    def grid(self):
        return (self.nb,) if self.kind == "gpu" else (self.nb, self.nt)


def tpu_config(lay: Layout) -> Config:
    bt = lay.Bp if lay.Bp <= TPU_MAX_BATCH_TILE else TPU_MAX_BATCH_TILE
    return Config("tpu", bt=bt, tt=lay.tt, nt=lay.Tp // lay.tt, hc=lay.Hp, nb=lay.Bp // bt)


def gpu_config(lay: Layout) -> Config:
    return Config("gpu", bt=GPU_BATCH_TILE, tt=lay.Tp, nt=1, hc=LANE, nb=lay.Bp // GPU_BATCH_TILE)


def tpu_vmem_estimate(lay: Layout, cfg: Config, gates: int, in_bytes: int, residual_cols: int) -> int:
    """Bytes of VMEM the TPU kernel's blocks take (streamed blocks double-buffered,
    the resident weights single-buffered)."""
    G = gates * lay.Hp
    w = lay.Hp * G * in_bytes
    zx = 2 * cfg.tt * cfg.bt * G * in_bytes
    ys = 2 * cfg.tt * cfg.bt * lay.Hp * in_bytes
    res = 2 * cfg.tt * cfg.bt * residual_cols * 4
    carry = 8 * cfg.bt * lay.Hp * 4
    return w + zx + ys + res + carry


def tpu_compiler_params(vmem_bytes: int):
    from jax.experimental.pallas import tpu as pltpu

    limit = int(min(max(32 * 2**20, 1.5 * vmem_bytes), 100 * 2**20))
    return pltpu.CompilerParams(
        dimension_semantics=("parallel", "arbitrary"), vmem_limit_bytes=limit
    )


def gpu_compiler_params():
    from jax.experimental.pallas import triton as pltriton

    return pltriton.CompilerParams(num_warps=4, num_stages=1)


def dot(a, w_block, wdtype):
    """``a @ w_block`` with float32 accumulation (full float32 precision for f32)."""
    prec = jax.lax.Precision.HIGHEST if wdtype == jnp.float32 else jax.lax.Precision.DEFAULT
    return jax.lax.dot(a.astype(wdtype), w_block, precision=prec,
                       preferred_element_type=jnp.float32)


def pad_to(x, shape):
    pads = [(0, s - d) for d, s in zip(x.shape, shape)]
    if all(p == (0, 0) for p in pads):
        return x
    return jnp.pad(x, pads)


def pad_gates(x, gates: int, H: int, Hp: int):
    """Pad the last axis ``[..., G*H] -> [..., G*Hp]`` gate by gate."""
    if H == Hp:
        return x
    lead = x.shape[:-1]
    x = x.reshape(*lead, gates, H)
    x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, 0), (0, Hp - H)])
    return x.reshape(*lead, gates * Hp)


def unpad_gates(x, gates: int, H: int, Hp: int):
    if H == Hp:
        return x
    lead = x.shape[:-1]
    return x.reshape(*lead, gates, Hp)[..., :H].reshape(*lead, gates * H)


def padded_lengths(lengths, lay: Layout):
    """``[Bp, 1]`` int32: real rows get their length (``T`` when none), padded rows 0."""
    if lengths is None:
        lens = jnp.full((lay.B,), lay.T, jnp.int32)
    else:
        lens = jnp.asarray(lengths)
        if not jnp.issubdtype(lens.dtype, jnp.integer):
            raise TypeError(f"lengths must be integers, got dtype {lens.dtype}")
        if lens.shape != (lay.B,):
            raise ValueError(f"lengths must have shape [B] = ({lay.B},), got {lens.shape}")
        lens = jnp.clip(lens, -1, lay.T).astype(jnp.int32)
    return pad_to(lens, (lay.Bp,))[:, None]


def time_index(cfg: Config, reverse: bool, j, s):
    """Global and in-block time index of the ``s``-th step processed in time block ``j``.

    ``reverse`` here is the *processing* direction (the backward pass of a
    forward-direction RNN runs in reverse).
    """
    blk = (cfg.nt - 1 - j) if reverse else j
    ls = (cfg.tt - 1 - s) if reverse else s
    return blk * cfg.tt + ls, ls


def block_index(cfg: Config, reverse: bool):
    """Index map of time-blocked arrays ``[Tp, Bp, X]``."""
    if cfg.kind == "gpu":
        return lambda b: (0, b, 0)
    if reverse:
        return lambda b, j: (cfg.nt - 1 - j, b, 0)
    return lambda b, j: (j, b, 0)


def row_index(cfg: Config):
    if cfg.kind == "gpu":
        return lambda b: (b, 0)
    return lambda b, j: (b, 0)


def const_index(cfg: Config):
    if cfg.kind == "gpu":
        return lambda b: (0, 0)
    return lambda b, j: (0, 0)


def time_block_id(cfg: Config):
    from jax.experimental import pallas as pl

    return pl.program_id(1) if cfg.kind == "tpu" else 0


def col(cfg: Config, q: int):
    """Static slice of hidden column chunk ``q`` (gate ``k``'s chunk ``q`` is ``col(k*n + q)``)."""
    return slice(q * cfg.hc, (q + 1) * cfg.hc)


def specs(cfg: Config, lay: Layout, reverse: bool):
    """BlockSpec factories: ``seq(width)`` for ``[Tp, Bp, width]`` arrays,
    ``rows(width)`` for ``[Bp, width]``, ``full(shape)`` for arrays read whole."""
    from jax.experimental import pallas as pl

    def seq(width):
        return pl.BlockSpec((cfg.tt, cfg.bt, width), block_index(cfg, reverse))

    def rows(width):
        return pl.BlockSpec((cfg.bt, width), row_index(cfg))

    def full(shape):
        # Read whole with a constant block index: fetched once, resident on chip.
        # On TPU one buffer suffices (the block never changes), halving its VMEM.
        mode = pl.Buffered(buffer_count=1) if cfg.kind == "tpu" else None
        return pl.BlockSpec(shape, const_index(cfg), pipeline_mode=mode)

    return seq, rows, full


def dtype_bytes(dtype) -> int:
    return np.dtype(dtype).itemsize


