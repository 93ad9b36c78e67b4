"""The recurrent core against independent references."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxgen import rnn
from jaxgen.flax_modules import GRU, LSTM, SimpleRNN
from jaxgen.nn import dropout, dropout_keep

from . import reference as ref

T, B, F, H = 7, 3, 5, 6
CELLS = {
    "rnn": (rnn.rnn_init, rnn.rnn_cell, rnn.rnn, rnn.rnn_zero_carry),
    "lstm": (rnn.lstm_init, rnn.lstm_cell, rnn.lstm, rnn.lstm_zero_carry),
    "gru": (rnn.gru_init, rnn.gru_cell, rnn.gru, rnn.gru_zero_carry),
}


# Test data comes from NumPy's generator: drawn with jax.random op by op, every new shape and
# dtype would compile its own sampler.
def normal(seed, shape, dtype=np.float32, scale=1.0):
    """``N(0, scale^2)`` draws of ``shape`` as a JAX array of ``dtype`` (no compilation)."""
    return jnp.asarray((scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype))


def data(dtype=jnp.float32, t=T, b=B, f=F, seed=1):
    return normal(seed, (t, b, f), dtype)


def randomise(params, seed=2, scale=0.5):
    """Non-trivial biases, so tests see every term."""
    leaves, tree = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    leaves = [
        jnp.asarray(
            (
                np.asarray(leaf, np.float64)
                + scale * rng.standard_normal(leaf.shape) / max(1, leaf.shape[0]) ** 0.5
            ).astype(leaf.dtype)
        )
        for leaf in leaves
    ]
    return jax.tree.unflatten(tree, leaves)


def np_carry(kind, carry):
    return (
        tuple(np.asarray(c, np.float64) for c in carry)
        if kind == "lstm"
        else np.asarray(carry, np.float64)
    )


def reference_seq(kind, p, xs, carry, act=np.tanh):
    p = ref.f64(p)
    xs = np.asarray(xs, np.float64)
    if kind == "rnn":
        return ref.rnn_seq(p, xs, np_carry(kind, carry), act)
    if kind == "lstm":
        return ref.lstm_seq(p, xs, *np_carry(kind, carry))
    return ref.gru_seq(p, xs, np_carry(kind, carry))


def random_carry(kind, params, seed=3):
    h = 0.5 * np.random.default_rng(seed).standard_normal((B, H)).astype(np.float32)
    return (jnp.asarray(h), jnp.asarray(0.3 * h + 0.1)) if kind == "lstm" else jnp.asarray(h)


def assert_tree_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(
            np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=atol
        )


# ----------------------------------------------------------------------------- equations


@pytest.mark.parametrize("kind", CELLS)
def test_sequence_matches_float64_numpy(kind):
    init, _, seq, _ = CELLS[kind]
    p = randomise(init(jax.random.key(0), F, H))
    carry = random_carry(kind, p)
    xs = data()
    got_carry, got_ys = seq(p, xs, carry)
    want_carry, want_ys = reference_seq(kind, p, xs, carry)
    assert got_ys.shape == (T, B, H)
    assert_tree_close(got_ys, want_ys)
    assert_tree_close(got_carry, want_carry)


@pytest.mark.parametrize("kind", CELLS)
def test_cell_matches_one_numpy_step(kind):
    init, cell, _, _ = CELLS[kind]
    p = randomise(init(jax.random.key(0), F, H))
    carry = random_carry(kind, p)
    x = data()[0]
    new_carry, y = cell(p, carry, x)
    want_carry, want_ys = reference_seq(kind, p, x[None], carry)
    assert_tree_close(y, want_ys[0])
    assert_tree_close(new_carry, want_carry)


@pytest.mark.parametrize(
    "activation,fn", [("relu", lambda x: np.maximum(x, 0)), ("sigmoid", ref.sigmoid)]
)
def test_rnn_activations(activation, fn):
    p = randomise(rnn.rnn_init(jax.random.key(0), F, H))
    carry = random_carry("rnn", p)
    _, ys = rnn.rnn(p, data(), carry, activation=activation)
    _, want = reference_seq("rnn", p, data(), carry, act=fn)
    assert_tree_close(ys, want)


def test_lstm_init_forget_bias_and_shapes():
    p = rnn.lstm_init(jax.random.key(0), F, H, forget_bias=2.5)
    assert (
        p["w_ih"].shape == (F, 4 * H) and p["w_hh"].shape == (H, 4 * H) and p["b"].shape == (4 * H,)
    )
    np.testing.assert_array_equal(p["b"][H : 2 * H], 2.5)
    np.testing.assert_array_equal(p["b"][:H], 0.0)
    np.testing.assert_array_equal(p["b"][2 * H :], 0.0)
    # orthogonal recurrent blocks by default
    blk = np.asarray(p["w_hh"][:, :H])
    np.testing.assert_allclose(blk.T @ blk, np.eye(H), atol=1e-5)


def test_chrono_and_constant_gate_biases():
    """Chrono initialisation (Tallec & Ollivier 2018): forget biases log(U(1, T - 1)), input
    biases their negatives; the GRU's update-gate bias likewise. The weights stay the same."""
    key, T, wide = jax.random.key(3), 100, 4096
    b = np.asarray(rnn.chrono_bias(key, wide, T))
    assert b.min() >= 0.0 and b.max() <= np.log(T - 1) + 1e-6
    # exp(b) ~ U(1, T - 1): mean T / 2, and a quarter of the units below 1 + (T - 2) / 4
    assert np.exp(b).mean() == pytest.approx(T / 2, rel=0.03)
    assert np.mean(np.exp(b) < 1 + (T - 2) / 4) == pytest.approx(0.25, abs=0.03)
    p = rnn.lstm_init(key, F, H, chrono=T)
    plain = rnn.lstm_init(key, F, H)
    bf = np.asarray(p["b"][H : 2 * H])
    assert bf.min() >= 0.0 and bf.max() <= np.log(T - 1) + 1e-6 and bf.std() > 0.3
    np.testing.assert_array_equal(p["b"][:H], -bf)
    np.testing.assert_array_equal(p["b"][2 * H :], 0.0)
    np.testing.assert_array_equal(p["w_hh"], plain["w_hh"])
    np.testing.assert_array_equal(p["w_ih"], plain["w_ih"])
    g = rnn.gru_init(key, F, H, update_bias=2.0)
    np.testing.assert_array_equal(g["b_ih"][H : 2 * H], 2.0)
    np.testing.assert_array_equal(np.delete(np.asarray(g["b_ih"]), np.s_[H : 2 * H]), 0.0)
    np.testing.assert_array_equal(g["b_hh"], 0.0)
    gc = rnn.gru_init(key, F, H, chrono=T)
    assert 0.0 <= float(gc["b_ih"][H : 2 * H].min()) and float(gc["b_ih"][H:].max()) <= np.log(99)
    np.testing.assert_array_equal(gc["w_hh"], g["w_hh"])
    # the update gate is the GRU's memory: a large bias keeps h through a step, a zero bias does not
    x, h = data()[0], random_carry("gru", g)
    kept, _ = rnn.gru_cell(rnn.gru_init(key, F, H, update_bias=30.0), h, x)
    np.testing.assert_allclose(kept, h, atol=1e-6)
    moved, _ = rnn.gru_cell(rnn.gru_init(key, F, H), h, x)
    assert np.abs(np.asarray(moved - h)).max() > 0.05
    with pytest.raises(ValueError, match="not both"):
        rnn.lstm_init(key, F, H, forget_bias=3.0, chrono=T)
    with pytest.raises(ValueError, match="not both"):
        rnn.gru_init(key, F, H, update_bias=1.0, chrono=T)
    with pytest.raises(ValueError, match="integer >= 3"):
        rnn.lstm_init(key, F, H, chrono=2)


