"""mode="pallas"/"auto": one-time warnings where the kernel is not what runs, checked against the
program actually lowered for that platform (``jax.export`` from this CPU machine)."""

import re
import warnings

import jax
import jax.numpy as jnp
import pytest
from jax import export

from jaxgen import kernels, rnn
from jaxgen.kernels import common

TARGETS = {"tpu": "tpu_custom_call", "cuda": "__gpu$xla.gpu.triton"}


@pytest.fixture
def fresh(monkeypatch):
    """No reason warned yet in this process; ``platform(p)`` makes ``p`` the default backend."""
    monkeypatch.setattr(common, "_WARNED", set())

    def platform(p):
        monkeypatch.setattr(common, "target_platform", lambda: p)

    return platform


def _abstract(kind, T, B, H):
    g = 4 if kind == "lstm" else 1
    w = jax.ShapeDtypeStruct((H, g * H), jnp.float32)
    zx = jax.ShapeDtypeStruct((T, B, g * H), jnp.float32)
    h = jax.ShapeDtypeStruct((B, H), jnp.float32)
    return w, zx, ((h, h) if kind == "lstm" else h)


def _lower(kind, platform, T, B, H, grad=False):
    """Kernel custom calls in the program lowered for ``platform``, and the warnings raised doing
    it."""
    seq = kernels.lstm_sequence if kind == "lstm" else kernels.rnn_sequence

    def f(w, zx, carry):
        final, ys = seq({"w_hh": w}, zx, carry, mode="pallas")
        return jnp.sum(ys) + sum(jnp.sum(c) for c in jax.tree.leaves(final))

    fn = jax.grad(f, argnums=(0, 1)) if grad else f
    checks = [export.DisabledSafetyCheck.custom_call(TARGETS["cuda"])] if platform == "cuda" else []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exp = export.export(jax.jit(fn), platforms=[platform], disabled_checks=checks)(
            *_abstract(kind, T, B, H)
        )
    calls = re.findall(r"stablehlo\.custom_call @([\w$.]+)", exp.mlir_module())
    return calls.count(TARGETS[platform]), [
        str(w.message) for w in caught if w.category is UserWarning
    ]


def test_gpu_above_hidden_1024_warns_and_runs_scan(fresh):
    fresh("gpu")
    n, msgs = _lower("lstm", "cuda", 4, 2, 1025)
    assert (
        n == 0
        and len(msgs) == 1
        and "lax.scan" in msgs[0]
        and "1152" in msgs[0]
        and "GPU" in msgs[0]
    )
    n, msgs = _lower("lstm", "cuda", 4, 2, 1100)  # same reason again: silent
    assert n == 0 and msgs == []
    n, msgs = _lower("rnn", "cuda", 4, 2, 1025)  # another kernel: its own reason
    assert n == 0 and len(msgs) == 1 and "rnn_sequence" in msgs[0]
    n, msgs = _lower("lstm", "cuda", 4, 2, 128)  # fits: the Triton kernel, no warning
    assert n == 1 and msgs == []


def test_tpu_above_the_vmem_estimate_warns_and_runs_scan(fresh):
    fresh("tpu")
    n, msgs = _lower("lstm", "tpu", 1, 1, 2048)  # W_hh alone is 64 MiB
    assert n == 0 and len(msgs) == 1 and "VMEM (66 MiB)" in msgs[0]
    n, msgs = _lower("rnn", "tpu", 4, 2, 20)
    assert n == 1 and msgs == []


def test_tpu_fits_only_without_gradient_says_so(fresh):
    fresh("tpu")
    # H = 1280, B = 16, 16 steps: ~40 MiB for inference, ~56 MiB with the saved residuals
    # (budget 48).
    n, msgs = _lower("lstm", "tpu", 16, 16, 1280)
    assert n == 1 and len(msgs) == 1 and "differentiated" in msgs[0]
    n, msgs = _lower("lstm", "tpu", 16, 16, 1280, grad=True)
    assert n == 0 and msgs == []  # warned once already


def test_no_fallback_warning_on_cpu_or_for_auto(fresh):
    fresh("cpu")
    w, zx, carry = _abstract("lstm", 2, 1, 1025)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jax.eval_shape(
            lambda w, zx, c: kernels.lstm_sequence({"w_hh": w}, zx, c, mode="pallas"), w, zx, carry
        )
        fresh("gpu")
        jax.eval_shape(
            lambda w, zx, c: kernels.lstm_sequence({"w_hh": w}, zx, c, mode="auto"), w, zx, carry
        )
    assert [str(x.message) for x in caught] == []


@pytest.mark.parametrize("mode", ["pallas", "auto"])
def test_unroll_and_backward_are_ignored_with_a_warning(fresh, mode):
    fresh("cpu")
    params = rnn.lstm_init(jax.random.key(0), 3, 8)
    rparams = rnn.rnn_init(jax.random.key(0), 3, 8)
    xs = jax.ShapeDtypeStruct((4, 2, 3), jnp.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jax.eval_shape(lambda x: rnn.lstm(params, x, mode=mode), xs)
        assert caught == []  # defaults: nothing to say
        jax.eval_shape(lambda x: rnn.lstm(params, x, mode=mode, unroll=4, backward="autodiff"), xs)
        jax.eval_shape(
            lambda x: rnn.lstm(params, x, mode=mode, unroll=3, backward="autodiff"), xs
        )  # silent
        jax.eval_shape(lambda x: rnn.rnn(rparams, x, mode=mode, unroll=2), xs)
        jax.eval_shape(
            lambda x: rnn.lstm(params, x, mode="scan", unroll=4, backward="autodiff"), xs
        )
    msgs = sorted(str(x.message) for x in caught)
    assert len(msgs) == 3, msgs
    assert (
        msgs[0].startswith("rnn.lstm: backward='autodiff' is ignored")
        and f"mode={mode!r}" in msgs[0]
    )
    assert msgs[1].startswith("rnn.lstm: unroll=4 is ignored") and f"mode={mode!r}" in msgs[1]
    assert msgs[2].startswith("rnn.rnn: unroll=2 is ignored") and f"mode={mode!r}" in msgs[2]
