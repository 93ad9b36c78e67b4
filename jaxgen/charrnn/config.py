"""Char-RNN config defaults (the classic recipe) and their checks."""

from __future__ import annotations

import ml_collections

from jaxgen.config import add_shared_fields, require_positive_ints, validate_run_length
from jaxgen.errors import UserError

KIND = "charrnn"  # the model kind a workdir's jaxgen.json names


def default_config() -> ml_collections.ConfigDict:
    """The classic char-RNN recipe; every config file starts from this and changes fields."""
    c = ml_collections.ConfigDict()
    c.model_kind = "charrnn"  # which trainer `jaxgen train` runs
    c.seed = 0  # base PRNG seed: init and dropout keys (fold_in(key, step) per step)

    c.data = ml_collections.ConfigDict()
    c.data.source = (
        "builtin"  # 'builtin' (tiny-shakespeare, in jaxgen), 'pydoc' (CPython help), 'tfds', 'file'
    )
    c.data.path = ""  # a UTF-8 text file; when set it wins over data.source
    c.data.tfds_name = "tiny_shakespeare"  # the tensorflow-datasets name for data.source='tfds'
    c.data.val_fraction = 0.1  # last 10% of the text is the validation split

    c.model = ml_collections.ConfigDict()
    c.model.cell = (
        "lstm"  # 'lstm', or a parallel-in-time cell in blocks: 'mingru', 'minlstm', 'lru'
    )
    c.model.hidden = 512  # LSTM hidden size per layer
    c.model.layers = 2  # stacked LSTM layers
    c.model.dropout = 0.5  # dropout between layers and before the output layer
    c.model.forget_bias = 1.0  # initial forget-gate bias
    c.model.mlp_ratio = 4  # parallel cells only: each block's MLP width / hidden (0: no MLP)
    c.model.conv = 0  # parallel cells only: causal depthwise conv width in each block (0: none)

    c.train = ml_collections.ConfigDict()
    c.train.batch = 128  # parallel rows of the id stream
    c.train.seq_len = 100  # truncated-BPTT window (characters per step and row)
    c.train.epochs = 20  # passes over the training split (used when train.steps is 0)
    c.train.steps = 0  # total training steps; 0: train.epochs passes instead (negative: refused)
    c.train.lr = 1e-3  # Adam learning rate (peak, for the cosine schedule)
    c.train.lr_schedule = "constant"  # 'constant' or 'cosine' (warmup, then cosine decay)
    c.train.warmup_steps = 0  # linear warmup steps for the cosine schedule
    c.train.final_lr_fraction = 0.1  # cosine schedule ends at lr * this
    c.train.clip = 5.0  # global-norm gradient clipping
    c.train.weight_decay = 0.0  # > 0: AdamW, decoupled decay of the weight matrices only
    c.train.log_every = 10  # steps between metrics.jsonl / TensorBoard rows
    c.train.eval_every = 500  # steps between validation passes (and best-checkpoint updates)
    c.train.eval_batch = 128  # rows the validation stream is cut into (one compiled pass)
    c.train.checkpoint_every = 500  # steps between checkpoints (and one at the end)
    return add_shared_fields(c)  # train.time_budget_s, train.on_nonfinite, parallel.*


def validate_config(cfg) -> None:
    """Every check of a char-RNN config that needs no data: one UserError naming the field."""
    require_positive_ints(
        cfg,
        (
            "model.hidden",
            "model.layers",
            "train.batch",
            "train.seq_len",
            "train.checkpoint_every",
            "train.eval_every",
            "train.eval_batch",
            "train.log_every",
        ),
    )
    if cfg.model.cell not in ("lstm", "mingru", "minlstm", "lru"):
        raise UserError(
            "config.model.cell must be 'lstm', 'mingru', 'minlstm' or 'lru', "
            f"got {cfg.model.cell!r}"
        )
    if cfg.model.cell == "lru" and cfg.model.hidden % 2:
        raise UserError(
            f"config.model.hidden must be even for the LRU (real and imaginary halves), got "
            f"{cfg.model.hidden}: use {cfg.model.hidden + 1}"
        )
    ratio = cfg.model.get("mlp_ratio", 4)
    if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 0:
        raise UserError(
            f"config.model.mlp_ratio must be a non-negative integer (0: no MLP), got {ratio!r}"
        )
    conv = cfg.model.get("conv", 0)
    if isinstance(conv, bool) or not isinstance(conv, int) or conv < 0:
        raise UserError(
            f"config.model.conv must be a non-negative integer (0: no convolution), got {conv!r}"
        )
    if conv and cfg.model.cell == "lstm":
        raise UserError(
            "config.model.conv applies to the parallel cells' blocks (model.cell 'mingru', "
            "'minlstm' or 'lru'); set it to 0 for the LSTM"
        )
    if not 0.0 <= cfg.model.dropout < 1.0:
        raise UserError(f"config.model.dropout must be in [0, 1), got {cfg.model.dropout}")
    if cfg.train.lr <= 0:
        raise UserError(f"config.train.lr must be positive, got {cfg.train.lr}")
    wd = cfg.train.get("weight_decay", 0.0)
    if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not 0.0 <= wd < 1.0:
        raise UserError(
            f"config.train.weight_decay must be a number in [0, 1) (0: plain Adam), got {wd!r}"
        )
    validate_run_length(cfg.train)


def _on_nonfinite(cfg) -> str:
    v = cfg.train.get("on_nonfinite", "stop")
    if v not in ("stop", "skip"):
        raise UserError(f"config.train.on_nonfinite must be 'stop' or 'skip', got {v!r}")
    return v
