"""Stacked and bidirectional layers for every cell, recurrent dropout, and PyTorch's nn.RNN /
nn.LSTM / nn.GRU weights both ways: against float64 NumPy from PyTorch's documented equations,
and against the torch modules themselves where torch is installed."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import rnn

from . import reference as ref

T, B, F, H, L = 7, 3, 5, 4, 2
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
FROM = {"rnn": rnn.rnn_from_torch, "lstm": rnn.lstm_from_torch, "gru": rnn.gru_from_torch}
TO = {"rnn": rnn.rnn_to_torch, "lstm": rnn.lstm_to_torch, "gru": rnn.gru_to_torch}
STACK = {"rnn": rnn.rnn_stack, "lstm": rnn.lstm_stack, "gru": rnn.gru_stack}
LENGTHS = np.array([7, 3, 5])


def torch_arrays(kind, bidirectional, seed=0):
    """A random state dict with PyTorch's names and shapes (two biases, as the modules have)."""
    rng = np.random.default_rng(seed)
    g, out = GATES[kind], {}
    for k in range(L):
        fan = F if k == 0 else H * (2 if bidirectional else 1)
        for suffix in ("", "_reverse") if bidirectional else ("",):
            out[f"weight_ih_l{k}{suffix}"] = rng.normal(size=(g * H, fan)) * 0.5
            out[f"weight_hh_l{k}{suffix}"] = rng.normal(size=(g * H, H)) * 0.5
            out[f"bias_ih_l{k}{suffix}"] = rng.normal(size=(g * H,)) * 0.3
            out[f"bias_hh_l{k}{suffix}"] = rng.normal(size=(g * H,)) * 0.3
    return {k: v.astype(np.float32) for k, v in out.items()}


def np_direction(kind, arrays, k, suffix, xs, h0):
    """One direction of layer ``k`` from PyTorch's equations (float64)."""
    a = {
        n: arrays[f"{n}_l{k}{suffix}"].astype(np.float64)
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    }
    if kind == "gru":
        p = {
            "w_ih": a["weight_ih"].T,
            "w_hh": a["weight_hh"].T,
            "b_ih": a["bias_ih"],
            "b_hh": a["bias_hh"],
        }
        return ref.gru_seq(p, xs, h0)
    p = {"w_ih": a["weight_ih"].T, "w_hh": a["weight_hh"].T, "b": a["bias_ih"] + a["bias_hh"]}
    if kind == "lstm":
        return ref.lstm_seq(p, xs, h0, 0.5 * h0)
    return ref.rnn_seq(p, xs, h0)


def np_bidirectional(kind, arrays, xs, h0, lengths):
    """Outputs [T, B, 2H] and per-layer (fwd, bwd) finals, one sequence at a time, truncated to
    its length; padded outputs zero."""
    ys = np.zeros((T, B, 2 * H))
    finals = [[None, None] for _ in range(L)]
    for b, n in enumerate(lengths):
        x = xs[:n, b : b + 1]
        for k in range(L):
            hf, yf = np_direction(kind, arrays, k, "", x, h0[b : b + 1])
            hb, yb = np_direction(kind, arrays, k, "_reverse", x[::-1], h0[b : b + 1])
            x = np.concatenate([yf, yb[::-1]], axis=-1)
            finals[k][0] = (finals[k][0] or []) + [hf]
            finals[k][1] = (finals[k][1] or []) + [hb]
        ys[:n, b] = x[:, 0]
    return ys, finals


