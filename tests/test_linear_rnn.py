"""minGRU, minLSTM and the LRU (jaxgen.linear_rnn): float64 NumPy from the papers' equations,
the associative scan against the sequential one (values and gradients, with lengths, reversed),
finite differences, closed forms and bad input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxgen import linear_rnn, rnn

from . import reference as ref

T, B, F, H = 9, 3, 5, 6
CELLS = {
    "mingru": (rnn.mingru_init, rnn.mingru, rnn.mingru_cell, ref.mingru_seq),
    "minlstm": (rnn.minlstm_init, rnn.minlstm, rnn.minlstm_cell, ref.minlstm_seq),
    "lru": (rnn.lru_init, rnn.lru, rnn.lru_cell, ref.lru_seq),
}
# Every (mode, log_space) pair a cell has; the LRU is complex and has no log-space form.
VARIANTS = {
    "mingru": [("parallel", False), ("parallel", True), ("scan", False), ("scan", True)]
    + [("native", False), ("native", True)],
    "minlstm": [("parallel", False), ("parallel", True), ("scan", False), ("scan", True)]
    + [("native", False), ("native", True)],
    "lru": [("parallel", False), ("scan", False), ("native", False)],
}


def normal(seed, shape, dtype=np.float32, scale=1.0):
    return jnp.asarray((scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype))


def setup(kind, dtype=jnp.float32, t=T):
    init, seq, cell, want = CELLS[kind]
    p = init(jax.random.key(0), F, H, dtype=dtype)
    # Biases and LRU phases that are not their init values, so every term shows.
    rng = np.random.default_rng(4)
    p = {k: (v + 0.3 * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in p.items()}
    xs = normal(1, (t, B, F), dtype)
    h0 = normal(3, (B, H), dtype, 0.5)
    return p, xs, h0


def kwargs(kind, mode, log_space, **kw):
    return dict(mode=mode, **kw) if kind == "lru" else dict(mode=mode, log_space=log_space, **kw)


def f64(p):
    return {k: np.asarray(v, np.float64) for k, v in p.items()}


def close(got, want, rtol=2e-5, atol=2e-6):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("kind", CELLS)
def test_every_mode_matches_float64_numpy_and_the_cell(kind):
    init, seq, cell, want_fn = CELLS[kind]
    p, xs, h0 = setup(kind)
    want_h, want_ys = want_fn(f64(p), np.asarray(xs, np.float64), np.asarray(h0, np.float64))
    for mode, log_space in VARIANTS[kind]:
        h, ys = seq(p, xs, h0, **kwargs(kind, mode, log_space))
        assert ys.shape == want_ys.shape and h.shape == (B, H), (mode, log_space)
        close(ys, want_ys)
        close(h, want_h)
    # one step of the cell is one step of the reference
    h1, y1 = cell(p, h0, xs[0])
    want_h1, want_y1 = want_fn(f64(p), np.asarray(xs[:1], np.float64), np.asarray(h0, np.float64))
    close(h1, want_h1)
    close(y1, want_y1[0])
    # batch-major in and out, the same numbers
    hb, ysb = seq(p, jnp.swapaxes(xs, 0, 1), h0, time_major=False)
    close(ysb, np.swapaxes(want_ys, 0, 1))
    close(hb, want_h)


@pytest.mark.parametrize("kind", CELLS)
def test_lengths_and_reverse_match_truncated_sequences(kind):
    _, seq, _, want_fn = CELLS[kind]
    p, xs, h0 = setup(kind)
    lengths = np.array([T, 2, 5])
    # the sequential linear scan, its compiled CPU loop and the other end, the associative scan
    # in log space (the gradient test below ties every variant to the sequential one)
    for mode, log_space in (("scan", False), ("native", False), VARIANTS[kind][1]):
        kw = kwargs(kind, mode, log_space, lengths=jnp.asarray(lengths))
        h, ys = seq(p, xs, h0, **kw)
        rh, rys = seq(p, xs, h0, reverse=True, **kw)
        for b, n in enumerate(lengths):
            x_b = np.asarray(xs[:n, b : b + 1], np.float64)
            h_b = np.asarray(h0[b : b + 1], np.float64)
            wh, wys = want_fn(f64(p), x_b, h_b)
            close(ys[:n, b], wys[:, 0])
            np.testing.assert_array_equal(ys[n:, b], 0.0)
            close(h[b], wh[0])
            # reversed: starts at the last real step, outputs aligned with the inputs
            wh, wys = want_fn(f64(p), x_b[::-1], h_b)
            close(rys[:n, b], wys[::-1, 0])
            np.testing.assert_array_equal(rys[n:, b], 0.0)
            close(rh[b], wh[0])


def loss(seq, p, xs, h0, **kw):
    h, ys = seq(p, xs, h0, **kw)
    w = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    return jnp.sum(w * ys) + jnp.sum(jnp.sin(h))


@pytest.mark.parametrize("kind", CELLS)
def test_associative_scan_gradients_equal_the_sequential_scan(kind):
    _, seq, _, _ = CELLS[kind]
    p, xs, h0 = setup(kind)
    lengths = jnp.asarray([T, 2, 5])
    for extra in (dict(), dict(lengths=lengths, reverse=True)):
        grads = {}
        for mode, log_space in [v for v in VARIANTS[kind] if v != ("scan", True)]:
            f = functools.partial(loss, seq, **kwargs(kind, mode, log_space, **extra))
            grads[mode, log_space] = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(p, xs, h0)
        base = grads["scan", False]
        for key, gr in grads.items():
            for a, b in zip(jax.tree.leaves(gr), jax.tree.leaves(base)):
                assert np.all(np.isfinite(a)), (key, extra)
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"{key} {extra}")


@pytest.mark.parametrize("kind", CELLS)
def test_gradients_match_finite_differences(kind):
    _, seq, _, _ = CELLS[kind]
    with jax.enable_x64(True):
        p, xs, h0 = setup(kind, jnp.float64, t=4)
        kw = kwargs(kind, "parallel", kind == "minlstm", lengths=jnp.asarray([4, 2, 3]))
        f = jax.jit(functools.partial(loss, seq, **kw))
        check_grads(f, (p, xs, h0), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_linear_scan_closed_forms():
    """``h_t = r h_{t-1} + 1`` from ``h0``: ``r^(t+1) h0 + (1 - r^(t+1)) / (1 - r)``, for a real
    and a complex ``r``, forwards and reversed, linear and (for positive terms) log space."""
    n = 37
    t = np.arange(1, n + 1)[:, None]
    for r, h0 in ((0.9, 0.7), (0.8 * np.exp(0.4j), 0.3 - 0.2j)):
        want = r**t * h0 + (1 - r**t) / (1 - r)
        dtype = jnp.complex64 if np.iscomplexobj(r) else jnp.float32
        a = jnp.full((n, 1), r, dtype)
        b = jnp.ones((n, 1), dtype)
        for mode in ("parallel", "scan"):
            got = linear_rnn.linear_scan(a, b, jnp.asarray([h0], dtype), mode=mode)
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
            got = linear_rnn.linear_scan(a, b, jnp.asarray([h0], dtype), mode=mode, reverse=True)
            np.testing.assert_allclose(np.asarray(got)[::-1], want, rtol=1e-5)
            if dtype == jnp.float32:
                got = linear_rnn.linear_scan(
                    jnp.log(a), jnp.log(b), jnp.asarray([h0]), mode=mode, log_space=True
                )
                np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_lru_init_follows_the_paper():
    p = rnn.lru_init(jax.random.key(0), 4, 2000, r_min=0.5, r_max=0.9, max_phase=0.3)
    lam = np.exp(-np.exp(np.asarray(p["nu_log"], np.float64)))
    assert lam.min() >= 0.5 - 1e-6 and lam.max() <= 0.9 + 1e-6
    # uniform on the ring by area: |λ|² is uniform on [r_min², r_max²]
    assert abs(np.mean(lam**2) - (0.25 + 0.81) / 2) < 0.02
    phase = np.exp(np.asarray(p["theta_log"], np.float64))
    assert phase.max() <= 0.3 + 1e-6 and abs(phase.mean() - 0.15) < 0.01
    np.testing.assert_allclose(np.exp(2 * np.asarray(p["gamma_log"])), 1 - lam**2, rtol=1e-4)
    assert p["b_re"].shape == (4, 1000) and p["c_im"].shape == (1000, 4) and p["d"].shape == (4,)


def test_bad_input_gets_one_clear_error():
    with pytest.raises(ValueError, match="must be even; got 5: use 6"):
        rnn.lru_init(jax.random.key(0), 3, 5)
    with pytest.raises(ValueError, match="r_min < r_max"):
        rnn.lru_init(jax.random.key(0), 3, 4, r_min=0.9, r_max=0.5)
    p = rnn.mingru_init(jax.random.key(0), F, H)
    xs = normal(1, (T, B, F))
    with pytest.raises(ValueError, match="unknown mode 'pallas'.*associative_scan"):
        rnn.mingru(p, xs, mode="pallas")
    with pytest.raises(ValueError, match="input feature size 4 does not match"):
        rnn.mingru(p, xs[..., :4])
    with pytest.raises(ValueError, match="lengths has shape"):
        rnn.minlstm(rnn.minlstm_init(jax.random.key(0), F, H), xs, lengths=jnp.asarray([1, 2]))
    lp = rnn.lru_init(jax.random.key(0), F, H)
    with pytest.raises(TypeError, match="embed token ids first"):
        rnn.lru(lp, jnp.zeros((T, B), jnp.int32))


def test_token_ids_equal_one_hot():
    p = rnn.mingru_init(jax.random.key(0), 11, H)
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 11, (T, B)))
    h1, y1 = rnn.mingru(p, ids)
    h2, y2 = rnn.mingru(p, jax.nn.one_hot(ids, 11))
    np.testing.assert_allclose(y1, y2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(h1, h2, rtol=1e-6, atol=1e-6)
