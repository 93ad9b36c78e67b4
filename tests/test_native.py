"""``rnn.lstm(..., mode="native")``: the compiled CPU time loops (jaxgen.native) against the
float64 NumPy LSTM, finite differences of it, and the scan path; where it falls back; its
errors."""

import fnmatch
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import native, rnn
from jaxgen.charrnn import model as charrnn_model
from tests import reference

needs_kernel = pytest.mark.skipif(
    not native.available(), reason=f"the CPU kernel cannot be built here: {native.load()}"
)


def _problem(T=9, B=3, F=5, H=6, seed=0):
    k = jax.random.split(jax.random.key(seed), 6)
    p = rnn.lstm_init(k[0], F, H)
    p["b"] = jax.random.normal(k[1], p["b"].shape) * 0.5  # a bias that matters in the check
    xs = jax.random.normal(k[2], (T, B, F))
    carry = (jax.random.normal(k[3], (B, H)), jax.random.normal(k[4], (B, H)))
    weights = jax.random.normal(k[5], (T + 2, B, H))  # the loss's fixed projection
    return p, xs, carry, np.asarray(weights, np.float64)


def _loss(out, w):
    (h, c), ys = out
    return (ys * w[:-2]).sum() + (h * w[-2]).sum() + (c * w[-1]).sum()


def _lowered(fn, *args):
    return jax.jit(fn).lower(*args).as_text()


@needs_kernel
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch", [3, 5])
def test_native_matches_the_float64_reference_and_its_finite_differences(reverse, batch):
    # T * B = 27 runs the products through OpenBLAS, 45 through the packed panels (the kernel
    # packs the weight from 32 rows of products on); H = 6 leaves both panels partial.
    p, xs, (h0, c0), w = _problem(B=batch)
    flip = (lambda a: a[::-1]) if reverse else (lambda a: a)

    def ref_loss(p64, xs64, h64, c64):
        (h, c), ys = reference.lstm_seq(p64, flip(xs64), h64, c64)
        return _loss(((h, c), flip(ys)), w)

    def loss(p, xs, h0, c0):
        return _loss(rnn.lstm(p, xs, (h0, c0), mode="native", reverse=reverse), w)

    args = (p, xs, h0, c0)
    assert "jaxgen_lstm_fwd" in _lowered(loss, *args)
    assert "jaxgen_lstm_bwd" in _lowered(jax.grad(loss, argnums=(0, 1, 2, 3)), *args)

    (h, c), ys = rnn.lstm(p, xs, (h0, c0), mode="native", reverse=reverse)
    p64, xs64, h64, c64 = reference.f64(p), *(np.asarray(a, np.float64) for a in (xs, h0, c0))
    (h_r, c_r), ys_r = reference.lstm_seq(p64, flip(xs64), h64, c64)
    np.testing.assert_allclose(ys, flip(ys_r), atol=2e-6)
    np.testing.assert_allclose(h, h_r, atol=2e-6)
    np.testing.assert_allclose(c, c_r, atol=2e-6)

    grads = jax.grad(loss, argnums=(0, 1, 2, 3))(*args)
    # Central differences of the float64 reference, every entry of every input.
    eps = 1e-6
    refs64 = [p64, xs64, h64, c64]
    for n, g in enumerate(grads):
        for key, g_leaf in g.items() if isinstance(g, dict) else [(None, g)]:
            base = refs64[n][key] if key is not None else refs64[n]
            fd = np.zeros(base.shape)
            for idx in np.ndindex(*base.shape):
                old = base[idx]
                vals = []
                for step in (eps, -eps):
                    base[idx] = old + step
                    vals.append(ref_loss(*refs64))
                base[idx] = old
                fd[idx] = (vals[0] - vals[1]) / (2 * eps)
            np.testing.assert_allclose(g_leaf, fd, rtol=1e-4, atol=2e-5, err_msg=f"{n} {key}")


