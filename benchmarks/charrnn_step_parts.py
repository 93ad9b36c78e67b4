r"""What three parts of the char-RNN train step cost: the dropout masks, the cells' time loop and
the blocks' LayerNorm backward.

* **Dropout masks**: ``nn.dropout`` draws one 32-bit threefry word for every four elements (one
  byte each; two 16-bit halves where the rate is not a multiple of 1/256), against one word per
  element (``jax.random.bernoulli``, what it did before). Timed alone on a ``[64, 32, 256]``
  activation and inside each recipe's whole train step (``jaxgen.charrnn.train.train_step``:
  dropout, clipping, Adam), the old mask patched in for the comparison.
* **The parallel cells' time loop**: the minGRU blocks' step with ``mode="native"`` (the
  compiled CPU loop, ``jaxgen.native``'s ``linear_scan.cc``) against ``mode="scan"``
  (``lax.scan``).
* **LayerNorm** (the minGRU blocks' five per step): ``nn.layer_norm``, its backward written out
  from the saved normalised input, against autodiff of the same forward (what it was before).

All variants are compiled in one process and timed interleaved (``--reps`` rounds); the table
gives medians and each ratio as the median of per-round ratios.

    python benchmarks/charrnn_step_parts.py          # about 3 minutes on 2 cores

Writes charrnn_step_parts.{json,md} to benchmarks/results/ (or ``--out``).
"""

from __future__ import annotations

import argparse
import functools
import statistics
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import benchmarking as bm
from jaxgen import nn
from jaxgen.charrnn import model as charrnn_model
from jaxgen.charrnn import train as charrnn_train
from jaxgen.config import load_config

ROOT = Path(__file__).resolve().parents[1]
MINGRU = str(ROOT / "configs" / "charrnn_mingru.py")
RECIPES = {
    "LSTM 2x256 (charrnn.py:cpu)": (f"{ROOT / 'configs' / 'charrnn.py'}:cpu", {}),
    "minGRU 2x256, MLP 2x, conv 4": (MINGRU, {"mlp_ratio": 2, "conv": 4}),
    "minGRU 4x256, no MLP, conv 4": (MINGRU, {"mlp_ratio": 0, "layers": 4, "conv": 4}),
}


def bernoulli_dropout(key, x, rate):
    """``nn.dropout`` as it was: one threefry word per element."""
    if key is None or rate == 0.0:
        return x
    return jnp.where(jax.random.bernoulli(key, 1.0 - rate, x.shape), x / (1.0 - rate), 0.0)


def autodiff_layer_norm(p, x, eps=1e-5):
    """The blocks' LayerNorm as it was: the forward alone, differentiated by JAX."""
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def recipe_step(config, model_fields, *, dropout, mode, layer_norm=nn.layer_norm):
    """A jitted, already traced train step of the recipe under the given dropout, time loop and
    LayerNorm; returns a zero-argument call that blocks on the result."""
    cfg = load_config(config)
    for k, v in model_fields.items():
        cfg.model[k] = v
    tx = charrnn_train.make_optimizer(cfg, 10_000)
    state = charrnn_train.init_state(cfg, 65, tx)
    ids = jnp.asarray(
        np.random.default_rng(0).integers(0, 65, (cfg.train.seq_len, cfg.train.batch)), jnp.int32
    )
    step = jax.jit(
        functools.partial(charrnn_train.train_step, tx=tx, dropout_rate=cfg.model.dropout)
    )
    call = lambda: jax.block_until_ready(step(state, ids, ids, jnp.asarray(False)))  # noqa: E731
    defaults = charrnn_model.apply.__kwdefaults__
    saved = nn.dropout, defaults["mode"], charrnn_model._layer_norm
    nn.dropout, defaults["mode"], charrnn_model._layer_norm = dropout, mode, layer_norm
    try:
        call()  # trace and compile now, under the patches
    finally:
        nn.dropout, defaults["mode"], charrnn_model._layer_norm = saved
    return call


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    # The masks alone.
    x = jnp.ones((64, 32, 256))
    masks = {
        "bernoulli, rate 0.25": jax.jit(lambda k: bernoulli_dropout(k, x, 0.25)),
        "bytes, rate 0.25": jax.jit(lambda k: nn.dropout(k, x, 0.25)),
        "16-bit, rate 0.1": jax.jit(lambda k: nn.dropout(k, x, 0.1)),
    }
    key = jax.random.key(0)
    times = bm.interleaved({k: functools.partial(f, key) for k, f in masks.items()}, 50, 3)
    base = times["bernoulli, rate 0.25"]
    mask_rows = [
        dict(variant=k, ms=1e3 * statistics.median(v), speedup=bm.median_ratio(base, v))
        for k, v in times.items()
    ]
    print("masks:", ", ".join(f"{r['variant']} {r['ms']:.2f} ms" for r in mask_rows), flush=True)

    # The whole train steps.
    variants = {}
    for name, (config, fields) in RECIPES.items():
        modes = ("native",) if name.startswith("LSTM") else ("native", "scan")
        for mode in modes:
            for drop_name, drop in (("bernoulli", bernoulli_dropout), ("packed", nn.dropout)):
                variants[name, mode, drop_name, "written out"] = recipe_step(
                    config, fields, dropout=drop, mode=mode
                )
        if not name.startswith("LSTM"):
            variants[name, "native", "packed", "autodiff"] = recipe_step(
                config, fields, dropout=nn.dropout, mode="native", layer_norm=autodiff_layer_norm
            )
        print(f"compiled {name}", flush=True)
    times = bm.interleaved({k: v for k, v in variants.items()}, args.reps, warmup=2)
    step_rows = []
    for name in RECIPES:
        ref = times[name, "native", "packed", "written out"]
        for (n, mode, drop, ln), t in times.items():
            if n == name:
                step_rows.append(
                    dict(
                        recipe=name,
                        loop=mode,
                        dropout=drop,
                        layer_norm_backward=ln if not n.startswith("LSTM") else "",
                        ms=1e3 * statistics.median(t),
                        time_vs_shipped=bm.median_ratio(t, ref),
                    )
                )
    for r in step_rows:
        print(
            f"{r['recipe']:32s} {r['loop']:7s} {r['dropout']:9s} {r['layer_norm_backward']:11s} "
            f"{r['ms']:7.1f} ms",
            flush=True,
        )

    md = (
        "One dropout mask on a [64, 32, 256] activation (median of 50, interleaved):\n\n"
        + bm.md_table(
            ["mask", "ms", "speed vs bernoulli"],
            [[r["variant"], r["ms"], r["speedup"]] for r in mask_rows],
        )
        + f"\nThe recipes' train steps (batch 32 x seq 64; median of {args.reps} interleaved "
        "rounds; time relative to the shipped step, the compiled loop with packed masks and the "
        "written-out LayerNorm backward, as the median of per-round ratios):\n\n"
        + bm.md_table(
            [
                "recipe",
                "time loop",
                "dropout mask",
                "LayerNorm backward",
                "step ms",
                "time vs shipped",
            ],
            [
                [
                    r["recipe"],
                    r["loop"],
                    r["dropout"],
                    r["layer_norm_backward"],
                    r["ms"],
                    r["time_vs_shipped"],
                ]
                for r in step_rows
            ],
        )
    )
    bm.write_results(
        "charrnn_step_parts", dict(masks=mask_rows, steps=step_rows, reps=args.reps), md, args.out
    )
    print(md)


if __name__ == "__main__":
    main()