def test_identity_init_and_errors():
    p = rnn.rnn_init(jax.random.key(0), F, H, recurrent_init="identity", recurrent_scale=0.5)
    np.testing.assert_allclose(p["w_hh"], 0.5 * np.eye(H))
    with pytest.raises(ValueError, match="recurrent_init"):
        rnn.rnn_init(jax.random.key(0), F, H, recurrent_init="bogus")
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        rnn.lstm_init(jax.random.key(0), F, 0)


def test_lstm_matches_flax_lstm_cell():
    """flax.linen.LSTMCell with the same weights gives the same outputs."""
    p = randomise(rnn.lstm_init(jax.random.key(0), F, H))
    flax_cell = nn.LSTMCell(features=H)
    x = data()[0]
    variables = flax_cell.init(
        jax.random.key(9), flax_cell.initialize_carry(jax.random.key(9), x.shape), x
    )
    names = "ifgo"
    fp = {}
    for k, g in enumerate(names):
        sl = slice(k * H, (k + 1) * H)
        fp[f"i{g}"] = {"kernel": p["w_ih"][:, sl]}
        fp[f"h{g}"] = {"kernel": p["w_hh"][:, sl], "bias": p["b"][sl]}
    assert jax.tree.structure(fp) == jax.tree.structure(variables["params"])
    h, c = random_carry("lstm", p)
    carry = (c, h)  # flax orders the carry (c, h)
    want = []
    for t in range(T):
        carry, y = flax_cell.apply({"params": fp}, carry, data()[t])
        want.append(y)
    (gh, gc), ys = rnn.lstm(p, data(), (h, c))
    assert_tree_close(ys, jnp.stack(want))
    assert_tree_close((gh, gc), (carry[1], carry[0]))