@needs_kernel
def test_native_equals_the_scan_path_in_every_layout():
    p, xs, carry, w = _problem(T=12, B=4, F=5, H=8, seed=1)
    ids = jax.random.randint(jax.random.key(2), (12, 4), 0, 5)

    def both(fn, *args):
        a, b = fn("native", *args), fn("scan", *args)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(x, y, atol=1e-5)

    # gradients through the hand-written scan BPTT and the kernel's
    vg = lambda m, xs: jax.value_and_grad(  # noqa: E731
        lambda p, xs, c: _loss(rnn.lstm(p, xs, c, mode=m), w), argnums=(0, 1, 2)
    )(p, xs, carry)
    both(vg, xs)
    both(lambda m, ids: rnn.lstm(p, ids, mode=m), ids)  # token ids
    both(lambda m, xs: rnn.lstm(p, xs[:, 0], mode=m), xs)  # one sequence [T, F]
    both(lambda m, xs: rnn.lstm(p, jnp.swapaxes(xs, 0, 1), mode=m, time_major=False), xs)
    both(lambda m, xs: jax.vmap(lambda x: rnn.lstm(p, x, mode=m))(xs), xs[None].repeat(2, 0))
    layers = rnn.lstm_stack_init(jax.random.key(3), 5, 8, 2, bidirectional=True)
    key = jax.random.key(4)

    def stack(m, xs):
        def f(layers, xs):
            finals, ys = rnn.lstm_stack(
                layers, xs, bidirectional=True, dropout_rate=0.3, key=key, mode=m
            )
            return (ys**2).sum() + sum((h * c).sum() for fc in finals for h, c in fc)

        return jax.value_and_grad(f, argnums=(0, 1))(layers, xs)

    both(stack, xs)


@needs_kernel
@pytest.mark.parametrize("reverse", [False, True])
def test_native_splits_the_batch_rows_over_threads(reverse):
    # 21 rows: with XLA's pool of two or more threads the kernel runs them as separate chunks
    # (one of them shorter), each to the end of the sequence. H = 40: the forward's 160 columns
    # are five panels of 32, the backward's 40 one whole and one partial.
    p, xs, carry, w = _problem(T=6, B=21, F=4, H=40, seed=5)

    def vg(mode):
        def f(p, xs, c):
            return _loss(rnn.lstm(p, xs, c, mode=mode, reverse=reverse), w)

        return jax.value_and_grad(f, argnums=(0, 1, 2))(p, xs, carry)

    for x, y in zip(jax.tree.leaves(vg("native")), jax.tree.leaves(vg("scan"))):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-5)


@needs_kernel
def test_native_falls_back_to_the_scan_with_lengths_one_step_and_other_dtypes():
    p, xs, carry, _ = _problem(T=7, B=3, F=5, H=4, seed=2)
    lengths = jnp.array([7, 3, 0])
    f = lambda m: rnn.lstm(p, xs, carry, mode=m, lengths=lengths)  # noqa: E731
    assert "jaxgen_lstm" not in _lowered(lambda: f("native"))
    for x, y in zip(jax.tree.leaves(f("native")), jax.tree.leaves(f("scan"))):
        np.testing.assert_array_equal(x, y)
    one = lambda: rnn.lstm(p, xs[:1], carry, mode="native")  # noqa: E731 - a step: generation
    assert "jaxgen_lstm" not in _lowered(one)
    np.testing.assert_array_equal(one()[1], rnn.lstm(p, xs[:1], carry)[1])
    p16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), p)
    c16 = tuple(a.astype(jnp.bfloat16) for a in carry)
    g = lambda: rnn.lstm(p16, xs.astype(jnp.bfloat16), c16, mode="native")  # noqa: E731
    assert "jaxgen_lstm" not in _lowered(g)


@needs_kernel
def test_the_char_rnn_trains_through_the_kernel():
    params = charrnn_model.init(jax.random.key(0), 11, 16, 2)
    ids = jax.random.randint(jax.random.key(1), (6, 3), 0, 11)
    carries = charrnn_model.zero_carries(params, 3)
    step = jax.grad(lambda p: charrnn_model.loss(p, ids, ids, carries, dropout_rate=0.1,
                                                 key=jax.random.key(2))[0])  # fmt: skip
    text = _lowered(step, params)
    assert "jaxgen_lstm_fwd" in text and "jaxgen_lstm_bwd" in text


