"""A char-RNN sized for a 2-core CPU: good text in about 15 minutes.

    jaxgen train --config configs/charrnn_cpu.py --workdir runs/shakespeare_cpu \
        --config.data.path=../shared/data/text/tinyshakespeare.txt

Why this recipe (measured on the project's 2-core CPU; see benchmarks/results/charrnn_quality.md):
* 2 x 256 instead of 2 x 512: a quarter of the FLOPs per character, so ~4x more characters seen in the
  same time; at a 15-minute budget the smaller net is far from its capacity limit, the bigger one is
  data-starved.
* batch 128 x seq 64 (8k characters a step): the recurrent GEMM has 128 rows (better CPU efficiency
  than 64) and 64 sequential steps per update instead of 100; 64 characters of truncated BPTT is
  plenty for character statistics, and the carried state links the windows.
* dropout 0.1, not 0.5: over a few epochs the model underfits, so heavy dropout only slows learning.
* Adam 3e-3 with warmup and cosine decay to 3e-4: fast progress early, a low rate to settle at the end.

Expected run time: ~15 minutes on 2 CPU cores (train.time_budget_s stops it at 15 minutes whatever
the speed). Expected result: validation loss about 1.5-1.6 nats/char on tiny-shakespeare.
"""

from jaxgen.train.charrnn import default_config


def get_config():
    c = default_config()
    c.model.hidden = 256
    c.model.layers = 2
    c.model.dropout = 0.1
    c.train.batch = 128
    c.train.seq_len = 64
    c.train.steps = 1400
    c.train.lr = 3e-3
    c.train.lr_schedule = "cosine"
    c.train.warmup_steps = 50
    c.train.final_lr_fraction = 0.1
    c.train.eval_every = 100
    c.train.checkpoint_every = 200
    c.train.time_budget_s = 900.0
    return c