def carry_of(kind, h):
    return (h, 0.5 * h) if kind == "lstm" else h


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_bidirectional_stack_from_torch_weights_matches_the_equations(kind):
    arrays = torch_arrays(kind, True)
    layers = FROM[kind](arrays, L, bidirectional=True)
    xs = np.random.default_rng(1).normal(size=(T, B, F))
    h0 = np.random.default_rng(2).normal(size=(B, H)) * 0.5
    h0j = jnp.asarray(h0, jnp.float32)
    carries = [(carry_of(kind, h0j), carry_of(kind, h0j))] * L
    finals, ys = STACK[kind](
        layers,
        jnp.asarray(xs, jnp.float32),
        carries,
        bidirectional=True,
        lengths=jnp.asarray(LENGTHS),
    )
    want_ys, want_finals = np_bidirectional(kind, arrays, xs, h0, LENGTHS)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-5)
    for k in range(L):
        for d in range(2):
            got = finals[k][d][0] if kind == "lstm" else finals[k][d]
            want = [w[0] if kind == "lstm" else w for w in want_finals[k][d]]
            np.testing.assert_allclose(got, np.concatenate(want), rtol=1e-5, atol=1e-5)
    # batch-major gives the same numbers, transposed
    _, ysb = STACK[kind](
        layers,
        jnp.swapaxes(jnp.asarray(xs, jnp.float32), 0, 1),
        carries,
        bidirectional=True,
        lengths=jnp.asarray(LENGTHS),
        time_major=False,
    )
    np.testing.assert_allclose(jnp.swapaxes(ysb, 0, 1), ys, rtol=1e-6, atol=1e-6)
    # and back to PyTorch's names: the same module
    back = TO[kind](layers)
    assert set(back) == set(arrays)
    again = FROM[kind](back, L, bidirectional=True)
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(layers)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# PyTorch runs in its own process: in one with JAX, its thread pool and XLA's fight and every
# later test on that worker slows down.
TORCH_SCRIPT = """
import sys
import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

torch.set_num_threads(1)
data = dict(np.load(sys.argv[1]))
xs, lengths = torch.from_numpy(data["xs"]), torch.from_numpy(data["lengths"])
f, h, layers, t = (int(v) for v in data["shape"])
out = {}
for kind, cls in (("rnn", torch.nn.RNN), ("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)):
    torch.manual_seed(0)
    m = cls(f, h, num_layers=layers, bidirectional=True)  # torch's own weights ...
    out.update({f"{kind}/{k}": v.numpy().copy() for k, v in m.state_dict().items()})
    with torch.no_grad():
        y, hn = m(pack_padded_sequence(xs, lengths, enforce_sorted=False))
    out[f"{kind}:ys"] = pad_packed_sequence(y, total_length=t)[0].numpy()
    out[f"{kind}:hn"] = (hn[0] if kind == "lstm" else hn).numpy()
    mine = {k.split("/", 1)[1]: torch.from_numpy(v) for k, v in data.items()
            if k.startswith(kind + "/")}
    m.load_state_dict(mine)  # ... and jaxgen's, converted by *_to_torch
    with torch.no_grad():
        out[f"{kind}:ys_mine"] = m(xs)[0].numpy()
np.savez(sys.argv[2], **out)
"""


def equations_outputs(xs, data):
    """What TORCH_SCRIPT writes, from PyTorch's documented equations in float64 (zero initial
    states, as the modules start): for a machine without torch."""
    out = {}
    x64 = xs.astype(np.float64)
    full = np.full(B, T)
    for n, kind in enumerate(("rnn", "lstm", "gru")):
        arrays = torch_arrays(kind, True, seed=10 + n)  # stands for the module's own weights
        out.update({f"{kind}/{k}": v for k, v in arrays.items()})
        ys, finals = np_bidirectional(kind, arrays, x64, np.zeros((B, H)), LENGTHS)
        out[f"{kind}:ys"] = ys
        out[f"{kind}:hn"] = np.stack([
            np.concatenate([w[0] if kind == "lstm" else w for w in finals[k][d]])
            for k in range(L) for d in range(2)
        ])  # fmt: skip
        mine = {k.split("/", 1)[1]: v for k, v in data.items() if k.startswith(kind + "/")}
        out[f"{kind}:ys_mine"] = np_bidirectional(kind, mine, x64, np.zeros((B, H)), full)[0]
    return out