def test_native_is_refused_where_it_does_not_apply():
    p, xs, carry, _ = _problem(T=4, B=2, F=3, H=4)
    with pytest.raises(ValueError, match="exists for the LSTM only.*mode='scan'"):
        rnn.gru(rnn.gru_init(jax.random.key(0), 3, 4), xs, mode="native")
    with pytest.raises(ValueError, match="exists for the LSTM only"):
        rnn.rnn(rnn.rnn_init(jax.random.key(0), 3, 4), xs, mode="native")
    with pytest.raises(ValueError, match="backward='fused'.*mode='scan' for backward='autodiff'"):
        rnn.lstm(p, xs, carry, mode="native", backward="autodiff")


def test_without_a_compiler_native_warns_once_and_runs_the_scan(monkeypatch, tmp_path):
    p, xs, carry, _ = _problem(T=5, B=2, F=3, H=4, seed=3)
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("JAXGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_WARNED", set())
    native.load.cache_clear()
    try:
        with pytest.warns(UserWarning, match="not available here.*running mode='scan'"):
            out = rnn.lstm(p, xs, carry, mode="native")
        assert "jaxgen_lstm" not in _lowered(lambda: rnn.lstm(p, xs, carry, mode="native"))
    finally:
        native.load.cache_clear()  # the next caller builds (or finds) the real kernel again
    for x, y in zip(jax.tree.leaves(out), jax.tree.leaves(rnn.lstm(p, xs, carry))):
        np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------------- linear recurrences


def _linear_ref(a, b, h0, reverse):
    """Float64 ``h_t = a_t h_{t-1} + b_t`` from its definition."""
    hs, h = np.zeros_like(b), h0.copy()
    for t in range(len(b))[::-1] if reverse else range(len(b)):
        h = a[t] * h + b[t]
        hs[t] = h
    return hs


@needs_kernel
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_native_matches_the_float64_recurrence_and_its_finite_differences(reverse):
    # 300 columns: 19 blocks of 16, split over two threads into chunks of 160 and 140 columns.
    T, N = 4, 300
    k = jax.random.split(jax.random.key(4), 4)
    a = jax.random.uniform(k[0], (T, N), minval=-1.2, maxval=1.2)
    b, h0 = jax.random.normal(k[1], (T, N)), jax.random.normal(k[2], (N,))
    w = np.asarray(jax.random.normal(k[3], (T, N)), np.float64)
    loss = lambda a, b, h0: (rnn.linear_scan(a, b, h0, mode="native", reverse=reverse) * w).sum()  # noqa: E731
    assert "jaxgen_linear_scan" in _lowered(loss, a, b, h0)
    assert "jaxgen_linear_scan" in _lowered(jax.grad(loss, argnums=(0, 1, 2)), a, b, h0)

    a64, b64, h64 = (np.asarray(x, np.float64) for x in (a, b, h0))
    hs = rnn.linear_scan(a, b, h0, mode="native", reverse=reverse)
    np.testing.assert_allclose(hs, _linear_ref(a64, b64, h64, reverse), rtol=1e-5, atol=1e-5)

    grads = jax.grad(loss, argnums=(0, 1, 2))(a, b, h0)
    eps = 1e-6
    for arr, g in zip((a64, b64, h64), grads):
        fd = np.zeros(arr.shape)
        for idx in np.ndindex(*arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            up = (_linear_ref(a64, b64, h64, reverse) * w).sum()
            arr[idx] = old - eps
            down = (_linear_ref(a64, b64, h64, reverse) * w).sum()
            arr[idx] = old
            fd[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-4)


@needs_kernel
@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_linear_native_equals_the_scan_for_the_cells(cell):
    seq, init = getattr(rnn, cell), getattr(rnn, f"{cell}_init")
    p = init(jax.random.key(5), 5, 24)
    xs = jax.random.normal(jax.random.key(6), (11, 3, 5))
    h0 = jax.random.normal(jax.random.key(7), (3, 24))
    lengths = jnp.array([11, 4, 0])
    cases = [
        dict(),
        dict(reverse=True),
        dict(lengths=lengths),
        dict(lengths=lengths, reverse=True),
        dict(log_space=True),
    ]
    for kw in cases:

        def loss(p, xs, h0, mode, kw=kw):
            h, hs = seq(p, xs, h0, mode=mode, **kw)
            return jnp.sum(hs * jnp.cos(hs)) + jnp.sum(h**2)

        out_n, out_s = (seq(p, xs, h0, mode=m, **kw) for m in ("native", "scan"))
        for x, y in zip(jax.tree.leaves(out_n), jax.tree.leaves(out_s)):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6, err_msg=str(kw))
        g_n, g_s = (jax.grad(loss, argnums=(0, 1, 2))(p, xs, h0, m) for m in ("native", "scan"))
        for x, y in zip(jax.tree.leaves(g_n), jax.tree.leaves(g_s)):
            np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-5, err_msg=str(kw))
    # Batch-major input and vmap over a leading axis.
    bm = lambda m: seq(p, xs.transpose(1, 0, 2), h0, mode=m, time_major=False)  # noqa: E731
    np.testing.assert_allclose(bm("native")[1], bm("scan")[1], rtol=1e-6, atol=1e-6)
    vm = lambda m: jax.vmap(lambda x: seq(p, x, mode=m)[1])(xs[None].repeat(2, 0))  # noqa: E731
    np.testing.assert_allclose(vm("native"), vm("scan"), rtol=1e-6, atol=1e-6)


