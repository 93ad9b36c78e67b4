"""Char-RNN on tiny-shakespeare, the built-in corpus (--config.data.path=FILE: your own UTF-8 text).

default: the classic recipe: 2 x 512 LSTM, seq 100, batch 128, Adam 1e-3, clip 5, dropout 0.5,
20 epochs.

    jaxgen train --config configs/charrnn.py --workdir runs/shakespeare

  Expected run time: on this project's 2-core CPU ~3.4k tokens/s, about 20 epochs x 78 steps x
  3.7 s, i.e. ~1.6 hours; on one GPU a few minutes. Expected result: validation loss about
  1.40-1.45 nats/char on tiny-shakespeare after 20 epochs (the same recipe reaches ~1.29 on the
  larger Anna Karenina text).

cpu: sized for a 2-core CPU (2 x 256, batch 32 x seq 64, dropout 0.25, Adam 3e-3 with warmup and
cosine decay): good text in about 15 minutes.

    jaxgen train --config configs/charrnn.py:cpu --workdir runs/shakespeare_cpu

  Expected run time: ~15 minutes on 2 CPU cores (train.time_budget_s fits the cosine schedule to
  the steps that fit in 15 minutes, about 12,500 here with the LSTM's native CPU kernel;
  train.steps = 20,000 is only a cap). Expected result: best validation loss about 1.49-1.52
  nats/char on tiny-shakespeare (benchmarks/results/charrnn_vs_torch_native_d25.md).

smoke: a tiny char-RNN that trains end to end in seconds (CI uses it).

    jaxgen train --config configs/charrnn.py:smoke --workdir /tmp/smoke

  Expected run time: under 30 s on 2 CPU cores. Expected result: the validation loss falls below
  the uniform baseline ln(vocab) (ln 65 = 4.17 nats/char on the built-in tiny-shakespeare); the
  text is not yet readable.

Measured runs: benchmarks/results/charrnn_quality.md; why the cpu recipe is what it is:
benchmarks/results/config_notes.md.
"""

from jaxgen.charrnn.config import default_config

VARIANTS = ("default", "cpu", "smoke")


def get_config(variant: str = "default"):
    c = default_config()
    if variant == "cpu":
        c.model.hidden = 256
        c.model.layers = 2
        c.model.dropout = 0.25
        c.train.batch = 32
        c.train.seq_len = 64
        c.train.steps = 20000  # a cap: the 15-minute budget fits the schedule below it
        c.train.lr = 3e-3
        c.train.lr_schedule = "cosine"
        c.train.warmup_steps = 50
        c.train.final_lr_fraction = 0.1
        c.train.eval_every = 500
        c.train.checkpoint_every = 1000
        c.train.time_budget_s = 900.0
    elif variant == "smoke":
        c.model.hidden = 32
        c.model.layers = 2
        c.model.dropout = 0.1
        c.train.batch = 8
        c.train.seq_len = 16
        c.train.steps = 40
        c.train.lr = 1e-2
        c.train.log_every = 5
        c.train.eval_every = 20
        c.train.checkpoint_every = 20
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    return c
