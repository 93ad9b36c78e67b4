r"""The PyTorch twin of jaxgen's char-RNN recipe, for equal-time comparisons.

Same data (jaxgen.charrnn.data: the corpus, vocabulary, split and the fixed window order), same
network (stacked LSTM on one-hot characters, dropout between layers and before the output layer,
forget-gate bias 1; PyTorch's initialisation, or jaxgen's initial weights with
``--init-from``), same optimiser (global-norm clipping, Adam with linear warmup then cosine
decay to ``lr * final_lr_fraction``), same truncated BPTT (state carried between windows, reset
at each epoch's first window), the same schedule fitted to the time budget (jaxgen's
``steps_that_fit`` at the same moments) and the same validation (the whole split cut into
``train.eval_batch`` rows, every ``train.eval_every`` steps). It runs in its own process with
2 threads (with JAX in the same process their thread pools fight).

    python benchmarks/charrnn_torch.py --minutes 15 --out /tmp/twin.json \
        [--config configs/charrnn.py:cpu] [--text FILE] [--config.train.lr=...]

Writes a JSON with the validation curve (``wall_s``, ``step``, ``val_loss``, ``val_seconds``),
steps and tokens/s. ``benchmarks/charrnn_vs_torch.py`` runs it beside jaxgen.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cosine_lr(step, lr, warmup, horizon, final):
    """optax.warmup_cosine_decay_schedule(0, lr, warmup, horizon, lr * final) at ``step``."""
    warmup = max(1, warmup)
    horizon = max(warmup + 1, horizon)
    if step < warmup:
        return lr * step / warmup
    frac = min(1.0, (step - warmup) / (horizon - warmup))
    end = lr * final
    return end + (lr - end) * 0.5 * (1 + math.cos(math.pi * frac))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=f"{ROOT / 'configs' / 'charrnn.py'}:cpu")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--text", default="")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="the JSON to write")
    ap.add_argument(
        "--init-from",
        default="",
        help="an .npz of initial weights in PyTorch layout (nn.LSTM state_dict names, plus "
        "out.weight / out.bias); default: PyTorch's own initialisation",
    )
    args, rest = ap.parse_known_args(argv)

    import numpy as np
    import torch

    from jaxgen.charrnn import data
    from jaxgen.config import load_with_overrides
    from jaxgen.training.loop import _fit_times, steps_that_fit

    torch.set_num_threads(args.threads)
    cfg = load_with_overrides(args.config, rest)
    m, t = cfg.model, cfg.train
    corpus = data.load_corpus(cfg.data.source, args.text or cfg.data.path, cfg.data.tfds_name)
    vocab = data.Vocab.from_text(corpus)
    train_ids, val_ids = data.split_corpus(vocab.encode(corpus), cfg.data.val_fraction)
    train_b = data.CharBatches(train_ids, t.batch, t.seq_len, name="training")
    rows = min(int(t.eval_batch), max(1, (len(val_ids) - 1) // (t.seq_len + 1)))
    val_b = data.CharBatches(val_ids, rows, t.seq_len, name="validation")
    val_x, val_y = (torch.from_numpy(a.astype(np.int64)) for a in val_b.stacked())
    V, H = len(vocab), m.hidden

    torch.manual_seed(cfg.seed)
    lstm = torch.nn.LSTM(V, H, m.layers, dropout=m.dropout if m.layers > 1 else 0.0)
    out_layer = torch.nn.Linear(H, V)
    drop = torch.nn.Dropout(m.dropout)
    with torch.no_grad():  # forget-gate bias as jaxgen's (one bias there, two here)
        for n in range(m.layers):
            getattr(lstm, f"bias_ih_l{n}").zero_()[H : 2 * H] = m.forget_bias
            getattr(lstm, f"bias_hh_l{n}").zero_()
    if args.init_from:  # the same initial weights as another run (charrnn_vs_torch.py)
        init = np.load(args.init_from)
        with torch.no_grad():
            for name, p in lstm.named_parameters():
                p.copy_(torch.from_numpy(init[name]))
            out_layer.weight.copy_(torch.from_numpy(init["out.weight"]))
            out_layer.bias.copy_(torch.from_numpy(init["out.bias"]))
    params = list(lstm.parameters()) + list(out_layer.parameters())
    opt = torch.optim.Adam(params, lr=t.lr)
    eye = torch.eye(V)

    def forward(x, state, train):
        lstm.train(train)
        ys, state = lstm(eye[x], state)
        if train:
            ys = drop(ys)
        return out_layer(ys), state

    def evaluate():
        with torch.no_grad():
            state, total = None, 0.0
            for k in range(val_x.shape[0]):
                logits, state = forward(val_x[k], state, False)
                total += torch.nn.functional.cross_entropy(
                    logits.reshape(-1, V), val_y[k].reshape(-1), reduction="sum"
                ).item()
        return total / val_x.numel()

    budget = 60.0 * args.minutes
    total_steps = t.steps if t.steps > 0 else t.epochs * len(train_b)
    horizon, fit_times = total_steps, list(_fit_times(budget))
    curve, state, t_mark = [], None, None
    t_start = time.perf_counter()
    step = 0
    while step < horizon:
        window = step % len(train_b)
        x, y = (torch.from_numpy(a.astype(np.int64)) for a in train_b.window(window))
        if window == 0:
            state = None
        elif state is not None:
            state = tuple(s.detach() for s in state)
        lr = t.lr
        if t.lr_schedule == "cosine":
            lr = cosine_lr(step, t.lr, t.warmup_steps, horizon, t.final_lr_fraction)
        for g in opt.param_groups:
            g["lr"] = lr
        logits, state = forward(x, state, True)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t.clip)
        opt.step()
        step += 1
        now = time.perf_counter()
        if t_mark is None:
            t_mark, mark_step, first_s = now, step, now - t_start
        if fit_times and step > mark_step and now - t_mark >= fit_times[0]:
            fit_times.pop(0)
            rate = (step - mark_step) / (now - t_mark)
            horizon = min(
                max(steps_that_fit(step, rate, budget, now - t_start, 0.0), step), total_steps
            )
            print(f"twin: {rate:.2f} steps/s, schedule ends at step {horizon}", flush=True)
        final = step == horizon or now - t_start >= budget
        if step % t.eval_every == 0 or final:
            v0 = time.perf_counter()
            val = evaluate()
            v1 = time.perf_counter()
            curve.append(
                {"wall_s": v1 - t_start, "step": step, "val_loss": val, "val_seconds": v1 - v0}
            )
            print(
                f"twin step {step}: val {val:.4f} ({v1 - v0:.1f}s), {v1 - t_start:.0f}s", flush=True
            )
        if final:
            break
    wall = time.perf_counter() - t_start
    val_s = sum(c["val_seconds"] for c in curve)
    payload = {
        "torch_version": torch.__version__,
        "threads": args.threads,
        "init": args.init_from or "pytorch",
        "config": cfg.to_dict(),
        "minutes": args.minutes,
        "steps": step,
        "horizon": horizon,
        "wall_s": wall,
        "first_step_s": first_s,
        "tokens_per_s": step * t.batch * t.seq_len / (wall - val_s),
        "validation_seconds": val_s,
        "curve": curve,
        "best_val_loss": min(c["val_loss"] for c in curve),
        "median_val_seconds": statistics.median(c["val_seconds"] for c in curve),
    }
    Path(args.out).write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