# ----------------------------------------------------------------------------- time loops


def seq_loss(seq, p, xs, carry, **kw):
    c, ys = seq(p, xs, carry, **kw)
    w = jnp.linspace(-1.0, 1.0, ys.shape[-1])
    return jnp.sum(jnp.sin(ys) * w) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(c))


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_partial_unroll_python_agree(kind, reverse):
    init, _, seq, _ = CELLS[kind]
    p = randomise(init(jax.random.key(0), F, H))
    carry = random_carry(kind, p)
    xs = data()
    lengths = jnp.array([7, 2, 5])
    variants = [dict(mode="scan"), dict(mode="scan", unroll=3), dict(mode="python")]
    if kind == "lstm":
        variants.append(dict(mode="scan", backward="autodiff"))
    results = []
    for v in variants:  # each compiled whole: op by op, every op of the unrolled loops compiles
        out = jax.jit(functools.partial(seq, reverse=reverse, lengths=lengths, **v))(p, xs, carry)
        grads = jax.jit(
            jax.grad(
                functools.partial(seq_loss, seq, reverse=reverse, lengths=lengths, **v),
                argnums=(0, 1, 2),
            )
        )(p, xs, carry)
        results.append((out, grads))
    for other in results[1:]:
        assert_tree_close(results[0], other, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("kind", CELLS)
def test_length_masking_matches_truncated_sequences(kind):
    init, _, seq, _ = CELLS[kind]
    p = randomise(init(jax.random.key(0), F, H))
    carry = random_carry(kind, p)
    xs = data()
    lengths = np.array([7, 2, 5])
    final, ys = seq(p, xs, carry, lengths=jnp.asarray(lengths))
    rfinal, rys = seq(p, xs, carry, lengths=jnp.asarray(lengths), reverse=True)
    for b, n in enumerate(lengths):
        one = jax.tree.map(lambda a, b=b: a[b : b + 1], carry)
        want_c, want_y = reference_seq(kind, p, xs[:n, b : b + 1], one)
        assert_tree_close(ys[:n, b], want_y[:, 0])
        np.testing.assert_array_equal(ys[n:, b], 0.0)
        assert_tree_close(
            jax.tree.map(lambda a, b=b: a[b], final), jax.tree.map(lambda a: a[0], want_c)
        )
        # reversed: starts at the sequence's last real step, outputs aligned with inputs
        rev_c, rev_y = reference_seq(kind, p, xs[:n, b : b + 1][::-1], one)
        assert_tree_close(rys[:n, b], rev_y[::-1, 0])
        np.testing.assert_array_equal(rys[n:, b], 0.0)
        assert_tree_close(
            jax.tree.map(lambda a, b=b: a[b], rfinal), jax.tree.map(lambda a: a[0], rev_c)
        )


@pytest.mark.parametrize("kind", CELLS)
def test_gradients_match_finite_differences(kind):
    init, _, seq, _ = CELLS[kind]
    with jax.enable_x64(True):
        p = randomise(init(jax.random.key(0), 3, 4, dtype=jnp.float64))
        xs = normal(1, (4, 2, 3), np.float64)
        h = normal(3, (2, 4), np.float64, scale=0.5)
        carry = (h, 0.5 * h) if kind == "lstm" else h
        lengths = jnp.array([4, 2])
        for kw in (dict(), dict(reverse=True, lengths=lengths)):
            f = functools.partial(seq_loss, seq, **kw)
            check_grads(jax.jit(f), (p, xs, carry), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
def test_fused_lstm_backward_with_and_without_lengths(reverse):
    """The hand-written LSTM BPTT (``backward="fused"``, whose residuals shift the saved states by
    one step in processing order) equals autodiff of the plain scan, forwards and reversed, with and
    without ``lengths``; the reversed forward equals the float64 equations on the flipped sequence;
    and in float64 the reversed fused gradients without ``lengths`` pass finite differences."""
    p = randomise(rnn.lstm_init(jax.random.key(0), F, H))
    carry = random_carry("lstm", p)
    xs = data()
    for lengths in (None, jnp.array([7, 2, 5])):
        grads = [
            jax.jit(
                jax.grad(
                    functools.partial(
                        seq_loss, rnn.lstm, reverse=reverse, lengths=lengths, backward=b
                    ),
                    argnums=(0, 1, 2),
                )
            )(p, xs, carry)
            for b in ("fused", "autodiff")
        ]
        assert_tree_close(grads[0], grads[1], rtol=2e-5, atol=2e-6)
    final, ys = rnn.lstm(p, xs, carry, reverse=reverse)
    want_c, want_ys = reference_seq("lstm", p, xs[::-1] if reverse else xs, carry)
    assert_tree_close(ys, want_ys[::-1] if reverse else want_ys)
    assert_tree_close(final, want_c)
    if not reverse:
        return  # forwards: finite differences in test_gradients_match_finite_differences
    with jax.enable_x64(True):
        p = randomise(rnn.lstm_init(jax.random.key(0), 3, 4, dtype=jnp.float64))
        xs = normal(1, (4, 2, 3), np.float64)
        h = normal(3, (2, 4), np.float64, scale=0.5)
        f = functools.partial(seq_loss, rnn.lstm, reverse=True, backward="fused")
        check_grads(
            jax.jit(f), (p, xs, (h, 0.5 * h)), order=1, modes=("rev",), atol=1e-6, rtol=1e-6
        )


def test_unroll_generic_cell_and_vmap_single_example():
    """unroll() drives any cell; a single-example cell batched by vmap equals the batched run."""
    p = randomise(rnn.lstm_init(jax.random.key(0), F, H))
    xs = data()
    carry = random_carry("lstm", p)
    c1, ys1 = rnn.unroll(rnn.lstm_cell, p, carry, xs)
    single = lambda c, x: rnn.unroll(rnn.lstm_cell, p, c, x)  # x [T, F], c ([H], [H])
    c2, ys2 = jax.vmap(single, in_axes=(0, 1), out_axes=(0, 1))(carry, xs)
    assert_tree_close((c1, ys1), (c2, ys2))
    assert_tree_close(ys1, rnn.lstm(p, xs, carry)[1])


def test_integer_ids_equal_one_hot():
    p = randomise(rnn.lstm_init(jax.random.key(0), 11, H))
    ids = jax.random.randint(jax.random.key(5), (T, B), 0, 11)
    a = rnn.lstm(p, ids)
    b = rnn.lstm(p, jax.nn.one_hot(ids, 11))
    assert_tree_close(a, b)
    ga = jax.grad(lambda p: seq_loss(rnn.lstm, p, ids, None))(p)
    gb = jax.grad(lambda p: seq_loss(rnn.lstm, p, jax.nn.one_hot(ids, 11), None))(p)
    assert_tree_close(ga, gb)


def test_bad_arguments_raise_clear_errors():
    p = rnn.lstm_init(jax.random.key(0), F, H)
    with pytest.raises(ValueError, match="unknown mode"):
        rnn.lstm(p, data(), mode="fast")
    with pytest.raises(ValueError, match="unroll must be a positive integer"):
        rnn.lstm(p, data(), unroll=0)
    with pytest.raises(ValueError, match="input feature size 4 does not match"):
        rnn.lstm(p, data(f=4))
    with pytest.raises(ValueError, match="time-major"):
        rnn.lstm(p, jnp.ones((F,)))
    with pytest.raises(ValueError, match="unknown activation"):
        rnn.rnn(rnn.rnn_init(jax.random.key(0), F, H), data(), activation="gelu")
    with pytest.raises(ValueError, match="backward"):
        rnn.lstm(p, data(), backward="magic")


def test_jitted_step_compiles_once():
    p = rnn.lstm_init(jax.random.key(0), F, H)

    @jax.jit
    def step(p, xs):
        g = jax.grad(lambda p: seq_loss(rnn.lstm, p, xs, None))(p)
        return jax.tree.map(lambda a, b: a - 0.1 * b, p, g)

    p = step(p, data())
    p = step(p, data(seed=7))
    assert step._cache_size() == 1
    step(p, data(t=T + 1))
    assert step._cache_size() == 2


# ----------------------------------------------------------------------------- stacks


def test_lstm_stack_carries_dropout_and_manual_equivalence():
    layers = rnn.lstm_stack_init(jax.random.key(0), F, H, 3)
    xs = data()
    carries, ys = rnn.lstm_stack(layers, xs)
    assert len(carries) == 3 and all(c[0].shape == (B, H) for c in carries)
    manual = xs
    for n, p in enumerate(layers):
        c, manual = rnn.lstm(p, manual)
        assert_tree_close(c, carries[n])
    assert_tree_close(ys, manual)
    # dropout: only with a key; deterministic given the key; different keys differ
    _, a = rnn.lstm_stack(layers, xs, dropout_rate=0.5, key=jax.random.key(1))
    _, b = rnn.lstm_stack(layers, xs, dropout_rate=0.5, key=jax.random.key(1))
    _, c = rnn.lstm_stack(layers, xs, dropout_rate=0.5, key=jax.random.key(2))
    _, d = rnn.lstm_stack(layers, xs, dropout_rate=0.5, key=None)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert_tree_close(d, ys)
    # placement (PyTorch's): between layers only, one key per layer from split(key, layers), never
    # after the last
    keys = jax.random.split(jax.random.key(1), 3)
    manual = xs
    for n, p in enumerate(layers):
        _, manual = rnn.lstm(p, manual)
        if n < 2:
            keep = dropout_keep(keys[n], manual.shape, 0.5)
            manual = jnp.where(keep, manual / 0.5, 0.0)
    assert_tree_close(a, manual)
    assert np.count_nonzero(np.asarray(a) == 0) == 0  # the last layer's outputs are not dropped


@pytest.mark.parametrize("rate", [0.3, 0.25])  # 16 bits per element; one byte (exact in 8)
def test_dropout_statistics(rate):
    x = jnp.ones((20000,))
    y = dropout(jax.random.key(0), x, rate)
    kept = np.asarray(y) > 0
    assert abs(kept.mean() - (1 - rate)) < 0.02
    np.testing.assert_allclose(np.asarray(y)[kept], 1 / (1 - rate), rtol=1e-6)
    assert abs(float(y.mean()) - 1.0) < 0.03


def test_dropout_mask_reads_each_random_word_in_parts():
    """Each 32-bit draw of ``jax.random.bits`` decides 4 elements (bytes, little-endian, compared
    with rate * 256) or 2 (16-bit halves, with rate * 65536 rounded), rebuilt here with NumPy."""
    key, shape = jax.random.key(3), (7, 11)  # 77 elements: the last word only partly used
    for rate, dtype, words in ((0.25, np.uint8, 20), (0.1, np.uint16, 39)):
        bits = np.asarray(jax.random.bits(key, (words,), jnp.uint32)).astype("<u4")
        want = bits.view(dtype)[:77].reshape(shape) >= round(rate * 2 ** (8 * dtype().itemsize))
        np.testing.assert_array_equal(dropout_keep(key, shape, rate), want)
    # a traced rate draws one element per word, as jax.random.bernoulli
    traced = jax.jit(lambda r: dropout_keep(key, shape, r))(0.25)
    np.testing.assert_array_equal(traced, jax.random.bernoulli(key, 0.75, shape))


# ----------------------------------------------------------------------------- PyTorch layout


def test_torch_layout_round_trip_and_equations():
    rng = np.random.default_rng(0)
    L = 2
    arrays = {}
    for k in range(L):
        fan = F if k == 0 else H
        arrays[f"weight_ih_l{k}"] = rng.normal(size=(4 * H, fan)).astype(np.float32) * 0.4
        arrays[f"weight_hh_l{k}"] = rng.normal(size=(4 * H, H)).astype(np.float32) * 0.4
        arrays[f"bias_ih_l{k}"] = rng.normal(size=(4 * H,)).astype(np.float32) * 0.3
        arrays[f"bias_hh_l{k}"] = rng.normal(size=(4 * H,)).astype(np.float32) * 0.3
    layers = rnn.lstm_from_torch(arrays, L)
    xs = np.asarray(data(), np.float64)
    _, ys = rnn.lstm_stack(layers, jnp.asarray(xs, jnp.float32))
    want = xs
    z = np.zeros((B, H))
    for k in range(L):
        _, want = ref.torch_lstm_seq(
            {n: a.astype(np.float64) for n, a in arrays.items()}, k, want, z, z
        )
    assert_tree_close(ys, want)
    back = rnn.lstm_to_torch(layers)
    assert set(back) == set(arrays)
    for k in range(L):
        np.testing.assert_array_equal(back[f"weight_ih_l{k}"], arrays[f"weight_ih_l{k}"])
        np.testing.assert_array_equal(back[f"weight_hh_l{k}"], arrays[f"weight_hh_l{k}"])
        np.testing.assert_allclose(
            back[f"bias_ih_l{k}"] + back[f"bias_hh_l{k}"],
            arrays[f"bias_ih_l{k}"] + arrays[f"bias_hh_l{k}"],
            rtol=1e-6,
        )
    again = rnn.lstm_from_torch(back, L)
    for a, b in zip(layers, again):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    with pytest.raises(KeyError, match="weight_hh_l1"):
        rnn.lstm_from_torch({k: v for k, v in arrays.items() if k != "weight_hh_l1"}, L)


# ----------------------------------------------------------------------------- Flax interop


@pytest.mark.parametrize("module,seq", [(LSTM, rnn.lstm), (SimpleRNN, rnn.rnn), (GRU, rnn.gru)])
def test_flax_modules_wrap_the_same_functions(module, seq):
    m = module(features=H)
    xs = data()
    variables = m.init(jax.random.key(0), xs)
    out = m.apply(variables, xs)
    assert_tree_close(out, seq(variables["params"]["cell"], xs))
    ids = jax.random.randint(jax.random.key(1), (T, B), 0, 9)
    m2 = module(features=H, num_embeddings=9)
    v2 = m2.init(jax.random.key(0), ids)
    assert v2["params"]["cell"]["w_ih"].shape[0] == 9
    with pytest.raises(ValueError, match="num_embeddings"):
        module(features=H).init(jax.random.key(0), ids)
