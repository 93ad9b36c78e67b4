"""Character-level language model, readable top to bottom.

``cell="lstm"`` (the classic char-RNN)::

    ids [T, B] --(one-hot, as a row gather)--> stacked LSTM --dropout--> dense --> logits [T, B, V]

Parameters: ``{"lstm": [layer dicts], "w_out": [H, V], "b_out": [V]}``.

``cell="mingru"``, ``"minlstm"`` or ``"lru"`` (a parallel-in-time cell, :mod:`jaxgen.linear_rnn`;
the LRU on the paper's long-range ring, ``rnn.LRU_LONG_RANGE``, its state of width H), in the
pre-norm residual block the minGRU paper's language model uses between layers::

    x = embed[ids];  per block: x += minGRU(LN(x));  x += MLP(LN(x));  logits of LN(x)

where the MLP is ``Linear(H, mlp_ratio H)``, GELU, ``Linear(mlp_ratio H, H)`` (none with
``mlp_ratio=0``). With ``conv=K`` each block first adds a causal depthwise convolution over the
last ``K`` steps, ``x += conv(x)``, as Mamba's block puts one before its recurrence: the cells'
gates see only the current input, and the convolution lets them see the characters just before.

Parameters: ``{"embed": [V, H], "blocks": [...], "ln_f": ..., "w_out", "b_out"}``; the carry is
each block's state ``h`` ``[B, H]`` (with ``conv``: ``(h, tail)``, ``tail`` the block's last
``K - 1`` inputs ``[K-1, B, H]``, so windows and generated characters continue the sequence).
Its time loop is sequential (``mode="native"``: the compiled CPU kernel of :mod:`jaxgen.native`,
``lax.scan`` elsewhere; both measured faster than the associative scan on CPU,
``benchmarks/results/parallel_cells.md``); ``apply(..., mode="parallel")`` runs the associative
scan.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxgen import nn, rnn

CELLS = ("lstm", "mingru", "minlstm", "lru")


_layer_norm = nn.layer_norm  # backward written out: blocks' step 1.08-1.11x, charrnn_step_parts.md
_ln_init = nn.layer_norm_init


def _block_init(key, cell, hidden, mlp_ratio, conv):
    k_cell, k1, k2 = jax.random.split(key, 3)  # as before conv existed: same inits without it
    block = {
        "ln1": _ln_init(hidden),
        "cell": getattr(rnn, f"{cell}_init")(
            k_cell, hidden, hidden, **(rnn.LRU_LONG_RANGE if cell == "lru" else {})
        ),
    }
    if conv:  # PyTorch Conv1d's depthwise default, U(-1/sqrt(K), 1/sqrt(K)) (fan-in K)
        bound = 1.0 / jnp.sqrt(conv)
        kw, kb = jax.random.split(jax.random.fold_in(key, 3))
        block["conv"] = {
            "w": jax.random.uniform(kw, (conv, hidden), minval=-bound, maxval=bound),
            "b": jax.random.uniform(kb, (hidden,), minval=-bound, maxval=bound),
        }
    if mlp_ratio:  # 0: the block is the cell alone
        width = mlp_ratio * hidden
        block |= {
            "ln2": _ln_init(hidden),
            "w1": jax.random.normal(k1, (hidden, width)) / jnp.sqrt(hidden),
            "b1": jnp.zeros((width,)),
            "w2": jax.random.normal(k2, (width, hidden)) / jnp.sqrt(width),
            "b2": jnp.zeros((hidden,)),
        }
    return block


def init(
    key: jax.Array,
    vocab_size: int,
    hidden: int,
    layers: int,
    *,
    forget_bias: float = 1.0,
    cell: str = "lstm",
    mlp_ratio: int = 4,
    conv: int = 0,
) -> dict:
    """Parameters of the char model. Blocks only: ``mlp_ratio``, the MLP's width over ``hidden``
    (0: none); ``conv``, the causal convolution's width in steps (0: none)."""
    if cell not in CELLS:
        raise ValueError(f"unknown char-RNN cell {cell!r}; choose one of {CELLS}")
    for name, v in (("mlp_ratio", mlp_ratio), ("conv", conv)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    if conv and cell == "lstm":
        raise ValueError("conv applies to the parallel cells' blocks; the LSTM takes conv=0")
    if cell != "lstm":
        k_embed, k_blocks, k_out = jax.random.split(key, 3)
        return {
            "embed": jax.random.normal(k_embed, (vocab_size, hidden)),
            "blocks": [
                _block_init(k, cell, hidden, mlp_ratio, conv)
                for k in jax.random.split(k_blocks, layers)
            ],
            "ln_f": _ln_init(hidden),
            "w_out": jax.random.normal(k_out, (hidden, vocab_size)) / jnp.sqrt(hidden),
            "b_out": jnp.zeros((vocab_size,)),
        }
    k_lstm, k_out = jax.random.split(key)
    return {
        # Layer 0 takes token ids, i.e. one-hot vectors of size vocab_size.
        "lstm": rnn.lstm_stack_init(k_lstm, vocab_size, hidden, layers, forget_bias=forget_bias),
        "w_out": jax.random.normal(k_out, (hidden, vocab_size)) / jnp.sqrt(hidden),
        "b_out": jnp.zeros((vocab_size,)),
    }


def zero_carries(params: dict, batch: int) -> list:
    if "blocks" in params:
        return [_block_zero_carry(b, batch) for b in params["blocks"]]
    return [rnn.lstm_zero_carry(p, (batch,)) for p in params["lstm"]]


def _block_zero_carry(block, batch):
    h = jnp.zeros((batch, block["ln1"]["scale"].shape[0]))
    if "conv" not in block:
        return h
    return h, jnp.zeros((block["conv"]["w"].shape[0] - 1, *h.shape))


def _taps(w, seq, steps):
    """``sum_j w[j] seq[K-1-j : K-1-j+steps]``: one fused pass over ``K`` shifted views."""
    k = w.shape[0]
    return sum(w[j] * seq[k - 1 - j : k - 1 - j + steps] for j in range(k))


@jax.custom_vjp
def _conv_taps(w, xx):
    return _taps(w, xx, xx.shape[0] - w.shape[0] + 1)


def _conv_taps_fwd(w, xx):
    return _conv_taps(w, xx), (w, xx)


def _conv_taps_bwd(residuals, dy):
    # Written out, because autodiff of the shifted slices pads each tap's gradient to the full
    # length and adds them one by one (13.7 ms of a 120 ms step at 64 x 32 x 256; 5.1 ms this
    # way, benchmarks/results/charrnn_parallel_cell.md).
    # y_t = sum_j w_j xx_{t+K-1-j}, so dxx_s = sum_j w_j dy_{s-K+1+j} (zero outside [0, T)):
    # the taps run over dy padded with K - 1 zeros on each side, the weights in reverse order.
    w, xx = residuals
    k, steps = w.shape[0], dy.shape[0]
    pad = jnp.zeros((k - 1, *dy.shape[1:]), dy.dtype)
    dxx = _taps(w[::-1], jnp.concatenate([pad, dy, pad]), xx.shape[0])
    dw = jnp.stack(
        [
            jnp.sum(dy * xx[k - 1 - j : k - 1 - j + steps], axis=tuple(range(dy.ndim - 1)))
            for j in range(k)
        ]
    )
    return dw, dxx


_conv_taps.defvjp(_conv_taps_fwd, _conv_taps_bwd)


def _causal_conv(p, x, tail):
    """``y_t = b + sum_j w[j] x_{t-j}`` per channel, ``x`` ``[T, B, H]``; ``tail`` holds the
    ``K - 1`` inputs before ``x`` (oldest first). Returns ``y`` and the new tail."""
    xx = jnp.concatenate([tail, x], axis=0)  # [K - 1 + T, B, H]
    return p["b"] + _conv_taps(p["w"], xx), xx[x.shape[0] :]


def block_cell(params: dict) -> str:
    """Which cell a blocks model runs, read from its parameters."""
    cell = params["blocks"][0]["cell"]
    if "nu_log" in cell:
        return "lru"
    hidden = params["embed"].shape[1]  # minLSTM projects to 3H (f, i, candidate), minGRU to 2H
    return "minlstm" if cell["w_ih"].shape[1] == 3 * hidden else "mingru"


def _blocks_apply(params, ids, carries, dropout_rate, key, mode):
    """The residual blocks of a parallel-in-time cell (see the module docstring)."""
    seq = getattr(rnn, block_cell(params))
    keys = (
        [None] * (2 * len(params["blocks"]) + 1)
        if key is None
        else list(jax.random.split(key, 2 * len(params["blocks"]) + 1))
    )
    x = jnp.take(params["embed"], ids, axis=0)
    finals = []
    for n, (b, carry) in enumerate(zip(params["blocks"], carries)):
        if "conv" in b:
            h, tail = carry
            y, tail = _causal_conv(b["conv"], x, tail)
            x = x + y
        else:
            h = carry
        h, y = seq(b["cell"], _layer_norm(b["ln1"], x), h, mode=mode)
        finals.append((h, tail) if "conv" in b else h)
        x = x + nn.dropout(keys[2 * n], y, dropout_rate)
        if "w1" in b:  # the MLP (absent with mlp_ratio=0)
            z = jax.nn.gelu(_layer_norm(b["ln2"], x) @ b["w1"] + b["b1"]) @ b["w2"] + b["b2"]
            x = x + nn.dropout(keys[2 * n + 1], z, dropout_rate)
    x = nn.dropout(keys[-1], _layer_norm(params["ln_f"], x), dropout_rate)
    return finals, x @ params["w_out"] + params["b_out"]


def apply(
    params: dict,
    ids: jax.Array,
    carries,
    *,
    dropout_rate: float = 0.0,
    key: jax.Array | None = None,
    mode: str = "native",
):
    """``ids`` ``[T, B]`` -> ``(carries, logits [T, B, V])``. Dropout only when ``key`` is given.

    ``mode``: the LSTM's (``rnn.lstm``): ``"native"`` runs both time loops in the compiled CPU
    kernel on CPU (:mod:`jaxgen.native`) and ``lax.scan`` elsewhere; the parallel cells take
    ``"native"`` (their sequential loop compiled for CPU), ``"scan"`` and ``"parallel"`` (the
    associative scan)."""
    if "blocks" in params:
        return _blocks_apply(params, ids, carries, dropout_rate, key, mode)
    k_stack = k_out = None
    if key is not None:
        k_stack, k_out = jax.random.split(key)
    carries, ys = rnn.lstm_stack(
        params["lstm"], ids, carries, dropout_rate=dropout_rate, key=k_stack, mode=mode
    )
    ys = nn.dropout(k_out, ys, dropout_rate)
    return carries, ys @ params["w_out"] + params["b_out"]


def loss(params, ids, targets, carries, *, dropout_rate=0.0, key=None):
    """Mean softmax cross-entropy in nats per character, and the new carries."""
    carries, logits = apply(params, ids, carries, dropout_rate=dropout_rate, key=key)
    xent = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return xent.mean(), carries