def test_torch_modules_agree(tmp_path):
    """nn.RNN / nn.LSTM / nn.GRU (2 layers, both directions): their weights through
    ``*_from_torch`` give their outputs on packed sequences and their ``h_n``; jaxgen's own layers
    through ``*_to_torch``, loaded into the modules, give jaxgen's outputs. The modules run in
    their own process where torch is installed; elsewhere their documented equations stand in."""
    import importlib.util
    import subprocess
    import sys

    xs = np.random.default_rng(1).normal(size=(T, B, F)).astype(np.float32)
    mine = {}
    for n, kind in enumerate(("rnn", "lstm", "gru")):
        layers = getattr(rnn, f"{kind}_stack_init")(jax.random.key(n), F, H, L, bidirectional=True)
        rng = np.random.default_rng(n)  # non-zero biases, so every term shows
        shift = [0.2 * rng.normal(size=a.shape).astype(a.dtype) for a in jax.tree.leaves(layers)]
        mine[kind] = jax.tree.unflatten(
            jax.tree.structure(layers), [a + d for a, d in zip(jax.tree.leaves(layers), shift)]
        )
    data = {f"{k}/{n}": v for k, ls in mine.items() for n, v in TO[k](ls).items()}
    if importlib.util.find_spec("torch") is None:
        out = equations_outputs(xs, data)
    else:
        np.savez(tmp_path / "in.npz", xs=xs, lengths=LENGTHS, shape=np.array([F, H, L, T]), **data)
        subprocess.run([sys.executable, "-c", TORCH_SCRIPT, str(tmp_path / "in.npz"),
                        str(tmp_path / "out.npz")], check=True, timeout=300)  # fmt: skip
        out = dict(np.load(tmp_path / "out.npz"))
    for kind in ("rnn", "lstm", "gru"):
        arrays = {k.split("/", 1)[1]: v for k, v in out.items() if k.startswith(kind + "/")}
        layers = FROM[kind](arrays, L, bidirectional=True)
        finals, ys = STACK[kind](
            layers, jnp.asarray(xs), bidirectional=True, lengths=jnp.asarray(LENGTHS)
        )
        np.testing.assert_allclose(ys, out[f"{kind}:ys"], rtol=1e-5, atol=1e-5, err_msg=kind)
        got = [c[0] if kind == "lstm" else c for f in finals for c in f]
        np.testing.assert_allclose(np.stack(got), out[f"{kind}:hn"], rtol=1e-5, atol=1e-5)
        _, ys = STACK[kind](mine[kind], jnp.asarray(xs), bidirectional=True)
        np.testing.assert_allclose(ys, out[f"{kind}:ys_mine"], rtol=1e-5, atol=1e-5, err_msg=kind)


