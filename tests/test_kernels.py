"""The fused Pallas LSTM / RNN kernels against the lax.scan implementation.

On CPU the kernels run in Pallas interpret mode (``mode="pallas"``); both
tilings are checked: the TPU one (grid over batch tiles x time blocks, carry in
scratch; what ``mode="pallas"`` runs on CPU) and the GPU/Triton one (one program
per 16 rows, hidden in 128-column chunks), forced through the private
``ops._lstm_sequence(..., force=...)``. Export tests
lower for TPU and CUDA from this CPU-only machine and look for the real kernel.

Shapes are tiny and each case compiles once per implementation (interpret mode
compiles slowly): the file runs in about a minute on 2 cores.
"""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from jaxgen import kernels, recurrence, rnn
from jaxgen.kernels import BlockSizes, common, ops

F32_TOL = 1e-5  # relative (to the largest magnitude of the reference)
BF16_TOL = 4e-2  # bf16 has 8 mantissa bits; the reference also rounds its state to bf16


def _inputs(kind, T, B, H, dtype, seed):
    G = 4 if kind == "lstm" else 1
    rng = np.random.default_rng(seed)  # NumPy: jax.random would compile a sampler per shape
    draw = lambda shape, scale: jnp.asarray((scale * rng.standard_normal(shape)).astype(dtype))
    w = draw((H, G * H), 1 / np.sqrt(H))
    zx = draw((T, B, G * H), 1.0)
    h0, c0 = draw((B, H), 0.5), draw((B, H), 0.5)
    return w, zx, ((h0, c0) if kind == "lstm" else h0)


def _outputs_and_grads(fn, kw, w, zx, carry):
    """One jit: forward outputs and the gradients w.r.t. w_hh, zx and the carry."""

    def loss(w, zx, carry):
        final, ys = fn({"w_hh": w}, zx, carry, **kw)
        y32 = ys.astype(jnp.float32)
        total = jnp.sum(y32 * jnp.cos(y32))  # a non-uniform cotangent for every step
        for n, leaf in enumerate(jax.tree.leaves(final)):
            total = total + (1.3 + n) * jnp.sum(leaf.astype(jnp.float32))
        return total, (final, ys)

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
        w, zx, carry
    )
    return out, grads


def _lstm_autodiff(params, zx, carry, *, reverse, lengths):
    """The LSTM scan differentiated by JAX: a gradient reference that shares no code with the
    hand-written gate gradients (``recurrence.lstm_gate_grads``) of the kernel and of the scan."""
    return recurrence.masked_scan(
        recurrence.lstm_step, params, carry, zx, reverse=reverse, lengths=lengths
    )


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)


CASES = [
    # kind, T, B, H, dtype, reverse, lengths, force, activation
    # T=20 > the 16-step time block: two blocks, padded time, carry through scratch.
    ("lstm", 20, 5, 33, jnp.float32, True, [20, 3, 0, 7, 15], None, None),
    # GPU tiling: B=17 -> two 16-row programs, H=140 -> two 128-column chunks.
    ("lstm", 7, 17, 140, jnp.float32, False, list(range(17)), ("gpu", True), None),
    ("lstm", 6, 3, 20, jnp.bfloat16, False, None, None, None),
    ("rnn", 20, 5, 33, jnp.float32, True, [20, 3, 0, 7, 15], None, "tanh"),
    ("rnn", 7, 17, 140, jnp.float32, False, None, ("gpu", True), "relu"),
    ("rnn", 6, 3, 20, jnp.bfloat16, True, [6, 2, 4], None, "tanh"),
]


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=lambda c: (
        "-".join(str(v if not hasattr(v, "dtype") else jnp.dtype(v).name) for v in c[:6])
        + ("-gpu" if c[7] else "")
    ),
)
def test_kernel_matches_scan(case):
    kind, T, B, H, dtype, rev, lengths, force, act = case
    w, zx, carry = _inputs(kind, T, B, H, dtype, seed=T * 100 + B * 10 + H)
    kw = dict(reverse=rev, lengths=None if lengths is None else jnp.asarray(lengths, jnp.int32))
    if kind == "lstm":
        kern, forced, ref = kernels.lstm_sequence, ops._lstm_sequence, recurrence.lstm_scan
    else:
        kern, forced, ref = kernels.rnn_sequence, ops._rnn_sequence, recurrence.rnn_scan
        kw["activation"] = act
    if force is None:
        kern = functools.partial(kern, mode="pallas")
    else:
        kern = functools.partial(forced, force=force)
    out_k, g_k = _outputs_and_grads(kern, kw, w, zx, carry)
    out_r, g_r = _outputs_and_grads(ref, kw, w, zx, carry)
    tol = F32_TOL if dtype == jnp.float32 else BF16_TOL
    for name, a, b in zip(["final"] * 2 + ["ys"], jax.tree.leaves(out_k), jax.tree.leaves(out_r)):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert _rel_err(a, b) < tol, (name, _rel_err(a, b))
    for name, a, b in zip(["w_hh", "zx", "h0", "c0"], jax.tree.leaves(g_k), jax.tree.leaves(g_r)):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert _rel_err(a, b) < tol, (name, _rel_err(a, b))
    if kind == "lstm" and dtype == jnp.float32:
        _, g_a = _outputs_and_grads(_lstm_autodiff, kw, w, zx, carry)
        names = ["w_hh", "zx", "h0", "c0"]
        for name, a, b in zip(names, jax.tree.leaves(g_k), jax.tree.leaves(g_a)):
            assert _rel_err(a, b) < F32_TOL, ("autodiff " + name, _rel_err(a, b))
    if lengths is not None:  # padded steps output exactly zero
        ys = np.asarray(out_k[1], np.float32)
        for b_, n in enumerate(lengths):
            assert not ys[max(n, 0) :, b_].any()


