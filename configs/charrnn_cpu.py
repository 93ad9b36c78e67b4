"""A char-RNN sized for a 2-core CPU: good text in about 15 minutes.

    jaxgen train --config configs/charrnn_cpu.py --workdir runs/shakespeare_cpu

(on tiny-shakespeare, the built-in corpus; add --config.data.path=FILE to train on your own UTF-8 text)

Why this recipe (measured on the project's 2-core CPU; see benchmarks/results/charrnn_quality.md):
* 2 x 256 instead of 2 x 512: a quarter of the FLOPs per character, so ~4x more characters seen in the
  same time; at a 15-minute budget the smaller net is far from its capacity limit, the bigger one is
  data-starved.
* batch 32 x seq 64 (2k characters a step): early in training the number of updates matters more
  than their size. Measured here over 3 minutes: batch 32 made 745 updates at 9.1k chars/s and
  reached 1.81 nats/char; batch 128 made 188 updates at 11.0k chars/s and reached only 2.17.
  64 characters of truncated BPTT is plenty for character statistics; the carried state links
  the windows.
* dropout 0.1, not 0.5: over a few epochs the model underfits, so heavy dropout only slows learning.
* Adam 3e-3 with warmup and cosine decay to 3e-4: fast progress early, a low rate to settle at the end.

Expected run time: ~15 minutes on 2 CPU cores (train.time_budget_s stops it at 15 minutes whatever
the speed). Expected result: validation loss about 1.5-1.6 nats/char on tiny-shakespeare.
"""

from jaxgen.charrnn.config import default_config


def get_config():
    c = default_config()
    c.model.hidden = 256
    c.model.layers = 2
    c.model.dropout = 0.1
    c.train.batch = 32
    c.train.seq_len = 64
    c.train.steps = 3600
    c.train.lr = 3e-3
    c.train.lr_schedule = "cosine"
    c.train.warmup_steps = 50
    c.train.final_lr_fraction = 0.1
    c.train.eval_every = 300
    c.train.checkpoint_every = 600
    c.train.time_budget_s = 900.0
    return c
