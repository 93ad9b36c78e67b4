"""Float64 NumPy implementations written from the equations (test oracles)."""

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def rnn_seq(p, xs, h, act=np.tanh):
    ys = []
    for x in xs:
        h = act(x @ p["w_ih"] + h @ p["w_hh"] + p["b"])
        ys.append(h)
    return h, np.stack(ys)


def lstm_seq(p, xs, h, c):
    H = h.shape[-1]
    ys = []
    for x in xs:
        z = x @ p["w_ih"] + h @ p["w_hh"] + p["b"]
        i, f, g, o = (z[..., k * H : (k + 1) * H] for k in range(4))
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        ys.append(h)
    return (h, c), np.stack(ys)


def gru_seq(p, xs, h):
    H = h.shape[-1]
    ys = []
    for x in xs:
        a = x @ p["w_ih"] + p["b_ih"]
        b = h @ p["w_hh"] + p["b_hh"]
        r = sigmoid(a[..., :H] + b[..., :H])
        z = sigmoid(a[..., H : 2 * H] + b[..., H : 2 * H])
        n = np.tanh(a[..., 2 * H :] + r * b[..., 2 * H :])
        h = (1 - z) * n + z * h
        ys.append(h)
    return h, np.stack(ys)


def torch_lstm_seq(arrays, layer, xs, h, c):
    """PyTorch nn.LSTM's documented equations, with its two biases, one layer."""
    p = {
        "w_ih": arrays[f"weight_ih_l{layer}"].T,
        "w_hh": arrays[f"weight_hh_l{layer}"].T,
        "b": arrays[f"bias_ih_l{layer}"] + arrays[f"bias_hh_l{layer}"],
    }
    return lstm_seq(p, xs, h, c)


def f64(tree):
    return {k: np.asarray(v, np.float64) for k, v in tree.items()}


# ----------------------------------------------------------------------------- parallel cells


def g_act(v):
    """minGRU's positive candidate activation (Feng et al. 2024)."""
    return np.where(v >= 0, v + 0.5, sigmoid(v))


def mingru_seq(p, xs, h):
    """minGRU, sequential, from the paper: z = σ(x W_z), h' = (1 - z) h + z g(x W_h)."""
    H = h.shape[-1]
    ys = []
    for x in xs:
        a = x @ p["w_ih"] + p["b"]
        z = sigmoid(a[..., :H])
        h = (1 - z) * h + z * g_act(a[..., H:])
        ys.append(h)
    return h, np.stack(ys)


def minlstm_seq(p, xs, h):
    """minLSTM: f, i = σ(.), normalised to f / (f + i) and i / (f + i)."""
    H = h.shape[-1]
    ys = []
    for x in xs:
        a = x @ p["w_ih"] + p["b"]
        f, i = sigmoid(a[..., :H]), sigmoid(a[..., H : 2 * H])
        h = f / (f + i) * h + i / (f + i) * g_act(a[..., 2 * H :])
        ys.append(h)
    return h, np.stack(ys)


def lru_seq(p, xs, h):
    """LRU (Orvieto et al. 2023) in complex128: h' = λ h + γ (x B), y = Re(h C) + D x.

    ``h`` is real ``[B, 2N]`` (real parts, then imaginary parts), as jaxgen carries it.
    """
    n = p["nu_log"].shape[0]
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    gamma = np.exp(p["gamma_log"])
    bm = p["b_re"] + 1j * p["b_im"]
    cm = p["c_re"] + 1j * p["c_im"]
    hc = h[..., :n] + 1j * h[..., n:]
    ys = []
    for x in xs:
        hc = lam * hc + gamma * (x @ bm)
        ys.append((hc @ cm).real + p["d"] * x)
    return np.concatenate([hc.real, hc.imag], axis=-1), np.stack(ys)