@pytest.mark.parametrize("kind", ["mingru", "minlstm", "lru"])
def test_parallel_cell_stacks_compose_the_layers(kind):
    init = getattr(rnn, f"{kind}_stack_init")
    stack = getattr(rnn, f"{kind}_stack")
    seq = getattr(rnn, kind)
    layers = init(
        jax.random.key(0), F, H if kind != "lru" else 6, L, bidirectional=True, merge="sum"
    )
    xs = jnp.asarray(np.random.default_rng(1).normal(size=(T, B, F)), jnp.float32)
    lengths = jnp.asarray(LENGTHS)
    finals, ys = stack(layers, xs, bidirectional=True, merge="sum", lengths=lengths)
    want = xs
    for k in range(L):
        cf, yf = seq(layers[k]["fwd"], want, lengths=lengths)
        cb, yb = seq(layers[k]["bwd"], want, lengths=lengths, reverse=True)
        np.testing.assert_allclose(finals[k][0], cf, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(finals[k][1], cb, rtol=1e-6, atol=1e-6)
        want = yf + yb
    np.testing.assert_allclose(ys, want, rtol=1e-6, atol=1e-6)
    assert ys.shape == (T, B, F if kind == "lru" else H)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_recurrent_dropout_is_one_mask_for_every_step(kind):
    """Variational dropout on the state entering ``h @ W_hh`` with mask ``m`` is the same layer
    with ``W_hh``'s rows scaled by ``m``. Search every mask of {0, 1/(1-p)}^H for each sequence:
    exactly one must reproduce it (a new mask at every step would match none)."""
    arrays = {k: v for k, v in torch_arrays(kind, False).items() if k.endswith("l0")}
    layers = FROM[kind](arrays, 1)
    xs = np.random.default_rng(1).normal(size=(T, B, F))
    rate = 0.5
    _, ys = STACK[kind](
        layers, jnp.asarray(xs, jnp.float32), recurrent_dropout=rate, key=jax.random.key(3)
    )
    _, plain = STACK[kind](layers, jnp.asarray(xs, jnp.float32), recurrent_dropout=rate)
    _, want_plain = np_direction(kind, arrays, 0, "", xs, np.zeros((B, H)))
    np.testing.assert_allclose(plain, want_plain, rtol=1e-5, atol=1e-5)  # no key: no dropout
    kept = []
    for b in range(B):
        matches = []
        for m in itertools.product((0.0, 1.0 / (1.0 - rate)), repeat=H):
            scaled = dict(arrays, weight_hh_l0=arrays["weight_hh_l0"] * np.asarray(m)[None, :])
            _, y = np_direction(kind, scaled, 0, "", xs[:, b : b + 1], np.zeros((1, H)))
            if np.allclose(ys[:, b], y[:, 0], rtol=1e-4, atol=1e-5):
                matches.append(m)
        assert len(matches) == 1, (b, len(matches))
        kept.append(matches[0])
    assert len({tuple(m) for m in kept}) > 1  # a mask per sequence, not one for the batch


def test_bad_input_gets_one_clear_error():
    uni = torch_arrays("lstm", False)
    with pytest.raises(ValueError, match="no '\\*_reverse' entries.*unidirectional nn.LSTM"):
        rnn.lstm_from_torch(uni, L, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional nn.GRU; pass bidirectional=True"):
        rnn.gru_from_torch(torch_arrays("gru", True), L)
    with pytest.raises(ValueError, match="a nn.GRU has \\[3H, H\\]"):
        rnn.gru_from_torch(uni, L)
    with pytest.raises(ValueError, match="more than num_layers=1"):
        rnn.lstm_from_torch(uni, 1)
    with pytest.raises(KeyError, match="weight_hh_l1"):
        rnn.lstm_from_torch({k: v for k, v in uni.items() if k != "weight_hh_l1"}, L)
    layers = rnn.lstm_from_torch(uni, L)
    xs = jnp.zeros((T, B, F))
    with pytest.raises(ValueError, match="layer 0 is unidirectional but bidirectional=True"):
        rnn.lstm_stack(layers, xs, bidirectional=True)
    with pytest.raises(ValueError, match="merge must be one of"):
        rnn.lstm_stack(layers, xs, merge="mean")
    with pytest.raises(ValueError, match="no recurrent weights"):
        rnn.mingru_stack(
            rnn.mingru_stack_init(jax.random.key(0), F, H, 1),
            xs,
            recurrent_dropout=0.2,
            key=jax.random.key(1),
        )
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        rnn.gru_stack_init(jax.random.key(0), F, H, 0)


# ----------------------------------------------------------------------------- remat


def remat_grads(seq, p, xs, carry, **kw):
    def loss(p, xs, carry):
        c, ys = seq(p, xs, carry, **kw)
        w = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
        return jnp.sum(w * ys) + sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(c))

    argnums = (0, 2) if jnp.issubdtype(xs.dtype, jnp.integer) else (0, 1, 2)
    return jax.jit(jax.value_and_grad(loss, argnums=argnums))(p, xs, carry)


@pytest.mark.parametrize(
    "kind,extra",
    [("lstm", {}), ("lstm", {"backward": "autodiff"}), ("gru", {})],
)
def test_remat_equals_the_full_backward(kind, extra):
    """Values and gradients (parameters, inputs, initial carry) with ``remat`` equal the plain
    scan's, forwards and reversed, with lengths, and for token ids."""
    init = {"rnn": rnn.rnn_init, "lstm": rnn.lstm_init, "gru": rnn.gru_init}[kind]
    seq = {"rnn": rnn.rnn, "lstm": rnn.lstm, "gru": rnn.gru}[kind]
    t = 12
    p = init(jax.random.key(0), F, H)
    rng = np.random.default_rng(1)
    p = {k: v + 0.3 * jnp.asarray(rng.normal(size=v.shape), v.dtype) for k, v in p.items()}
    xs = jnp.asarray(rng.normal(size=(t, B, F)), jnp.float32)
    ids = jnp.asarray(rng.integers(0, F, (t, B)))
    h0 = jnp.asarray(rng.normal(size=(B, H)) * 0.5, jnp.float32)
    carry = carry_of(kind, h0)
    lengths = jnp.asarray([12, 5, 8])
    cases = [(xs, dict(reverse=True, lengths=lengths))]  # jax.checkpoint segments (generic)
    if kind == "lstm" and not extra:  # the segmented hand-written backward: every path
        cases += [(xs, dict()), (xs, dict(lengths=lengths)), (ids, dict(lengths=lengths))]
    for inputs, kw in cases:
        want = remat_grads(seq, p, inputs, carry, **extra, **kw)
        got = remat_grads(seq, p, inputs, carry, remat=4, **extra, **kw)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5, err_msg=str(kw))


