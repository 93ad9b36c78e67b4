"""jaxgen's Flax NNX modules against flax.nnx's own LSTMCell / GRUCell / SimpleCell run by
nnx.RNN and nnx.Bidirectional with the same weights, and against the pure functions they wrap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxgen import nnx_modules, rnn

B, T, F, H = 3, 6, 5, 4
LENGTHS = np.array([6, 2, 4])


def flax_cell(kind, seed):
    rngs = nnx.Rngs(seed)
    cell = {"lstm": nnx.LSTMCell, "gru": nnx.GRUCell, "rnn": nnx.SimpleCell}[kind](F, H, rngs=rngs)
    # non-zero biases, so every term shows
    for path, var in nnx.iter_graph(cell):
        if isinstance(var, nnx.Param) and path[-1] == "bias":
            var[...] = 0.3 * jax.random.normal(jax.random.key(seed + len(path)), var.shape)
    return cell


def jaxgen_params(kind, cell):
    """The same weights as jaxgen's parameter dict."""
    if kind == "lstm":
        gates = [("ii", "hi"), ("if_", "hf"), ("ig", "hg"), ("io", "ho")]
        return {
            "w_ih": jnp.concatenate([getattr(cell, i).kernel[...] for i, _ in gates], axis=1),
            "w_hh": jnp.concatenate([getattr(cell, h).kernel[...] for _, h in gates], axis=1),
            "b": jnp.concatenate([getattr(cell, h).bias[...] for _, h in gates]),
        }
    w = {"w_ih": cell.dense_i.kernel[...], "w_hh": cell.dense_h.kernel[...]}
    if kind == "gru":
        return {**w, "b_ih": cell.dense_i.bias[...], "b_hh": jnp.zeros(3 * H)}
    return {**w, "b": cell.dense_i.bias[...]}


MODULES = {"lstm": nnx_modules.LSTM, "gru": nnx_modules.GRU, "rnn": nnx_modules.SimpleRNN}


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_matches_flax_nnx_rnn_and_bidirectional(kind):
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(B, T, F)), jnp.float32)  # batch-major
    lens = jnp.asarray(LENGTHS)
    fwd, bwd = flax_cell(kind, 1), flax_cell(kind, 2)
    valid = np.arange(T)[None, :, None] < LENGTHS[:, None, None]
    # one direction, with the final carry
    carry, want = nnx.RNN(fwd, return_carry=True)(xs, seq_lengths=lens)
    module = MODULES[kind].from_layers([jaxgen_params(kind, fwd)])
    finals, got = module(xs, lengths=lens, return_carry=True)
    np.testing.assert_allclose(np.where(valid, got, 0), np.where(valid, want, 0), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(got)[~valid[..., 0]], 0.0)  # padded steps: zero
    if kind == "lstm":  # Flax carries (c, h), jaxgen (h, c)
        carry = carry[::-1]
    for a, b in zip(jax.tree.leaves(finals[0]), jax.tree.leaves(carry)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # both directions, outputs concatenated
    want = nnx.Bidirectional(nnx.RNN(fwd), nnx.RNN(bwd))(xs, seq_lengths=lens)
    both = MODULES[kind].from_layers(
        [{"fwd": jaxgen_params(kind, fwd), "bwd": jaxgen_params(kind, bwd)}]
    )
    got = both(xs, lengths=lens)
    assert got.shape == (B, T, 2 * H)
    np.testing.assert_allclose(np.where(valid, got, 0), np.where(valid, want, 0), atol=1e-5)


def test_own_parameters_train_with_nnx_transforms():
    """A module built by its constructor holds ``*_stack_init``'s parameters as nnx.Params;
    nnx.grad through it equals jax.grad of the pure stack, and nnx.jit runs it."""
    module = nnx_modules.LSTM(F, H, num_layers=2, bidirectional=True, rngs=nnx.Rngs(params=7))
    layers = rnn.lstm_stack_init(nnx.Rngs(params=7).params(), F, H, 2, bidirectional=True)
    for a, b in zip(jax.tree.leaves(module.layers), jax.tree.leaves(layers)):
        np.testing.assert_array_equal(a, b)
    assert len(jax.tree.leaves(nnx.state(module, nnx.Param))) == len(jax.tree.leaves(layers))
    xs = jnp.asarray(np.random.default_rng(1).normal(size=(B, T, F)), jnp.float32)

    def loss(m):
        return jnp.sum(jnp.tanh(m(xs, lengths=jnp.asarray(LENGTHS))))

    grads = nnx.jit(nnx.grad(loss))(module)
    want = jax.jit(jax.grad(
        lambda ls: jnp.sum(jnp.tanh(rnn.lstm_stack(
            ls, xs, bidirectional=True, lengths=jnp.asarray(LENGTHS), time_major=False)[1]))
    ))(layers)  # fmt: skip
    got = nnx_modules.LSTM.from_layers(list(layers))  # the same tree, grads in its place
    nnx.update(got, grads)
    for a, b in zip(jax.tree.leaves(got.layers), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # dropout between layers only with a dropout stream
    drop = nnx_modules.LSTM(F, H, num_layers=2, dropout_rate=0.5, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(drop(xs), drop(xs))
    assert not np.allclose(drop(xs, dropout_rngs=nnx.Rngs(dropout=1)), drop(xs))
    # the parallel cells too, time-major on request
    mg = nnx_modules.MinGRU(F, H, rngs=nnx.Rngs(0), time_major=True)
    assert mg(jnp.swapaxes(xs, 0, 1)).shape == (T, B, H)
