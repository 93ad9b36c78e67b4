"""cuDNN's fused LSTM on NVIDIA GPUs, through ``jax.experimental.rnn``, with jaxgen's parameters.

``rnn.lstm_stack(..., mode="cudnn")`` (and ``rnn.lstm(..., mode="cudnn")``) pack the layers into
cuDNN's flat weight vector, convert the layout (cuDNN takes batch-major ``[B, T, F]`` and every
layer's carry stacked ``[layers * directions, B, H]``) and the lengths (``None`` means full
length), call ``jax.experimental.rnn.lstm`` and convert back. cuDNN's packing, per
``unpack_lstm_weights``: for each layer and direction ``W_ih [4H, F]`` then ``W_hh [4H, H]``
(gate order i, f, g, o, as jaxgen's), all weights first, then every ``b_ih``, ``b_hh``.

The lowering needs jax's CUDA plugin, so a CPU machine can neither run nor export it; there the
packing is tested through ``jax.experimental.rnn.lstm_ref`` (its reference, which runs anywhere)
and ``mode="cudnn"`` gives a clear error.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _directions(layer) -> list:
    return [layer["fwd"], layer["bwd"]] if isinstance(layer, dict) and "fwd" in layer else [layer]


def lstm_to_cudnn(layers: Sequence[Any]) -> Array:
    """jaxgen LSTM layers (:func:`jaxgen.rnn.lstm_stack_init`, one or both directions) -> cuDNN's
    flat float32 weight vector. The whole bias goes to ``b_ih``; ``b_hh`` is zero."""
    weights, biases = [], []
    for layer in layers:
        for p in _directions(layer):
            weights += [jnp.ravel(p["w_ih"].T), jnp.ravel(p["w_hh"].T)]
            biases += [p["b"], jnp.zeros_like(p["b"])]
    return jnp.concatenate(weights + biases).astype(jnp.float32)


def lstm_from_cudnn(
    weights: Array, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool = False
) -> list[Any]:
    """cuDNN's flat LSTM weights -> jaxgen layers (biases summed)."""
    from jax.experimental import rnn as jrnn

    want = jrnn.get_num_params_in_lstm(input_size, hidden_size, num_layers, bidirectional)
    if weights.shape != (want,):
        raise ValueError(
            f"cuDNN LSTM weights of shape {tuple(weights.shape)}; input_size={input_size}, "
            f"hidden_size={hidden_size}, num_layers={num_layers}, bidirectional={bidirectional} "
            f"take ({want},)"
        )
    w_ih, w_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(
        weights, input_size, hidden_size, num_layers, bidirectional
    )
    dirs = 2 if bidirectional else 1
    out = []
    for k in range(num_layers):
        ps = [
            {"w_ih": w_ih[i].T, "w_hh": w_hh[i].T, "b": b_ih[i] + b_hh[i]}
            for i in range(k * dirs, (k + 1) * dirs)
        ]
        out.append({"fwd": ps[0], "bwd": ps[1]} if bidirectional else ps[0])
    return out


def check_available() -> None:
    """Raise the one clear error where cuDNN cannot run: no CUDA GPU behind JAX."""
    dev = jax.devices()[0]
    if dev.platform != "gpu" or "cuda" not in getattr(dev.client, "platform_version", "cuda"):
        raise ValueError(
            f"mode='cudnn' runs cuDNN's LSTM, which needs an NVIDIA GPU with jax's CUDA plugin; "
            f"this JAX runs on {dev.platform!r}. Use mode='scan' (or 'pallas')"
        )


def check_lengths(lengths, batch: int, num_steps: int):
    """cuDNN's sequence lengths: ``None`` is every sequence at full length; a concrete length of
    zero is refused (cuDNN fails on it, jax#17966)."""
    if lengths is None:
        return jnp.full((batch,), num_steps, jnp.int32)
    if not isinstance(lengths, jax.core.Tracer):
        concrete = np.asarray(lengths)
        if concrete.size and concrete.min() < 1:
            raise ValueError(
                f"mode='cudnn' cannot take a sequence of length 0 (lengths={concrete.tolist()}): "
                "cuDNN fails on it (jax#17966). Drop the empty sequences, or give them length 1 "
                "and ignore their outputs"
            )
    return jnp.asarray(lengths, jnp.int32)


def lstm_stack(layers, xs, carries, *, bidirectional: bool, lengths, time_major: bool):
    """The stack on cuDNN: ``(finals, ys)`` as :func:`jaxgen.rnn.lstm_stack` returns them."""
    from jax.experimental import rnn as jrnn

    check_available()
    xs = jnp.asarray(xs)
    if jnp.issubdtype(xs.dtype, jnp.integer):
        raise TypeError("mode='cudnn' takes float inputs; embed token ids first (or use 'scan')")
    if xs.dtype != jnp.float32:
        raise TypeError(f"mode='cudnn' runs float32 (got {xs.dtype}); cast, or use mode='scan'")
    x = xs if not time_major else jnp.swapaxes(xs, 0, 1)  # cuDNN: [B, T, F]
    batch, num_steps, features = x.shape
    first = _directions(layers[0])[0]
    hidden = first["w_hh"].shape[0]
    dirs = 2 if bidirectional else 1
    n = len(layers) * dirs
    if carries is None:
        h0 = c0 = jnp.zeros((n, batch, hidden), jnp.float32)
    else:
        pairs = [c for layer in carries for c in (layer if bidirectional else (layer,))]
        h0 = jnp.stack([h for h, _ in pairs])
        c0 = jnp.stack([c for _, c in pairs])
    ys, hn, cn = jrnn.lstm(
        x, h0, c0, lstm_to_cudnn(layers), check_lengths(lengths, batch, num_steps),
        input_size=features, hidden_size=hidden, num_layers=len(layers), dropout=0.0,
        bidirectional=bidirectional,
    )  # fmt: skip
    finals = [(hn[i], cn[i]) for i in range(n)]
    if bidirectional:
        finals = [tuple(finals[2 * k : 2 * k + 2]) for k in range(len(layers))]
    return finals, (ys if not time_major else jnp.swapaxes(ys, 0, 1))