def test_remat_bounds_the_compiled_memory_and_refuses_bad_segments():
    t, b, f, h = 512, 8, 16, 64
    p = rnn.lstm_init(jax.random.key(0), f, h)
    xs = jnp.zeros((t, b, f))

    def temp(**kw):
        g = jax.jit(jax.grad(lambda p, xs: jnp.sum(rnn.lstm(p, xs, **kw)[1] ** 2)))
        return g.lower(p, xs).compile().memory_analysis().temp_size_in_bytes

    full, segmented = temp(), temp(remat=32)
    # the residuals (gates, states, projection: ~13 T B H floats) become T/32 carries and one
    # segment's gates; what remains is the outputs and the input gradient
    assert segmented < 0.35 * full, (segmented, full)
    with pytest.raises(ValueError, match="remat=7 does not divide the sequence length T=512.*8"):
        rnn.lstm(p, xs, remat=7)
    with pytest.raises(ValueError, match="remat works with mode='scan'"):
        rnn.gru(rnn.gru_init(jax.random.key(0), f, h), xs, mode="python", remat=8)
    with pytest.raises(ValueError, match="remat must be a positive integer"):
        rnn.rnn(rnn.rnn_init(jax.random.key(0), f, h), xs, remat=0)


# ----------------------------------------------------------------------------- cuDNN


def test_cudnn_packing_through_lstm_ref_and_clear_errors_without_a_gpu():
    """jaxgen's layers packed for cuDNN, unpacked by jax.experimental.rnn and run through its
    reference (which runs anywhere) equal rnn.lstm_stack: 2 layers, both directions, lengths,
    initial carries. Without a CUDA GPU, mode="cudnn" says so; a zero length is refused."""
    from jax.experimental import rnn as jrnn

    from jaxgen import cudnn

    arrays = torch_arrays("lstm", True)
    layers = rnn.lstm_from_torch(arrays, L, bidirectional=True)
    w = cudnn.lstm_to_cudnn(layers)
    assert w.shape == (jrnn.get_num_params_in_lstm(F, H, L, True),)
    rng = np.random.default_rng(5)
    xs = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)  # batch-major, as cuDNN
    h0 = jnp.asarray(rng.normal(size=(2 * L, B, H)) * 0.5, jnp.float32)
    c0 = jnp.asarray(rng.normal(size=(2 * L, B, H)) * 0.5, jnp.float32)
    lens = jnp.asarray(LENGTHS, jnp.int32)
    want_y, want_h, want_c = jrnn.lstm_ref(
        xs, h0, c0, *jrnn.unpack_lstm_weights(w, F, H, L, True), lens,
        input_size=F, hidden_size=H, num_layers=L, dropout=0.0, bidirectional=True,
    )  # fmt: skip
    carries = [((h0[2 * k], c0[2 * k]), (h0[2 * k + 1], c0[2 * k + 1])) for k in range(L)]
    finals, ys = rnn.lstm_stack(
        layers, xs, carries, bidirectional=True, lengths=lens, time_major=False
    )
    valid = np.arange(T)[None, :, None] < LENGTHS[:, None, None]
    np.testing.assert_allclose(np.where(valid, ys, 0), np.where(valid, want_y, 0), atol=1e-5)
    got_h = np.stack([c[0] for f in finals for c in f])
    got_c = np.stack([c[1] for f in finals for c in f])
    np.testing.assert_allclose(got_h, want_h, atol=1e-5)
    np.testing.assert_allclose(got_c, want_c, atol=1e-5)
    back = cudnn.lstm_from_cudnn(w, F, H, L, bidirectional=True)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(layers)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=f"shape \\({w.shape[0]},\\).*bidirectional=False take"):
        cudnn.lstm_from_cudnn(w, F, H, L, bidirectional=False)
    with pytest.raises(ValueError, match="length 0.*jax#17966"):
        cudnn.check_lengths(jnp.asarray([3, 0, 2]), B, T)
    with pytest.raises(ValueError, match="does not take merge='sum'"):
        rnn.lstm_stack(layers, xs, bidirectional=True, merge="sum", mode="cudnn")
    if jax.default_backend() == "gpu":  # benchmarks/gpu_check.sh: cuDNN itself against the scan
        got_finals, got = rnn.lstm_stack(layers, xs, carries, bidirectional=True, lengths=lens,
                                         time_major=False, mode="cudnn")  # fmt: skip
        np.testing.assert_allclose(np.where(valid, got, 0), np.where(valid, ys, 0), atol=1e-4)
        for a, b in zip(jax.tree.leaves(got_finals), jax.tree.leaves(finals)):
            np.testing.assert_allclose(a, b, atol=1e-4)
    else:
        with pytest.raises(ValueError, match="needs an NVIDIA GPU with jax's CUDA plugin"):
            rnn.lstm_stack(layers, xs, bidirectional=True, mode="cudnn", time_major=False)
        with pytest.raises(ValueError, match="needs an NVIDIA GPU"):
            rnn.lstm(layers[0]["fwd"], xs, mode="cudnn")