def test_linear_native_falls_back_for_one_step_other_dtypes_and_the_lru():
    p = rnn.mingru_init(jax.random.key(0), 3, 4)
    xs = jax.random.normal(jax.random.key(1), (6, 2, 3))
    one = lambda: rnn.mingru(p, xs[:1], mode="native")  # noqa: E731
    assert "jaxgen_linear_scan" not in _lowered(one)
    np.testing.assert_array_equal(one()[1], rnn.mingru(p, xs[:1], mode="scan")[1])
    p16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), p)
    half = lambda: rnn.mingru(p16, xs.astype(jnp.bfloat16), mode="native")  # noqa: E731
    assert "jaxgen_linear_scan" not in _lowered(half)
    lp = rnn.lru_init(jax.random.key(2), 3, 4)
    lru = lambda m: rnn.lru(lp, xs, mode=m)  # noqa: E731 - a complex state: the scan
    assert "jaxgen_linear_scan" not in _lowered(lambda: lru("native"))
    np.testing.assert_array_equal(lru("native")[1], lru("scan")[1])


@needs_kernel
def test_the_mingru_char_rnn_trains_through_the_linear_kernel():
    params = charrnn_model.init(jax.random.key(0), 11, 16, 2, cell="mingru", mlp_ratio=1, conv=3)
    ids = jax.random.randint(jax.random.key(1), (6, 3), 0, 11)
    carries = charrnn_model.zero_carries(params, 3)
    step = jax.grad(lambda p: charrnn_model.loss(p, ids, ids, carries, dropout_rate=0.1,
                                                 key=jax.random.key(2))[0])  # fmt: skip
    # forward and backward (the jitted linear_scan is lowered once and called for both blocks)
    assert _lowered(step, params).count("jaxgen_linear_scan") >= 2


def test_every_kernel_source_ships_as_package_data():
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["jaxgen.native"]
    built = {p.name for p in (*native.SOURCES, *native.HEADERS)}
    on_disk = {p.name for p in Path(native.__file__).parent.iterdir() if p.suffix in (".cc", ".h")}
    assert built == on_disk  # every source is compiled (and hashed into the cache key)
    assert all(any(fnmatch.fnmatch(n, p) for p in patterns) for n in on_disk)