def test_rnn_module_dispatch_and_auto():
    """rnn.lstm / rnn.rnn with mode="pallas" and "auto" on the public API, one sequence
    unbatched."""
    T, F, H = 5, 4, 9
    k1, k2, k3 = jax.random.split(jax.random.key(7), 3)
    p = rnn.lstm_init(k1, F, H)
    xs = jax.random.normal(k2, (T, 2, F))
    want = rnn.lstm(p, xs, mode="scan")
    for mode in ("pallas", "auto"):
        got = rnn.lstm(p, xs, mode=mode)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert _rel_err(a, b) < F32_TOL
    pr = rnn.rnn_init(k3, F, H)
    want = rnn.rnn(pr, xs[:, 0], mode="scan")  # [T, F]: no batch axis
    got = rnn.rnn(pr, xs[:, 0], mode="pallas")
    assert got[1].shape == (T, H)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert _rel_err(a, b) < F32_TOL


def test_bad_inputs_raise_clear_errors():
    w, zx, carry = _inputs("lstm", 3, 2, 4, jnp.float32, 0)
    with pytest.raises(ValueError, match="zx must be"):
        kernels.lstm_sequence({"w_hh": w}, zx[..., :-1], carry)
    with pytest.raises(ValueError, match="mode"):
        kernels.lstm_sequence({"w_hh": w}, zx, carry, mode="scan")
    with pytest.raises(ValueError, match="lengths"):
        kernels.lstm_sequence({"w_hh": w}, zx, carry, lengths=jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match="activation"):
        kernels.rnn_sequence({"w_hh": w[:, :4]}, zx[..., :4], carry[0], activation="gelu")


def test_block_sizes_are_validated_and_frozen():
    layout = common.padded_layout(20, 5, 33)  # Tp = 32: two 16-step blocks; Bp = 16; Hp = 128
    assert BlockSizes.tpu(layout).grid == (1, 2) and BlockSizes.gpu(layout).grid == (1,)
    good = dict(
        kind="tpu",
        batch_block=16,
        time_block=16,
        hidden_chunk=128,
        num_batch_blocks=1,
        num_time_blocks=2,
    )
    BlockSizes(**good)
    for bad, match in [
        ({"kind": "cpu"}, "kind must be one of"),
        ({"batch_block": 8}, "batch_block must be a multiple of 16"),
        ({"hidden_chunk": 64}, "hidden_chunk must be a multiple of 128"),
        ({"time_block": 0}, "time_block must be a positive integer"),
        ({"num_batch_blocks": 1.0}, "num_batch_blocks must be a positive integer"),
        ({"kind": "gpu"}, "num_time_blocks must be 1 for kind='gpu'"),
    ]:
        with pytest.raises(ValueError, match=match):
            BlockSizes(**{**good, **bad})
    with pytest.raises(dataclasses.FrozenInstanceError):
        BlockSizes(**good).time_block = 8


TARGETS = {"tpu": "tpu_custom_call", "cuda": "__gpu$xla.gpu.triton"}


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_export_holds_the_real_kernel(kind, platform):
    """Lowered for TPU (Mosaic) or CUDA (Triton) from this CPU-only machine.

    The Triton call target has no serialization-compatibility guarantee in
    jax.export, so that check is disabled explicitly for it (``tpu_custom_call``
    is on the stable list).
    """
    T, B, H = 6, 3, 20
    w, zx, carry = _inputs(kind, T, B, H, jnp.bfloat16, 0)
    lens = jnp.array([6, 2, 4], jnp.int32)
    seq = kernels.lstm_sequence if kind == "lstm" else kernels.rnn_sequence

    def f(w, zx, carry):
        final, ys = seq({"w_hh": w}, zx, carry, lengths=lens, reverse=True)
        return jnp.sum(ys.astype(jnp.float32)) + sum(
            jnp.sum(c.astype(jnp.float32)) for c in jax.tree.leaves(final)
        )

    target = TARGETS[platform]
    checks = [export.DisabledSafetyCheck.custom_call(TARGETS["cuda"])] if platform == "cuda" else []
    for fn, n_calls in ((f, 1), (jax.grad(f, argnums=(0, 1, 2)), 2)):
        exp = export.export(jax.jit(fn), platforms=[platform], disabled_checks=checks)(w, zx, carry)
        text = exp.mlir_module()
        calls = re.findall(r"stablehlo\.custom_call @([\w$.]+)", text)
        assert calls.count(target) == n_calls, calls  # forward (+ backward) kernel
        assert "stablehlo.while" not in text  # no interpreted or scan fallback
    assert exp.platforms == (platform,)


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_auto_lowers_to_the_measured_choice(platform):
    """mode="auto" exported from this CPU machine: the Mosaic kernel for TPU; for CUDA the
    lax.scan path (the Triton kernel was measured slower than the scan on an H200)."""
    T, B, F, H = 6, 3, 5, 20
    p = rnn.lstm_init(jax.random.key(0), F, H)
    xs = jax.random.normal(jax.random.key(1), (T, B, F))
    checks = [export.DisabledSafetyCheck.custom_call(TARGETS["cuda"])]
    fn = jax.jit(lambda p, xs: rnn.lstm(p, xs, mode="auto")[1])
    text = export.export(fn, platforms=[platform], disabled_checks=checks)(p, xs).mlir_module()
    calls = re.findall(r"stablehlo\.custom_call @([\w$.]+)", text)
    if platform == "tpu":
        assert calls.count(TARGETS["tpu"]) == 1, calls
    else:
        assert TARGETS["cuda"] not in calls and "stablehlo.while" in text, calls
